"""The PR-DARTS search schedule: dense pretrain, prune (learn scores), sparse finetune; or one-step.

| phase     | k      | mask          | trained per step                          |
|-----------|--------|---------------|-------------------------------------------|
| pretrain  | 1      | none (dense)  | alpha step, then a weight step            |
| prune     | target | re-selected   | (alpha step if ``arch_step``), score step |
| finetune  | target | fixed         | alpha step, then a weight step            |
| onestep   | target | per sub-step  | alpha step, weight step, score step       |

The prune phase starts from the scaled score init (masks = layer-wise magnitude pruning); the one-step
search starts from it too and keeps k at the target throughout.
"""
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_k
from ..pruning import init_scores_scaled, set_pruning
from ..distributed import averaged_step
from .architect import Architect, Batch

__all__ = ['Phase', 'PHASE_NAMES', 'enter_phase', 'trained_parameters', 'search_step']

PHASE_NAMES = ('pretrain', 'prune', 'finetune', 'onestep')


@dataclass
class Phase:
    """One phase of the search, as given in a config."""
    name: str
    epochs: int
    lr: float
    lr_min: float = 0.001
    arch_step: bool = True

    def __post_init__(self):
        if self.name not in PHASE_NAMES:
            raise ValueError(f'unknown phase {self.name!r}; expected one of {PHASE_NAMES}')
        if self.epochs < 0:
            raise ValueError(f'phase {self.name}: epochs must be >= 0, got {self.epochs}')


def enter_phase(model: nn.Module, phase: Phase, k: float, init_scores: bool = True) -> None:
    """Set the supernet's pruned layers for ``phase`` at target kept fraction ``k``.

    ``init_scores=False`` when resuming inside a phase: the scores come from the checkpoint.
    """
    check_k(k)
    if phase.name == 'pretrain':
        set_pruning(model, 'dense')
        return
    if init_scores and phase.name in ('prune', 'onestep'):
        init_scores_scaled(model)
    set_pruning(model, 'learn' if phase.name == 'prune' else 'fixed', k=k)


def trained_parameters(model: nn.Module, phase: Phase) -> Dict[str, List[nn.Parameter]]:
    """The parameter groups a phase optimizes: ``weights`` and / or ``scores`` (never alpha)."""
    weights = list(model.weight_parameters())
    scores = list(model.score_parameters())
    if phase.name == 'prune':
        return {'scores': scores}
    if phase.name == 'onestep':
        return {'weights': weights, 'scores': scores}
    return {'weights': weights}


def search_step(model: nn.Module, phase: Phase, architect: Architect, optimizers: Dict[str, torch.optim.Optimizer],
                train_batch: Batch, val_batch: Batch, k: float, grad_clip: float = 5.0,
                weight_decay: float = 0.0) -> Dict[str, torch.Tensor]:
    """One search iteration of ``phase``: the alpha step (if any), then the weight and / or score steps.
    Returns the losses as 0-dim tensors, unread (reading them is a host sync on a GPU).

    Gradients are averaged across processes before every update, so all ranks stay identical.
    """
    x, y = train_batch
    stats = {}
    groups = trained_parameters(model, phase)
    if phase.arch_step:
        if phase.name == 'onestep':
            set_pruning(model, 'fixed', k=k)  # the unrolled step moves the weights, through the current mask
        inner = groups['weights'] if 'weights' in groups else groups['scores']
        lr = optimizers['weights' if 'weights' in groups else 'scores'].param_groups[0]['lr']
        stats['val_loss'] = architect.step(train_batch, val_batch, inner, xi=lr, weight_decay=weight_decay).detach()
    for group in ('weights', 'scores'):
        if group not in groups:
            continue
        if phase.name == 'onestep':
            set_pruning(model, 'fixed' if group == 'weights' else 'learn', k=k)
        params = [p for p in groups[group] if p.requires_grad]
        loss = F.cross_entropy(model(x), y)
        optimizers[group].zero_grad(set_to_none=True)
        averaged_step(optimizers[group], params, torch.autograd.grad(loss, params, allow_unused=True), grad_clip)
        stats[f'{group}_loss'] = loss.detach()
    return stats
