"""Training-step cost of ``PrunedConv2d`` relative to ``nn.Conv2d`` on DARTS-shaped layers (CPU).

For depthwise 3x3 / 5x5 and pointwise 1x1 convolutions with DARTS CIFAR channel counts and feature-map
sizes, one training step (forward, backward of a fixed random output gradient, ``SGD.step`` on the
trainable tensors) is timed for:

* ``nn.Conv2d``            the reference: weight trained;
* ``conv2d#2``             a second, identical ``nn.Conv2d``: its ratio shows the measurement noise;
* ``dense``   (k = 1)      ``PrunedConv2d`` in dense mode: weight trained;
* ``fixed``   (k = 0.01, 1) cached mask, weight trained;
* ``learn``   (k = 0.01, 1) weight frozen, scores trained: the scores move every step, so the top-k mask
  is re-selected every step (at k = 1 the mask is full but the learn path still runs).

The input requires grad, as for a layer inside a network, so every variant also computes dL/dx.
glibc malloc is told to keep freed memory (``prdarts_timm.cpu_allocator``, as in the recipes; ``--system-malloc``
to skip), so page faults on fresh activation memory do not swamp the layer cost.
The variants of a case run interleaved, one step each per round in a rotating order, each step timed
with ``time.perf_counter``, so machine noise hits them equally; the reported ratio is the median step
time of the variant over the median step time of ``nn.Conv2d``, the absolute time the latter in ms.

Run: ``python benchmarks/bench_layers.py [--quick] [--threads N]``
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from prdarts_timm.cpu_allocator import keep_freed_memory
from prdarts_timm.layers import PrunedConv2d

# (name, kernel size, depthwise)
OPS: Tuple[Tuple[str, int, bool], ...] = (('dw3x3', 3, True), ('dw5x5', 5, True), ('pw1x1', 1, False))
# channels -> spatial size as in a DARTS CIFAR network
SPATIAL: Dict[int, int] = {16: 32, 36: 32, 72: 16, 144: 8}
# variant name -> (pruning mode or None for nn.Conv2d, k, target ratio)
VARIANTS: Dict[str, Tuple[Optional[str], float, float]] = {
    'conv2d': (None, 1.0, 1.0),
    'conv2d#2': (None, 1.0, 1.15),  # a second nn.Conv2d: the A/A noise floor of the measurement
    'dense': ('dense', 1.0, 1.15),
    'fixed@.01': ('fixed', 0.01, 1.15),
    'fixed@1': ('fixed', 1.0, 1.15),
    'learn@.01': ('learn', 0.01, 1.5),
    'learn@1': ('learn', 1.0, 1.15),  # "k = 1 within 1.15x" read strictly: also for the learn path
}


@dataclass
class Case:
    op: str
    kernel: int
    depthwise: bool
    channels: int
    batch: int

    @property
    def size(self) -> int:
        return SPATIAL[self.channels]

    def label(self) -> str:
        return f'{self.op:<6} C={self.channels:<3} {self.size:>2}x{self.size:<2} B={self.batch:<2}'


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def make_step(case: Case, variant: str, seed: int = 0) -> Callable[[], None]:
    """A closure running one training step of ``variant`` on ``case`` (all variants share the data)."""
    mode, k, _ = VARIANTS[variant]
    gen = torch.Generator().manual_seed(seed)
    c = case.channels
    ref = nn.Conv2d(c, c, case.kernel, padding=case.kernel // 2, groups=c if case.depthwise else 1, bias=False)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(ref.weight.shape, generator=gen) * 0.1)
    layer: nn.Conv2d = ref
    if mode is not None:
        layer = PrunedConv2d.from_dense(ref)
        layer.set_mode(mode)
        layer.set_k(k)
    x = torch.randn(case.batch, c, case.size, case.size, generator=gen).requires_grad_(True)
    grad_out = torch.randn(case.batch, c, case.size, case.size, generator=gen)
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad_out)
        opt.step()

    return step


def time_case(case: Case, warmup: int, rounds: int) -> Dict[str, Tuple[float, float]]:
    """variant -> (median ms per step, ratio of its median to nn.Conv2d's median).

    One round runs one step of every variant, in an order rotated each round, each step timed on its own;
    medians over rounds discard the steps that another process on the machine slowed down.
    """
    names = list(VARIANTS)
    steps = {name: make_step(case, name) for name in names}
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    ref = statistics.median(times['conv2d'])
    return {name: (statistics.median(times[name]), statistics.median(times[name]) / ref) for name in names}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='small grid, fewer rounds')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch intra-op threads')
    parser.add_argument('--rounds', type=int, default=None,
                        help='timed steps per variant and case (median taken); default 60, 20 with --quick')
    parser.add_argument('--warmup', type=int, default=5, help='untimed steps per variant before timing')
    parser.add_argument('--ops', nargs='+', choices=[op for op, _, _ in OPS], default=None, help='subset of ops')
    parser.add_argument('--channels', nargs='+', type=int, choices=list(SPATIAL), default=None,
                        help='subset of channel counts')
    parser.add_argument('--batches', nargs='+', type=int, default=None, help='batch sizes')
    parser.add_argument('--system-malloc', action='store_true',
                        help='leave glibc malloc at its defaults (mmap and page-fault large tensors each step)')
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    malloc = 'glibc defaults' if args.system_malloc else (
        'freed memory kept (mallopt)' if keep_freed_memory() else 'defaults (mallopt unavailable)')
    channels = args.channels or ((16, 72) if args.quick else tuple(SPATIAL))
    batches = args.batches or ((32,) if args.quick else (32, 64))
    ops = [o for o in OPS if args.ops is None or o[0] in args.ops]
    rounds = args.rounds or (20 if args.quick else 60)
    cases = [Case(op, kern, dw, c, b) for op, kern, dw in ops for c in channels for b in batches]

    print('# PrunedConv2d vs nn.Conv2d, forward + backward + SGD step (input requires grad)')
    print(f'# torch {torch.__version__}, threads {torch.get_num_threads()}, CPU: {cpu_model()} '
          f'({os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f}), python {platform.python_version()}, '
          f'malloc: {malloc}')
    print(f'# {len(cases)} cases, warmup {args.warmup}, {rounds} interleaved rounds (one timed step per variant '
          f'each); ratio = median step time / median nn.Conv2d step time')
    names = [n for n in VARIANTS if n != 'conv2d']
    header = f'{"case":<28} {"conv2d ms":>9} ' + ' '.join(f'{n:>9}' for n in names)
    print(header)
    print('-' * len(header))
    ratios: Dict[str, List[float]] = {n: [] for n in names}
    t_start = time.perf_counter()
    for case in cases:
        res = time_case(case, args.warmup, rounds)
        for n in names:
            ratios[n].append(res[n][1])
        print(f'{case.label():<28} {res["conv2d"][0]:>9.3f} ' + ' '.join(f'{res[n][1]:>8.3f}x' for n in names),
              flush=True)
    print('-' * len(header))
    print(f'# total {time.perf_counter() - t_start:.0f} s, load avg now {os.getloadavg()[0]:.2f}; '
          'conv2d#2 is a second nn.Conv2d (A/A): its spread is the noise of this run')
    print(f'{"mode":<10} {"median":>8} {"max":>8} {"target":>8}  result')
    for n in names:
        target = VARIANTS[n][2]
        worst = max(ratios[n])
        verdict = 'PASS' if worst <= target else f'MISS ({sum(r > target for r in ratios[n])}/{len(ratios[n])} over)'
        print(f'{n:<10} {statistics.median(ratios[n]):>7.3f}x {worst:>7.3f}x {target:>7.2f}x  {verdict}')


if __name__ == '__main__':
    main()
