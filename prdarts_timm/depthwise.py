"""A stride-1 depthwise convolution whose CPU backward is faster than aten's, the same maths.

On the CPU (oneDNN, torch 2.14) the backward of a depthwise convolution costs 6-100x its forward. Its input gradient
is itself a depthwise convolution, of the output gradient with the flipped kernel (stride 1, padding
``dilation * (kernel - 1) - padding``), which as a forward convolution runs 2.4-26x faster than aten's backward
computes it. Measured side by side against the commit before it (benchmarks/bench_train.py, batch 128, one thread
of an AVX-512 Xeon; docs/results.md): a training step of ``prdarts_c10`` 1.08x faster, of ``prdarts_c10_micro``
1.05x.

The weight's gradient stays aten's, except where the kernel reaches past the output map (``dilation * (kernel - 1)
+ 1`` above its height or width: the 5x5 convolutions of dilation 2 on the 8x8 maps of the last cells), where aten
took 1.2-4x longer than one grouped convolution of each (image, channel) input plane with its output-gradient
plane, strided by the dilation, summed over the images (a ``prdarts_c10`` step 1.03x faster again, side by side);
on larger maps aten is the faster one. The results equal aten's up to float rounding (another summation order).
"""
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ['depthwise_conv2d', 'takes_fast_backward']


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: Tuple[int, int],
                dilation: Tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, padding=padding, dilation=dilation, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        groups = weight.shape[0]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            flipped_padding = tuple(d * (k - 1) - p for d, k, p in zip(ctx.dilation, weight.shape[2:], ctx.padding))
            grad_x = F.conv2d(grad, weight.flip(2, 3), padding=flipped_padding, dilation=ctx.dilation, groups=groups)
        if ctx.needs_input_grad[1]:
            if _reaches_past_the_map(weight, grad, ctx.dilation):
                grad_w = _weight_grad_by_plane_correlation(grad, x, weight, ctx.padding, ctx.dilation)
            else:
                grad_w = torch.ops.aten.convolution_backward(
                    grad, x, weight, None, [1, 1], list(ctx.padding), list(ctx.dilation), False, [0, 0], groups,
                    [False, True, False])[1]
        return grad_x, grad_w, None, None


def _reaches_past_the_map(weight: torch.Tensor, grad: torch.Tensor, dilation: Tuple[int, int]) -> bool:
    """Whether the kernel's reach, ``dilation * (kernel - 1) + 1``, exceeds the output map's height or width."""
    return any(d * (k - 1) + 1 > size for d, k, size in zip(dilation, weight.shape[2:], grad.shape[2:]))


def _weight_grad_by_plane_correlation(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                      padding: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """A depthwise weight's gradient: each (image, channel) plane of the padded input correlated with its plane of
    the output gradient (one grouped convolution, strided by the dilation: kernel-size outputs), summed over the
    images."""
    n, c = x.shape[:2]
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    planes = F.conv2d(padded.reshape(1, n * c, *padded.shape[2:]), grad.reshape(n * c, 1, *grad.shape[2:]),
                      stride=dilation, groups=n * c)
    return planes.reshape(n, c, *weight.shape[2:]).sum(0).unsqueeze(1)


def takes_fast_backward(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` on ``x`` is what :func:`depthwise_conv2d` computes and trains faster: a stride-1
    depthwise convolution without bias and with zero padding of at most the kernel's reach, on a CPU float32 input,
    with gradients recorded and no autocast (whose backward would mix dtypes), not while FX traces it."""
    return (conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels and conv.stride == (1, 1)
            and conv.bias is None and conv.padding_mode == 'zeros' and not isinstance(conv.padding, str)
            and all(p <= d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))
            and isinstance(x, torch.Tensor)  # not an FX proxy: a traced graph keeps aten's conv
            and x.device.type == 'cpu' and x.dtype == torch.float32 and torch.is_grad_enabled()
            and not torch.is_autocast_enabled('cpu'))


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, padding: Tuple[int, int],
                     dilation: Tuple[int, int]) -> torch.Tensor:
    """``F.conv2d(x, weight, padding=padding, dilation=dilation, groups=weight.shape[0])``, stride 1, with the
    faster backward (see the module docstring)."""
    return _DepthwiseConv2d.apply(x, weight, padding, dilation)
