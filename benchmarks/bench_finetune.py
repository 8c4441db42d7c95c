"""Fine-tuning a published tag on small data sets of other domains: the recipe's fine-tune config against a
plain PyTorch loop, for the same epochs, sparse (the tag's zeros kept) and dense (released).

    python benchmarks/bench_finetune.py                      # glyphs + shapes, prdarts_c10_micro.sp90_cifar10
    python benchmarks/bench_finetune.py --model prdarts_c10_micro.sp99_cifar10 --datasets shapes --json out.json

The data sets are generated (``prdarts_timm.synthetic_data``: 1,300 train / 1,000 test images, 10 classes,
32x32 RGB), so nothing is downloaded. The recipe runs as the README says (``recipes/train.py --config
recipes/configs/finetune.yaml``, ``--stages '[finetune]'`` sparse, ``'[pretrain]'`` dense) and its last
epoch's top-1 on the whole test split is read from its ``summary.json``. The reference loop is the one a user
would write first: ``timm.create_model(tag, pretrained=True, num_classes=10)`` (``set_pruning(model,
'dense')`` for dense), timm's eval transform, no augmentation, SGD momentum 0.9, one-cycle lr 0.05, batch 64,
the config's epochs. The data sets have 10 classes like the tags, so timm keeps the tag's classifier (pruned
too, in the sparse tags); the loop runs a second time on a new classifier (``reset_classifier(10)``), as the
config's ``reset_classifier: true`` does. Prints one table row per (data set, mode): the means over ``--seeds``
and the recipe-minus-plain-loop difference (a few short runs on 1,000 test images differ by several points
from seed to seed, so one seed decides only a difference much larger than that).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import timm
import yaml
from timm.data import create_transform, resolve_data_config
from torch.utils.data import DataLoader
from torchvision import datasets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import prdarts_timm  # noqa: E402  (registers the models)
from prdarts_timm import set_pruning  # noqa: E402
from prdarts_timm.synthetic_data import make_imagefolder  # noqa: E402

CONFIG = ROOT / 'recipes' / 'configs' / 'finetune.yaml'


def zero_pattern(model: torch.nn.Module) -> dict:
    """Where each conv / linear weight of the backbone is exactly zero (the classifier is new)."""
    return {name: (m.weight == 0) for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and not name.startswith('classifier')}


def reference_loop(model_name: str, data: Path, epochs: int, dense: bool, seed: int = 0,
                   new_head: bool = False) -> dict:
    """The plain loop of the issue: SGD momentum 0.9, one-cycle lr 0.05, no augmentation, batch 64; with
    ``new_head`` on a new classifier (``model.reset_classifier(10)``) instead of the tag's."""
    torch.manual_seed(seed)
    model = timm.create_model(model_name, pretrained=True, num_classes=10)
    if new_head:
        model.reset_classifier(10)
    if dense:
        set_pruning(model, 'dense')
    before = zero_pattern(model)
    transform = create_transform(**resolve_data_config(model=model), is_training=False)
    train = datasets.ImageFolder(str(data / 'train'), transform=transform)
    test = datasets.ImageFolder(str(data / 'test'), transform=transform)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in DataLoader(test, batch_size=256):
            correct += (model(x).argmax(1) == y).sum().item()
    kept = all(torch.equal(before[k], v) for k, v in zero_pattern(model).items()) if not dense else None
    return dict(top1=100.0 * correct / len(test), zero_pattern_kept=kept)


def recipe(model_name: str, data: Path, dense: bool, out: Path, seed: int = 0) -> dict:
    """recipes/train.py with the fine-tune config, as the README runs it (one process, CPU)."""
    stage = 'pretrain' if dense else 'finetune'
    command = [sys.executable, str(ROOT / 'recipes' / 'train.py'), '--cpu', '--config', str(CONFIG),
               '--model', model_name, '--data_root', str(data), '--output', str(out), '--stages', f'[{stage}]',
               '--seed', str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    if done.returncode != 0:
        sys.exit(f'the recipe failed ({" ".join(command)}):\n{done.stderr[-3000:]}')
    summary = json.loads((out / stage / 'summary.json').read_text())
    return dict(top1=summary['top1'], nonzero=summary['weights']['nonzero'],
                curve=[round(h['top1'], 2) for h in summary['history']])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='prdarts_c10_micro.sp90_cifar10')
    parser.add_argument('--datasets', nargs='+', default=['glyphs', 'shapes'])
    parser.add_argument('--modes', nargs='+', default=['sparse', 'dense'], choices=['sparse', 'dense'])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='one recipe run and one loop run per seed; the table gives the means')
    parser.add_argument('--train_per_class', type=int, default=130)
    parser.add_argument('--test_per_class', type=int, default=100)
    parser.add_argument('--json', default=None, help='write the results here too')
    args = parser.parse_args()
    config = yaml.safe_load(CONFIG.read_text())
    rows = []
    print('| data set | mode | recipe top-1 | plain loop top-1 | recipe - loop | loop, new head | '
          'per seed: recipe / loop / loop new head | seconds |')
    print('|---|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data = make_imagefolder(name, Path(tmp) / name, args.train_per_class, args.test_per_class)
            for mode in args.modes:
                dense = mode == 'dense'
                epochs = config['pretrain_epochs' if dense else 'finetune_epochs']
                started = time.time()
                ours = [recipe(args.model, data, dense, Path(tmp) / f'run_{name}_{mode}_{seed}', seed)
                        for seed in args.seeds]
                loop = [reference_loop(args.model, data, epochs, dense, seed) for seed in args.seeds]
                loop_new = [reference_loop(args.model, data, epochs, dense, seed, new_head=True)
                            for seed in args.seeds]
                mean = lambda results: sum(r['top1'] for r in results) / len(results)  # noqa: E731
                row = dict(dataset=name, mode=mode, epochs=epochs, seeds=args.seeds, recipe=ours, loop=loop,
                           loop_new_head=loop_new, recipe_mean=round(mean(ours), 2), loop_mean=round(mean(loop), 2),
                           loop_new_head_mean=round(mean(loop_new), 2), difference=round(mean(ours) - mean(loop), 2),
                           seconds=round(time.time() - started))
                rows.append(row)
                print(f'| {name} | {mode} | {row["recipe_mean"]:.2f}% | {row["loop_mean"]:.2f}% | '
                      f'{row["difference"]:+.2f} | {row["loop_new_head_mean"]:.2f}% | '
                      f'{[r["top1"] for r in ours]} / {[r["top1"] for r in loop]} / '
                      f'{[r["top1"] for r in loop_new]} | {row["seconds"]} |', flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(model=args.model, config=config, rows=rows), indent=1) + '\n')


if __name__ == '__main__':
    main()
