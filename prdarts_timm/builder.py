"""Building any timm model for pruned training: clear errors for unknown names, and a CIFAR (32x32) stem.

``adapt_to_cifar`` is the documented, opt-in change the recipes make to ImageNet-style timm baselines so that
they suit 32x32 inputs (``--cifar_stem true``); it is never applied silently.

* ResNet family (``resnet18``, ...): the 7x7 stride-2 stem conv becomes a 3x3 stride-1 conv and the max-pool
  is removed (the usual CIFAR ResNet; total stride 32 -> 8, a 32x32 input ends at 4x4).
* EfficientNet / MobileNet family (``mobilenetv2_100``, ...): the stem conv and the first strided block get
  stride 1 (the kuangliu CIFAR MobileNet-v2 that PR-DARTS compares against; total stride 32 -> 8).

The model's ``pretrained_cfg`` then says ``input_size=(3, 32, 32)`` with the CIFAR-10 mean / std, so
evaluation and export pick the CIFAR transforms. PR-DARTS models choose their stem with ``stem_type``.
"""
import difflib
import os
from typing import Any, Dict, Sequence, Tuple, Union

import timm
import torch.nn as nn

from .checkpoint import load_state_dict_checked, read_state_dict
from .errors import ModelError
from .cifar import CIFAR10_MEAN, CIFAR10_STD
from .models.prdarts import PRDarts

__all__ = ['ModelError', 'create_model', 'load_model', 'adapt_to_cifar', 'drop_training_only']


def create_model(name: str, cifar_stem: bool = False, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained, **kwargs)``, then :func:`adapt_to_cifar` if asked, with clear
    errors for an unknown name or an argument the model does not take."""
    if pretrained and cifar_stem:
        raise ModelError('cifar_stem changes the stem, so ImageNet weights would not fit it: use pretrained or '
                         'cifar_stem, not both')
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        if not str(e).startswith('Unknown model'):
            raise
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        raise ModelError(
            f"timm does not know a model named {name!r}.{hint} List the PR-DARTS models with "
            "python -c \"import timm, prdarts_timm; print(timm.list_models('prdarts*'))\" "
            "(timm.list_models(module='prdarts') includes the DARTS baselines; timm.list_models() all).") from None
    except TypeError as e:
        if 'unexpected keyword argument' not in str(e):
            raise
        raise ModelError(f'{name} does not take one of the arguments {sorted(kwargs)} ({e}); genotype and '
                         'PR-DARTS arguments such as C / layers / auxiliary apply to the PR-DARTS models only') from None
    return adapt_to_cifar(model) if cifar_stem else model


def load_model(name: str, weights: Union[str, os.PathLike], cifar_stem: bool = False, hints: Sequence[str] = (),
               **kwargs: Any) -> nn.Module:
    """:func:`create_model` with the state dict in the file ``weights`` loaded into it (checked: a file that does
    not fit is a :class:`~prdarts_timm.errors.CheckpointError`, with ``hints`` added to its message)."""
    model = create_model(name, cifar_stem=cifar_stem, **kwargs)
    return load_state_dict_checked(model, read_state_dict(weights), str(weights), hints=hints)


def drop_training_only(model: nn.Module) -> nn.Module:
    """``model`` without its training-only submodules (set to None, as the inference network has them), in place."""
    for name in getattr(model, 'training_only_modules', ()):
        setattr(model, name, None)
    return model


def adapt_to_cifar(model: nn.Module) -> nn.Module:
    """Give an ImageNet-style timm ResNet or EfficientNet / MobileNet a 32x32 (CIFAR) stem, in place (see the
    module docstring for exactly what changes). Call it before ``convert_to_pruned``."""
    if isinstance(model, PRDarts):
        raise ModelError('PR-DARTS models choose their stem with stem_type: the *_c10 models already have the '
                         'CIFAR stem, so leave cifar_stem off for them')
    if isinstance(model, timm.models.ResNet) and type(model.conv1) is nn.Conv2d:
        old = model.conv1
        model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=old.bias is not None)
        model.maxpool = nn.Identity()
        stride_removed = 4
    elif isinstance(model, (timm.models.EfficientNet, timm.models.MobileNetV3)) and type(model.conv_stem) is nn.Conv2d:
        model.conv_stem.stride = (1, 1)
        first_strided = next((block for stage in model.blocks for block in stage
                              if any(_is_strided(m) for m in block.modules())), None)
        if first_strided is not None:
            for m in first_strided.modules():
                if _is_strided(m):
                    m.stride = (1, 1)
        stride_removed = 4 if first_strided is not None else 2
    else:
        raise ModelError(
            f'no CIFAR stem adaptation for {type(model).__name__}: cifar_stem supports timm ResNets (resnet18, ...) '
            'and the EfficientNet / MobileNet family (mobilenetv2_100, ...). Train this model at its own input '
            'size (resize the data), or use a PR-DARTS *_c10 model')
    _set_cifar_cfg(model, stride_removed)
    return model


def _is_strided(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and tuple(m.stride) == (2, 2)


def _set_cifar_cfg(model: nn.Module, stride_removed: int) -> None:
    cfg: Dict[str, Any] = dict(getattr(model, 'pretrained_cfg', None) or {})
    cfg.update(input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0, crop_mode='center', mean=CIFAR10_MEAN,
               std=CIFAR10_STD, interpolation='bilinear', cifar_stem=True)
    for key in ('url', 'hf_hub_id', 'file', 'tag', 'test_input_size'):
        cfg.pop(key, None)  # the ImageNet weights do not fit the changed stem
    model.pretrained_cfg = model.default_cfg = cfg
    for info in getattr(model, 'feature_info', None) or []:
        if isinstance(info, dict) and 'reduction' in info:
            info['reduction'] = max(1, info['reduction'] // stride_removed)
