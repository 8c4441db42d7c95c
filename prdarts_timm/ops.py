"""The DARTS candidate operations, every conv a :class:`~prdarts_timm.layers.PrunedConv2d`.

``OPS[name](C, stride, affine)`` builds the op for ``C`` channels. The internals are the DARTS ones
(method note 1.2): SepConv = two stacked [ReLU, depthwise k x k, pointwise 1x1, BN]; DilConv = [ReLU,
depthwise k x k dilation 2, pointwise 1x1, BN]; skip_connect with stride 2 is a FactorizedReduce.
"""

from typing import Callable, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import PrunedConv2d

__all__ = ['OPS', 'ReLUConvBN', 'SepConv', 'DilConv', 'FactorizedReduce', 'Zero', 'make_op']


class ReLUConvBN(nn.Sequential):
    """ReLU, pruned conv, BN (the cells' 1x1 preprocessing)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            PrunedConv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of an input that is already ``relu(x)`` (the conv and BN only)."""
        return self[2](self[1](x))


class DilConv(nn.Sequential):
    """ReLU, depthwise dilated k x k conv, pointwise 1x1 conv, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            PrunedConv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=C_in, bias=False),
            PrunedConv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable blocks; only the first one strides."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            PrunedConv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            PrunedConv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            PrunedConv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            PrunedConv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class Zero(nn.Module):
    """The 'none' op: zeros at the output resolution (the search supernet skips computing it)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs, concatenated (C_out must be even).

    The second path reads the input shifted by one pixel, zero past the far edge so that odd sizes work too
    (for even sizes the result equals DARTS's ``x[:, :, 1:, 1:]``). It is computed as a 1x1 conv of the odd
    pixels ``x[:, :, 1::2, 1::2]`` (``conv_2`` has stride 1), zero-padded to the first path's size before the
    conv (no bias, so the padded pixel stays zero): the same
    numbers as a stride-2 conv of the shifted, padded input, without building that full-size copy (whose
    backward, two full-size zero fills, cost a sixth of a training step of the micro network on the CPU).
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f'FactorizedReduce needs an even number of output channels, got {C_out}')
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = PrunedConv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = PrunedConv2d(C_in, C_out // 2, 1, stride=1, padding=0, bias=False)  # on the odd pixels
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_relu(self.relu(x))

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of an input that has been through the ReLU already."""
        odd = x[:, :, 1::2, 1::2]
        odd = F.pad(odd, (0, x.shape[3] % 2, 0, x.shape[2] % 2))  # odd sizes: the pixel past the edge is zero
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(odd)], dim=1))


OPS: Dict[str, Callable[[int, int, bool], nn.Module]] = {
    'none': lambda C, stride, affine: Zero(stride),
    'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    'max_pool_3x3': lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    'skip_connect': lambda C, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    'sep_conv_3x3': lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    'sep_conv_5x5': lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    'dil_conv_3x3': lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    'dil_conv_5x5': lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}


def make_op(name: str, C: int, stride: int, affine: bool = True) -> nn.Module:
    """Build candidate op ``name``; unknown names raise with the list of known ops."""
    if name not in OPS:
        raise ValueError(f'unknown op {name!r}; known ops: {", ".join(OPS)}')
    return OPS[name](C, stride, affine)
