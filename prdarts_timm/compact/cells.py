"""Compaction of the PR-DARTS networks, through the cells' shared tensors.

Every tensor of the network (stem outputs, preprocessed cell inputs, node sums, cell outputs) keeps only the
channels some consumer needs computed. A forward pass over the weights finds the *constant* channels, the same
value at every position for every input: a conv row whose weights on the varying inputs are all zero gives its
folded bias (plus what constant inputs add through a 1x1 conv); identity and pooling pass constants on (max
pooling pads with -inf, average pooling does not count the padding); a node sum of two constants is a constant.
A backward pass then decides which channels each tensor computes, from what its consumers read:

* consumers that *absorb* constants take a constant input channel into their bias: the 1x1 convs of the
  preprocessing and factorized reductions (after their ReLU), and global pooling + the classifier;
* consumers that read a channel *exactly* need it computed even when it is constant: the depthwise convs of
  the separable and dilated ops (zero padding makes a constant input position-dependent), the ImageNet stem's
  3x3 conv, and identity / pooling edges for the channels their node computes (a node sum adds two tensors of
  one channel layout);
* a channel that no consumer reads (zero weights, or the consumers' kept rows do not need it) is not computed.

So a tensor computes its channels that vary and are read, and its constant channels that some consumer reads
exactly: a channel goes only where every consumer agrees. Ops produce exactly the channels of their node;
inside the separable and dilated ops the depthwise / pointwise channels that reach no kept row go too. BN is
folded into every conv; the auxiliary head (training only) is dropped. The result is exact at any input size.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..deploy import DeployError
from ..ops import DilConv, FactorizedReduce, SepConv
from .fold import bn_scale_shift, folded, nonzero_channels, plain_conv

__all__ = ['CompactCell', 'CompactFactorizedReduce', 'CompactOp', 'CompactPassThrough', 'compact_prdarts']


class CompactOp(nn.Module):
    """ReLU, then ``body`` on the input channels ``index`` (all channels when ``index`` is None)."""

    def __init__(self, index: Optional[torch.Tensor], body: nn.Sequential):
        super().__init__()
        self.register_buffer('index', index)
        self.relu = nn.ReLU()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            x = x.index_select(1, self.index)
        return self.body(self.relu(x))


class CompactPassThrough(nn.Module):
    """``op`` (identity or pooling, channel by channel) on the input channels ``index``."""

    def __init__(self, index: torch.Tensor, op: nn.Module):
        super().__init__()
        self.register_buffer('index', index)
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x.index_select(1, self.index))


class CompactFactorizedReduce(nn.Module):
    """A compacted :class:`~prdarts_timm.ops.FactorizedReduce`: ReLU, a 1x1 conv on the even pixels and one on
    the odd pixels (each on its own input channels, either may be None), concatenated, BN folded.

    The odd-pixel path of the original reads zeros past the far edge when a size is odd; there its output is
    the BN shift ``shift_2`` alone, so ``conv_2``'s bias holds only what constant inputs add inside the image,
    and ``shift_2`` is added after the padding.
    """

    def __init__(self, index_1: Optional[torch.Tensor], conv_1: Optional[nn.Conv2d],
                 index_2: Optional[torch.Tensor], conv_2: Optional[nn.Conv2d], shift_2: Optional[torch.Tensor]):
        super().__init__()
        self.register_buffer('index_1', index_1)
        self.register_buffer('index_2', index_2)
        self.register_buffer('shift_2', shift_2)
        self.conv_1 = conv_1
        self.conv_2 = conv_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2
        parts = []
        if self.conv_1 is not None:
            parts.append(self.conv_1(F.relu(x if self.index_1 is None else x.index_select(1, self.index_1))))
        if self.conv_2 is not None:
            x = x[:, :, 1::2, 1::2]
            y = self.conv_2(F.relu(x if self.index_2 is None else x.index_select(1, self.index_2)))
            y = F.pad(y, (0, width - y.shape[3], 0, height - y.shape[2])) + self.shift_2.view(1, -1, 1, 1)
            parts.append(y)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class CompactCell(nn.Module):
    """A compacted :class:`~prdarts_timm.models.prdarts.Cell`: the same wiring over compacted preprocessing and
    ops, each node the sum of its two ops (one channel layout), the output the concatenation."""

    def __init__(self, preprocess0: nn.Module, preprocess1: nn.Module, ops: Sequence[nn.Module],
                 indices: Sequence[int], concat: Sequence[int]):
        super().__init__()
        self.preprocess0 = preprocess0
        self.preprocess1 = preprocess1
        self.ops = nn.ModuleList(ops)
        self.indices = list(indices)
        self.concat = list(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(0, len(self.ops), 2):
            states.append(self.ops[i](states[self.indices[i]]) + self.ops[i + 1](states[self.indices[i + 1]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class _Tensor:
    """What the analysis knows of one tensor's channels: which are constant (and their values), which some
    consumer reads, which some consumer reads exactly; after the backward pass, which it computes (layout)."""

    def __init__(self, const: torch.Tensor, value: torch.Tensor, layout: Optional[torch.Tensor] = None):
        self.const, self.value = const, value.where(const, torch.zeros_like(value))
        self.read = torch.zeros_like(const)
        self.exact = torch.zeros_like(const)
        self.layout = layout

    def finish(self) -> torch.Tensor:
        """Fix the layout: the original indices of the channels computed (one channel when none is needed)."""
        keep = self.read & (self.exact | ~self.const)
        self.layout = keep.nonzero().flatten() if keep.any() else torch.zeros(1, dtype=torch.long)
        return self.layout

    def index(self, channels: torch.Tensor) -> Optional[torch.Tensor]:
        """Positions of ``channels`` in the layout, for ``index_select``; None when they are the whole layout."""
        if torch.equal(channels, self.layout):
            return None
        position = torch.full_like(self.const, -1, dtype=torch.long)
        position[self.layout] = torch.arange(self.layout.numel())
        index = position[channels]
        if (index < 0).any():
            raise AssertionError('compaction bug: a consumer reads a channel that its producer does not compute')
        return index


def _pick(keep: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Indices of ``keep``; ``fallback`` (one index) when none, which the caller zeroes through ``keep``."""
    index = keep.nonzero().flatten()
    return index if index.numel() else fallback


