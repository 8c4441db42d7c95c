"""Sparse kernels for a baked pruned network: after :func:`~prdarts_timm.layers.bake` the pruned weights are exact
zeros, and dense kernels still compute them. :func:`use_sparse_kernels` swaps the 1x1 convs and linear layers
for CSR sparse matrix products (``torch.sparse``) where a timing on the real input shape shows them faster,
keeping the dense layer elsewhere.
"""
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Tuple, Union

import torch
import torch.nn as nn

from ..errors import DeployError
from ..layers import check_baked
from ..profile import median_ms

__all__ = ['KernelChoice', 'SparseConv1x1', 'SparseLinear', 'use_sparse_kernels']


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
