"""Evaluate a (pruned) network: accuracy, size, sparsity, MACs and CPU latency, as JSON and a markdown row.

    python recipes/evaluate.py --model prdarts_c10_mini --checkpoint model.safetensors --output eval.json
    python recipes/evaluate.py --model prdarts_c10 --checkpoint ckpt.pth --data_source imagefolder \\
        --data_root data/cifar10 --threads 4
    python recipes/evaluate.py --model resnet18 --checkpoint baked.safetensors --num_classes 10 --no_latency
    python recipes/evaluate.py --run runs/x --data_source imagefolder --data_root data/cifar10 --output eval.json

``--run`` takes a ``recipes/train.py`` folder and evaluates its inference network
(``finetune/model_baked.safetensors``) as the run built it: model, model arguments and stem come from the
run's finetune summary (``prdarts_timm.run_folder``), so ``--model`` and ``--checkpoint`` are not given.

It runs as one process (no accelerate launcher, no distributed evaluation): the figures it reports, latency
above all, are those of a single process.

The checkpoint is a state dict: a ``.safetensors`` file, or anything else ``torch.load(weights_only=True)``
reads (a dict holding it under ``'model'`` or ``'state_dict'`` works too). A baked state dict (plain timm
keys with exact zeros, from ``prdarts_timm.bake``) loads into the PR-DARTS models and gets its masks back
from the zeros; a state dict with pruning scores / masks loaded into a plain timm model converts its layers
first (``convert_to_pruned``).

Reported: top-1 / top-5 accuracy on the split; parameters (``prdarts_timm.count_params``); conv + linear
weights in total and nonzero, per layer too (``prdarts_timm.sparsity_report``); dense MACs and effective
MACs (kept weights only) per image (``prdarts_timm.profile.count_macs``); CPU latency at batch 1 and 64,
median of repeated runs on ``--threads`` threads, measured on a baked copy (the masks written into the
weights; zeros are computed like any weight, dense kernels do not skip them). The last line printed is the
markdown table row; ``--output`` writes everything as JSON.
"""
import argparse
import copy
import platform
import shlex
import sys
from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

import prdarts_timm
from prdarts_timm import bake, count_params, sparsity_report
from prdarts_timm.builder import create_model
from prdarts_timm.checkpoint import load_state_dict_checked, read_state_dict
from prdarts_timm.cli import run_main
from prdarts_timm.config import parse_kwargs
from prdarts_timm.cpu_allocator import keep_freed_memory
from prdarts_timm.data import build_dataset
from prdarts_timm.errors import PrdartsError
from prdarts_timm.io import atomic_write_json, file_sha256
from prdarts_timm.profile import count_macs, cpu_name, measure_latency
from prdarts_timm.run_folder import TrainRun
from prdarts_timm.training import accuracy, data_transforms, input_size

MARKDOWN_COLUMNS = ('network', 'sparsity', 'top-1', 'params', 'nonzero', 'dense MACs', 'eff. MACs', 'latency b1')
LATENCY_BATCHES = (1, 64)


