"""The PR-DARTS search supernet: mixed ops over the DARTS candidates, every conv / linear pruned.

Differences from the authors' code, on purpose: the architecture parameters ``alphas_normal`` /
``alphas_reduce`` are registered parameters, but :meth:`Supernet.weight_parameters` and
:meth:`Supernet.score_parameters` leave them out, so no weight optimizer ever updates alpha with the
training loss (the authors' SGD did). The ``none`` op is never computed: its output is zero; the
input ReLU that an edge's four sep / dil convs begin with is computed once per edge; on the CPU a strided
dilated conv runs as the undilated conv of its zero-spread kernel (the same numbers, a faster backward).
"""
import itertools
from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..genotypes import PRIMITIVES, Genotype
from ..layers import PrunedConv2d, PrunedLayer, PrunedLinear
from ..ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv, make_op

__all__ = ['MixedOp', 'SearchCell', 'Supernet', 'derive_genotype']


class MixedOp(nn.Module):
    """``sum_o w_o * o(x)`` over the candidate ops (``none`` skipped: it adds zero)."""

    def __init__(self, C: int, stride: int, primitives: Tuple[str, ...] = PRIMITIVES):
        super().__init__()
        self.op_index: List[int] = []
        self.ops = nn.ModuleList()
        for i, name in enumerate(primitives):
            if name == 'none':
                continue
            op = make_op(name, C, stride, affine=False)
            if 'pool' in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.ops.append(op)
            self.op_index.append(i)

        # sep / dil convs start with the same ReLU of the edge's input: it is computed once per edge
        self.shares_relu: List[bool] = [isinstance(op, (SepConv, DilConv)) for op in self.ops]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        relu_x = F.relu(x) if any(self.shares_relu) else x
        cpu = x.device.type == 'cpu'
        return sum(weights[i] * (_after_first(op, relu_x, cpu) if shared else op(x))
                   for i, op, shared in zip(self.op_index, self.ops, self.shares_relu))


def _after_first(op: nn.Sequential, x: torch.Tensor, cpu: bool) -> torch.Tensor:
    """``op`` without its first module (the shared ReLU)."""
    for module in itertools.islice(op, 1, None):
        if cpu and isinstance(module, PrunedConv2d) and module.stride != (1, 1) and module.dilation != (1, 1):
            x = _undilated_conv(module, x)
        else:
            x = module(x)
    return x


def _undilated_conv(conv: PrunedConv2d, x: torch.Tensor) -> torch.Tensor:
    """A strided dilated conv as the undilated conv of its kernel spread out with zeros: the same numbers. On
    the CPU oneDNN's backward of a strided dilated depthwise conv is 3-6x slower than that of the undilated
    conv of the larger kernel (measured at the supernet's reduction-cell shapes, batch 32, channels-last)."""
    weight = conv.pruned_weight()
    d_h, d_w = conv.dilation
    k_h, k_w = weight.shape[-2:]
    spread = weight.new_zeros(*weight.shape[:2], d_h * (k_h - 1) + 1, d_w * (k_w - 1) + 1)
    spread[:, :, ::d_h, ::d_w] = weight
    return F.conv2d(x, spread, conv.bias, conv.stride, conv.padding, 1, conv.groups)


class SearchCell(nn.Module):
    """A cell with a mixed op on every edge: node j sums all earlier states (2 + j edges)."""

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for j in range(steps):
            for i in range(2 + j):
                self.edges.append(MixedOp(C, 2 if reduction and i < 2 else 1))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum(self.edges[offset + i](h, weights[offset + i]) for i, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier:], dim=1)


def _num_edges(steps: int) -> int:
    return sum(2 + j for j in range(steps))


def derive_genotype(alphas_normal: torch.Tensor, alphas_reduce: torch.Tensor, steps: int = 4,
                    multiplier: int = 4, primitives: Tuple[str, ...] = PRIMITIVES) -> Genotype:
    """The DARTS rule: per node keep the 2 inputs with the largest non-``none`` weight, each with its argmax op."""
    none = primitives.index('none') if 'none' in primitives else -1

    def _parse(weights: torch.Tensor) -> List[Tuple[str, int]]:
        gene = []
        start, n = 0, 2
        for _ in range(steps):
            w = weights[start:start + n]
            strength = [max(w[j][k] for k in range(len(w[j])) if k != none) for j in range(n)]
            edges = sorted(range(n), key=lambda j: -strength[j])[:2]
            for j in edges:
                k_best = max((k for k in range(len(w[j])) if k != none), key=lambda k: w[j][k])
                gene.append((primitives[k_best], j))
            start += n
            n += 1
        return gene

    concat = list(range(2 + steps - multiplier, steps + 2))
    normal = _parse(F.softmax(alphas_normal.detach().float(), dim=-1).tolist())
    reduce = _parse(F.softmax(alphas_reduce.detach().float(), dim=-1).tolist())
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)


class Supernet(nn.Module):
    """DARTS search network (CIFAR stem) with pruned layers and architecture parameters.

    Args:
        C: initial channels (16 in the paper's search), layers: cells (8), steps: nodes per cell (4).
    """

    def __init__(self, C: int = 16, layers: int = 8, num_classes: int = 10, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, in_chans: int = 3, primitives: Tuple[str, ...] = PRIMITIVES):
        super().__init__()
        if layers < 3:
            raise ValueError(f'the supernet needs layers >= 3 (two reduction cells and a normal one), got {layers}')
        self.steps = steps
        self.multiplier = multiplier
        self.primitives = tuple(primitives)
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(PrunedConv2d(in_chans, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = SearchCell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = PrunedLinear(C_prev, num_classes)
        n_edges, n_ops = _num_edges(steps), len(self.primitives)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_normal = F.softmax(self.alphas_normal, dim=-1)
        w_reduce = F.softmax(self.alphas_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(self.global_pool(s1).flatten(1))

    def arch_parameters(self) -> List[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """Network weights (conv / linear / BN), without scores and without alpha."""
        skip = {id(p) for p in self.arch_parameters()} | {id(p) for p in self.score_parameters()}
        return (p for p in self.parameters() if id(p) not in skip)

    def score_parameters(self) -> List[nn.Parameter]:
        return [m.scores for m in self.modules() if isinstance(m, PrunedLayer) and m.scores is not None]

    def genotype(self) -> Genotype:
        return derive_genotype(self.alphas_normal, self.alphas_reduce, self.steps, self.multiplier, self.primitives)

    def alpha_softmax(self) -> Dict[str, List[List[float]]]:
        """softmax(alpha) per edge, for logs and pictures."""
        return {
            'normal': F.softmax(self.alphas_normal.detach().float(), dim=-1).tolist(),
            'reduce': F.softmax(self.alphas_reduce.detach().float(), dim=-1).tolist(),
        }
