"""Evaluate a (pruned) network: accuracy, size, sparsity, MACs and CPU latency, as JSON and a markdown row.

    python recipes/evaluate.py --model prdarts_c10_mini --checkpoint model.safetensors --output eval.json
    python recipes/evaluate.py --model prdarts_c10 --checkpoint ckpt.pth --data_source imagefolder \\
        --data_root data/cifar10 --threads 4
    python recipes/evaluate.py --model resnet18 --checkpoint baked.safetensors --num_classes 10 --no_latency

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
import difflib
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn as nn
import yaml
from timm.data import create_transform, resolve_data_config
from torch.utils.data import DataLoader, Subset

import prdarts_timm
from prdarts_timm import GenotypeError, bake, convert_to_pruned, count_params, pruned_layers, sparsity_report
from prdarts_timm.data import DatasetError, build_dataset, cifar_transforms
from prdarts_timm.io import atomic_write_json
from prdarts_timm.profile import count_macs, measure_latency

MARKDOWN_COLUMNS = ('network', 'sparsity', 'top-1', 'params', 'nonzero', 'dense MACs', 'eff. MACs', 'latency b1')
LATENCY_BATCHES = (1, 64)


class EvaluateError(ValueError):
    """A model, checkpoint or data request the evaluation cannot serve; the message names the fix."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help="any timm.create_model name (prdarts_c10_mini, resnet18)")
    parser.add_argument('--checkpoint', default=None,
                        help='state dict file (.safetensors or torch.save); without it the weights are random')
    parser.add_argument('--num_classes', type=int, default=None, help="classes of the model (default: the model's)")
    parser.add_argument('--genotype', default=None, help='genotype= of a PR-DARTS model: a shipped name or a JSON file')
    parser.add_argument('--model_kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                        help='more timm.create_model kwargs, values read as YAML (e.g. C=16 layers=8)')
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
    return args


def model_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    for item in args.model_kwargs:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise EvaluateError(f'--model_kwargs takes KEY=VALUE items, got {item!r} '
                                '(e.g. --model_kwargs C=16 layers=8)')
        kwargs[key] = yaml.safe_load(value)
    if args.num_classes is not None:
        kwargs['num_classes'] = args.num_classes
    if args.genotype is not None:
        kwargs['genotype'] = args.genotype
    return kwargs


def create_model(name: str, kwargs: Dict[str, Any]) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with clear errors for an unknown name or argument."""
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:
        if not str(e).startswith('Unknown model'):
            raise
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        raise EvaluateError(
            f"timm does not know a model named {name!r}.{hint} List the PR-DARTS models with "
            "python -c \"import timm, prdarts_timm; print(timm.list_models('prdarts*'))\" "
            "(timm.list_models(module='prdarts') includes the DARTS baselines).") from None
    except TypeError as e:
        if 'unexpected keyword argument' not in str(e):
            raise
        raise EvaluateError(f'{name} does not take one of the arguments {sorted(kwargs)} ({e}); --genotype and '
                            'PR-DARTS kwargs such as C / layers apply to the PR-DARTS models only') from None


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The state dict in ``path`` (.safetensors, or torch.save, optionally under 'model' / 'state_dict')."""
    file = Path(path)
    if file.is_dir():
        inside = [p.name for p in file.iterdir() if p.suffix in ('.safetensors', '.bin', '.pth', '.pt')]
        raise EvaluateError(f'checkpoint {path!r} is a folder; pass the state dict file inside it'
                            + (f' (it holds {", ".join(sorted(inside))})' if inside else ''))
    if not file.is_file():
        raise EvaluateError(f'checkpoint file {path!r} does not exist; pass the path of a .safetensors or '
                            'torch.save state dict file to --checkpoint')
    try:
        if file.suffix == '.safetensors':
            from safetensors.torch import load_file
            state = load_file(file)
        else:
            state = torch.load(file, map_location='cpu', weights_only=True)
    except Exception as e:  # any reader failure: corrupt, truncated, not a checkpoint, pickled objects
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvaluateError(
            f'cannot read checkpoint {path!r}: {reason[:300]}. The file is corrupt, truncated or not a state '
            'dict: --checkpoint takes a .safetensors file or a torch.save state dict that '
            'torch.load(weights_only=True) reads (re-export it, e.g. with safetensors.torch.save_file)') from None
    if isinstance(state, dict):
        for key in ('model', 'state_dict'):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise EvaluateError(f'checkpoint {path!r} does not hold a state dict (a mapping of names to tensors, '
                            "possibly under a 'model' or 'state_dict' key)")
    return timm.models.clean_state_dict(state)


def load_checkpoint(model: nn.Module, state: Dict[str, torch.Tensor], args: argparse.Namespace) -> nn.Module:
    """Load ``state`` strictly; a mismatch raises an :class:`EvaluateError` listing a few keys and the fix."""
    pruning_keys = any(k.endswith(('.scores', '.mask')) for k in state)
    if pruning_keys and not any(True for _ in pruned_layers(model)):
        convert_to_pruned(model)  # a checkpoint of a converted timm model: give it the pruned layers back
    try:
        model.load_state_dict(state, strict=True)
        return model
    except RuntimeError as e:
        error = e
    own = model.state_dict()
    baked = {name + suffix for name, layer in pruned_layers(model) for suffix in ('.scores', '.mask')
             if f'{name}.weight' in state and f'{name}.scores' not in state and f'{name}.mask' not in state}
    # ^ a baked layer (weight only): its scores and mask come from the weight's zeros
    implied = {name + suffix for name, layer in pruned_layers(model) for suffix in ('.scores', '.mask')
               if f'{name}.weight' not in state}  # reported through the missing weight
    missing = [k for k in own if k not in state and k not in baked and k not in implied]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                  if k in state and state[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing key(s), e.g. {missing[:3]}')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}')
    if mismatched:
        shown = '; '.join(f'{k}: checkpoint {list(a)} vs model {list(b)}' for k, a, b in mismatched[:3])
        parts.append(f'{len(mismatched)} shape mismatch(es), e.g. {shown}')
    if not parts:
        parts.append(' '.join(str(error).split())[:500])
    hints = []
    classifier = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier')
    head = state.get(f'{classifier}.weight') if isinstance(classifier, str) else None
    if head is not None and head.dim() >= 1 and head.shape[0] != getattr(model, 'num_classes', head.shape[0]):
        hints.append(f'the checkpoint classifier has {head.shape[0]} classes: pass --num_classes {head.shape[0]}')
    hints.append('Check --model (the architecture the checkpoint was trained with), --num_classes, and for '
                 'PR-DARTS models --genotype and --model_kwargs (C=..., layers=...)')
    raise EvaluateError(f'checkpoint {args.checkpoint!r} does not match {args.model}: {"; ".join(parts)}. '
                        f'{"; ".join(hints)}') from None


def data_transform(model: nn.Module) -> Tuple[Any, Tuple[int, ...]]:
    """(eval transform, input size): DARTS CIFAR eval transform for 32x32 models, timm's otherwise."""
    config = resolve_data_config(model=model)
    input_size = tuple(config['input_size'])
    if input_size[1:] == (32, 32):
        return cifar_transforms(train=False), input_size
    return create_transform(**config, is_training=False), input_size


def describe_dataset(args: argparse.Namespace, dataset, used: int) -> Dict[str, Any]:
    names = {'mini': 'mini CIFAR-10 (JPEG copy, the embedded subset)',
             'imagefolder': f'ImageFolder {args.data_root}', 'torchvision': 'CIFAR-10 (torchvision release)'}
    text = f'{names[args.data_source]}, split {args.split!r}, {used} of {len(dataset)} images'
    return dict(source=args.data_source, root=args.data_root, split=args.split, num_images=len(dataset),
                num_evaluated=used, num_classes=len(dataset.classes), description=text)


@torch.inference_mode()
def accuracy(model: nn.Module, loader: DataLoader, device: torch.device, top5: bool) -> Dict[str, Any]:
    """Correct top-1 (and top-5) predictions over every sample of ``loader``, model in eval mode."""
    model.eval()
    correct1 = correct5 = samples = 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images)
        hit1 = logits.argmax(dim=1) == targets
        correct1 += int(hit1.sum())
        if top5:
            hit5 = (logits.topk(5, dim=1).indices == targets[:, None]).any(dim=1) | hit1
            correct5 += int(hit5.sum())
        samples += targets.numel()
    return dict(num_samples=samples, correct_top1=correct1, top1=100.0 * correct1 / max(samples, 1),
                correct_top5=correct5 if top5 else None, top5=100.0 * correct5 / max(samples, 1) if top5 else None)


