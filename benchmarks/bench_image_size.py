"""What progressive resizing saves: one training step (forward, backward, SGD step; channels-last, fp32) of a
network at each image side, against the full size. Sides run interleaved, ``--rounds`` times; the best round's
median step counts. The bare step only: the recipe adds per-step work (batching, augmentation, gradient
clipping, the optimizer's bookkeeping), so compare batch sizes in the recipe (``bench_recipe.py``), not here (at
batch 32 a micro step here was 0.84x per image of batch 128's, a recipe epoch about 1.06x: docs/results.md).

    python benchmarks/bench_image_size.py --model prdarts_c10_micro --sizes 32 24 20 16 --threads 1
"""
import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import prdarts_timm  # noqa: F401  (registers the models)
from prdarts_timm.profile import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='prdarts_c10_micro')
    parser.add_argument('--sizes', type=int, nargs='+', default=[32, 24, 20, 16], help='the first is the reference')
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--steps', type=int, default=4, help='steps per size and round (the first left out)')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = {size: [] for size in args.sizes}
    for _ in range(args.rounds):
        for size in args.sizes:
            x = torch.randn(args.batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (args.batch_size,))
            steps = []
            for _ in range(args.steps):
                started = time.perf_counter()
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps.append(time.perf_counter() - started)
            times[size].append(statistics.median(steps[1:]))
    reference = min(times[args.sizes[0]])
    print(f'# {args.model}, batch {args.batch_size}, {args.threads} thread(s), {cpu_name()}')
    print('side  s/step  ratio')
    for size in args.sizes:
        print(f'{size:4d}  {min(times[size]):6.3f}  {min(times[size]) / reference:.2f}x')


if __name__ == '__main__':
    main()
