"""HYDRA-style pruned retraining, one stage at a time: what each stage starts from and what it trains.

Each stage is a :class:`~prdarts_timm.stage.Stage` record (``TrainConfig.stage(name)``); this module reads its
fields, never its name.

| stage    | starts from                  | k      | mask                            | trained                  |
|----------|------------------------------|--------|---------------------------------|--------------------------|
| pretrain | random init (or ``source``)  | 1      | none (dense)                    | weights, biases, BN      |
| prune    | the pretrained weights       | target | top-k of scores, re-selected    | scores only              |
| finetune | the pruned checkpoint        | target | the prune stage's, fixed        | weights, biases, BN      |

Prune starts from the scaled score init (its first mask is layer-wise magnitude pruning) and leaves every
weight, bias and BN affine parameter as pretrained (BN running statistics do follow the masked network).
Finetune takes the mask saved by prune as it is; it never re-selects it.
"""
from pathlib import Path
from typing import Any, Dict, Optional

import timm
import torch
import torch.nn as nn

from ..builder import create_model
from ..checkpoint import CheckpointError, load_state_dict_checked, read_state_dict, training_only
from ..config import ConfigError
from ..layers import convert_to_pruned, kept_count, pruned_layers
from ..pruning import fix_current_masks, init_scores_scaled, set_global_k, set_pruning
from ..stage import Stage
from .config import STAGES

__all__ = ['build_model', 'prepare_stage', 'read_source', 'check_kept_fraction', 'follow_global_k',
           'set_drop_path_scale']

# Dense weights can hold a few exact zeros (a uniform init draws 0.0 about once in 2**24 values), which loading
# keeps as a zero pattern; a source counts as pruned only when more than this fraction of its weights is zero.
STRAY_ZEROS = 0.01  # layers the inference network drops: pruned per layer, never in a global ranking

SOURCE_HINT = ('build the model the source was trained with: the same model, model_kwargs, genotype, num_classes, '
               'cifar_stem and auxiliary_weight (0 or not: the auxiliary head)')


def build_model(name: str, model_args: Dict[str, Any], cifar_stem: bool = False, pretrained: bool = False,
                reset_classifier: bool = False) -> nn.Module:
    """``name`` built with ``model_args`` (``timm.create_model`` kwargs; :meth:`TrainConfig.model_args`), every
    conv and linear a pruned layer (in dense mode). ``reset_classifier``: pretrained weights get a new classifier
    even for the class count they have (timm keeps theirs then)."""
    arch = name.split('.')[0]
    if model_args.get('auxiliary') and timm.is_model(arch) and arch not in timm.list_models(module='prdarts'):
        raise ConfigError(f'{name} has no auxiliary head: build it without one (auxiliary_weight 0; the '
                          'auxiliary loss applies to the PR-DARTS models)')
    model = create_model(name, cifar_stem=cifar_stem, pretrained=pretrained, **model_args)
    if pretrained and reset_classifier:
        model.reset_classifier(model.num_classes)
    return convert_to_pruned(model)


def prepare_stage(model: nn.Module, stage: Stage, source: Optional[Dict[str, torch.Tensor]] = None,
                  source_name: str = '', global_k: bool = False, pretrained: bool = False) -> None:
    """Put a freshly built ``model`` in the state ``stage`` (a :class:`~prdarts_timm.stage.Stage`) trains,
    starting from the ``source`` state dict, or (``pretrained=True``) from the weights the model was created
    with: then a dense stage releases their masks (dense fine-tuning) and a fixed-mask stage keeps them as the
    zeros give them (sparse fine-tuning), whatever k they have; a new classifier stays dense.

    What the stage says is done, read from the record: its scores initialised (scaled magnitudes), its mode
    ('dense', 'learn' at its k per layer or with ``global_k``, 'fixed': the source's mask, checked against its
    k), and only the groups it trains (weights with biases and BN, or scores) left trainable.

    Raises:
        CheckpointError: no source for a stage that is not dense; a source of another architecture; a pruned
            source for a stage that starts a mask or a dense one; a source pruned at another k (or per layer vs
            global) for a fixed-mask stage.
    """
    if not stage.dense and source is None and not pretrained:
        raise CheckpointError(f'{stage.name} starts from a checkpoint: pass source')
    if source is not None:
        load_state_dict_checked(model, source, source_name, hints=[SOURCE_HINT])
    layers = [layer for _, layer in pruned_layers(model)]
    if stage.init_scores or (stage.dense and not pretrained):  # it starts from dense weights
        pruned = [name for name, layer in pruned_layers(model) if layer.num_keep < layer.weight.numel()]
        zeros = sum(layer.weight.numel() - layer.num_keep for layer in layers)
        if zeros > STRAY_ZEROS * sum(layer.weight.numel() for layer in layers):
            raise CheckpointError(
                f'{stage.name} starts from dense weights, but the source {source_name!r} is already pruned '
                f'({len(pruned)} layers, e.g. {pruned[0]!r}). Pass the pretrain stage\'s model.safetensors as '
                'source, or run finetune on this one (--stages [finetune])')
    if stage.init_scores:
        init_scores_scaled(model)
    if stage.mode == 'learn':
        set_pruning(model, 'learn', k=stage.k, global_k=global_k, exclude=training_only(model))
    elif stage.mode == 'fixed':
        if not pretrained:
            check_kept_fraction(model, stage.k, global_k, source_name)
        # loading a pruned state dict put the pruned layers in 'fixed' mode with the saved masks; pretrained
        # weights hold their zeros as a pattern, made explicit here so that checkpoints restore it exactly
        fix_current_masks(model)
    else:
        set_pruning(model, 'dense')
    scores = {id(layer.scores) for layer in layers if layer.scores is not None}
    for p in model.parameters():
        p.requires_grad_(('scores' if id(p) in scores else 'weights') in stage.groups)


