"""Building blocks of compaction: BN folding, zero-channel tests, channel picks and plain dense convs."""
from typing import Optional, Tuple

import torch
import torch.nn as nn

__all__ = ['bn_scale_shift', 'folded', 'nonzero_channels', 'pick', 'plain_conv']


def plain_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor],
               stride: Optional[Tuple[int, int]] = None) -> nn.Conv2d:
    """A plain conv like ``conv`` (kernel, stride unless given, padding, dilation) with ``weight`` / ``bias``; a
    depthwise ``conv`` stays depthwise over ``weight``'s channels."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    out_channels = weight.shape[0]
    in_channels = out_channels if depthwise else weight.shape[1] * conv.groups
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride if stride is None else stride,
                    padding=conv.padding, dilation=conv.dilation, groups=out_channels if depthwise else conv.groups,
                    bias=bias is not None, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new.eval()


def bn_scale_shift(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with eval-mode ``bn(x) == x * scale + shift``."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight.detach(), shift * bn.weight.detach() + bn.bias.detach()
    return scale, shift


def folded(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s weight and bias (zeros for a conv without one) with the eval-mode ``bn`` after it folded in."""
    weight = conv.weight.detach()
    bias = weight.new_zeros(weight.shape[0]) if conv.bias is None else conv.bias.detach()
    if bn is None:
        return weight, bias
    scale, shift = bn_scale_shift(bn)
    return weight * scale.view(-1, 1, 1, 1), bias * scale + shift


def nonzero_channels(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool per index of ``dim``: does any weight of that slice differ from zero."""
    return weight.ne(0).movedim(dim, 0).flatten(1).any(1)


def pick(keep: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Indices of ``keep``; ``fallback`` (one index) when none, so that every conv keeps a channel: the caller
    zeroes its weights through ``keep``."""
    index = keep.nonzero().flatten()
    return index if index.numel() else fallback