def _absorbed(weight: torch.Tensor, x: _Tensor, rows: Union[slice, torch.Tensor] = slice(None)) -> torch.Tensor:
    """What the constant channels of ``x`` add, after a ReLU, through the 1x1 ``weight`` (out x in) rows."""
    return weight[rows][:, x.const] @ x.value[x.const].relu()


class _ReLUConv:
    """ReLU, conv, BN: the 1x1 preprocessing (absorbs constants), or the ImageNet stem's 3x3 conv (exact)."""

    def __init__(self, module: nn.Sequential):
        _, self.conv, bn = module
        self.weight, self.bias = folded(self.conv, bn)
        self.absorbs = self.conv.kernel_size == (1, 1) and self.conv.padding in (0, (0, 0))

    def _absorbable(self, x: _Tensor) -> torch.Tensor:
        return x.const if self.absorbs else torch.zeros_like(x.const)

    def output(self, x: _Tensor) -> _Tensor:
        varying = ~self._absorbable(x)
        const = ~nonzero_channels(self.weight[:, varying], 0)
        value = self.bias + _absorbed(self.weight.flatten(1), x) if self.absorbs else self.bias
        return _Tensor(const, value)

    def backward(self, x: _Tensor, rows: torch.Tensor) -> None:
        cols = nonzero_channels(self.weight[rows], 1) & ~self._absorbable(x)
        x.read |= cols
        if not self.absorbs:
            x.exact |= cols

    def build(self, x: _Tensor, rows: torch.Tensor) -> CompactOp:
        keep = nonzero_channels(self.weight[rows], 1) & ~self._absorbable(x)
        cols = _pick(keep, x.layout[:1])
        weight = self.weight[rows][:, cols] * keep[cols].view(1, -1, 1, 1)
        bias = self.bias[rows] + _absorbed(self.weight.flatten(1), x, rows) if self.absorbs else self.bias[rows]
        return CompactOp(x.index(cols), nn.Sequential(plain_conv(self.conv, weight, bias)))


