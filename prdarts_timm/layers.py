"""Score-masked pruned layers (HYDRA / edge-popup style), the maths and nothing else.

A pruned layer is ``nn.Conv2d`` / ``nn.Linear`` until pruning is asked for; then it also holds a learnable
``scores`` tensor of the weight's shape and a ``mask`` buffer (see :class:`PrunedLayer`). Its forward uses ``weight * mask`` where ``mask`` keeps the top-k fraction of ``|scores|``
(k = fraction *kept*). Gradients reach the scores by the straight-through estimator
(dL/dS = sign(S) * W * dL/dW_hat); pruned weights get zero gradient.

Modes (``layer.mode``):

* ``'dense'``: k = 1, ``F.conv2d(x, weight)`` exactly, no mask work at all.
* ``'learn'``: score learning. Weights frozen, scores trained; the mask is re-selected (``torch.topk``,
  not a full sort) only when the scores or k changed since the last forward.
* ``'fixed'``: mask frozen and cached, scores frozen, weights trained; no top-k per step.

``model.eval()`` needs no mode of its own: every mode reuses its cached mask.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import timm.layers
import torch
import torch.nn as nn
import torch.nn.functional as F

from .depthwise import depthwise_conv2d, takes_fast_backward
from .errors import DeployError

__all__ = [
    'PrunedConv2d', 'PrunedLinear', 'PrunedLayer', 'MODES', 'kept_count', 'check_k', 'topk_mask',
    'convert_to_pruned', 'bake', 'check_baked', 'pruned_layers', 'forward_weight', 'sparsity_report',
    'SparsityReport', 'LayerSparsity',
]

MODES = ('dense', 'learn', 'fixed')


def check_k(k: float) -> float:
    """Validate a kept fraction: 0 < k <= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or math.isnan(k) or not 0.0 < k <= 1.0:
        raise ValueError(
            f'k (the fraction of weights KEPT) must be a number in (0, 1], got {k!r}. '
            f'For 99% sparsity use k=0.01, for 90% use k=0.1, for a dense layer use k=1.')
    return float(k)


def kept_count(numel: int, k: float) -> int:
    """Number of weights kept at fraction k: ``numel - int((1 - k) * numel)`` (the method note, HYDRA)."""
    return max(1, numel - int((1.0 - check_k(k)) * numel))


def topk_mask(scores: torch.Tensor, num_keep: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mask (same shape and dtype as ``scores``) with ones at the ``num_keep`` largest ``|scores|``.

    Exact count, ties included. Uses selection (``torch.topk``) on the smaller side, never a full sort.
    Writes into ``out`` when given (no temporary mask).
    """
    mask = torch.empty_like(scores) if out is None else out
    numel = mask.numel()
    with torch.no_grad():
        if num_keep >= numel:
            return mask.fill_(1.0)
        # flat indices count in the logical (contiguous) order, whatever the memory format (channels_last)
        flat = mask.view(-1) if mask.is_contiguous() else torch.empty(numel, dtype=mask.dtype, device=mask.device)
        magnitude = scores.detach().abs().reshape(-1)
        if num_keep <= numel - num_keep:
            flat.zero_().index_fill_(0, torch.topk(magnitude, num_keep, sorted=False).indices, 1.0)
        else:
            flat.fill_(1.0).index_fill_(0, torch.topk(magnitude, numel - num_keep, largest=False,
                                                      sorted=False).indices, 0.0)
        if flat.data_ptr() != mask.data_ptr():
            mask.copy_(flat.view(mask.shape))
    return mask


class _StraightThroughMask(torch.autograd.Function):
    """W_hat = W * m with m = topk(|S|): dW = m * g, dS = sign(S) * W * g (straight through the top-k)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, scores, mask)
        return weight * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores, mask = ctx.saved_tensors
        grad_w = grad * mask if ctx.needs_input_grad[0] else None
        grad_s = grad * weight * scores.sign() if ctx.needs_input_grad[1] else None
        return grad_w, grad_s, None


