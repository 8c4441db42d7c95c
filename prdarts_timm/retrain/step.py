"""One training step of retraining on accelerate's standard path: the training forward as a module that
``accelerator.prepare`` wraps (DDP on several processes), the loss under ``accelerator.autocast``,
``accelerator.accumulate`` / ``backward`` / ``clip_grad_norm_`` and the prepared optimizer's step.

With ``gradient_accumulation_steps`` N, N batches make one update: accelerate scales each batch's loss by 1/N,
skips the gradient all-reduce on the first N-1 (DDP ``no_sync``) and the prepared optimizer steps (and zeroes)
only on the N-th, so the update equals one step of the N batches together, BatchNorm's batch statistics aside.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

__all__ = ['TrainingForward', 'accumulated_step']


class TrainingForward(nn.Module):
    """A classifier's training forward, ``(logits, auxiliary logits or None)``, as one module: what
    ``accelerator.prepare`` wraps, so that DDP sees the forward it must synchronise. PR-DARTS models give both
    through ``forward_aux``; any other timm model gives its logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if hasattr(self.model, 'forward_aux'):
            return self.model.forward_aux(x)
        return self.model(x), None


def accumulated_step(accelerator, net: nn.Module, optimizer, loss_of: Callable[[], torch.Tensor],
                     grad_clip: float) -> torch.Tensor:
    """One batch: ``loss_of()`` (which runs the prepared ``net``) under autocast, its backward, and on the batch
    that completes an accumulation the gradients clipped to a global norm of ``grad_clip`` (0: no clipping) and
    the prepared ``optimizer``'s step. Returns the batch's loss, detached and unread (no host sync)."""
    with accelerator.accumulate(net):
        with accelerator.autocast():
            loss = loss_of()
        accelerator.backward(loss)
        if grad_clip > 0 and accelerator.sync_gradients:
            accelerator.clip_grad_norm_([p for g in optimizer.param_groups for p in g['params']], grad_clip)
        optimizer.step()  # a prepared optimizer steps and zeroes only where accelerate syncs the gradients
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()
