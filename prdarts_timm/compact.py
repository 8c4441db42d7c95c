"""Compaction of a baked pruned network: a smaller plain dense network with the same outputs.

Two families: the PR-DARTS networks and timm's MobileNet-v2 / EfficientNet-style networks (inverted
residual and depthwise-separable blocks without squeeze-excitation, as ``mobilenetv2_*``).

What goes in a PR-DARTS network (eval mode, exact up to float rounding):

* **dead channels inside the separable and dilated convs**: a depthwise channel whose kernel is all zeros,
  or whose pointwise column is all zeros, computes nothing that reaches the op's output; it is removed from
  the depthwise conv, the pointwise conv and, in a separable conv, from the first block's output rows. The
  op's input channels that only such channels read are skipped (one ``index_select``).
* **dead inputs of the 1x1 preprocessing convs** (columns all zero), skipped the same way;
* **BatchNorm**, folded into the conv before it (stems, preprocessing, ops, factorized reductions);
* the auxiliary head (training only), and the pruning wrappers: every layer becomes a plain ``nn.Conv2d`` /
  ``nn.Linear``.

Channels of tensors that several ops share (cell inputs, node sums, concatenations) are left as they are: a
dead channel there is a constant after BN, not a zero, and zero padding makes its effect position-dependent.

In a MobileNet-v2: the expanded channels of each block whose projection column is all zero; those whose
depthwise kernel is all zero too, after their constant (BN bias through the activation) is added to the
projection's bias (a 1x1 conv sees a constant channel as a constant); the same for the 1x1 head conv's
channels against the classifier (average pooling keeps a constant); every BN folded into its conv.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .deploy import DeployError, check_baked
from .ops import DilConv, FactorizedReduce, SepConv

__all__ = ['CompactBlock', 'CompactOp', 'CompactionReport', 'compact']


def _plain_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Conv2d:
    """A plain conv like ``conv`` (kernel, stride, padding, dilation) with ``weight`` / ``bias``; a depthwise
    ``conv`` stays depthwise over ``weight``'s channels."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    out_channels = weight.shape[0]
    in_channels = out_channels if depthwise else weight.shape[1] * conv.groups
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=out_channels if depthwise else conv.groups,
                    bias=bias is not None)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new.eval()


