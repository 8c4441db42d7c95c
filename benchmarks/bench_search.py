"""Search step time and peak memory of the PR-DARTS supernet on the CPU, today's code beside an older checkout.

Times one full search iteration (``prdarts_timm.search.search_step``: the alpha step, then the weight or
score step) for each phase, first and second order, at the paper's search size (16 channels, 8 cells,
32x32 inputs, k = 0.01). Each configuration runs in a fresh process (``PYTHONPATH`` = its checkout), so its
peak RSS is its own; the two checkouts alternate configuration by configuration.

    python benchmarks/bench_search.py --baseline ../base        # ../base: git worktree add ../base <old commit>
    python benchmarks/bench_search.py --baseline ../base --orders 1st --rounds 3 --steps 4
    python benchmarks/bench_search.py [--batch 32 64] [--steps 3] [--threads 2]

``baseline`` runs the older checkout as its recipe did (NCHW); ``new`` runs this checkout as
``recipes/search.py`` does by default (supernet and batch channels-last, ``channels_last: true``).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict

HERE = Path(__file__).resolve().parent.parent


def worker(phase_name: str, second_order: bool, batch: int, steps: int, threads: int, channels: int, layers: int,
           channels_last: bool) -> None:
    import resource
    import statistics
    import time

    import torch
    torch.set_num_threads(threads)
    from prdarts_timm.search import Architect, Phase, Supernet, enter_phase, search_step, trained_parameters

    torch.manual_seed(0)
    model = Supernet(C=channels, layers=layers)
    try:  # the phase carries its k (since the stage record), or, in an older checkout, each call takes it
        phase, k_args = Phase(phase_name, 1, 0.025, arch_step=True, k=0.01), {}
    except TypeError:
        phase, k_args = Phase(phase_name, 1, 0.025, arch_step=True), dict(k=0.01)
    enter_phase(model, phase, **k_args)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizers = {g: torch.optim.SGD(p, lr=0.025) for g, p in trained_parameters(model, phase).items()}
    architect = Architect(model, torch.optim.Adam(model.arch_parameters(), lr=3e-4), second_order=second_order)
    times = []
    for i in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        search_step(model, phase, architect, optimizers, (x, y), (x, y), weight_decay=1e-3, **k_args)
        if i:
            times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print('BENCH ' + json.dumps(dict(median_s=statistics.median(times), peak_mib=peak_mib)))


def measure(checkout: Path, channels_last: bool, phase: str, second_order: bool, batch: int, args) -> Dict:
    call = (f'import sys; sys.path.insert(0, {str(HERE / "benchmarks")!r}); import bench_search; '
            f'bench_search.worker({phase!r}, {second_order}, {batch}, {args.steps}, {args.threads}, {args.channels}, '
            f'{args.layers}, {channels_last})')
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run([sys.executable, '-c', call], env=env, capture_output=True, text=True, cwd=checkout)
    lines = [line for line in result.stdout.splitlines() if line.startswith('BENCH ')]
    if result.returncode != 0 or not lines:
        raise SystemExit(f'the step failed in {checkout}:\n{result.stderr[-3000:]}')
    return json.loads(lines[-1][6:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--baseline', type=Path, help='a checkout of the older commit (git worktree)')
    parser.add_argument('--batch', type=int, nargs='+', default=[32])
    parser.add_argument('--steps', type=int, default=3, help='timed steps per configuration (after 1 warm-up)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--channels', type=int, default=16)
    parser.add_argument('--layers', type=int, default=8)
    parser.add_argument('--orders', nargs='+', default=['1st', '2nd'], choices=['1st', '2nd'])
    parser.add_argument('--rounds', type=int, default=1,
                        help='runs of each configuration, old and new alternating; the median is reported')
    args = parser.parse_args()
    import torch
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    print(f'# supernet {args.channels} channels / {args.layers} cells, 32x32, k = 0.01, torch {torch.__version__}, '
          f'{args.threads} threads, {cpu}')
    print(f'# median of {args.steps} steps after 1 warm-up (median over {args.rounds} alternating round(s)); alpha '
          'step included in every phase (prune too)')
    print(f'{"phase":<9} {"order":<6} {"batch":>5} {"code":<9} {"s/step":>8} {"img/s":>7} {"peak MiB":>9} '
          f'{"speed-up":>9}')
    for batch in args.batch:
        for second_order in [order == '2nd' for order in args.orders]:
            for phase in ('pretrain', 'prune', 'finetune'):
                runs = [('baseline', args.baseline.resolve(), False)] if args.baseline else []
                runs.append(('new', HERE, True))
                rounds = [{name: measure(checkout, cl, phase, second_order, batch, args) for name, checkout, cl in runs}
                          for _ in range(args.rounds)]
                results = {name: dict(median_s=statistics.median(r[name]['median_s'] for r in rounds),
                                      peak_mib=max(r[name]['peak_mib'] for r in rounds)) for name, _, _ in runs}
                for name, r in results.items():
                    ratio = (f'{results["baseline"]["median_s"] / r["median_s"]:.2f}x'
                             if 'baseline' in results and name == 'new' else '')
                    print(f'{phase:<9} {"2nd" if second_order else "1st":<6} {batch:>5} {name:<9} '
                          f'{r["median_s"]:>8.2f} {batch / r["median_s"]:>7.1f} {r["peak_mib"]:>9.0f} {ratio:>9}',
                          flush=True)


if __name__ == '__main__':
    main()