class EvaluateError(PrdartsError, ValueError):
    """A model, checkpoint or data request the evaluation cannot serve; the message names the fix."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default=None, help="any timm.create_model name (prdarts_c10_mini, resnet18)")
    parser.add_argument('--run', default=None,
                        help="a recipes/train.py folder: its inference network, built as the run built it")
    parser.add_argument('--checkpoint', default=None, help='state dict file (.safetensors or torch.save)')
    parser.add_argument('--pretrained', action='store_true',
                        help="the model's published weights (timm's pretrained=True: a tag, hf-hub:..., local-dir:...)")
    parser.add_argument('--random_weights', action='store_true',
                        help='evaluate an untrained network on purpose (its size, MACs and latency)')
    parser.add_argument('--num_classes', type=int, default=None, help="classes of the model (default: the model's)")
    parser.add_argument('--cifar_stem', action='store_true',
                        help='give a timm ResNet / MobileNet the 32x32 stem it was trained with (train.py cifar_stem)')
    parser.add_argument('--genotype', default=None, help='genotype= of a PR-DARTS model: a shipped name or a JSON file')
    parser.add_argument('--model_kwargs', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more timm.create_model kwargs, values read as YAML (e.g. C=16 layers=8), as in train.py')
    parser.add_argument('--data_source', default='mini', choices=('mini', 'imagefolder', 'torchvision'))
    parser.add_argument('--data_root', default=None, help="data folder ('imagefolder', 'torchvision')")
    parser.add_argument('--split', default='test')
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--num_workers', type=int, default=0)
    parser.add_argument('--max_batches', type=int, default=None, help='evaluate only the first N batches')
    parser.add_argument('--device', default='cpu', help='device for the accuracy pass (latency is always CPU)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads for the latency runs (default 1)')
    parser.add_argument('--latency_warmup', type=int, default=10)
    parser.add_argument('--latency_repeats', type=int, default=50)
    parser.add_argument('--no_latency', action='store_true', help='skip the latency runs')
    parser.add_argument('--output', default=None, help='JSON file for the full report')
    args = parser.parse_args()
    if args.batch_size < 1 or (args.max_batches is not None and args.max_batches < 1) or args.threads < 1:
        parser.error('--batch_size, --max_batches and --threads must be >= 1')
    if (args.run is None) == (args.model is None):
        parser.error('pass --model (with --checkpoint), or --run for a recipes/train.py folder, not both')
    if args.model is not None and [args.checkpoint is not None, args.pretrained, args.random_weights].count(True) != 1:
        parser.error(f'say which weights to evaluate: --pretrained ({args.model}\'s published weights), --checkpoint '
                     'FILE, or --random_weights (an untrained network, for its size, MACs and latency): exactly one')
    if args.run is not None:
        given = [f'--{k}' for k in ('checkpoint', 'num_classes', 'genotype') if getattr(args, k) is not None]
        given += ['--cifar_stem'] * args.cifar_stem + ['--model_kwargs'] * bool(args.model_kwargs)
        given += ['--pretrained'] * args.pretrained + ['--random_weights'] * args.random_weights
        if given:
            parser.error(f'--run takes the model and its weights from the run: drop {", ".join(given)}')
    return args


def model_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    kwargs = parse_kwargs(args.model_kwargs)
    if args.num_classes is not None:
        kwargs['num_classes'] = args.num_classes
    if args.genotype is not None:
        kwargs['genotype'] = args.genotype
    return kwargs


def load_checkpoint(model: nn.Module, path: str) -> nn.Module:
    return load_state_dict_checked(model, read_state_dict(path), path, hints=[
        'Check --model (the architecture the checkpoint was trained with), --num_classes, --cifar_stem, and for '
        'PR-DARTS models --genotype and --model_kwargs (C=..., layers=...)'])


def describe_dataset(args: argparse.Namespace, dataset, used: int) -> Dict[str, Any]:
    names = {'mini': 'mini CIFAR-10 (JPEG copy, the embedded subset)',
             'imagefolder': f'ImageFolder {args.data_root}', 'torchvision': 'CIFAR-10 (torchvision release)'}
    text = f'{names[args.data_source]}, split {args.split!r}, {used} of {len(dataset)} images'
    return dict(source=args.data_source, root=args.data_root, split=args.split, num_images=len(dataset),
                num_evaluated=used, num_classes=len(dataset.classes), classes=list(dataset.classes), description=text)


def human(n: float) -> str:
    for scale, unit in ((1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(n) >= scale:
            return f'{n / scale:.4g}{unit}'
    return f'{n:.0f}'


def markdown(results: Dict[str, Any]) -> Tuple[str, str]:
    header = '| ' + ' | '.join(MARKDOWN_COLUMNS) + ' |\n|' + '---|' * len(MARKDOWN_COLUMNS)
    latency = results['latency']
    b1 = f'{latency["batch_1"]["median_ms"]:.2f} ms ({latency["threads"]} thr)' if latency else 'n/a'
    weights, macs = results['weights'], results['macs']
    row = [results['model'], f'{100 * weights["sparsity"]:.2f}%', f'{results["top1"]:.2f}%',
           human(results['params']), human(weights['nonzero']), human(macs['dense']), human(macs['effective']), b1]
    return header, '| ' + ' | '.join(row) + ' |'


def main() -> None:
    args = parse_args()
    if args.run is not None:
        run = TrainRun(args.run)
        args.model, kwargs, args.cifar_stem = run.inference_args()
        args.checkpoint = str(run.baked)
    else:
        kwargs = model_kwargs(args)
    model = create_model(args.model, cifar_stem=args.cifar_stem, pretrained=args.pretrained, **kwargs)
    if args.checkpoint is not None:
        load_checkpoint(model, args.checkpoint)
    model.eval()

    transform, size = data_transforms(model)[1], input_size(model)
    dataset = build_dataset(args.data_source, args.split, root=args.data_root, transform=transform)
    num_classes = getattr(model, 'num_classes', None)
    if num_classes is not None and num_classes != len(dataset.classes):
        raise EvaluateError(f'{args.model} has {num_classes} classes, the {args.split!r} split has '
                            f'{len(dataset.classes)}: pass --num_classes {len(dataset.classes)} (and a checkpoint '
                            'trained for them)')
    if args.max_batches is not None:
        dataset_used = Subset(dataset, range(min(len(dataset), args.max_batches * args.batch_size)))
    else:
        dataset_used = dataset
    loader = DataLoader(dataset_used, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers)
    device = torch.device(args.device)
    if device.type == 'cpu':  # as train.py does: a batch's activations reuse freed memory, not fresh pages
        keep_freed_memory()
    # channels-last for the accuracy pass, as train.py trains: the same figures to float rounding, and on a CPU
    # 2-4x the images a second (prdarts_c10, one thread of an AMD EPYC); the latency runs below keep the default
    model.to(device, memory_format=torch.channels_last)
    acc = accuracy(model, tqdm(loader, desc=f'evaluate {args.model}', unit='batch'), device,
                   top5=num_classes is not None and num_classes >= 5, memory_format=torch.channels_last)
    del acc['loss']  # the report gives accuracy only
    model.to('cpu', memory_format=torch.contiguous_format)

    report = sparsity_report(model)
    macs = count_macs(model, size[-3:])
    latency: Optional[Dict[str, Any]] = None
    if not args.no_latency:
        deployed = bake(copy.deepcopy(model))  # W * m written into the weights: no mask work per forward
        latency = dict(device='cpu', cpu=cpu_name(), threads=args.threads, note='baked copy, dense kernels')
        for batch in LATENCY_BATCHES:
            latency[f'batch_{batch}'] = measure_latency(deployed, batch, size[-3:], args.threads,
                                                        warmup=args.latency_warmup, repeats=args.latency_repeats)

    results: Dict[str, Any] = dict(
        model=args.model, model_kwargs=kwargs, pretrained=args.pretrained, checkpoint=args.checkpoint,
        checkpoint_sha256=file_sha256(args.checkpoint) if args.checkpoint else None, input_size=list(size),
        dataset=describe_dataset(args, dataset, acc['num_samples']), batch_size=args.batch_size,
        max_batches=args.max_batches, memory_format='channels_last', **acc,
        params=count_params(model),
        weights=dict(total=report.total, nonzero=report.nonzero, sparsity=report.sparsity,
                     layers=[dict(layer, density=layer['nonzero'] / layer['numel'])
                             for layer in report.to_dict()['layers']]),
        macs=macs.to_dict(), latency=latency,
        environment=dict(command=shlex.join(['python', *sys.argv]), python=platform.python_version(),
                         torch=torch.__version__, timm=timm.__version__, prdarts_timm=prdarts_timm.__version__,
                         cpu=cpu_name(), threads=args.threads, torch_threads=torch.get_num_threads()),
    )
    results['markdown_header'], results['markdown_row'] = markdown(results)
    if args.output:
        atomic_write_json(args.output, results)

    top5 = f', top-5 {acc["top5"]:.2f}%' if acc['top5'] is not None else ''
    print(f'{args.model}: top-1 {acc["top1"]:.2f}%{top5} on {results["dataset"]["description"]}')
    print(f'weights {report.nonzero} / {report.total} nonzero ({100 * report.sparsity:.2f}% sparse), '
          f'MACs {macs.effective} effective / {macs.dense} dense per image')
    if latency:
        print(f'CPU latency ({latency["cpu"]}, {args.threads} thread(s)): '
              + ', '.join(f'batch {b} {latency[f"batch_{b}"]["median_ms"]:.2f} ms' for b in LATENCY_BATCHES))
    if args.output:
        print(f'report written to {args.output}')
    print(results['markdown_header'])
    print(results['markdown_row'])


if __name__ == '__main__':
    run_main(main)
