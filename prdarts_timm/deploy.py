"""Deployment forms of a baked pruned network: sparse kernels where they pay, and ONNX.

A pruned network trains with masked dense layers; after :func:`~prdarts_timm.layers.bake` the pruned weights
are exact zeros, and dense kernels still compute them. :func:`use_sparse_kernels` swaps the 1x1 convs and
linear layers for CSR sparse matrix products (``torch.sparse``) where a timing on the real input shape shows
them faster, keeping the dense layer elsewhere. :func:`export_onnx` writes the network for ONNX Runtime.
"""
import copy
import functools
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .builder import load_model
from .checkpoint import save_safetensors
from .compact import compact
from .errors import DeployError
from .io import atomic_write, atomic_write_folder
from .layers import bake, check_baked
from .profile import compare_ms, median_ms

__all__ = ['DeployError', 'KernelChoice', 'SparseConv1x1', 'SparseLinear', 'check_baked', 'deploy_folder',
           'export_onnx', 'load_deployed', 'onnx_session', 'use_sparse_kernels', 'ONNX_OPSET']

ONNX_OPSET = 18


def _csr(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().reshape(weight.shape[0], -1).to_sparse_csr()


class SparseConv1x1(nn.Module):
    """A 1x1 convolution (groups 1, no padding, any stride) as a CSR sparse matrix product; inference only."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding not in ((0, 0), 0) or conv.dilation != (1, 1):
            raise DeployError(f'SparseConv1x1 takes a 1x1 conv with groups 1 and no padding, got {conv}')
        self.in_channels, self.out_channels, self.stride = conv.in_channels, conv.out_channels, conv.stride
        self.weight = _csr(conv.weight)  # a plain attribute: CSR tensors are not state-dict material
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
        n, c, h, w = x.shape
        columns = x.reshape(c, h * w) if n == 1 else x.transpose(0, 1).reshape(c, n * h * w)
        y = torch.mm(self.weight, columns)
        y = y.reshape(1, -1, h, w) if n == 1 else y.reshape(-1, n, h, w).transpose(0, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        nnz = self.weight.values().numel()
        return f'{self.in_channels}, {self.out_channels}, stride={self.stride}, nnz={nnz}'


class SparseLinear(nn.Module):
    """A linear layer as a CSR sparse matrix product; inference only."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = _csr(linear.weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.mm(self.weight, x.reshape(-1, self.in_features).t()).t()
        y = y if self.bias is None else y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f'{self.in_features}, {self.out_features}, nnz={self.weight.values().numel()}'


def _sparse_form(module: nn.Module) -> Union[Callable[[nn.Module], nn.Module], None]:
    if isinstance(module, nn.Linear):
        return SparseLinear
    if (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
            and module.padding in ((0, 0), 0) and module.dilation == (1, 1) and module.padding_mode == 'zeros'):
        return SparseConv1x1
    return None


@dataclass
class KernelChoice:
    """The measured rule's record for one layer: density and median times of both paths on its real input."""
    name: str
    shape: Tuple[int, ...]
    density: float
    dense_ms: float
    sparse_ms: float
    sparse: bool

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def use_sparse_kernels(model: nn.Module, example: torch.Tensor, threads: int = 1, repeats: int = 20,
                       margin: float = 0.9) -> List[KernelChoice]:
    """Swap each 1x1 conv / linear layer of the baked ``model`` for its sparse form where that is faster.

    The rule is measured, per layer: both forms run on the input that layer sees for ``example`` (so batch
    size and resolution are the deployment's), on ``threads`` threads, median of ``repeats``; the sparse
    form replaces the dense one only when it takes under ``margin`` of the dense time. In place (eval mode);
    returns one :class:`KernelChoice` per candidate layer.
    """
    check_baked(model)
    model.eval()
    candidates = {name: m for name, m in model.named_modules() if _sparse_form(m) is not None}
    inputs: Dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            inputs.setdefault(name, args[0])
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in candidates.items()]
    try:
        model(example)
    finally:
        for hook in hooks:
            hook.remove()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    choices = []
    try:
        for name, dense in candidates.items():
            if name not in inputs:
                continue  # not on the inference path (e.g. an auxiliary head)
            x = inputs[name]
            sparse = _sparse_form(dense)(dense)
            dense_ms = median_ms(lambda: dense(x), 1, repeats)
            sparse_ms = median_ms(lambda: sparse(x), 1, repeats)
            density = sparse.weight.values().numel() / dense.weight.numel()
            use = sparse_ms < margin * dense_ms
            choices.append(KernelChoice(name, tuple(x.shape), density, dense_ms, sparse_ms, use))
            if use:
                parent_name, _, attr = name.rpartition('.')
                setattr(model.get_submodule(parent_name) if parent_name else model, attr, sparse)
    finally:
        torch.set_num_threads(previous)
    return choices


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


def _onnx_ms(paths: Dict[str, Path], input_size: Sequence[int], threads: int, repeats: int) -> Dict[str, float]:
    """Batch-1 ONNX Runtime latency of each named file (:func:`~prdarts_timm.profile.compare_ms`)."""
    x = torch.randn(1, *input_size).numpy()
    runs = {name: functools.partial(onnx_session(path, threads).run, None, {'input': x})
            for name, path in paths.items()}
    return compare_ms(runs, 2, repeats)


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
            latency = _onnx_ms(dict(baked=onnx, compacted=candidate), input_size, threads, repeats)
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
