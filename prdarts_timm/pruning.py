"""Model-level pruning state shared by the search and the retraining: k, modes, score init."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from .layers import MODES, check_k, kept_count, pruned_layers

__all__ = ['set_pruning', 'set_global_k', 'set_random_masks', 'init_scores_scaled', 'fix_current_masks', 'count_params']


def _layers(model: nn.Module):
    layers = [layer for _, layer in pruned_layers(model)]
    if not layers:
        raise ValueError(f'{type(model).__name__} has no pruned layers; call convert_to_pruned(model) first.')
    return layers


def set_pruning(model: nn.Module, mode: str, k: Optional[float] = None, global_k: bool = False,
                exclude: Sequence[str] = ()) -> nn.Module:
    """Put every pruned layer of ``model`` in ``mode`` ('dense', 'learn', 'fixed') at kept fraction ``k``.

    ``k`` is per layer (each layer keeps its top-k fraction), or one threshold across all layers with
    ``global_k=True`` (layers named by an ``exclude`` prefix then keep k of their own). 'dense' needs no k.
    In 'fixed' mode the mask is selected once, here.
    """
    if mode not in MODES:
        raise ValueError(f'unknown pruning mode {mode!r}; expected one of {MODES}')
    layers = _layers(model)
    if mode == 'dense':
        for layer in layers:
            layer.set_mode('dense')
        return model
    if k is None:
        raise ValueError(f"mode {mode!r} needs k, the fraction of weights kept (e.g. k=0.01 for 99% sparsity)")
    check_k(k)
    for layer in layers:
        layer.set_mode(mode)
    if global_k:
        set_global_k(model, k, exclude)
    else:
        for layer in layers:
            layer.set_k(k)
    return model


@torch.no_grad()
def set_global_k(model: nn.Module, k: float, exclude: Sequence[str] = ()) -> None:
    """One threshold across all pruned layers: keep the top-k fraction of all ``|scores|`` together.

    Sets each layer's kept count from the current scores; call again to follow moving scores. Layers whose
    name starts with a prefix in ``exclude`` (e.g. a training-only auxiliary head) are left out of the
    ranking and keep k of their own weights.
    """
    _layers(model)
    named = [(name, layer) for name, layer in pruned_layers(model)]
    ranked = [layer for name, layer in named if not name.startswith(tuple(exclude))]
    for name, layer in named:
        if name.startswith(tuple(exclude)):
            layer.set_k(k)
    if not ranked:
        raise ValueError(f'exclude={list(exclude)} leaves no layer to rank')
    flat = torch.cat([layer.scores.detach().abs().flatten() for layer in ranked])
    num_keep = kept_count(flat.numel(), k)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat, num_keep, sorted=False).indices] = True
    start = 0
    for layer in ranked:
        n = layer.weight.numel()
        layer.set_num_keep(int(keep[start:start + n].sum().item()))
        start += n


@torch.no_grad()
def set_random_masks(model: nn.Module, k: float, seed: int = 0) -> nn.Module:
    """Fix a random mask keeping ``k`` of each pruned layer (uniform random scores, then 'fixed' mode).

    The sparsity pattern of a pruned network without training one, for latency and deployment checks; its
    own generator, so the global RNG is left as it is. ``bake(model)`` then writes the zeros.
    """
    set_pruning(model, 'learn', k=k)
    generator = torch.Generator().manual_seed(seed)
    for layer in _layers(model):
        layer.scores.copy_(torch.rand(layer.scores.shape, generator=generator))
    return set_pruning(model, 'fixed', k=k)


def fix_current_masks(model: nn.Module) -> nn.Module:
    """Every pruned layer in 'fixed' mode with the pattern it has now, held as saved pruning state (scores and
    a mask in the state dict): the zero pattern of loaded sparse weights, the mask of a loaded checkpoint, or an
    all-ones mask for a dense layer. A checkpoint of the model then restores exactly these masks."""
    for layer in _layers(model):
        layer._create_state()
        layer._set_mode_flags('fixed')
    return model


def init_scores_scaled(model: nn.Module) -> None:
    """Scaled score init on every pruned layer (the masks become layer-wise magnitude pruning)."""
    for layer in _layers(model):
        layer.init_scores_scaled()


def count_params(model: nn.Module, conv_linear_only: bool = False) -> int:
    """Parameters of the network itself (``sum(p.numel())``), without pruning scores where a model holds them.

    ``conv_linear_only=True`` counts only conv and linear weights (no biases, no BN), the size that
    pruning acts on.
    """
    if conv_linear_only:
        return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    scores = {id(layer.scores) for _, layer in pruned_layers(model) if layer.scores is not None}
    return sum(p.numel() for p in model.parameters() if id(p) not in scores)