class _FactorizedReduce:
    """Two 1x1 stride-2 convs on the ReLU'd input, the second shifted by a pixel; both absorb constants."""

    def __init__(self, op: FactorizedReduce):
        self.op = op
        self.half = op.conv_1.out_channels
        scale, shift = bn_scale_shift(op.bn)
        self.weights = [conv.weight.detach().flatten(1) * s.view(-1, 1)
                        for conv, s in ((op.conv_1, scale[:self.half]), (op.conv_2, scale[self.half:]))]
        self.shifts = [shift[:self.half], shift[self.half:]]

    def output(self, x: _Tensor) -> _Tensor:
        w1, w2 = self.weights
        const_1 = ~nonzero_channels(w1[:, ~x.const], 0)
        const_2 = ~nonzero_channels(w2, 0)  # past an odd edge a row reads zeros, not the constants: all-zero rows
        return _Tensor(torch.cat([const_1, const_2]), torch.cat([self.shifts[0] + _absorbed(w1, x), self.shifts[1]]))

    def _halves(self, rows: torch.Tensor) -> List[torch.Tensor]:
        return [rows[rows < self.half], rows[rows >= self.half] - self.half]

    def backward(self, x: _Tensor, rows: torch.Tensor) -> None:
        for weight, part in zip(self.weights, self._halves(rows)):
            x.read |= nonzero_channels(weight[part], 1) & ~x.const

    def build(self, x: _Tensor, rows: torch.Tensor) -> CompactFactorizedReduce:
        args = []
        for weight, shift, conv, part in zip(self.weights, self.shifts, (self.op.conv_1, self.op.conv_2),
                                             self._halves(rows)):
            if not part.numel():
                args += [None, None]
                continue
            keep = nonzero_channels(weight[part], 1) & ~x.const
            cols = _pick(keep, x.layout[:1])
            w = (weight[part][:, cols] * keep[cols]).view(part.numel(), cols.numel(), 1, 1)
            first = conv is self.op.conv_1
            bias = _absorbed(weight, x, part) + (shift[part] if first else 0)
            args += [x.index(cols), plain_conv(conv, w, bias, stride=(2, 2) if first else (1, 1))]
        shift_2 = self.shifts[1][self._halves(rows)[1]] if args[3] is not None else None
        return CompactFactorizedReduce(*args, shift_2)


class _SepDil:
    """The separable (two blocks) and dilated (one block) convs: [ReLU, depthwise, pointwise, BN] per block."""

    def __init__(self, op: Union[SepConv, DilConv]):
        convs = [m for m in op if isinstance(m, nn.Conv2d)]
        norms = [m for m in op if isinstance(m, nn.BatchNorm2d)]
        self.blocks = [(dw, pw, *folded(pw, bn)) for dw, pw, bn in zip(convs[::2], convs[1::2], norms)]

    def output(self, x: _Tensor) -> _Tensor:
        dw, _, weight, bias = self.blocks[-1]
        alive = nonzero_channels(dw.weight, 0)
        return _Tensor(~nonzero_channels(weight[:, alive], 0), bias)

    def _keeps(self, rows: torch.Tensor) -> List[torch.Tensor]:
        """Per block, its depthwise channels that reach one of ``rows``: kernel and pointwise column nonzero."""
        keeps = []
        for dw, _, weight, _ in reversed(self.blocks):
            keeps.insert(0, nonzero_channels(dw.weight, 0) & nonzero_channels(weight[rows], 1))
            rows = keeps[0].nonzero().flatten()
        return keeps

    def backward(self, x: _Tensor, rows: torch.Tensor) -> None:
        keep = self._keeps(rows)[0]
        x.read |= keep
        x.exact |= keep

    def build(self, x: _Tensor, rows: torch.Tensor) -> CompactOp:
        keeps = self._keeps(rows)
        channels = [_pick(keeps[0], x.layout[:1])] + [_pick(k, torch.zeros(1, dtype=torch.long)) for k in keeps[1:]]
        layers: List[nn.Module] = []
        for j, (dw, pw, weight, bias) in enumerate(self.blocks):
            out = channels[j + 1] if j + 1 < len(self.blocks) else rows
            live = keeps[j][channels[j]].float()  # 0 for a placeholder channel
            if j:
                layers.append(nn.ReLU())
            layers += [plain_conv(dw, dw.weight.detach()[channels[j]] * live.view(-1, 1, 1, 1), None),
                       plain_conv(pw, weight[out][:, channels[j]] * live.view(1, -1, 1, 1), bias[out])]
        return CompactOp(x.index(channels[0]), nn.Sequential(*layers))

    def inner_channels(self, rows: torch.Tensor) -> Tuple[int, int]:
        """Depthwise channels before and after compaction for output ``rows``."""
        keeps = self._keeps(rows)
        return sum(k.numel() for k in keeps), sum(max(int(k.sum()), 1) for k in keeps)


