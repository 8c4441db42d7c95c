"""Compaction of timm's MobileNet-v2-style networks (``EfficientNet`` with inverted residual and
depthwise-separable blocks, no squeeze-excitation).

What goes: the expanded channels of each block whose projection column is all zero; those whose depthwise
kernel is all zero too, after their constant (BN bias through the activation) is added to the projection's bias
(a 1x1 conv sees a constant channel as a constant); the same for the 1x1 head conv's channels against the
classifier (average pooling keeps a constant); every BN folded into its conv.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

from ..errors import DeployError
from .fold import folded, nonzero_channels, pick, plain_conv

__all__ = ['CompactBlock', 'compact_efficientnet']


class CompactBlock(nn.Module):
    """A compacted inverted residual / depthwise-separable block: [gather] -> convs and activations -> [+ x]."""

    def __init__(self, index: Optional[torch.Tensor], body: nn.Sequential, skip: bool):
        super().__init__()
        self.register_buffer('index', index)
        self.body = body
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x if self.index is None else x.index_select(1, self.index))
        return y + x if self.skip else y


def _act(bn_act: nn.Module) -> nn.Module:
    """The activation of timm's BatchNormAct2d (Identity for a plain BN)."""
    return getattr(bn_act, 'act', None) or nn.Identity()


def _fold_constants(next_w: torch.Tensor, next_b: torch.Tensor, constants: torch.Tensor,
                    channels: torch.Tensor) -> torch.Tensor:
    """``next_b`` plus what the constant input ``channels`` (values ``constants``) add through the 1x1 / linear
    weight ``next_w`` (out x in [x 1 x 1])."""
    w = next_w.reshape(next_w.shape[0], -1)[:, channels]
    return next_b + w @ constants[channels]


def _compact_inverted_residual(block: nn.Module) -> Tuple[CompactBlock, int, int]:
    pw_w, pw_b = folded(block.conv_pw, block.bn1)
    dw_w, dw_b = folded(block.conv_dw, block.bn2)
    pwl_w, pwl_b = folded(block.conv_pwl, block.bn3)
    act1, act2 = _act(block.bn1), _act(block.bn2)
    used, dw_alive = nonzero_channels(pwl_w, 1), nonzero_channels(dw_w, 0)
    pwl_b = _fold_constants(pwl_w, pwl_b, act2(dw_b.clone()), (used & ~dw_alive).nonzero().flatten())
    alive = used & dw_alive
    keep = pick(alive, torch.zeros(1, dtype=torch.long))
    body = nn.Sequential(plain_conv(block.conv_pw, pw_w[keep], pw_b[keep]), act1,
                         plain_conv(block.conv_dw, dw_w[keep], dw_b[keep]), act2,
                         plain_conv(block.conv_pwl, pwl_w[:, keep] * alive[keep].view(1, -1, 1, 1), pwl_b),
                         _act(block.bn3))
    return CompactBlock(None, body, block.has_skip), block.conv_dw.out_channels, keep.numel()


def _compact_depthwise_separable(block: nn.Module) -> Tuple[CompactBlock, int, int]:
    dw_w, dw_b = folded(block.conv_dw, block.bn1)
    pw_w, pw_b = folded(block.conv_pw, block.bn2)
    act1 = _act(block.bn1)
    used, dw_alive = nonzero_channels(pw_w, 1), nonzero_channels(dw_w, 0)
    pw_b = _fold_constants(pw_w, pw_b, act1(dw_b.clone()), (used & ~dw_alive).nonzero().flatten())
    alive = used & dw_alive
    keep = pick(alive, torch.zeros(1, dtype=torch.long))
    body = nn.Sequential(plain_conv(block.conv_dw, dw_w[keep], dw_b[keep]), act1,
                         plain_conv(block.conv_pw, pw_w[:, keep] * alive[keep].view(1, -1, 1, 1), pw_b),
                         _act(block.bn2))
    index = None if keep.numel() == block.conv_dw.in_channels else keep
    return CompactBlock(index, body, block.has_skip), block.conv_dw.out_channels, keep.numel()


def compact_efficientnet(model: nn.Module) -> Tuple[int, int]:
    """Compact ``model`` (baked, eval) in place; returns the inner channels (expanded + head) before and after."""
    before = after = 0
    for stage in model.blocks:
        for i, block in enumerate(stage):
            plain = (getattr(block, 'conv_s2d', None) is None and isinstance(block.se, nn.Identity)
                     and isinstance(getattr(block, 'aa', nn.Identity()), nn.Identity))
            if isinstance(block, InvertedResidual) and plain:
                stage[i], channels, kept = _compact_inverted_residual(block)
            elif isinstance(block, DepthwiseSeparableConv) and plain:
                stage[i], channels, kept = _compact_depthwise_separable(block)
            else:
                raise DeployError(f'cannot compact a {type(block).__name__} block with squeeze-excitation, '
                                  'anti-aliasing or space-to-depth: compaction supports MobileNet-v2-style blocks')
            before, after = before + channels, after + kept
    model.conv_stem = plain_conv(model.conv_stem, *folded(model.conv_stem, model.bn1))
    model.bn1 = _act(model.bn1)
    head_w, head_b = folded(model.conv_head, model.bn2)
    act = _act(model.bn2)
    if model.global_pool.pool_type != 'avg' or not isinstance(model.classifier, nn.Linear):
        raise DeployError('compaction of the head needs average pooling and a linear classifier')
    cls_w, cls_b = model.classifier.weight.detach(), model.classifier.bias.detach()
    used, alive = nonzero_channels(cls_w, 1), nonzero_channels(head_w, 0)
    cls_b = _fold_constants(cls_w, cls_b, act(head_b.clone()), (used & ~alive).nonzero().flatten())
    read = used & alive
    keep = pick(read, torch.zeros(1, dtype=torch.long))
    model.conv_head = plain_conv(model.conv_head, head_w[keep], head_b[keep])
    model.bn2 = act
    classifier = nn.Linear(keep.numel(), cls_w.shape[0], dtype=cls_w.dtype)
    classifier.weight.data.copy_(cls_w[:, keep] * read[keep])
    classifier.bias.data.copy_(cls_b)
    model.classifier = classifier
    model.num_features = model.head_hidden_size = keep.numel()
    return before + head_w.shape[0], after + keep.numel()
