"""The deployment folder: a baked network as ``model.safetensors``, ``model.onnx`` (compacted where ONNX Runtime
runs that faster) and ``deploy.json``; :func:`deploy_folder` writes it, :func:`load_deployed` reads it back."""
import copy
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Sequence, Union

import torch
import torch.nn as nn

from ..builder import load_model
from ..checkpoint import save_safetensors
from ..compact import compact
from ..errors import DeployError
from ..io import atomic_write_folder
from ..layers import bake, check_baked
from .onnx_runtime import ONNX_OPSET, export_onnx, onnx_latency_ms

__all__ = ['deploy_folder', 'load_deployed']


def deploy_folder(model: nn.Module, folder: Union[str, os.PathLike], input_size: Sequence[int],
                  info: Dict[str, Any], overwrite: bool = False, opset: int = ONNX_OPSET, threads: int = 1,
                  repeats: int = 20) -> Path:
    """Write the baked ``model`` for deployment: ``model.safetensors`` (its baked state dict, what
    ``load_state_dict`` of the registered model reads), ``model.onnx`` (opset ``opset``, batch size dynamic) and
    ``deploy.json`` (``info`` plus input size, opset, the compaction's figures and the latencies behind the choice).

    ``model.onnx`` is the compacted network (:func:`prdarts_timm.compact.compact`) where compaction applies and
    ONNX Runtime runs it faster than the baked one at batch size 1 on ``threads`` threads (measured here: at
    moderate sparsity the gathers can cost more than the removed channels save), else the baked network. Needs
    onnxruntime. Atomic; an existing folder is replaced only with ``overwrite=True``."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise DeployError(f'{folder} already exists and is not empty; choose another output folder or pass '
                          'overwrite=True (--overwrite)')
    check_baked(model)
    model.eval()
    compacted = copy.deepcopy(model)
    try:
        compaction = asdict(compact(compacted))
    except DeployError as e:  # another family, or nothing to remove: the baked network as it is
        compacted, compaction = None, dict(skipped=str(e))

    def write(tmp: Path) -> None:
        save_safetensors(model.state_dict(), tmp / 'model.safetensors', metadata={'format': 'pt'})
        onnx = export_onnx(model, tmp / 'model.onnx', input_size, opset)
        latency, use_compacted = None, False
        if compacted is not None:
            candidate = export_onnx(compacted, tmp / 'compacted.onnx', input_size, opset)
            latency = onnx_latency_ms(dict(baked=onnx, compacted=candidate), input_size, threads, repeats)
            use_compacted = latency['compacted'] < latency['baked']
            if use_compacted:
                os.replace(candidate, onnx)
            else:
                candidate.unlink()
        (tmp / 'deploy.json').write_text(json.dumps(dict(
            info, input_size=list(input_size), onnx_opset=opset, onnx_input='input', onnx_output='logits',
            onnx_compacted=use_compacted, compaction=compaction,
            onnx_latency_ms=None if latency is None else dict(latency, batch_size=1, threads=threads),
            torch=torch.__version__), indent=1) + '\n')

    return atomic_write_folder(folder, write)


def load_deployed(folder: Union[str, os.PathLike]) -> nn.Module:
    """The PyTorch form of a deployment folder written by ``recipes/export.py --deploy``: the registered model
    named in ``deploy.json`` with the baked ``model.safetensors``, compacted where compaction applies (eval,
    CPU). Compaction is exact and derived from the baked weights, so the folder keeps those, not a second copy."""
    folder = Path(folder)
    info_path = folder / 'deploy.json'
    if not info_path.is_file():
        raise DeployError(f'{folder} is not a deployment folder (no deploy.json): write one with '
                          'deploy_folder() (the export recipe\'s deploy mode)')
    info = json.loads(info_path.read_text())
    if 'model' not in info:
        raise DeployError(f'{info_path} names no model: write the folder with deploy_folder()')
    model = load_model(info['model'], folder / 'model.safetensors', cifar_stem=info.get('cifar_stem', False),
                       **info.get('model_args', {}))
    bake(model).eval()
    if 'skipped' not in info.get('compaction', {}):
        compact(model)
    return model
