"""What keeps several processes identical: gradient (or statistic) averaging and a rank-agreement check.

Both are no-ops in a single process; with ``torch.distributed`` initialised (accelerate launch, torchrun)
they act across all ranks.
"""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from .io import atomic_write_json

__all__ = ['average_across_processes', 'averaged_step', 'broadcast_from_rank0', 'check_ranks_agree']


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_across_processes(tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Mean of each tensor over all processes (one flat all-reduce); the tensors themselves when single-process."""
    tensors = list(tensors)
    if _world() == 1 or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


def averaged_step(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter],
                  grads: Sequence[Optional[torch.Tensor]], grad_clip: float) -> None:
    """One optimizer step that keeps every process identical: each parameter's gradient becomes the mean over
    processes of its entry in ``grads`` (``None``, a parameter the loss did not reach: zero), the gradients are
    clipped to a global norm of ``grad_clip`` (0: no clipping), then ``optimizer`` steps."""
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    for p, g in zip(params, average_across_processes(grads)):
        p.grad = g
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


@torch.no_grad()
def broadcast_from_rank0(module: torch.nn.Module) -> None:
    """Every parameter and buffer of ``module`` as rank 0 has it: one starting point on every rank."""
    if _world() > 1:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def check_ranks_agree(mine: Dict[str, Any], path: Path, what: str) -> List[Dict[str, Any]]:
    """Gather every rank's ``mine`` (fingerprints of its state, plus ``rank``), write them to ``path`` from rank
    0, and raise if any rank's fingerprints differ from rank 0's: ``what`` names the broken thing."""
    ranks = [mine]
    if _world() > 1:
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, mine)
    if mine.get('rank', 0) == 0:
        atomic_write_json(path, ranks)
    strip = [{k: v for k, v in r.items() if k != 'rank'} for r in ranks]
    if any(r != strip[0] for r in strip):
        raise RuntimeError(f'{what} differs across ranks (see {path})')
    return ranks
