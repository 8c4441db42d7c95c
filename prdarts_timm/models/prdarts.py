""" PR-DARTS (DASS) cell networks, built from any genotype, with pruned convs and linears throughout.

Paper: `PR-DARTS: Pruning-Based Differentiable Architecture Search` - https://arxiv.org/abs/2207.06968
(later `DASS: Differentiable Architecture Search for Sparse Neural Networks`, ACM TECS 2023).
Cell network as in `DARTS: Differentiable Architecture Search` - https://arxiv.org/abs/1806.09055

Every conv and linear is a :class:`~prdarts_timm.layers.PrunedConv2d` / ``PrunedLinear`` in dense mode: a new
model holds exactly the plain network (no scores, no masks), and can be pruned and retrained as is
(``prdarts_timm.pruning.set_pruning`` adds the pruning state).
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, SelectAdaptivePool2d
from timm.models import (
    PretrainedCfg, build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, list_pretrained, register_model,
)
from timm.models._features import feature_take_indices

from ..checkpoint import decode_sparse
from ..cifar import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from ..errors import CheckpointError, PretrainedWeightsError
from ..genotypes import Genotype, get_genotype
from ..io import file_sha256
from ..layers import PrunedConv2d, PrunedLinear
from ..ops import FactorizedReduce, ReLUConvBN, make_op

__all__ = ['PRDarts', 'Cell', 'CIFAR10_MEAN', 'CIFAR10_STD', 'PretrainedWeightsError']



class Cell(nn.Module):
    """A DARTS cell: two preprocessed inputs, ``len(edges) // 2`` nodes of two edges each, concat output."""

    def __init__(
            self,
            edges: Tuple[Tuple[str, int], ...],
            concat: Tuple[int, ...],
            C_prev_prev: int,
            C_prev: int,
            C: int,
            reduction: bool,
            reduction_prev: bool,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.ops = nn.ModuleList()
        self.indices: List[int] = []
        self.drop_edge: List[bool] = []
        for name, index in edges:
            stride = 2 if reduction and index < 2 else 1
            op = make_op(name, C, stride)
            self.ops.append(op)
            self.indices.append(index)
            self.drop_edge.append(not isinstance(op, nn.Identity))
        self.concat: List[int] = list(concat)
        self.multiplier = len(concat)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self._forward_states([self.preprocess0(s0), self.preprocess1(s1)])

    @torch.jit.ignore
    def forward_from_relu(self, r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of ``relu(s0)``, ``relu(s1)``: both preprocessing ops begin with that ReLU, and the
        training forward (:meth:`PRDarts.forward_aux`) computes it once for the two cells that read each input."""
        return self._forward_states([self.preprocess0.forward_after_relu(r0), self.preprocess1.forward_after_relu(r1)])

    def _forward_states(self, states: List[torch.Tensor]) -> torch.Tensor:
        first = states[0]
        for i, op in enumerate(self.ops):
            h = op(states[self.indices[i]])
            if self.drop_edge[i]:
                h = self.drop_path(h)
            if i % 2 == 0:
                first = h
            else:
                states.append(first + h)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Sequential):
    """DARTS auxiliary classifier on the 8x8 (CIFAR) or 14x14 (ImageNet) features."""

    def __init__(self, C: int, num_classes: int, imagenet: bool = False):
        super().__init__(
            nn.ReLU(inplace=False),  # its input is also the next cell's input
            nn.AvgPool2d(5, stride=2 if imagenet else 3, padding=0, count_include_pad=False),
            PrunedConv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            PrunedConv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
            nn.Flatten(1),
            PrunedLinear(768, num_classes),
        )

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of an input that is already ``relu(x)`` (every module after the first)."""
        for module in list(self)[1:]:
            x = module(x)
        return x


class PRDarts(nn.Module):
    """DARTS-style evaluation network for any genotype.

    ``stem_type='cifar'``: a 3x3 conv to ``stem_multiplier * C`` channels (32x32 inputs).
    ``stem_type='imagenet'``: the DARTS mobile-setting stems, stride 8 in total (224x224 inputs).
    Reduction cells sit at ``layers // 3`` and ``2 * layers // 3``.
    """
    # submodules used in training only: the inference network (bake + export, compaction) drops them, and a
    # global pruning threshold ranks the inference network's weights without them (prdarts_timm.builder)
    training_only_modules = ('aux_head',)

    def __init__(
            self,
            genotype: Union[str, Dict, Genotype] = 'prdarts_99',
            C: int = 36,
            layers: int = 20,
            num_classes: int = 10,
            in_chans: int = 3,
            stem_type: str = 'cifar',
            stem_multiplier: int = 3,
            auxiliary: bool = False,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            global_pool: str = 'avg',
    ):
        super().__init__()
        if stem_type not in ('cifar', 'imagenet'):
            raise ValueError(f"stem_type must be 'cifar' or 'imagenet', got {stem_type!r}")
        if layers < 3 or C < 1:
            raise ValueError(f'need C >= 1 and layers >= 3 (two reduction cells and a normal one), got C={C}, '
                             f'layers={layers}')
        self.genotype = get_genotype(genotype)
        # everything the architecture needs, JSON-ready: an exported config.json carries it as model_args
        self.arch_args = dict(genotype=self.genotype.to_dict(), C=C, layers=layers, stem_type=stem_type,
                              stem_multiplier=stem_multiplier)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        imagenet = stem_type == 'imagenet'

        if imagenet:
            self.stem0 = nn.Sequential(
                PrunedConv2d(in_chans, C // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C // 2),
                nn.ReLU(inplace=True),
                PrunedConv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C),
            )
            self.stem1 = nn.Sequential(
                nn.ReLU(inplace=False),  # stem0's output is a feature point: keep it intact
                PrunedConv2d(C, C, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C),
            )
            C_prev_prev, C_prev, C_curr, reduction_prev = C, C, C, True
            self.feature_info = [
                dict(num_chs=C, reduction=4, module='stem0'), dict(num_chs=C, reduction=8, module='stem1')]
            self._feature_positions = [-2, -1]
            reduction = 8
        else:
            C_stem = stem_multiplier * C
            self.stem0 = nn.Sequential(
                PrunedConv2d(in_chans, C_stem, 3, padding=1, bias=False),
                nn.BatchNorm2d(C_stem),
            )
            self.stem1 = nn.Identity()
            C_prev_prev, C_prev, C_curr, reduction_prev = C_stem, C_stem, C, False
            self.feature_info = [dict(num_chs=C_stem, reduction=1, module='stem0')]
            self._feature_positions = [-2]
            reduction = 1

        reduce_at = (layers // 3, 2 * layers // 3)
        self.aux_index = 2 * layers // 3
        cells = []
        C_aux = C_prev
        for i in range(layers):
            is_reduction = i in reduce_at
            if is_reduction:
                C_curr *= 2
                # the stage before each reduction ends at the previous cell
                if i > 0:
                    self.feature_info.append(dict(num_chs=C_prev, reduction=reduction, module=f'cells.{i - 1}'))
                    self._feature_positions.append(i - 1)
                reduction *= 2
            cell_genotype = (self.genotype.reduce, self.genotype.reduce_concat) if is_reduction else (
                self.genotype.normal, self.genotype.normal_concat)
            cell = Cell(*cell_genotype, C_prev_prev, C_prev, C_curr, is_reduction, reduction_prev, drop_path_rate)
            cells.append(cell)
            reduction_prev = is_reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_index:
                C_aux = C_prev
        self.cells = nn.ModuleList(cells)
        self.feature_info.append(dict(num_chs=C_prev, reduction=reduction, module=f'cells.{layers - 1}'))
        self._feature_positions.append(layers - 1)
        self.num_features = self.head_hidden_size = C_prev

        self.aux_head = AuxiliaryHead(C_aux, num_classes, imagenet) if auxiliary and num_classes > 0 else None
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = self._make_classifier(num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.global_pool.is_identity():
            raise ValueError("global_pool='' leaves a feature map; it needs num_classes=0 (no classifier)")
        return PrunedLinear(self.num_features * self.global_pool.feat_mult(), num_classes)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem[01]',
            blocks=[(r'^cells\.(\d+)', None), (r'^aux_head', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names to keep out of weight decay: none beyond timm's default (biases and norms)."""
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool == '' and num_classes > 0:
            raise ValueError("global_pool='' leaves a feature map; it needs num_classes=0 (no classifier)")
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.classifier = self._make_classifier(num_classes)
        if self.aux_head is not None:
            self.aux_head = None if num_classes <= 0 else AuxiliaryHead(
                self.aux_head[2].in_channels, num_classes, isinstance(self.stem1, nn.Sequential))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features at the ``feature_info`` points (stems and the last cell of each resolution)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        positions = [self._feature_positions[i] for i in take_indices]
        intermediates = []
        s0 = self.stem0(x)
        if -2 in positions:
            intermediates.append(s0)
        s1 = self.stem1(s0)
        if -1 in positions:
            intermediates.append(s1)
        last = self._feature_positions[max_index] if stop_early else len(self.cells) - 1
        for i, cell in enumerate(self.cells):
            if i > last:
                break
            s0, s1 = s1, cell(s0, s1)
            if i in positions:
                intermediates.append(s1)
        if intermediates_only:
            return intermediates
        return s1, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the cells (and head) not needed for the given intermediates."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last = self._feature_positions[max_index]
        self.cells = self.cells[:max(last + 1, 0)]
        if prune_head:
            self.aux_head = None
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        for cell in self.cells:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                s0, s1 = s1, checkpoint(cell, s0, s1, use_reentrant=False)
            else:
                s0, s1 = s1, cell(s0, s1)
        return s1

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)

    @torch.jit.ignore
    def forward_aux(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(logits, auxiliary logits) for training with the DARTS auxiliary loss; aux is None without a head.

        The logits are :meth:`forward`'s. Every reader of a cell's output but the head begins with a ReLU of it
        (the next two cells' preprocessing, the auxiliary head): here it is computed once per tensor (a training
        step of ``prdarts_c10_micro`` at batch 64 on 2 CPU cores: 1.16x faster than with a ReLU per reader).
        Gradient checkpointing (:meth:`set_grad_checkpointing`) applies per cell, as in :meth:`forward_features`."""
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        r0 = F.relu(s0)
        r1 = r0 if s1 is s0 else F.relu(s1)
        aux = None
        last = len(self.cells) - 1
        for i, cell in enumerate(self.cells):
            if self.grad_checkpointing:
                s0, s1 = s1, checkpoint(cell.forward_from_relu, r0, r1, use_reentrant=False)
            else:
                s0, s1 = s1, cell.forward_from_relu(r0, r1)
            r0, r1 = r1, (F.relu(s1) if i < last or i == self.aux_index else s1)
            if i == self.aux_index and self.aux_head is not None:
                aux = self.aux_head.forward_after_relu(r1)
        return self.forward_head(s1), aux


def _raise_if_no_weights(variant: str, kwargs: Dict[str, Any]) -> PretrainedCfg:
    """The pretrained cfg ``pretrained=True`` will load from; raises if it (and the overlay) has no weights."""
    cfg = kwargs.get('pretrained_cfg')
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    if isinstance(cfg, str) or cfg is None:
        cfg = get_pretrained_cfg(f'{variant}.{cfg}' if cfg else variant)  # timm names an invalid tag
    elif isinstance(cfg, dict):
        cfg = PretrainedCfg(**cfg)
    if not (cfg.has_weights or any(overlay.get(k) for k in ('url', 'file', 'hf_hub_id', 'state_dict'))):
        with_weights = sorted(list_pretrained('prdarts*') + list_pretrained('darts*'))
        raise PretrainedWeightsError(
            f'no pretrained weights exist for {variant}.{cfg.tag}. Tags with weights: '
            f'{", ".join(with_weights) if with_weights else "none yet"}. Create the model with '
            'pretrained=False, or train and export weights with the recipes (see README, "Weights") and '
            "load them with pretrained_cfg_overlay=dict(file='model.safetensors') or checkpoint_path=...")
    return cfg


def _create_prdarts(variant: str, pretrained: bool = False, **kwargs) -> PRDarts:
    if pretrained:
        cfg = _raise_if_no_weights(variant, kwargs)
        if cfg.file and not (kwargs.get('pretrained_cfg_overlay') or {}).get('file'):
            _verify_bundled(cfg.file)
    # CIFAR networks have 4 feature points (stem + 3 resolutions), ImageNet ones 5
    num_features = 5 if kwargs.get('stem_type') == 'imagenet' else 4
    return build_model_with_cfg(
        PRDarts, variant, pretrained,
        pretrained_filter_fn=_check_pretrained,
        feature_cfg=dict(feature_cls='hook', no_rewrite=True, out_indices=tuple(range(num_features))),
        **kwargs,
    )


def _check_pretrained(state_dict: Dict[str, torch.Tensor], model: 'PRDarts') -> Dict[str, torch.Tensor]:
    """Pretrained weights must fit the architecture (classifier aside: timm swaps it for another class
    count); a mismatch is a clear error rather than torch's list of size mismatches. Weights in the compact
    sparse form (``model.sparse.safetensors``) are decoded first."""
    state_dict = decode_sparse(state_dict)
    own = model.state_dict()
    pruning = ('.scores', '.mask')
    first_conv = f"{model.pretrained_cfg.get('first_conv') or 'stem0.0'}.weight"

    def adapted_by_timm(key: str, shape: Tuple[int, ...]) -> bool:
        """timm adapts the first conv to another ``in_chans`` after this filter (``adapt_input_conv``)."""
        target = own[key].shape
        return key == first_conv and len(shape) == 4 and shape[:1] + shape[2:] == target[:1] + target[2:]

    wrong = [k for k, v in state_dict.items() if not k.startswith('classifier.') and k in own
             and tuple(v.shape) != tuple(own[k].shape) and not adapted_by_timm(k, tuple(v.shape))]
    missing = [k for k in own if k not in state_dict and not k.endswith(pruning) and not k.startswith(
        ('classifier.', 'aux_head.'))]
    unexpected = [k for k in state_dict if k not in own and not k.endswith(pruning) and not k.startswith('classifier.')]
    if wrong or missing or unexpected:
        shown = wrong[:2] or missing[:2] or unexpected[:2]
        raise CheckpointError(
            f'the pretrained weights do not fit this {type(model).__name__} ({len(wrong)} shape mismatch(es), '
            f'{len(missing)} missing and {len(unexpected)} unexpected key(s), e.g. {shown}). They were exported '
            'for another genotype / C / layers: create the model from its folder (hf-hub:org/name or '
            'local-dir:path, whose config.json carries the architecture) or pass the model_args of that '
            'config.json')
    return state_dict


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (8, 8),
        'crop_pct': 1.0, 'crop_mode': 'center', 'interpolation': 'bilinear',
        'mean': CIFAR10_MEAN, 'std': CIFAR10_STD, 'label_names': CIFAR10_CLASSES,
        'first_conv': 'stem0.0', 'classifier': 'classifier', 'license': 'apache-2.0',
        'paper_ids': 'arXiv:2207.06968', 'paper_name': 'PR-DARTS: Pruning-Based Differentiable Architecture Search',
        **kwargs,
    }


def _cfg_in1k(**kwargs) -> Dict[str, Any]:
    return _cfg(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
        interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, label_names=None, **kwargs)


# Weights the package carries (prdarts_timm/weights/index.json: tag -> file, sha256, hf_hub_id). A tag gets a
# weight source only when the recipes have produced and exported its weights, so timm's registry never lists
# weights that do not exist. The bundled file is timm's 'file' source, which timm loads before trying the Hub:
# pretrained=True works offline, with no wait.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / 'weights'


def _read_weights_index(folder: Path = WEIGHTS_DIR) -> Dict[str, Dict[str, str]]:
    index = folder / 'index.json'
    return json.loads(index.read_text()) if index.is_file() else {}


BUNDLED_WEIGHTS = _read_weights_index()


def _weights(name: str) -> Dict[str, str]:
    """The weight source fields of tag ``name``: its Hub repo and the bundled file (none when not published)."""
    entry = BUNDLED_WEIGHTS.get(name)
    if entry is None:
        return {}
    return dict(hf_hub_id=entry['hf_hub_id'], file=str(WEIGHTS_DIR / entry['file']))


_VERIFIED: Dict[str, bool] = {}


def _verify_bundled(file: str) -> None:
    """A bundled weight file must exist and match its sha256 (checked once per process)."""
    path = Path(file)
    entry = next((e for e in BUNDLED_WEIGHTS.values() if WEIGHTS_DIR / e['file'] == path), None)
    if entry is None or _VERIFIED.get(file):
        return
    if not path.is_file():
        raise CheckpointError(f'the bundled weights {path} are missing from this install: reinstall prdarts-timm, '
                              f"or load them from the Hub with timm.create_model('hf-hub:{entry['hf_hub_id']}', "
                              'pretrained=True)')
    digest = file_sha256(path)
    if digest != entry['sha256']:
        raise CheckpointError(f'the bundled weights {path} are corrupt (sha256 {digest[:12]}..., expected '
                              f"{entry['sha256'][:12]}...): reinstall prdarts-timm, or load them from the Hub "
                              f"with timm.create_model('hf-hub:{entry['hf_hub_id']}', pretrained=True)")
    _VERIFIED[file] = True


default_cfgs = generate_default_cfgs({name: dict(cfg, **_weights(name)) for name, cfg in {
    'prdarts_c10.sp99_cifar10': _cfg(),  # first: what prdarts_c10 with pretrained=True loads (the paper's setting)
    'prdarts_c10.sp95_cifar10': _cfg(),
    'prdarts_c10.sp90_cifar10': _cfg(),
    'prdarts_c10.dense_cifar10': _cfg(),  # the sparse tags' dense parent: a teacher and a reference
    'prdarts_c10_tiny.sp99_cifar10': _cfg(),
    'prdarts_c10_medium.sp99_cifar10': _cfg(),
    'prdarts_c10_large.sp99_cifar10': _cfg(),
    'prdarts_c10_mini.sp99_cifar10': _cfg(),
    'prdarts90_c10.sp90_cifar10': _cfg(),
    'prdarts90_c10_mini.sp90_cifar10': _cfg(),
    'prdarts95_c10.sp95_cifar10': _cfg(),
    'prdarts95_c10_mini.sp95_cifar10': _cfg(),
    'prdarts_onestep_c10.sp99_cifar10': _cfg(),
    'darts_v2_c10.sp99_cifar10': _cfg(paper_ids='arXiv:1806.09055', paper_name='DARTS: Differentiable Architecture Search'),
    'darts_v2_c10_mini.sp99_cifar10': _cfg(paper_ids='arXiv:1806.09055', paper_name='DARTS: Differentiable Architecture Search'),
    'prdarts_c10_micro.sp99_cifar10': _cfg(),
    'prdarts_c10_micro.sp95_cifar10': _cfg(),
    'prdarts_c10_micro.sp90_cifar10': _cfg(),
    'prdarts_cpu_c10_micro.sp99_cifar10': _cfg(),
    'prdarts_cpu_c10_micro.sp90_cifar10': _cfg(),
    'darts_v2_c10_micro.sp99_cifar10': _cfg(paper_ids='arXiv:1806.09055', paper_name='DARTS: Differentiable Architecture Search'),
    'darts_v2_c10_micro.sp90_cifar10': _cfg(paper_ids='arXiv:1806.09055', paper_name='DARTS: Differentiable Architecture Search'),
    'prdarts_in1k.sp99_in1k': _cfg_in1k(),
}.items()})


def _prdarts(variant: str, pretrained: bool, kwargs: Dict[str, Any], **model_args) -> PRDarts:
    """Create ``variant`` from its architecture args; the caller's kwargs override them."""
    return _create_prdarts(variant, pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def prdarts_c10(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 99% cell, 36 channels / 20 cells (DARTS evaluation size; the paper's Small)."""
    return _prdarts('prdarts_c10', pretrained, kwargs, genotype='prdarts_99', C=36, layers=20)


@register_model
def prdarts_c10_tiny(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 99% cell, 30 channels / 16 cells (Tiny)."""
    return _prdarts('prdarts_c10_tiny', pretrained, kwargs, genotype='prdarts_99', C=30, layers=16)


@register_model
def prdarts_c10_medium(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 99% cell, 86 channels / 12 cells (Medium)."""
    return _prdarts('prdarts_c10_medium', pretrained, kwargs, genotype='prdarts_99', C=86, layers=12)


@register_model
def prdarts_c10_large(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 99% cell, 108 channels / 14 cells (Large)."""
    return _prdarts('prdarts_c10_large', pretrained, kwargs, genotype='prdarts_99', C=108, layers=14)


@register_model
def prdarts_c10_mini(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 99% cell, 16 channels / 8 cells: a size a CPU can train."""
    return _prdarts('prdarts_c10_mini', pretrained, kwargs, genotype='prdarts_99', C=16, layers=8)


@register_model
def prdarts_c10_micro(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 99% cell, 32 channels / 5 cells: the CPU replication's size (about MobileNet-v2 0.35's weights)."""
    return _prdarts('prdarts_c10_micro', pretrained, kwargs, genotype='prdarts_99', C=32, layers=5)


@register_model
def prdarts_cpu_c10_micro(pretrained: bool = False, **kwargs) -> PRDarts:
    """This project's CPU-searched cell (genotype prdarts_cpu_99), 32 channels / 5 cells."""
    return _prdarts('prdarts_cpu_c10_micro', pretrained, kwargs, genotype='prdarts_cpu_99', C=32, layers=5)


@register_model
def prdarts90_c10(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 90% cell, 36 channels / 20 cells."""
    return _prdarts('prdarts90_c10', pretrained, kwargs, genotype='prdarts_90', C=36, layers=20)


@register_model
def prdarts90_c10_mini(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 90% cell, 16 channels / 8 cells."""
    return _prdarts('prdarts90_c10_mini', pretrained, kwargs, genotype='prdarts_90', C=16, layers=8)


@register_model
def prdarts95_c10(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 95% cell, 36 channels / 20 cells."""
    return _prdarts('prdarts95_c10', pretrained, kwargs, genotype='prdarts_95', C=36, layers=20)


@register_model
def prdarts95_c10_mini(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 95% cell, 16 channels / 8 cells."""
    return _prdarts('prdarts95_c10_mini', pretrained, kwargs, genotype='prdarts_95', C=16, layers=8)


@register_model
def prdarts_onestep_c10(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS one-step-search cell (99%), 36 channels / 20 cells."""
    return _prdarts('prdarts_onestep_c10', pretrained, kwargs, genotype='prdarts_onestep_99', C=36, layers=20)


@register_model
def darts_v2_c10(pretrained: bool = False, **kwargs) -> PRDarts:
    """DARTS-V2 cell (searched dense), 36 channels / 20 cells: the baseline, with pruned layers."""
    return _prdarts('darts_v2_c10', pretrained, kwargs, genotype='darts_v2', C=36, layers=20)


@register_model
def darts_v2_c10_mini(pretrained: bool = False, **kwargs) -> PRDarts:
    """DARTS-V2 cell, 16 channels / 8 cells."""
    return _prdarts('darts_v2_c10_mini', pretrained, kwargs, genotype='darts_v2', C=16, layers=8)


@register_model
def darts_v2_c10_micro(pretrained: bool = False, **kwargs) -> PRDarts:
    """DARTS-V2 cell, 32 channels / 5 cells."""
    return _prdarts('darts_v2_c10_micro', pretrained, kwargs, genotype='darts_v2', C=32, layers=5)


@register_model
def prdarts_in1k(pretrained: bool = False, **kwargs) -> PRDarts:
    """PR-DARTS 99% cell, ImageNet (DARTS mobile setting): 48 channels / 14 cells, 224x224."""
    return _prdarts('prdarts_in1k', pretrained, kwargs, genotype='prdarts_99', C=48, layers=14, stem_type='imagenet')