def read_source(stage: Stage, path: Optional[Path]) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict ``stage`` starts from (``path``; none for a dense stage from scratch), or a
    :class:`CheckpointError` that says which stage to run first."""
    index = STAGES.index(stage.name)
    previous = STAGES[index - 1] if index > 0 else None
    if path is None:
        if stage.dense:
            return None
        raise CheckpointError(f'{stage.name} starts from the {previous} stage\'s weights: run both in one run '
                              f'(stages [{previous}, {stage.name}]) or set source to <run>/{previous}/model.safetensors')
    if not path.exists():
        raise CheckpointError(f'the {stage.name} stage\'s source checkpoint {str(path)!r} does not exist' + (
            f'; run the {previous} stage first (stages [{previous}, {stage.name}]) or set source to an existing file'
            if previous else '; set source to an existing file, or to none to pretrain from scratch'))
    return read_state_dict(path)


def follow_global_k(model: nn.Module, k: float, global_k: bool) -> None:
    """With ``global_k``, re-rank all scores after a prune step: the per-layer counts follow the scores."""
    if global_k:
        set_global_k(model, k, exclude=training_only(model))


def check_kept_fraction(model: nn.Module, k: float, global_k: bool, source_name: str = '') -> None:
    """Raise a :class:`CheckpointError` unless the masks keep exactly what ``k`` (per layer, or global over
    the inference network's layers with the training-only ones per layer) keeps."""
    layers, apart = list(pruned_layers(model)), training_only(model)
    ranked = [(n, layer) for n, layer in layers if not (global_k and n.startswith(apart))]
    per_layer = [(n, layer) for n, layer in layers if not global_k or n.startswith(apart)]
    kept = sum(layer.num_keep for _, layer in layers)
    total = sum(layer.weight.numel() for _, layer in layers)
    wrong = None
    off = [(name, layer.num_keep, kept_count(layer.weight.numel(), k)) for name, layer in per_layer
           if layer.num_keep != kept_count(layer.weight.numel(), k)]
    if off:
        name, have, want = off[0]
        wrong = (f'{len(off)} layer(s) keep another count than k={k} per layer, e.g. {name!r} keeps {have}, '
                 f'k={k} keeps {want}')
    elif global_k:
        ranked_kept = sum(layer.num_keep for _, layer in ranked)
        ranked_total = sum(layer.weight.numel() for _, layer in ranked)
        if ranked_kept != kept_count(ranked_total, k):
            wrong = (f'keeps {ranked_kept} of {ranked_total} weights, global k={k} keeps '
                     f'{kept_count(ranked_total, k)}')
    if wrong is None:
        return
    raise CheckpointError(
        f'the source {source_name!r} was pruned at another k: it {wrong} (it keeps {kept / total:.4g} of all '
        f'weights). Finetune with the k and global_k the prune stage used, or prune again at k={k}')


def set_drop_path_scale(model: nn.Module, scale: float, base: Dict[int, float]) -> None:
    """Every timm ``DropPath`` at ``scale`` x its rate at build time (``base``: id -> rate, filled on first use)."""
    for m in model.modules():
        if isinstance(m, timm.layers.DropPath):
            m.drop_prob = base.setdefault(id(m), m.drop_prob) * scale
