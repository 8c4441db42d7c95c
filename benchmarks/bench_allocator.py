"""A training step with glibc's default allocator beside one with ``prdarts_timm.cpu_allocator.keep_freed_memory``
(and, optionally, bf16 autocast), each configuration in a fresh process, rounds interleaved.

    python benchmarks/bench_allocator.py --model prdarts_c10_micro --batch_size 256 --threads 2
    python benchmarks/bench_allocator.py --model prdarts_c10 --batch_size 64 --bf16

The step is the recipe's: channels-last model and batch, forward through ``forward_aux`` (auxiliary head
0.4), cross-entropy, backward, SGD with Nesterov momentum; random input (the data path is not timed). Prints
the median seconds per step over the steps after ``--warmup``, for each configuration, and the ratios.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(model_name: str, batch_size: int, keep: bool, bf16: bool, steps: int, warmup: int, threads: int) -> None:
    if keep:
        from prdarts_timm.cpu_allocator import keep_freed_memory
        assert keep_freed_memory(), 'not glibc: nothing to compare'
    import time

    import timm
    import torch

    import prdarts_timm  # noqa: F401

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10, auxiliary=True).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast('cpu', torch.bfloat16, enabled=bf16):
            logits, aux = model.forward_aux(x)
            loss = torch.nn.functional.cross_entropy(logits, y) + 0.4 * torch.nn.functional.cross_entropy(aux, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    print('BENCH ' + json.dumps(dict(step_s=statistics.median(times[warmup:]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='prdarts_c10_micro')
    parser.add_argument('--batch_size', type=int, default=256)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--steps', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--bf16', action='store_true', help='also time bf16 autocast (with freed memory kept)')
    args = parser.parse_args()
    configs = [('glibc default', False, False), ('keep_freed_memory', True, False)]
    if args.bf16:
        configs.append(('keep_freed_memory + bf16', True, True))
    results = {name: [] for name, _, _ in configs}
    for _ in range(args.rounds):
        for name, keep, bf16 in configs:
            code = (f'import sys; sys.path.insert(0, {str(ROOT / "benchmarks")!r}); import bench_allocator; '
                    f'bench_allocator.worker({args.model!r}, {args.batch_size}, {keep}, {bf16}, {args.steps}, '
                    f'{args.warmup}, {args.threads})')
            out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.split('BENCH ', 1)[1])['step_s'])
    from prdarts_timm.profile import cpu_name
    print(f'# {args.model}, batch {args.batch_size}, {args.threads} threads, {cpu_name()}; median s/step of steps '
          f'{args.warmup + 1}..{args.steps}, median over {args.rounds} interleaved rounds')
    base = statistics.median(results[configs[0][0]])
    for name, _, _ in configs:
        step = statistics.median(results[name])
        print(f'{name:<26} {step:7.3f} s/step {args.batch_size / step:7.1f} img/s {base / step:5.2f}x')


if __name__ == '__main__':
    main()
