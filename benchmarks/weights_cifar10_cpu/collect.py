"""Collect issue 15's runs (benchmarks/weights_cifar10_cpu/run.sh, then ft99.sh) into docs: each network's
full-test-split figures against the issue's target, every stage's per-epoch curve, the commands, and the small
files behind them (evaluation JSONs, each stage's ``summary.json``, each run's ``config.yaml``).

    python benchmarks/weights_cifar10_cpu/collect.py runs/weights/prdarts_c10_micro docs/weights_cifar10_cpu

Writes ``<docs>/table.md`` (included in docs/results.md). A run or evaluation that is missing or unfinished
says so in its row instead of a number; a stage still training shows the epochs it has finished, read from its
newest log when it has no summary yet.
"""
import argparse
import json
import re
import shutil
from pathlib import Path

RUNS = {  # folder in run.sh (and ft99.sh) -> (sparsity, target top-1 of issue 15 or None, why it has no evaluation)
    'k0.1': ('90%, per-layer k', 88.0, None),
    'k0.05': ('95%, per-layer k', 84.0, None),
    'k0.01': ('99%, per-layer k, 3 finetune epochs', 65.0,
              'not finished: its finetune was lost with the machine after epoch 1; k0.01_ft8 replaces it'),
    'k0.01_global': ('99%, one global threshold', None,
                     'not finished: stopped after finetune epoch 1, when the comparison was settled'),
    'k0.01_ft8': ('99%, per-layer k, 8 finetune epochs from the k0.01 prune', 65.0, None),
}
EPOCH_LINE = re.compile(r'\[(\w+) epoch (\d+)/(\d+)\] train loss ([\d.]+), top-1 ([\d.]+)% on (\d+) test images')


def curve_rows(run: Path, name: str) -> list:
    """One table row per finished epoch of every stage of ``run``: from the stage summaries, else the log."""
    rows = []
    for stage in ('pretrain', 'prune', 'finetune'):
        summary = run / stage / 'summary.json'
        if summary.is_file():
            data = json.loads(summary.read_text())
            rows += [f'| {name} | {stage} | {h["epoch"] + 1} / {data["epochs"]} | {h["train_loss"]:.3f} | '
                     f'{h["top1"]:.2f}% |' for h in data['history']]
        elif Path(f'{run}.log').is_file():  # unfinished: what the log printed so far
            for line in EPOCH_LINE.finditer(Path(f'{run}.log').read_text()):
                if line[1] == stage:
                    rows.append(f'| {name} | {stage} (running) | {line[2]} / {line[3]} | {float(line[4]):.3f} | '
                                f'{float(line[5]):.2f}% |')
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', type=Path, help="run.sh's OUTPUT/<network> folder (dense/, k0.1/, ... inside)")
    parser.add_argument('docs', type=Path, help='folder to write into')
    args = parser.parse_args()
    args.docs.mkdir(parents=True, exist_ok=True)
    rows, curves, commands = [], curve_rows(args.runs / 'dense', 'dense'), []
    for run in ['dense', *RUNS]:
        for summary in sorted((args.runs / run).glob('*/summary.json')):
            (args.docs / run / summary.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(summary, args.docs / run / summary.parent.name / 'summary.json')
        if (args.runs / run / 'config.yaml').is_file():
            shutil.copy(args.runs / run / 'config.yaml', args.docs / f'config_{run}.yaml')
    dense = args.runs / 'eval_dense.json'
    if dense.is_file():
        data = json.loads(dense.read_text())
        shutil.copy(dense, args.docs / dense.name)
        rows.append(f'| dense (pretrained, every row starts here) | 0% | {data["top1"]:.2f}% | at least 90% | '
                    f'{data["weights"]["nonzero"]:,} / {data["weights"]["total"]:,} |')
        summary = json.loads((args.runs / 'dense' / 'pretrain' / 'summary.json').read_text())
        commands.append(f'- dense: `{summary["command"]}`, then `{data["environment"]["command"]}`')
    else:
        rows.append(f'| dense | 0% | not evaluated yet: no {dense} | at least 90% | |')
    for run, (what, target, unfinished) in RUNS.items():
        curves += curve_rows(args.runs / run, run)
        evaluation = args.runs / f'eval_{run}.json'
        wanted = f'at least {target:g}%' if target else 'within 1 point of per-layer k, or better'
        if not evaluation.is_file():
            rows.append(f'| {run} | {what} | {unfinished or f"not evaluated yet: no {evaluation}"} | {wanted} | |')
            continue
        data = json.loads(evaluation.read_text())
        shutil.copy(evaluation, args.docs / evaluation.name)
        verdict = '' if target is None else (' (met)' if data['top1'] >= target else ' (missed)')
        rows.append(f'| {run} | {what} | {data["top1"]:.2f}%{verdict} | {wanted} | '
                    f'{data["weights"]["nonzero"]:,} / {data["weights"]["total"]:,} |')
        summary = json.loads((args.runs / run / 'finetune' / 'summary.json').read_text())
        commands.append(f'- {run}: `{summary["command"]}`, then `{data["environment"]["command"]}`')
    text = ['| run | sparsity | top-1, CIFAR-10 test (10,000 images) | issue 15 target | nonzero / total weights |',
            '|---|---|---|---|---|', *rows, '',
            'Every stage, per epoch (top-1 on the recipe\'s fixed 2,560-image subset of test):', '',
            '| run | stage | epoch | train loss (with the auxiliary head\'s 0.4) | top-1, 2,560 test images |',
            '|---|---|---|---|---|', *curves, '', 'Commands:', '', *commands, '']
    (args.docs / 'table.md').write_text('\n'.join(text))
    print('\n'.join(text))


if __name__ == '__main__':
    main()
