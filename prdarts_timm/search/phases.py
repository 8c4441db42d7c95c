"""The PR-DARTS search schedule: dense pretrain, prune (learn scores), sparse finetune; or one-step.

| phase     | k      | mask          | trained per step                          |
|-----------|--------|---------------|-------------------------------------------|
| pretrain  | 1      | none (dense)  | alpha step, then a weight step            |
| prune     | target | re-selected   | (alpha step if ``arch_step``), score step |
| finetune  | target | fixed         | alpha step, then a weight step            |
| onestep   | target | per sub-step  | alpha step, weight step, score step       |

The prune phase starts from the scaled score init (masks = layer-wise magnitude pruning); the one-step
search starts from it too and keeps k at the target throughout. Each phase is a
:class:`~prdarts_timm.stage.Stage` record: this module reads its fields, never its name.
"""
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import averaged_step
from ..pruning import init_scores_scaled, set_pruning
from ..stage import Stage
from .architect import Architect, Batch

__all__ = ['Phase', 'PHASE_NAMES', 'enter_phase', 'trained_parameters', 'search_step']

PHASE_NAMES = ('pretrain', 'prune', 'finetune', 'onestep')


def Phase(name: str, epochs: int, lr: float, lr_min: float = 0.001, arch_step: bool = True, k: float = 1.0) -> Stage:
    """One phase of the search (a :class:`~prdarts_timm.stage.Stage`) at target kept fraction ``k``."""
    if name not in PHASE_NAMES:
        raise ValueError(f'unknown phase {name!r}; expected one of {PHASE_NAMES}')
    return Stage.of(name, k, epochs, lr, lr_min=lr_min, arch_step=arch_step)


def enter_phase(model: nn.Module, phase: Stage, init_scores: bool = True) -> None:
    """Set the supernet's pruned layers as ``phase`` begins: its scores initialised where it says (scaled
    magnitudes), its mode at its k.

    ``init_scores=False`` when resuming inside a phase: the scores come from the checkpoint.
    """
    if init_scores and phase.init_scores:
        init_scores_scaled(model)
    set_pruning(model, phase.mode, k=phase.k)


def trained_parameters(model: nn.Module, phase: Stage) -> Dict[str, List[nn.Parameter]]:
    """The parameter groups a phase optimizes: ``weights`` and / or ``scores`` (never alpha)."""
    found = dict(weights=model.weight_parameters, scores=model.score_parameters)
    return {group: list(found[group]()) for group in phase.groups}


def search_step(model: nn.Module, phase: Stage, architect: Architect, optimizers: Dict[str, torch.optim.Optimizer],
                train_batch: Batch, val_batch: Batch, grad_clip: float = 5.0,
                weight_decay: float = 0.0) -> Dict[str, torch.Tensor]:
    """One search iteration of ``phase``: the alpha step (if any), then a step of each group it trains, in order.
    Returns the losses as 0-dim tensors, unread (reading them is a host sync on a GPU).

    A phase of several groups steps each under its own mode (one-step: weights through the fixed mask, scores
    learned); the unrolled alpha step moves the first group, in its mode. Gradients are averaged across
    processes before every update, so all ranks stay identical.
    """
    x, y = train_batch
    stats = {}
    groups = trained_parameters(model, phase)
    switches = len(phase.trains) > 1
    if phase.arch_step:
        first = phase.groups[0]
        if switches:
            set_pruning(model, phase.mode, k=phase.k)
        lr = optimizers[first].param_groups[0]['lr']
        stats['val_loss'] = architect.step(train_batch, val_batch, groups[first], xi=lr,
                                           weight_decay=weight_decay).detach()
    for group, mode in phase.trains:
        if switches:
            set_pruning(model, mode, k=phase.k)
        params = [p for p in groups[group] if p.requires_grad]
        loss = F.cross_entropy(model(x), y)
        optimizers[group].zero_grad(set_to_none=True)
        averaged_step(optimizers[group], params, torch.autograd.grad(loss, params, allow_unused=True), grad_clip)
        stats[f'{group}_loss'] = loss.detach()
    return stats
