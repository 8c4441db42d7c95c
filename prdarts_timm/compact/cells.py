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
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..builder import drop_training_only
from ..errors import DeployError
from ..ops import DilConv, FactorizedReduce, SepConv
from .fold import bn_scale_shift, folded, nonzero_channels, pick, plain_conv

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
    """``op`` (identity or pooling, channel by channel) on the input channels ``index`` (all when None).

    Pooling runs on a channels-last copy, same values: PyTorch's CPU pooling is faster in that memory format
    (measured here, 3x3 pooling of 1 x 36 x 32 x 32 on one thread, both layout copies included: average
    0.72 -> 0.24 ms, max 1.23 -> 0.39 ms).
    """

    def __init__(self, index: Optional[torch.Tensor], op: nn.Module):
        super().__init__()
        self.register_buffer('index', index)
        self.op = op
        self.channels_last = not isinstance(op, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            x = x.index_select(1, self.index)
        if not self.channels_last:
            return self.op(x)
        return self.op(x.contiguous(memory_format=torch.channels_last)).contiguous()


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
            shift = self.shift_2.view(1, -1, 1, 1)
            odd = x[:, :, 1::2, 1::2]
            if odd.shape[2] == 0 or odd.shape[3] == 0:  # one pixel high or wide: every output is past the edge
                parts.append(shift.expand(x.shape[0], -1, height, width))
            else:
                y = self.conv_2(F.relu(odd if self.index_2 is None else odd.index_select(1, self.index_2)))
                parts.append(F.pad(y, (0, width - y.shape[3], 0, height - y.shape[2])) + shift)
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

    def __init__(self, const: torch.Tensor, value: torch.Tensor):
        self.const, self.value = const, value.where(const, torch.zeros_like(value))
        self.read = torch.zeros_like(const)
        self.exact = torch.zeros_like(const)
        self.layout: Optional[torch.Tensor] = None

    def finish(self) -> torch.Tensor:
        """Fix the layout: the original indices of the channels computed (one channel when none is needed)."""
        self.layout = pick(self.read & (self.exact | ~self.const), torch.zeros(1, dtype=torch.long))
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
        value = (self.bias + _absorbed(self.weight.flatten(1), x)) if self.absorbs else self.bias
        return _Tensor(const, value)

    def backward(self, x: _Tensor, rows: torch.Tensor) -> None:
        cols = nonzero_channels(self.weight[rows], 1) & ~self._absorbable(x)
        x.read |= cols
        if not self.absorbs:
            x.exact |= cols

    def build(self, x: _Tensor, rows: torch.Tensor) -> CompactOp:
        keep = nonzero_channels(self.weight[rows], 1) & ~self._absorbable(x)
        cols = pick(keep, x.layout[:1])
        weight = self.weight[rows][:, cols] * keep[cols].view(1, -1, 1, 1)
        bias = (self.bias[rows] + _absorbed(self.weight.flatten(1), x, rows)) if self.absorbs else self.bias[rows]
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

    def _half(self, half: int, x: _Tensor, rows: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[nn.Conv2d]]:
        """(index, conv) computing ``rows`` of one half, (None, None) for no rows. The first half strides over
        the input, BN folded; the second runs on the odd pixels and leaves its BN shift to the module."""
        if not rows.numel():
            return None, None
        weight = self.weights[half][rows]
        keep = nonzero_channels(weight, 1) & ~x.const
        cols = pick(keep, x.layout[:1])
        bias = _absorbed(weight, x) + (self.shifts[0][rows] if half == 0 else 0)
        conv = plain_conv(self.op.conv_1 if half == 0 else self.op.conv_2,
                          (weight[:, cols] * keep[cols]).view(rows.numel(), cols.numel(), 1, 1), bias,
                          stride=(2, 2) if half == 0 else (1, 1))
        return x.index(cols), conv

    def build(self, x: _Tensor, rows: torch.Tensor) -> CompactFactorizedReduce:
        rows_1, rows_2 = self._halves(rows)
        return CompactFactorizedReduce(*self._half(0, x, rows_1), *self._half(1, x, rows_2),
                                       self.shifts[1][rows_2] if rows_2.numel() else None)


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
        channels = [pick(keeps[0], x.layout[:1])] + [pick(k, torch.zeros(1, dtype=torch.long)) for k in keeps[1:]]
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
        return self.op if index is None and isinstance(self.op, nn.Identity) else CompactPassThrough(index, self.op)


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
        inner = pick(keep, torch.zeros(1, dtype=torch.long))
        return nn.Sequential(plain_conv(first, first_w[inner], first_b[inner]), *self.acts,
                             plain_conv(last, weight[rows][:, inner] * keep[inner].view(1, -1, 1, 1), bias[rows]))


class _Head:
    """Global pooling + classifier. A linear classifier after pooling absorbs constants (every timm pooling
    averages or takes maxima, which keeps a constant); without either, the output is read as it is."""

    def __init__(self, model: nn.Module):
        self.classifier = model.classifier
        self.absorbs = isinstance(self.classifier, nn.Linear) and not model.global_pool.is_identity()
        if self.absorbs:  # columns: pooling kind (avg, max for 'catavgmax') x channel
            weight = self.classifier.weight.detach()
            self.weight = weight.view(weight.shape[0], model.global_pool.feat_mult(), -1)

    def backward(self, x: _Tensor) -> None:
        if self.absorbs:
            x.read |= nonzero_channels(self.weight, 2) & ~x.const
        else:
            x.read[:], x.exact[:] = True, True

    def build(self, x: _Tensor) -> nn.Module:
        if not self.absorbs:
            return self.classifier
        weight = self.weight[:, :, x.layout] * ~x.const[x.layout]
        bias = self.weight[:, :, x.const].sum(1) @ x.value[x.const]
        if self.classifier.bias is not None:
            bias = bias + self.classifier.bias.detach()
        linear = nn.Linear(weight.shape[1] * weight.shape[2], weight.shape[0], dtype=weight.dtype)
        linear.weight.data.copy_(weight.flatten(1))
        linear.bias.data.copy_(bias)
        return linear.eval()


@dataclass
class _CellGraph:
    """One cell in the analysis: its edges (preprocess0, preprocess1, then the ops), its states (the preprocessed
    inputs, then the nodes), its input tensors and its output (the concatenation of ``cell.concat``)."""
    cell: nn.Module
    edges: List[_Edge]
    states: List[_Tensor]
    inputs: Tuple[_Tensor, _Tensor]
    out: _Tensor

    @classmethod
    def forward(cls, cell: nn.Module, s0: _Tensor, s1: _Tensor) -> '_CellGraph':
        """The constants of every state of ``cell``, given those of its inputs."""
        edges = [_edge(cell.preprocess0), _edge(cell.preprocess1)] + [_edge(op) for op in cell.ops]
        states = [edges[0].output(s0), edges[1].output(s1)]
        for i in range(0, len(cell.ops), 2):
            a = edges[2 + i].output(states[cell.indices[i]])
            b = edges[3 + i].output(states[cell.indices[i + 1]])
            states.append(_Tensor(a.const & b.const, a.value + b.value))
        out = _Tensor(torch.cat([states[j].const for j in cell.concat]),
                      torch.cat([states[j].value for j in cell.concat]))
        return cls(cell, edges, states, (s0, s1), out)

    def edge_io(self) -> List[Tuple[_Edge, _Tensor, _Tensor]]:
        """(edge, its input, its output) for every edge, in the order of ``edges``."""
        inputs = list(self.inputs) + [self.states[i] for i in self.cell.indices]
        outputs = self.states[:2] + [self.states[2 + i // 2] for i in range(len(self.cell.ops))]
        return list(zip(self.edges, inputs, outputs))

    def backward(self) -> None:
        """Layouts of the states and the output from what the output's consumers read; the reads on the inputs."""
        sizes = [self.states[j].const.numel() for j in self.cell.concat]
        for j, read, exact in zip(self.cell.concat, self.out.read.split(sizes), self.out.exact.split(sizes)):
            self.states[j].read |= read
            self.states[j].exact |= exact
        edges = self.edge_io()
        for node in reversed(range(2, len(self.states))):  # a node's consumers are later nodes and the output
            self.states[node].finish()
            for edge, x, y in edges[2 * node - 2:2 * node]:
                edge.backward(x, y.layout)
        for edge, x, y in edges[:2]:
            edge.backward(x, y.finish())
        offsets = torch.tensor([0] + sizes[:-1]).cumsum(0).tolist()
        self.out.layout = torch.cat([self.states[j].layout + o for j, o in zip(self.cell.concat, offsets)])

    def build(self) -> Tuple[CompactCell, int, int]:
        """The compacted cell, and its channels before and after (states and the ops' depthwise channels)."""
        modules, before, after = [], 0, 0
        for edge, x, y in self.edge_io():
            modules.append(edge.build(x, y.layout))
            if isinstance(edge, _SepDil):
                inner = edge.inner_channels(y.layout)
                before, after = before + inner[0], after + inner[1]
        for state in self.states:
            before, after = before + state.const.numel(), after + state.layout.numel()
        return CompactCell(modules[0], modules[1], modules[2:], self.cell.indices, self.cell.concat), before, after


def compact_prdarts(model: nn.Module) -> Tuple[int, int]:
    """Compact the baked ``model`` (a :class:`~prdarts_timm.models.PRDarts`, eval) in place; returns the channels
    of its compactable tensors (stem and cell tensors, and the ops' depthwise channels) before and after. The
    model is changed only once every compacted module is built."""
    # forward: which channels are constants
    stem0 = _Stem(model.stem0)
    stem1 = None if isinstance(model.stem1, nn.Identity) else _edge(model.stem1)
    first = stem0.output()
    second = first if stem1 is None else stem1.output(first)
    graphs = []
    s0, s1 = first, second
    for cell in model.cells:
        graphs.append(_CellGraph.forward(cell, s0, s1))
        s0, s1 = s1, graphs[-1].out

    # backward: what each consumer reads, so what each tensor computes
    head = _Head(model)
    head.backward(s1)
    for graph in reversed(graphs):
        graph.backward()
    if stem1 is not None:
        stem1.backward(first, second.finish())
    first.finish()

    # build, then change the model
    stems = [first] if stem1 is None else [first, second]
    before = sum(t.const.numel() for t in stems)
    after = sum(t.layout.numel() for t in stems)
    cells = []
    for graph in graphs:
        cell, cell_before, cell_after = graph.build()
        cells.append(cell)
        before, after = before + cell_before, after + cell_after
    new_stem0 = stem0.build(first.layout)
    new_stem1 = model.stem1 if stem1 is None else stem1.build(first, second.layout)
    classifier = head.build(s1)
    model.stem0, model.stem1, model.cells, model.classifier = new_stem0, new_stem1, nn.ModuleList(cells), classifier
    model.num_features = model.head_hidden_size = s1.layout.numel()
    drop_training_only(model)
    widths = dict(stem0=first.layout.numel(), stem1=second.layout.numel())
    widths.update({f'cells.{i}': graph.out.layout.numel() for i, graph in enumerate(graphs)})
    for info in model.feature_info:  # what forward_intermediates now returns
        info['num_chs'] = widths[info['module']]
    return before, after
