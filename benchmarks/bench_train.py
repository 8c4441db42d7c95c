"""Retraining throughput of the recipe itself, today's code beside an older checkout, on the CPU.

Runs ``recipes/train.py`` (the pretrain stage of the CPU demo config with ``--model``) in a fresh process per
configuration and times every step of the recipe's own loop: the data (decoding, augmentation, batching),
forward, backward, gradient averaging and the optimizer step; not the setup, the evaluation or the saving.
The first ``--warmup`` steps are left out (with ``compile`` they hold the compilation, reported apart).
Configurations run interleaved, ``--rounds`` times, so a drift of the machine hits all of them alike.

    python benchmarks/bench_train.py --baseline ../base          # ../base: git worktree add ../base <old commit>
    python benchmarks/bench_train.py --baseline ../base --steps 20 --rounds 2 --model prdarts_c10_micro

Configurations (``--configs``, default all): ``baseline`` (the older checkout's recipe as it is), ``pil`` (this
checkout, PIL data path and no channels-last: the old data path through the new code), ``tensor`` (this
checkout's defaults: tensor data and channels-last), ``tensor+bf16`` (``--mixed_precision bf16``: autocast to
bfloat16 on the CPU), ``tensor+compile`` (``--compile true``; also left out by ``--no-compile``).

    python benchmarks/bench_train.py --baseline ../base --model prdarts_c10 --configs baseline tensor tensor+bf16
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def worker(checkout: str, recipe_args: list) -> None:
    """Run the recipe in this process with a tqdm that records when each step ends; print the times."""
    import runpy
    import types

    import tqdm.auto

    stamps = []

    class Bar(tqdm.auto.tqdm):
        def update(self, n=1):
            stamps.append(time.perf_counter())
            return super().update(n)

    fake = types.ModuleType('tqdm.auto')
    fake.tqdm = Bar
    sys.modules['tqdm.auto'] = fake
    recipe = str(Path(checkout) / 'recipes' / 'train.py')
    sys.argv = [recipe, *recipe_args]
    started = time.perf_counter()
    runpy.run_path(recipe, run_name='__main__')
    print('BENCH ' + json.dumps(dict(started=started, stamps=stamps)))


def run(checkout: Path, extra: list, args, output: str) -> dict:
    recipe_args = ['--cpu', '--output', output, '--model', args.model, '--stages', '[pretrain]',
                   '--batch_size', str(args.batch_size),
                   '--pretrain_epochs', '1', '--max_steps_per_epoch', str(args.steps), '--eval_max_batches', '1',
                   '--checkpoint_every', '100000', *extra]
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE='1')
    code = (f'import sys; sys.path.insert(0, {str(HERE / "benchmarks")!r}); import bench_train; '
            f'bench_train.worker({str(checkout)!r}, {recipe_args!r})')
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, cwd=checkout)
    lines = [line for line in result.stdout.splitlines() if line.startswith('BENCH ')]
    if result.returncode != 0 or not lines:
        raise SystemExit(f'the recipe failed in {checkout}:\n{result.stderr[-3000:]}')
    data = json.loads(lines[-1][6:])
    stamps = data['stamps']
    steps = [b - a for a, b in zip(stamps[args.warmup:], stamps[args.warmup + 1:])]
    return dict(step_s=statistics.median(steps), first_s=stamps[0] - data['started'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--baseline', type=Path, help='a checkout of the older commit (git worktree)')
    parser.add_argument('--model', default='prdarts_c10_micro')
    parser.add_argument('--steps', type=int, default=20, help='steps per run (at most 31: one mini epoch)')
    parser.add_argument('--warmup', type=int, default=3, help='first steps left out of the median')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--no-compile', dest='compile', action='store_false')
    parser.add_argument('--configs', nargs='+', default=None,
                        help='which configurations, in this order (default: all; baseline needs --baseline)')
    parser.add_argument('--batch_size', type=int, default=64)
    args = parser.parse_args()
    available = {'pil': ['--data_format', 'pil', '--channels_last', 'false'], 'tensor': [],
                 'tensor+bf16': ['--mixed_precision', 'bf16'], 'tensor+compile': ['--compile', 'true']}
    if args.baseline is not None:
        available = dict(baseline=None, **available)
    chosen = args.configs or [n for n in available if n != 'tensor+compile' or args.compile]
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise SystemExit(f'unknown configuration(s) {unknown} (known: {", ".join(available)}; baseline needs '
                         '--baseline)')
    configs = [(n, args.baseline.resolve(), []) if n == 'baseline' else (n, HERE, available[n]) for n in chosen]
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    import torch
    print(f'# recipes/train.py pretrain stage, {args.model}, CPU demo config (mini CIFAR-10, batch {args.batch_size}, aux 0.4, '
          f'cutout 16), torch {torch.__version__}, {args.threads} threads, {cpu}')
    print(f'# median step time over steps {args.warmup + 1}..{args.steps} of each run, {args.rounds} round(s), '
          f'configurations interleaved')
    results = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, checkout, extra in configs:
                out = str(Path(tmp) / f'{name}-{r}')
                results[name].append(run(checkout, extra, args, out))
    base = statistics.median(x['step_s'] for x in results[configs[0][0]])
    print(f'{"config":<16} {"s/step":>7} {"img/s":>7} {"ratio":>6} {"first step s":>13}')
    for name, _, _ in configs:
        step = statistics.median(x['step_s'] for x in results[name])
        first = statistics.median(x['first_s'] for x in results[name])
        print(f'{name:<16} {step:>7.3f} {args.batch_size / step:>7.1f} {base / step:>5.2f}x {first:>13.1f}')
    print(f'# ratio: against {configs[0][0]}; first step s: from the recipe\'s start (setup, data, compile)')


if __name__ == '__main__':
    main()
