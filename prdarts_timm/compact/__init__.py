"""Compaction of a baked pruned network: a smaller plain dense network with the same outputs.

Two families:

* the PR-DARTS networks (:mod:`.cells`): every tensor, including those the cells share (cell inputs, node
  sums, concatenations), keeps only the channels some consumer needs computed; constant channels are folded
  into the biases of the consumers that can take them; dead depthwise / pointwise channels inside the ops go;
* timm's MobileNet-v2-style networks (:mod:`.mobilenet`): dead expanded and head channels.

BN is folded into the convs and every layer becomes a plain ``nn.Conv2d`` / ``nn.Linear``. Exact in eval mode,
float rounding aside. The compacted network is for inference of the logits: its intermediate features
(``forward_features`` of a network with a classifier, ``forward_intermediates``) hold the kept channels only,
and ``feature_info`` gives their widths.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models.efficientnet import EfficientNet

from ..checkpoint import training_only
from ..errors import DeployError
from ..layers import check_baked
from ..models import PRDarts
from .cells import CompactCell, CompactFactorizedReduce, CompactOp, CompactPassThrough, compact_prdarts
from .mobilenet import CompactBlock, compact_efficientnet

__all__ = ['CompactBlock', 'CompactCell', 'CompactFactorizedReduce', 'CompactOp', 'CompactPassThrough',
           'CompactionReport', 'compact']


@dataclass
class CompactionReport:
    """Channels of the tensors compaction can shrink, before and after, and parameters before and after.

    PR-DARTS: stem and cell tensors and the ops' depthwise channels; MobileNet-v2: expanded and head channels.
    """
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int

    def __str__(self) -> str:
        return (f'channels {self.channels_before} -> {self.channels_after}, parameters '
                f'{self.params_before:,} -> {self.params_after:,}')


@torch.no_grad()
def compact(model: nn.Module) -> CompactionReport:
    """Compact the baked ``model`` in place (eval mode; see the module docstring for what goes).

    The result computes the same logits at inference (float rounding aside) and cannot be trained or pruned
    further; its state dict has new keys, so keep the baked weights as the checkpoint and compact after
    loading. Raises :class:`~prdarts_timm.errors.DeployError` for an unbaked model, a network of another family,
    or one with no dead channels (nothing to gain: deploy the baked network as it is).
    """
    if not isinstance(model, (PRDarts, EfficientNet)):
        raise DeployError(f'compact() takes a PR-DARTS network or a timm MobileNet-v2 / EfficientNet-style '
                          f'network, got {type(model).__name__}; other networks deploy as baked (export_onnx, '
                          'use_sparse_kernels)')
    if any(isinstance(m, (CompactCell, CompactBlock)) for m in model.modules()):
        raise DeployError('the model is already compacted; compact the baked network (it is the checkpoint)')
    check_baked(model)
    if any(p.device.type != 'cpu' for p in model.parameters()):
        raise DeployError('compact() runs on the CPU: call model.cpu() first, then move the compacted network')
    model.eval()
    params_before = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(training_only(model)))
    if isinstance(model, EfficientNet):
        before, after = compact_efficientnet(model)
    else:
        before, after = compact_prdarts(model)
    if after == before:
        raise DeployError('the model has no dead channels: every channel is read by a nonzero weight and must be '
                          'computed, so compaction would change nothing. Deploy the baked network as it is')
    return CompactionReport(before, after, params_before, sum(p.numel() for p in model.parameters()))