class _PassThrough:
    """Identity or pooling: constants pass on; every channel of its node's layout is read exactly."""

    def __init__(self, op: nn.Module):
        if isinstance(op, nn.AvgPool2d) and op.count_include_pad:
            raise DeployError('compaction needs average pooling with count_include_pad=False (the DARTS op): '
                              'counting the padding makes a constant channel position-dependent')
        self.op = op

    def output(self, x: _Tensor) -> _Tensor:
        return _Tensor(x.const.clone(), x.value.clone())

    def backward(self, x: _Tensor, rows: torch.Tensor) -> None:
        x.read[rows] = True
        x.exact[rows] = True

    def build(self, x: _Tensor, rows: torch.Tensor) -> nn.Module:
        index = x.index(rows)
        return self.op if index is None else CompactPassThrough(index, self.op)


_Edge = Union[_ReLUConv, _FactorizedReduce, _SepDil, _PassThrough]


def _edge(module: nn.Module) -> _Edge:
    if isinstance(module, (SepConv, DilConv)):
        return _SepDil(module)
    if isinstance(module, FactorizedReduce):
        return _FactorizedReduce(module)
    if isinstance(module, (nn.Identity, nn.AvgPool2d, nn.MaxPool2d)):
        return _PassThrough(module)
    if (isinstance(module, nn.Sequential) and len(module) == 3 and isinstance(module[0], nn.ReLU)
            and isinstance(module[1], nn.Conv2d) and isinstance(module[2], nn.BatchNorm2d)):
        return _ReLUConv(module)
    raise DeployError(f'cannot compact a {type(module).__name__} in a PR-DARTS network: compaction knows the '
                      'DARTS ops (separable / dilated convs, pooling, skip, factorized reduce, ReLU-conv-BN)')


class _Stem:
    """The stem on the image: conv-BN, or (ImageNet) conv-BN-ReLU-conv-BN; rows of the last conv selectable."""

    def __init__(self, stem: nn.Sequential):
        modules = list(stem)
        convs = [m for m in modules if isinstance(m, nn.Conv2d)]
        norms = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
        if len(convs) not in (1, 2) or len(norms) != len(convs):
            raise DeployError(f'cannot compact this stem ({len(convs)} convs, {len(norms)} BNs): compaction '
                              "knows PRDarts's CIFAR and ImageNet stems")
        self.convs = [(conv, *folded(conv, bn)) for conv, bn in zip(convs, norms)]
        self.acts = [m for m in modules if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]

    def output(self) -> _Tensor:
        _, weight, bias = self.convs[-1]
        return _Tensor(~nonzero_channels(weight, 0), bias)

    def build(self, rows: torch.Tensor) -> nn.Sequential:
        (last, weight, bias) = self.convs[-1]
        if len(self.convs) == 1:
            return nn.Sequential(plain_conv(last, weight[rows], bias[rows]))
        first, first_w, first_b = self.convs[0]
        keep = nonzero_channels(weight[rows], 1)
        inner = _pick(keep, torch.zeros(1, dtype=torch.long))
        return nn.Sequential(plain_conv(first, first_w[inner], first_b[inner]), *self.acts,
                             plain_conv(last, weight[rows][:, inner] * keep[inner].view(1, -1, 1, 1), bias[rows]))


def _head_absorbs(model: nn.Module) -> bool:
    pool = model.global_pool
    return isinstance(model.classifier, nn.Linear) and pool.pool_type in ('avg', 'max') and pool.flatten


