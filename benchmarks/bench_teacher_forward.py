"""What the teacher's forward costs by chunk size (``prdarts_timm.distill.teacher_logits`` runs it in chunks of
``CPU_TEACHER_CHUNK`` images on a CPU): one eval-mode, ``no_grad`` forward of a training batch (channels-last, fp32),
whole and in chunks, interleaved, ``--rounds`` times; the best round counts. Also checks that the chunks give the
whole batch's logits.

    python benchmarks/bench_teacher_forward.py --model prdarts_c10 --batch_size 128 --chunks 128 64 32 16 --threads 1
"""
import argparse
import time

import timm
import torch

import prdarts_timm  # noqa: F401  (registers the models)
from prdarts_timm.profile import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='prdarts_c10')
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--chunks', type=int, nargs='+', default=[128, 64, 32, 16], help='the first is the reference')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10).eval().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    times = {chunk: [] for chunk in args.chunks}
    with torch.no_grad():
        whole = model(x)  # also the warm-up
        for _ in range(args.rounds):
            for chunk in args.chunks:
                started = time.perf_counter()
                logits = torch.cat([model(part) for part in x.split(chunk)])
                times[chunk].append(time.perf_counter() - started)
                assert torch.allclose(logits, whole, atol=1e-5), f'chunks of {chunk} changed the logits'
    reference = min(times[args.chunks[0]])
    print(f'# {args.model}, a batch of {args.batch_size}, {args.threads} thread(s), {cpu_name()}')
    print('chunk  s/batch  ratio')
    for chunk in args.chunks:
        print(f'{chunk:5d}  {min(times[chunk]):7.3f}  {min(times[chunk]) / reference:.2f}x')


if __name__ == '__main__':
    main()