class PrunedLayer(nn.Module):
    """Mixin holding the score/mask state shared by :class:`PrunedConv2d` and :class:`PrunedLinear`.

    The state is opt-in. A new layer is exactly its dense parent: ``scores`` and ``mask`` are None, so its
    parameters, buffers and state-dict keys are those of ``nn.Conv2d`` / ``nn.Linear``. Asking for pruning
    (``set_mode('learn' | 'fixed')``, ``set_k`` below 1 in 'fixed', ``init_scores_scaled``, or loading a
    checkpoint that holds scores and masks) creates ``scores`` (a Parameter) and ``mask`` (a buffer), which are
    saved. ``set_mode('dense')`` and :func:`bake` remove them again.

    Loading plain weights with exact zeros (a baked file, a published tag) keeps only their zero pattern: a
    non-persistent ``mask`` (the state dict stays plain) in 'fixed' mode and no scores, so the zeros stay zeros
    when the model is trained by any loop over ``model.parameters()`` (their gradient is zero).
    """

    def _init_pruning(self) -> None:
        self.register_parameter('scores', None)
        self.register_buffer('mask', None)
        self.mode = 'dense'
        self.num_keep = self.weight.numel()
        self._mask_key: Optional[Tuple[int, int, int]] = None

    # ----- state -----
    @property
    def k(self) -> float:
        """Fraction of weights kept."""
        return self.num_keep / self.weight.numel()

    @torch.no_grad()
    def _create_state(self, random_scores: bool = True) -> None:
        """Scores and a saved mask. Scores start kaiming-uniform (edge-popup; uninitialised with
        ``random_scores=False``, for a caller that sets them), or as the weight where only a zero pattern is held
        (so the top-k of ``|scores|`` at the kept count is that pattern)."""
        if self.scores is not None:
            return
        scores = torch.empty_like(self.weight, requires_grad=False)
        if self.mask is None:
            if random_scores:
                nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
            mask = torch.ones_like(self.weight, requires_grad=False)
        else:
            scores.copy_(self.weight * self.mask)
            mask = self.mask
        self.scores = nn.Parameter(scores, requires_grad=False)
        self.register_buffer('mask', mask, persistent=True)
        self._mask_key = None

    def _drop_state(self) -> None:
        """Back to the plain dense layer: no scores, no mask, everything trainable."""
        self.scores = None
        self.register_buffer('mask', None)
        self.num_keep = self.weight.numel()
        self._set_mode_flags('dense')

    def _hold_zero_pattern(self) -> None:
        """Keep the weight's exact zeros (a non-persistent mask, 'fixed' mode), or be plain if it has none."""
        with torch.no_grad():
            keep = (self.weight != 0).to(self.weight.dtype)
        self.scores = None
        self.num_keep = int(keep.sum().item())
        if self.num_keep == self.weight.numel():
            self.register_buffer('mask', None)
            self._set_mode_flags('dense')
        else:
            self.register_buffer('mask', keep, persistent=False)
            self._set_mode_flags('fixed')

    def set_k(self, k: float) -> None:
        """Keep the top-k fraction of this layer (per-layer k). Mode is left as it is."""
        self.set_num_keep(kept_count(self.weight.numel(), k))

    def set_num_keep(self, num_keep: int) -> None:
        """Keep exactly ``num_keep`` weights (used by global k)."""
        if not 0 <= num_keep <= self.weight.numel():
            raise ValueError(f'num_keep must be in [0, {self.weight.numel()}], got {num_keep}')
        if num_keep != self.num_keep:
            self.num_keep = num_keep
            self._mask_key = None
            if self.mode == 'fixed':
                self._refresh_mask()

    def set_mode(self, mode: str) -> None:
        """Switch between 'dense', 'learn' and 'fixed' (see module docstring); sets requires_grad to match.

        'dense' removes the pruning state (scores, mask); 'learn' and 'fixed' create it where it is missing
        ('fixed' on a layer that holds only a zero pattern keeps that pattern as it is).
        """
        if mode not in MODES:
            raise ValueError(f'unknown pruning mode {mode!r}; expected one of {MODES}')
        if mode == 'dense':
            self._drop_state()
            return
        if mode == 'learn' or self.mask is None:
            self._create_state()
        if mode == 'fixed' and self.scores is not None:
            self._refresh_mask()
        self._set_mode_flags(mode)

    def _set_mode_flags(self, mode: str) -> None:
        """Mode and requires_grad, the mask left as it is."""
        self._mask_key = None
        self.mode = mode
        self.weight.requires_grad_(mode != 'learn')
        if self.bias is not None:
            self.bias.requires_grad_(mode != 'learn')
        if self.scores is not None:
            self.scores.requires_grad_(mode == 'learn')

    @torch.no_grad()
    def init_scores_scaled(self) -> None:
        """Scaled score init: ``S = sqrt(6 / fan_in) * W / max|W|`` (mask = layer-wise magnitude pruning)."""
        self._create_state(random_scores=False)
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
        w_max = self.weight.abs().max().clamp_min(torch.finfo(self.weight.dtype).tiny)
        self.scores.copy_(math.sqrt(6.0 / fan_in) * self.weight / w_max)
        self._mask_key = None
        if self.mode == 'fixed':
            self._refresh_mask()

    @torch.jit.unused
    def _current_mask_key(self) -> Tuple[int, int, int]:
        """What the mask depends on: the scores (version, storage) and k; only k when nothing is pruned."""
        if self.num_keep >= self.weight.numel():
            return (-1, -1, self.num_keep)
        return (self.scores._version, self.scores.data_ptr(), self.num_keep)

    @torch.jit.unused
    def _refresh_mask(self) -> None:
        self._create_state()
        topk_mask(self.scores, self.num_keep, out=self.mask)
        self._mask_key = self._current_mask_key()

    @torch.jit.unused
    def _learned_weight(self) -> torch.Tensor:
        if self._current_mask_key() != self._mask_key:
            self._refresh_mask()
        if torch.is_grad_enabled() and (self.scores.requires_grad or self.weight.requires_grad):
            return _StraightThroughMask.apply(self.weight, self.scores, self.mask)
        return self.weight * self.mask

    def pruned_weight(self) -> torch.Tensor:
        """The weight the forward uses: ``weight`` when dense, else ``weight * mask``."""
        mask = self.mask
        if mask is None:
            return self.weight
        if self.mode == 'dense':
            return self.weight
        if self.mode == 'learn':
            return self._learned_weight()
        return self.weight * mask

    # ----- checkpoints -----
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.mode == 'learn' and self._current_mask_key() != self._mask_key:
            self._refresh_mask()  # the scores moved since the last forward: save the mask they select
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Load plain, baked or pruning-state checkpoints.

        With ``scores`` / ``mask`` keys (the recipes' stage checkpoints) the pruning state is created and
        loaded; a dense layer whose loaded mask prunes becomes 'fixed', one whose mask keeps everything stays
        plain. A plain weight (no scores, no mask) replaces any pruning state: its exact zeros, if it has any,
        are kept as a fixed zero pattern (see the class docstring).
        """
        w_key, s_key, m_key = prefix + 'weight', prefix + 'scores', prefix + 'mask'
        pruning_state = s_key in state_dict or m_key in state_dict
        if pruning_state:
            was_plain = self.scores is None and self.mode == 'dense'
            self._create_state(random_scores=False)  # loaded below
        elif w_key in state_dict and self.mask is not None:
            self._drop_state()  # the plain weight defines the layer; its zeros are read back below
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if w_key not in state_dict or tuple(state_dict[w_key].shape) != tuple(self.weight.shape):
            return
        if not pruning_state:
            self._hold_zero_pattern()
            return
        if m_key not in state_dict or tuple(state_dict[m_key].shape) != tuple(self.mask.shape):
            return
        self.num_keep = int(self.mask.sum().item())
        self._mask_key = None
        if self.mode == 'dense' and self.num_keep < self.weight.numel():
            self._set_mode_flags('fixed')
        elif self.mode == 'dense' and was_plain:
            self._drop_state()  # a dense checkpoint of the old format (all-ones masks): nothing is pruned

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, mode={self.mode}, k={self.k:.4g}'


class PrunedConv2d(PrunedLayer, nn.Conv2d):
    """Drop-in ``nn.Conv2d`` with a learnable top-k score mask (PrunedConv / SparseConv)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_pruning()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript skips this block (the faster backward is a Python Function)
            if takes_fast_backward(self, x):
                return depthwise_conv2d(x, self.pruned_weight(), self.padding, self.dilation)
        return self._conv_forward(x, self.pruned_weight(), self.bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> 'PrunedConv2d':
        """A pruned copy of ``conv`` (same weights, device and dtype), in dense mode."""
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
            padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        _copy_dense(layer, conv)
        return layer


class PrunedLinear(PrunedLayer, nn.Linear):
    """Drop-in ``nn.Linear`` with a learnable top-k score mask (PrunedLinear / SparseLinear)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_pruning()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.pruned_weight(), self.bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> 'PrunedLinear':
        """A pruned copy of ``linear`` (same weights, device and dtype), in dense mode."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        _copy_dense(layer, linear)
        return layer


@torch.no_grad()
def _copy_dense(layer: PrunedLayer, dense: nn.Module) -> None:
    layer.weight.copy_(dense.weight)
    if dense.bias is not None:
        layer.bias.copy_(dense.bias)
    layer.weight.requires_grad_(dense.weight.requires_grad)
    layer.train(dense.training)


def pruned_layers(model: nn.Module) -> Iterator[Tuple[str, PrunedLayer]]:
    """(name, layer) for every pruned layer of ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, PrunedLayer):
            yield name, module


def convert_to_pruned(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` (any torch / timm model) for a pruned copy.

    Works in place and returns ``model``. Already-pruned layers are left alone. Conv subclasses with a
    forward of their own (e.g. timm's ``Conv2dSame``) would lose behaviour in the swap, so they raise.
    """
    linear_types = (nn.Linear, timm.layers.Linear)
    if isinstance(model, PrunedLayer):
        return model
    if type(model) is nn.Conv2d or type(model) in linear_types:
        raise TypeError('convert_to_pruned works on a model that contains layers; for a single layer use '
                        'PrunedConv2d.from_dense(conv) or PrunedLinear.from_dense(linear).')
    for parent_name, parent in list(model.named_modules()):
        if isinstance(parent, PrunedLayer):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, PrunedLayer):
                continue
            if type(child) is nn.Conv2d:
                setattr(parent, name, PrunedConv2d.from_dense(child))
            elif type(child) in linear_types:
                setattr(parent, name, PrunedLinear.from_dense(child))
            elif isinstance(child, (nn.Conv2d, nn.Linear)):
                full = f'{parent_name}.{name}' if parent_name else name
                raise TypeError(
                    f'cannot convert {full!r}: {type(child).__module__}.{type(child).__name__} subclasses '
                    f'{nn.Conv2d.__name__ if isinstance(child, nn.Conv2d) else nn.Linear.__name__} with a '
                    'forward of its own. Build the model without it (e.g. a non-"tf_" timm variant, or '
                    'pad_type="") before converting.')
    return model


@torch.no_grad()
def bake(model: nn.Module) -> nn.Module:
    """Write ``W * m`` into every pruned layer's weight and drop scores and masks (for deployment).

    In place; returns ``model``. Every layer is then plain and dense, its pruned weights exact zeros, and the
    state dict has plain timm keys. Loading that state dict into a fresh model keeps the zeros as a fixed
    pattern (see :class:`PrunedLayer`).
    """
    for _, layer in pruned_layers(model):
        if layer.mask is None:
            continue
        if layer.mode == 'learn':
            layer._refresh_mask()
        if layer.mode != 'dense':
            layer.weight.mul_(layer.mask)
        layer._drop_state()
    return model


def check_baked(model: nn.Module) -> nn.Module:
    """``model`` if no pruned layer still holds scores, or a mask that its weight does not already follow
    (else the masks would be dropped silently). A layer loaded from a baked file holds its zeros as a mask and
    passes."""
    unbaked = [name for name, m in model.named_modules() if isinstance(m, PrunedLayer) and m.mask is not None
               and (m.scores is not None or bool((m.weight * m.mask != m.weight).any()))]
    if unbaked:
        raise DeployError(f'the model is not baked: {len(unbaked)} pruned layer(s) still hold scores / masks '
                          f'(first: {unbaked[0]!r}). Call prdarts_timm.bake(model) first (or load a '
                          'model_baked.safetensors / exported model.safetensors) so the zeros are in the weights')
    return model


@dataclass
class LayerSparsity:
    name: str
    kind: str
    shape: Tuple[int, ...]
    numel: int
    nonzero: int

    @property
    def density(self) -> float:
        return self.nonzero / self.numel


@dataclass
class SparsityReport:
    """Per-layer and total nonzeros of the weights the forward uses (``W * m``), biases excluded."""
    layers: List[LayerSparsity] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / max(self.total, 1)

    def to_dict(self) -> Dict:
        return dict(
            total=self.total, nonzero=self.nonzero, sparsity=self.sparsity,
            layers=[dict(name=s.name, kind=s.kind, shape=list(s.shape), numel=s.numel, nonzero=s.nonzero)
                    for s in self.layers])

    def __str__(self) -> str:
        width = max([len(s.name) for s in self.layers] + [5])
        lines = [f'{"layer":<{width}}  {"kind":<6} {"numel":>10} {"nonzero":>10} {"density":>8}']
        for s in self.layers:
            lines.append(f'{s.name:<{width}}  {s.kind:<6} {s.numel:>10} {s.nonzero:>10} {s.density:>8.4f}')
        lines.append(f'{"total":<{width}}  {"":<6} {self.total:>10} {self.nonzero:>10} '
                     f'{1 - self.sparsity:>8.4f}')
        return '\n'.join(lines)


def forward_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a conv / linear as its forward uses it (``W * m`` for a pruned layer), without
    changing the layer's state (in 'learn' mode the top-k mask is computed afresh, not cached)."""
    if isinstance(module, PrunedLayer):
        if module.mode == 'learn':
            return module.weight * topk_mask(module.scores, module.num_keep)
        return module.pruned_weight()
    return module.weight


@torch.no_grad()
def sparsity_report(model: nn.Module) -> SparsityReport:
    """Nonzeros of every conv / linear weight in ``model`` as the forward uses it (pruned or not)."""
    report = SparsityReport()
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        weight = forward_weight(module)
        kind = 'linear' if isinstance(module, nn.Linear) else 'conv'
        report.layers.append(LayerSparsity(
            name, kind, tuple(weight.shape), weight.numel(), int(torch.count_nonzero(weight).item())))
    return report
