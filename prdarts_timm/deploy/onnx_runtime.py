"""A baked network as ONNX (:func:`export_onnx`) and ONNX Runtime CPU sessions to run it (:func:`onnx_session`).
``onnxruntime`` is imported when a session is made, so ``import prdarts_timm`` does not need it."""
import functools
import os
import warnings
from pathlib import Path
from typing import Dict, Sequence, Union

import torch
import torch.nn as nn

from ..errors import DeployError
from ..io import atomic_write
from ..layers import check_baked
from ..profile import compare_ms
from .sparse_kernels import SparseConv1x1, SparseLinear

__all__ = ['ONNX_OPSET', 'export_onnx', 'onnx_session', 'onnx_latency_ms']

ONNX_OPSET = 18


def export_onnx(model: nn.Module, path: Union[str, os.PathLike], input_size: Sequence[int],
                opset: int = ONNX_OPSET) -> Path:
    """Write the baked ``model`` as ONNX (opset ``opset``, batch size dynamic, height and width those of
    ``input_size``, input ``input``, output ``logits``), atomically. Sparse-kernel modules have no ONNX form:
    export the dense network."""
    check_baked(model)
    sparse = [name for name, m in model.named_modules() if isinstance(m, (SparseConv1x1, SparseLinear))]
    if sparse:
        raise DeployError(f'{sparse[0]!r} is a torch.sparse kernel, which ONNX cannot express: export the network '
                          'before use_sparse_kernels (ONNX Runtime chooses its own kernels)')
    model.eval()
    example = torch.randn(1, *input_size)
    path = Path(path)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # compaction's size tests: fixed with the export's height and width
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning, module=r'prdarts_timm\.compact')
            torch.onnx.export(model, (example,), tmp, dynamo=False, opset_version=opset, input_names=['input'],
                              output_names=['logits'], dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})

    with torch.no_grad():
        atomic_write(path, write)
    return path


def onnx_session(path: Union[str, os.PathLike], threads: int = 1):
    """An ONNX Runtime CPU session for ``path`` on ``threads`` intra-op threads (all graph optimisations)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeployError('onnxruntime is not installed: pip install "prdarts-timm[deploy]"') from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def onnx_latency_ms(paths: Dict[str, Path], input_size: Sequence[int], threads: int, repeats: int) -> Dict[str, float]:
    """Batch-1 ONNX Runtime latency of each named file (:func:`~prdarts_timm.profile.compare_ms`)."""
    x = torch.randn(1, *input_size).numpy()
    runs = {name: functools.partial(onnx_session(path, threads).run, None, {'input': x})
            for name, path in paths.items()}
    return compare_ms(runs, 2, repeats)