def cpu_model_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    kwargs = model_kwargs(args)
    model = create_model(args.model, kwargs)
    if args.checkpoint is not None:
        load_checkpoint(model, read_state_dict(args.checkpoint), args)
    else:
        print('note: no --checkpoint, the weights are random', file=sys.stderr)
    model.eval()

    transform, input_size = data_transform(model)
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
    model.to(device)
    acc = accuracy(model, loader, device, top5=num_classes is not None and num_classes >= 5)
    model.to('cpu')

    report = sparsity_report(model)
    macs = count_macs(model, input_size[-3:])
    latency: Optional[Dict[str, Any]] = None
    if not args.no_latency:
        deployed = bake(copy.deepcopy(model))  # W * m written into the weights: no mask work per forward
        latency = dict(device='cpu', cpu=cpu_model_name(), threads=args.threads, note='baked copy, dense kernels')
        for batch in LATENCY_BATCHES:
            latency[f'batch_{batch}'] = measure_latency(deployed, batch, input_size[-3:], args.threads,
                                                        warmup=args.latency_warmup, repeats=args.latency_repeats)

    results: Dict[str, Any] = dict(
        model=args.model, model_kwargs=kwargs, checkpoint=args.checkpoint, input_size=list(input_size),
        dataset=describe_dataset(args, dataset, acc['num_samples']), batch_size=args.batch_size,
        max_batches=args.max_batches, **acc,
        params=count_params(model),
        weights=dict(total=report.total, nonzero=report.nonzero, sparsity=report.sparsity,
                     layers=[dict(layer, density=layer['nonzero'] / layer['numel'])
                             for layer in report.to_dict()['layers']]),
        macs=macs.to_dict(), latency=latency,
        environment=dict(command=shlex.join([sys.executable, *sys.argv]), python=platform.python_version(),
                         torch=torch.__version__, timm=timm.__version__, prdarts_timm=prdarts_timm.__version__,
                         cpu=cpu_model_name(), threads=args.threads, torch_threads=torch.get_num_threads()),
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
    try:
        main()
    except (EvaluateError, DatasetError, GenotypeError) as e:
        sys.exit(f'error: {type(e).__name__}: {e}')