def _bn_scale_shift(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with eval-mode ``bn(x) == x * scale + shift``."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight.detach(), shift * bn.weight.detach() + bn.bias.detach()
    return scale, shift


def _folded(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``conv``'s weight and bias with the eval-mode ``bn`` after it folded in."""
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    if bn is None:
        return weight, bias
    scale, shift = _bn_scale_shift(bn)
    bias = shift if bias is None else bias * scale + shift
    return weight * scale.view(-1, 1, 1, 1), bias


def _nonzero_channels(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool per index of ``dim``: does any weight of that slice differ from zero."""
    return weight.transpose(0, dim).reshape(weight.shape[dim], -1).ne(0).any(1)


def _indices(keep: torch.Tensor) -> torch.Tensor:
    """Indices of ``keep``; one channel (index 0) when none is kept, so every conv keeps a channel."""
    index = keep.nonzero().flatten()
    return index if index.numel() else torch.zeros(1, dtype=torch.long)


class CompactOp(nn.Module):
    """ReLU, then ``body`` on the input channels ``index`` (all channels when ``index`` is None)."""

    def __init__(self, index: Optional[torch.Tensor], body: nn.Sequential):
        super().__init__()
        self.register_buffer('index', index)
        self.relu = nn.ReLU()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            x = x.index_select(1, self.index)
        return self.body(self.relu(x))


def _input_index(keep: torch.Tensor, channels: int) -> Optional[torch.Tensor]:
    return None if keep.numel() == channels else keep


def _compact_dil(op: DilConv) -> Tuple[CompactOp, int, int]:
    _, dw, pw, bn = op
    pw_w, pw_b = _folded(pw, bn)
    keep = _indices(_nonzero_channels(dw.weight, 0) & _nonzero_channels(pw_w, 1))
    body = nn.Sequential(_plain_conv(dw, dw.weight.detach()[keep], None), _plain_conv(pw, pw_w[:, keep], pw_b))
    return CompactOp(_input_index(keep, dw.in_channels), body), dw.out_channels, keep.numel()


def _compact_sep(op: SepConv) -> Tuple[CompactOp, int, int]:
    _, dw1, pw1, bn1, _, dw2, pw2, bn2 = op
    pw1_w, pw1_b = _folded(pw1, bn1)
    pw2_w, pw2_b = _folded(pw2, bn2)
    keep2 = _indices(_nonzero_channels(dw2.weight, 0) & _nonzero_channels(pw2_w, 1))
    pw1_w, pw1_b = pw1_w[keep2], pw1_b[keep2]  # only the rows the second block reads
    keep1 = _indices(_nonzero_channels(dw1.weight, 0) & _nonzero_channels(pw1_w, 1))
    body = nn.Sequential(
        _plain_conv(dw1, dw1.weight.detach()[keep1], None), _plain_conv(pw1, pw1_w[:, keep1], pw1_b), nn.ReLU(),
        _plain_conv(dw2, dw2.weight.detach()[keep2], None), _plain_conv(pw2, pw2_w[:, keep2], pw2_b))
    return (CompactOp(_input_index(keep1, dw1.in_channels), body), dw1.out_channels + dw2.out_channels,
            keep1.numel() + keep2.numel())


def _compact_relu_conv_bn(op: nn.Sequential) -> Tuple[CompactOp, int, int]:
    _, conv, bn = op
    weight, bias = _folded(conv, bn)
    keep = _indices(_nonzero_channels(weight, 1)) if conv.groups == 1 else torch.arange(conv.in_channels)
    body = nn.Sequential(_plain_conv(conv, weight[:, keep] if conv.groups == 1 else weight, bias))
    return CompactOp(_input_index(keep, conv.in_channels), body), conv.in_channels, keep.numel()


def _is_relu_conv_bn(module: nn.Module) -> bool:
    return (isinstance(module, nn.Sequential) and len(module) == 3 and isinstance(module[0], nn.ReLU)
            and isinstance(module[1], nn.Conv2d) and isinstance(module[2], nn.BatchNorm2d))


def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold every (conv, BN) pair of ``seq`` in place: the conv takes the BN, the BN becomes Identity."""
    for i in range(len(seq) - 1):
        if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
            seq[i] = _plain_conv(seq[i], *_folded(seq[i], seq[i + 1]))
            seq[i + 1] = nn.Identity()


def _fold_factorized(op: FactorizedReduce) -> None:
    half = op.conv_1.out_channels
    scale, shift = _bn_scale_shift(op.bn)
    for name, part in (('conv_1', slice(0, half)), ('conv_2', slice(half, None))):
        conv = getattr(op, name)
        setattr(op, name, _plain_conv(conv, conv.weight.detach() * scale[part].view(-1, 1, 1, 1), shift[part]))
    op.bn = nn.Identity()


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


def _keep(alive: torch.Tensor, next_w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(indices kept, next layer's weight): one dummy channel with a zero column when none is alive."""
    index = alive.nonzero().flatten()
    if index.numel():
        return index, next_w
    next_w = next_w.clone()
    next_w[:, 0] = 0  # the dummy adds nothing
    return torch.zeros(1, dtype=torch.long), next_w


def _compact_inverted_residual(block: nn.Module) -> Tuple[CompactBlock, int, int]:
    pw_w, pw_b = _folded(block.conv_pw, block.bn1)
    dw_w, dw_b = _folded(block.conv_dw, block.bn2)
    pwl_w, pwl_b = _folded(block.conv_pwl, block.bn3)
    act1, act2 = _act(block.bn1), _act(block.bn2)
    used, dw_alive = _nonzero_channels(pwl_w, 1), _nonzero_channels(dw_w, 0)
    pwl_b = _fold_constants(pwl_w, pwl_b, act2(dw_b.clone()), (used & ~dw_alive).nonzero().flatten())
    keep, pwl_w = _keep(used & dw_alive, pwl_w)
    body = nn.Sequential(_plain_conv(block.conv_pw, pw_w[keep], pw_b[keep]), act1,
                         _plain_conv(block.conv_dw, dw_w[keep], dw_b[keep]), act2,
                         _plain_conv(block.conv_pwl, pwl_w[:, keep], pwl_b), _act(block.bn3))
    return CompactBlock(None, body, block.has_skip), block.conv_dw.out_channels, keep.numel()


def _compact_depthwise_separable(block: nn.Module) -> Tuple[CompactBlock, int, int]:
    dw_w, dw_b = _folded(block.conv_dw, block.bn1)
    pw_w, pw_b = _folded(block.conv_pw, block.bn2)
    act1 = _act(block.bn1)
    used, dw_alive = _nonzero_channels(pw_w, 1), _nonzero_channels(dw_w, 0)
    pw_b = _fold_constants(pw_w, pw_b, act1(dw_b.clone()), (used & ~dw_alive).nonzero().flatten())
    keep, pw_w = _keep(used & dw_alive, pw_w)
    body = nn.Sequential(_plain_conv(block.conv_dw, dw_w[keep], dw_b[keep]), act1,
                         _plain_conv(block.conv_pw, pw_w[:, keep], pw_b), _act(block.bn2))
    index = None if keep.numel() == block.conv_dw.in_channels else keep
    return CompactBlock(index, body, block.has_skip), block.conv_dw.out_channels, keep.numel()


def _compact_efficientnet(model: nn.Module) -> Tuple[int, int]:
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

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
    model.conv_stem = _plain_conv(model.conv_stem, *_folded(model.conv_stem, model.bn1))
    model.bn1 = _act(model.bn1)
    head_w, head_b = _folded(model.conv_head, model.bn2)
    act = _act(model.bn2)
    if model.global_pool.pool_type != 'avg' or not isinstance(model.classifier, nn.Linear):
        raise DeployError('compaction of the head needs average pooling and a linear classifier')
    cls_w, cls_b = model.classifier.weight.detach(), model.classifier.bias.detach()
    used, alive = _nonzero_channels(cls_w, 1), _nonzero_channels(head_w, 0)
    cls_b = _fold_constants(cls_w, cls_b, act(head_b.clone()), (used & ~alive).nonzero().flatten())
    keep, cls_w = _keep(used & alive, cls_w)
    model.conv_head = _plain_conv(model.conv_head, head_w[keep], head_b[keep])
    model.bn2 = act
    classifier = nn.Linear(keep.numel(), cls_w.shape[0])
    classifier.weight.data.copy_(cls_w[:, keep])
    classifier.bias.data.copy_(cls_b)
    model.classifier = classifier
    model.num_features = model.head_hidden_size = keep.numel()
    return before + head_w.shape[0], after + keep.numel()


@dataclass
class CompactionReport:
    """Channels of the depthwise / 1x1 inner tensors before and after, and parameters before and after."""
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int

    def __str__(self) -> str:
        return (f'inner channels {self.channels_before} -> {self.channels_after}, parameters '
                f'{self.params_before:,} -> {self.params_after:,}')


def _plain_layers(model: nn.Module) -> None:
    """Replace the remaining pruning wrappers (baked) by plain ``nn.Conv2d`` / ``nn.Linear``."""
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Conv2d and isinstance(module, nn.Conv2d):
            new = _plain_conv(module, module.weight.detach(), None if module.bias is None else module.bias.detach())
        elif type(module) is not nn.Linear and isinstance(module, nn.Linear):
            new = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            new.load_state_dict({k: v for k, v in module.state_dict().items() if k in ('weight', 'bias')})
        else:
            continue
        parent, _, attr = name.rpartition('.')
        setattr(model.get_submodule(parent) if parent else model, attr, new)


@torch.no_grad()
def compact(model: nn.Module) -> CompactionReport:
    """Compact the baked ``model`` in place (eval mode; see the module docstring for what goes).

    The result computes the same function at inference (float rounding aside) and cannot be trained or
    pruned further; its state dict has new keys, so keep the baked weights as the checkpoint and compact
    after loading. Raises :class:`~prdarts_timm.deploy.DeployError` for an unbaked model, a network of another
    family, or one with no dead channels (nothing to gain: deploy the baked network as it is).
    """
    from timm.models.efficientnet import EfficientNet

    from .models import PRDarts

    if not isinstance(model, (PRDarts, EfficientNet)):
        raise DeployError(f'compact() takes a PR-DARTS network or a timm MobileNet-v2 / EfficientNet-style '
                          f'network, got {type(model).__name__}; other networks deploy as baked (export_onnx, '
                          'use_sparse_kernels)')
    check_baked(model)
    model.eval()
    if isinstance(model, EfficientNet):
        params_before = sum(p.numel() for p in model.parameters())
        before, after = _compact_efficientnet(model)
        if after == before:
            raise DeployError('the model has no dead channels: compaction would change nothing. Deploy the baked '
                              'network as it is')
        _plain_layers(model)
        return CompactionReport(before, after, params_before, sum(p.numel() for p in model.parameters()))
    params_before = sum(p.numel() for n, p in model.named_parameters() if not n.startswith('aux_head.'))
    before = after = 0
    replacements = []
    for name, module in model.named_modules():
        if isinstance(module, SepConv):
            replacements.append((name, *_compact_sep(module)))
        elif isinstance(module, DilConv):
            replacements.append((name, *_compact_dil(module)))
        elif _is_relu_conv_bn(module) and not name.startswith('aux_head'):
            replacements.append((name, *_compact_relu_conv_bn(module)))
    for name, new, channels, kept in replacements:
        parent, _, attr = name.rpartition('.')
        setattr(model.get_submodule(parent) if parent else model, attr, new)
        before, after = before + channels, after + kept
    if after == before:
        raise DeployError('the model has no dead channels: every depthwise channel and every 1x1 input is in use, '
                          'so compaction would change nothing. Deploy the baked network as it is')
    for module in list(model.modules()):
        if isinstance(module, FactorizedReduce):
            _fold_factorized(module)
        elif isinstance(module, nn.Sequential):
            _fold_sequential(module)
    if getattr(model, 'aux_head', None) is not None:
        model.aux_head = None
    _plain_layers(model)
    params_after = sum(p.numel() for p in model.parameters())
    return CompactionReport(before, after, params_before, params_after)
