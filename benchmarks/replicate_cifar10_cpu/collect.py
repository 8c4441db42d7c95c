"""Collect the replication's results (benchmarks/replicate_cifar10_cpu/run.sh) into docs: the table rows as
recipes/evaluate.py printed them, the commands next to them, and the small files behind each row.

    python benchmarks/replicate_cifar10_cpu/collect.py runs/replicate docs/replicate_cifar10_cpu

Writes ``<docs>/table.md`` (the results table and the commands, included in docs/results.md) and copies each
network's evaluation JSONs and every stage's ``summary.json`` / ``config.yaml`` into ``<docs>/<network>/``.
A row whose run or evaluation is missing says so instead of a number.
"""
import argparse
import json
import shutil
from pathlib import Path

NETWORKS = {  # folder in run.sh -> what the row is
    'prdarts_c10_micro': "PR-DARTS 99% cell (paper's genotype)",
    'prdarts_cpu_c10_micro': 'our searched cell (prdarts_cpu_99)',
    'darts_v2_c10_micro': 'DARTS-V2 cell (searched dense)',
    'mobilenetv2_035': 'MobileNet-v2 0.35, CIFAR stem',
}
RUNS = {'k0.01': '99%', 'k0.1': '90%'}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', type=Path, help='the OUTPUT of run.sh')
    parser.add_argument('docs', type=Path, help='folder to write into')
    args = parser.parse_args()
    rows, dense_rows, commands = [], [], []
    header = None
    for network, what in NETWORKS.items():
        folder, target = args.runs / network, args.docs / network
        target.mkdir(parents=True, exist_ok=True)
        dense = folder / 'eval_dense.json'
        if dense.is_file():
            data = json.loads(dense.read_text())
            dense_rows.append(f'| {what} | {data["top1"]:.2f}% | {data["params"]:,} |')
            shutil.copy(dense, target / dense.name)
            summary = json.loads((folder / 'dense' / 'pretrain' / 'summary.json').read_text())
            commands.append(f'- `{data["model"]}` pretrain (dense): `{summary["command"]}`, then '
                            f'`{data["environment"]["command"]}`')
        for run in ['dense', *RUNS]:
            for summary in sorted((folder / run).glob('*/summary.json')):
                (target / run / summary.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(summary, target / run / summary.parent.name / 'summary.json')
            if (folder / run / 'config.yaml').is_file():
                shutil.copy(folder / run / 'config.yaml', target / f'config_{run}.yaml')
        for run, sparsity in RUNS.items():
            evaluation = folder / f'eval_{run}.json'
            if not evaluation.is_file():
                rows.append(f'| {what} | {sparsity} | not run: no {evaluation} (see run.sh logs) | | | | | |')
                continue
            data = json.loads(evaluation.read_text())
            header = data['markdown_header']
            rows.append(data['markdown_row'].replace(f'| {data["model"]} |', f'| `{data["model"]}`: {what} |', 1))
            shutil.copy(evaluation, target / evaluation.name)
            summary = json.loads((folder / run / 'finetune' / 'summary.json').read_text())
            commands.append(f'- `{data["model"]}` {sparsity}: `{summary["command"]}`, then '
                            f'`{data["environment"]["command"]}`')
    text = [header or '| network | sparsity | top-1 | params | nonzero | dense MACs | eff. MACs | latency b1 |\n'
                      '|---|---|---|---|---|---|---|---|', *rows, '',
            'Dense reference (the pretrained network every row of that network was pruned from, same test split):', '',
            '| network | top-1 (dense) | params |', '|---|---|---|', *dense_rows, '', 'Commands:', '', *commands, '']
    (args.docs / 'table.md').write_text('\n'.join(text))
    print('\n'.join(text))


if __name__ == '__main__':
    main()
