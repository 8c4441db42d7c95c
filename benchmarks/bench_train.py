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
bfloat16 on the CPU), ``tensor+compile`` (``--compile true``; also left out by ``--no-compile``). These set the
thread count themselves (``--threads``). Two more launch the recipe as a user does, through ``accelerate launch``
with no thread flag and no ``OMP_NUM_THREADS`` (the README's command): ``launched`` (the recipe's threads: every
core) and ``launched+1thread`` (``--cpu_threads 1``: what accelerate's launcher default of one thread gave
before the recipes read it as a default); the table shows the threads each run's ``launch.json`` recorded.

    python benchmarks/bench_train.py --baseline ../base --model prdarts_c10 --configs baseline tensor tensor+bf16
    python benchmarks/bench_train.py --configs launched launched+1thread --batch_size 128
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


WORKER = """import sys
sys.path.insert(0, {here!r})
import bench_train
bench_train.worker({checkout!r}, {recipe_args!r})
"""


def run(checkout: Path, extra: list, args, output: str, launched: bool = False) -> dict:
    recipe_args = ['--cpu', '--output', output, '--model', args.model, '--stages', '[pretrain]',
                   '--batch_size', str(args.batch_size),
                   '--pretrain_epochs', '1', '--max_steps_per_epoch', str(args.steps), '--eval_max_batches', '1',
                   '--checkpoint_every', '100000', *extra]
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE='1')
    code = WORKER.format(here=str(HERE / 'benchmarks'), checkout=str(checkout), recipe_args=recipe_args)
    if launched:  # `accelerate launch recipes/train.py ...` as the README has it: no thread flag, no OMP_NUM_THREADS
        del env['OMP_NUM_THREADS']
        script = Path(output + '_worker.py')
        script.write_text(code)
        cmd = [sys.executable, '-m', 'accelerate.commands.launch', str(script)]
    else:
        cmd = [sys.executable, '-c', code]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=checkout)
    lines = [line for line in result.stdout.splitlines() if line.startswith('BENCH ')]
    if result.returncode != 0 or not lines:
        raise SystemExit(f'the recipe failed in {checkout}:\n{result.stderr[-3000:]}')
    data = json.loads(lines[-1][6:])
    stamps = data['stamps']
    steps = [b - a for a, b in zip(stamps[args.warmup:], stamps[args.warmup + 1:])]
    launch = json.loads((Path(output) / 'launch.json').read_text()) if (Path(output) / 'launch.json').exists() else {}
    return dict(step_s=statistics.median(steps), first_s=stamps[0] - data['started'],
                threads=launch.get('cpu_threads_per_process') or args.threads)


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
                 'tensor+bf16': ['--mixed_precision', 'bf16'], 'tensor+compile': ['--compile', 'true'],
                 'launched': [], 'launched+1thread': ['--cpu_threads', '1']}
    if args.baseline is not None:
        available = dict(baseline=None, **available)
    chosen = args.configs or [n for n in available if (n != 'tensor+compile' or args.compile)
                              and not n.startswith('launched')]
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise SystemExit(f'unknown configuration(s) {unknown} (known: {", ".join(available)}; baseline needs '
                         '--baseline)')
    configs = [(n, args.baseline.resolve(), []) if n == 'baseline' else (n, HERE, available[n]) for n in chosen]
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    import torch
    print(f'# recipes/train.py pretrain stage, {args.model}, CPU demo config (mini CIFAR-10, batch {args.batch_size}, aux 0.4, '
          f'cutout 16), torch {torch.__version__}, {args.threads} threads unless launched, {cpu}')
    print(f'# median step time over steps {args.warmup + 1}..{args.steps} of each run, {args.rounds} round(s), '
          f'configurations interleaved')
    results = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, checkout, extra in configs:
                out = str(Path(tmp) / f'{name}-{r}')
                results[name].append(run(checkout, extra, args, out, launched=name.startswith('launched')))
    base = statistics.median(x['step_s'] for x in results[configs[0][0]])
    print(f'{"config":<16} {"threads":>7} {"s/step":>7} {"img/s":>7} {"ratio":>6} {"first step s":>13}')
    for name, _, _ in configs:
        step = statistics.median(x['step_s'] for x in results[name])
        first = statistics.median(x['first_s'] for x in results[name])
        threads = results[name][0]['threads']
        print(f'{name:<16} {threads:>7} {step:>7.3f} {args.batch_size / step:>7.1f} {base / step:>5.2f}x {first:>13.1f}')
    print(f'# ratio: against {configs[0][0]}; first step s: from the recipe\'s start (setup, data, compile)')


if __name__ == '__main__':
    main()
