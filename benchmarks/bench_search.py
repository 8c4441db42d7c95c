"""Search step time and peak memory of the PR-DARTS supernet on the CPU.

Times one full search iteration (``prdarts_timm.search.search_step``: the alpha step, then the weight or
score step) for each phase, first and second order, at the paper's search size (16 channels, 8 cells,
32x32 inputs) and batch 32 / 64. Each configuration runs in a fresh process, so its peak RSS is its own.

    python benchmarks/bench_search.py [--batch 32 64] [--steps 3] [--threads 2]
"""
import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import time
from typing import Dict

import torch


def _run(phase_name: str, second_order: bool, batch: int, steps: int, threads: int, channels: int,
         layers: int, queue) -> None:
    torch.set_num_threads(threads)
    from prdarts_timm.search import Architect, Phase, Supernet, enter_phase, search_step, trained_parameters

    torch.manual_seed(0)
    model = Supernet(C=channels, layers=layers)
    phase = Phase(phase_name, 1, 0.025, arch_step=True)
    enter_phase(model, phase, k=0.01)
    optimizers = {g: torch.optim.SGD(p, lr=0.025) for g, p in trained_parameters(model, phase).items()}
    architect = Architect(model, torch.optim.Adam(model.arch_parameters(), lr=3e-4), second_order=second_order)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        search_step(model, phase, architect, optimizers, (x, y), (x, y), k=0.01, weight_decay=1e-3)
        if i:
            times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(dict(median_s=statistics.median(times), peak_mib=peak_mib))


def measure(phase: str, second_order: bool, batch: int, args) -> Dict[str, float]:
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(phase, second_order, batch, args.steps, args.threads, args.channels,
                                          args.layers, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch', type=int, nargs='+', default=[32, 64])
    parser.add_argument('--steps', type=int, default=3, help='timed steps per configuration (after 1 warm-up)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--channels', type=int, default=16)
    parser.add_argument('--layers', type=int, default=8)
    args = parser.parse_args()
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    print(f'# supernet {args.channels} channels / {args.layers} cells, 32x32, torch {torch.__version__}, '
          f'{args.threads} threads, {cpu}')
    print(f'# median of {args.steps} steps after 1 warm-up; alpha step included in every phase (prune too)')
    print(f'{"phase":<9} {"order":<6} {"batch":>5} {"s/step":>8} {"img/s":>7} {"peak MiB":>9}')
    for batch in args.batch:
        for second_order in (False, True):
            for phase in ('pretrain', 'prune', 'finetune'):
                r = measure(phase, second_order, batch, args)
                print(f'{phase:<9} {"2nd" if second_order else "1st":<6} {batch:>5} {r["median_s"]:>8.2f} '
                      f'{batch / r["median_s"]:>7.1f} {r["peak_mib"]:>9.0f}', flush=True)


if __name__ == '__main__':
    main()