def compact_prdarts(model: nn.Module) -> Tuple[int, int]:
    """Compact the baked ``model`` (a :class:`~prdarts_timm.models.PRDarts`, eval) in place; returns the channels
    of its compactable tensors (stem and cell tensors, and the ops' depthwise channels) before and after."""
    # forward: which channels are constants
    stem0 = _Stem(model.stem0)
    stem1 = None if isinstance(model.stem1, nn.Identity) else _edge(model.stem1)
    first = stem0.output()
    s0, s1 = first, first if stem1 is None else stem1.output(first)
    stem_tensors = [first] if stem1 is None else [first, s1]
    cells = []
    for cell in model.cells:
        edges = [_edge(cell.preprocess0), _edge(cell.preprocess1)] + [_edge(op) for op in cell.ops]
        states = [edges[0].output(s0), edges[1].output(s1)]
        for i in range(0, len(cell.ops), 2):
            a, b = (edges[2 + j].output(states[cell.indices[j]]) for j in (i, i + 1))
            states.append(_Tensor(a.const & b.const, a.value + b.value))
        out = _Tensor(torch.cat([states[j].const for j in cell.concat]),
                      torch.cat([states[j].value for j in cell.concat]))
        cells.append((cell, edges, states, (s0, s1), out))
        s0, s1 = s1, out

    # backward: what each consumer reads, so what each tensor computes
    if _head_absorbs(model):
        s1.read |= nonzero_channels(model.classifier.weight.detach(), 1) & ~s1.const
    else:  # features or another pooling: the output as it is
        s1.read[:], s1.exact[:] = True, True
    for cell, edges, states, inputs, out in reversed(cells):
        offset = 0
        for j in cell.concat:
            size = states[j].const.numel()
            states[j].read |= out.read[offset:offset + size]
            states[j].exact |= out.exact[offset:offset + size]
            offset += size
        for node in reversed(range(2, len(states))):
            rows = states[node].finish()
            for i in (2 * node - 4, 2 * node - 3):
                edges[2 + i].backward(states[cell.indices[i]], rows)
        for j in (0, 1):
            edges[j].backward(inputs[j], states[j].finish())
        offsets = torch.tensor([0] + [states[j].const.numel() for j in cell.concat]).cumsum(0)
        out.layout = torch.cat([states[j].layout + offsets[n] for n, j in enumerate(cell.concat)])
    if stem1 is not None:
        stem1.backward(first, stem_tensors[1].finish())
    first.finish()

    # build
    before = after = 0
    model.stem0 = stem0.build(first.layout)
    if stem1 is not None:
        model.stem1 = stem1.build(first, stem_tensors[1].layout)
    for tensor in stem_tensors:
        before, after = before + tensor.const.numel(), after + tensor.layout.numel()
    compacted = []
    for cell, edges, states, inputs, out in cells:
        node_rows = [states[j].layout for j in (0, 1)] + [states[2 + i // 2].layout for i in range(len(cell.ops))]
        node_inputs = list(inputs) + [states[i] for i in cell.indices]
        modules = [edge.build(x, rows) for edge, x, rows in zip(edges, node_inputs, node_rows)]
        compacted.append(CompactCell(modules[0], modules[1], modules[2:], cell.indices, cell.concat))
        for state in states:
            before, after = before + state.const.numel(), after + state.layout.numel()
        for edge, rows in zip(edges, node_rows):
            if isinstance(edge, _SepDil):
                inner = edge.inner_channels(rows)
                before, after = before + inner[0], after + inner[1]
    model.cells = nn.ModuleList(compacted)
    if _head_absorbs(model):
        weight, bias = model.classifier.weight.detach(), model.classifier.bias.detach()
        classifier = nn.Linear(s1.layout.numel(), weight.shape[0])
        classifier.weight.data.copy_(weight[:, s1.layout] * ~s1.const[s1.layout])
        classifier.bias.data.copy_(bias + weight[:, s1.const] @ s1.value[s1.const])
        model.classifier = classifier
    model.num_features = model.head_hidden_size = s1.layout.numel()
    model.aux_head = None
    return before, after
