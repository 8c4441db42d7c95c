"""Accuracy per CPU-hour of training configs: each config trained with ``recipes/train.py`` on CIFAR-10, its
per-epoch top-1 against the CPU-minutes spent, its final top-1 on the whole test split, one table and one plot.

    python benchmarks/bench_recipe.py --data_root cifar10 --output runs/bench_recipe \\
        --run old=recipes/configs/weights_cifar10_cpu.yaml:--pretrain_epochs,1 \\
        --run fast=recipes/configs/fast_cifar10.yaml --stages '[pretrain]' --report docs/fast_schedule

Each ``--run NAME=CONFIG[:ARG,ARG,...]`` trains into ``<output>/NAME`` (the extra arguments are command-line
overrides of the config), launched as a user launches it (``accelerate launch --cpu
--num_cpu_threads_per_process THREADS``), one run after the other so that none slows another. ``--threads N``
also passes ``--cpu_threads N`` to the recipe (part of the run's config): the recipe reads the launcher's value
of 1 as accelerate's default, not as a request, and would otherwise take every core. A run folder
that is already complete is read, not trained again (runs made earlier, or by hand with the same recipe, join
the report the same way); one with a checkpoint is resumed.

The CPU time is the recipe's own (``summary.json``: this process's user + system time, every thread, every
resumed segment; each epoch's at its end from ``history``). Runs made before per-epoch times were recorded have
only the stage's total: their epochs are then placed at equal shares of it (marked "spread" in the report).
The final top-1 of each run's last stage comes from ``recipes/evaluate.py`` on the whole test split; the
per-epoch curve from the run's own evaluations (``eval_max_batches`` images of it).

Writes ``<report>/table.md``, ``<report>/accuracy_per_cpu_minute.png`` and ``<report>/results.json``.
"""
import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prdarts_timm.io import atomic_write_json, atomic_write_text  # noqa: E402
from prdarts_timm.profile import cpu_name  # noqa: E402
from prdarts_timm.run_folder import TrainRun  # noqa: E402
from prdarts_timm.retrain.config import STAGES  # noqa: E402


def parse_run(text: str) -> Dict[str, Any]:
    name, _, rest = text.partition('=')
    config, _, extra = rest.partition(':')
    if not name or not config:
        raise SystemExit(f'--run {text!r}: write NAME=CONFIG or NAME=CONFIG:--key,value,...')
    return dict(name=name, config=config, extra=[a for a in _split_commas(extra) if a])


def _split_commas(text: str) -> List[str]:
    """``text`` split at the commas outside brackets: a list value (``--pretrain_image_sizes,[16,24]``) is one."""
    parts, depth, part = [], 0, ''
    for char in text:
        depth += {'[': 1, ']': -1}.get(char, 0)
        if char == ',' and depth == 0:
            parts, part = parts + [part], ''
        else:
            part += char
    return parts + [part]


def train(run: Dict[str, Any], args: argparse.Namespace) -> None:
    out = Path(args.output) / run['name']
    folder = TrainRun(out)
    stages = [s for s in STAGES if s in args.stages]
    if all(folder.is_complete(s) for s in stages):
        print(f'[{run["name"]}] complete in {out}: read, not trained again')
        return
    resume = ['--resume'] if folder.config.exists() else []
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--cpu', '--num_processes', '1',
           '--num_cpu_threads_per_process', str(args.threads or os.cpu_count()),
           '--mixed_precision', 'no', '--dynamo_backend', 'no',
           'recipes/train.py', '--cpu', '--config', run['config'], '--output', str(out), '--stages',
           f'[{", ".join(stages)}]', *run['extra'], *resume]
    if args.threads is not None:
        cmd += ['--cpu_threads', str(args.threads)]
    if args.data_root:
        cmd += ['--data_source', 'imagefolder', '--data_root', args.data_root]
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, HF_HUB_OFFLINE='1'))


def evaluate(run: Dict[str, Any], args: argparse.Namespace, stage: str) -> Dict[str, Any]:
    """The final network's top-1 on the whole test split (recipes/evaluate.py), cached beside the run."""
    out = Path(args.output) / run['name']
    report = out / f'eval_{stage}.json'
    if not report.is_file():
        folder = TrainRun(out)
        name, kwargs, _ = folder.inference_args(stage)
        cmd = [sys.executable, 'recipes/evaluate.py', '--model', name.split('.')[0], '--checkpoint',
               str(folder.inference_weights(stage)), '--no_latency', '--output', str(report)]
        if kwargs:
            cmd += ['--model_kwargs', *[f'{k}={json.dumps(v)}' for k, v in kwargs.items()]]
        trained = yaml.safe_load(folder.config.read_text())  # the test split of the data the run trained on
        source, root = ('imagefolder', args.data_root) if args.data_root else (trained['data_source'],
                                                                               trained.get('data_root'))
        cmd += ['--data_source', source] + (['--data_root', root] if root else [])
        print('+', ' '.join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    return json.loads(report.read_text())


def curve(summaries: List[Any]) -> List[Dict[str, Any]]:
    """(stage, epoch, CPU-minutes at its end, top-1) of a run's stages in order, each stage's CPU time counted on
    top of the stages before it; a stage without per-epoch times spreads its total."""
    points, before = [], 0.0
    for summary in summaries:
        history = summary.history
        for i, record in enumerate(history):
            spread = record.get('cpu_seconds') is None
            cpu = summary.cpu_seconds * (i + 1) / len(history) if spread else record['cpu_seconds']
            points.append(dict(stage=summary.stage, epoch=len(points) + 1, cpu_minutes=round((before + cpu) / 60, 2),
                               top1=record['top1'], spread=spread))
        before += summary.cpu_seconds
    return points


def plot(results: List[Dict[str, Any]], path: Path) -> None:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 4.8))  # one legend entry per run, beside the axes: many runs stay readable
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = colormaps['tab10' if len(results) <= 10 else 'tab20'].colors  # a colour per run
    for result, color in zip(results, itertools.cycle(colors)):
        points = result['curve']
        final = result.get('final_top1')
        label = result['name'] + (f': {final:.2f}% full test split' if final is not None else '')
        ax.plot([p['cpu_minutes'] for p in points], [p['top1'] for p in points], marker='o', color=color, label=label)
        if final is not None:
            ax.scatter([points[-1]['cpu_minutes']], [final], marker='*', s=160, color=color, zorder=3)
    ax.set_xlabel('CPU-minutes (process CPU time, training and per-epoch evaluation)')
    ax.set_ylabel('top-1 (%)')
    ax.set_title('dots: each epoch (eval subset); star: the full test split', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--run', action='append', required=True, type=parse_run,
                        help='NAME=CONFIG[:--key,value,...] (repeat)')
    parser.add_argument('--stages', default='[pretrain]', help="the stages to train and report, e.g. '[pretrain]'")
    parser.add_argument('--data_root', default=None, help='ImageFolder root of CIFAR-10 (default: the config\'s)')
    parser.add_argument('--output', default='runs/bench_recipe')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch threads of the run (the recipe's cpu_threads; default: the recipe's, every core)")
    parser.add_argument('--report', default=None, help='folder for table.md, the plot and results.json')
    parser.add_argument('--no_final_eval', action='store_true', help='skip the full-test-split evaluation')
    args = parser.parse_args()
    args.stages = [s.strip() for s in args.stages.strip('[]').split(',') if s.strip()]

    results = []
    for run in args.run:
        train(run, args)
        folder = TrainRun(Path(args.output) / run['name'])
        stages = [s for s in STAGES if s in args.stages]  # all of them count: a prune + finetune run costs both
        summaries = [folder.read_summary(stage) for stage in stages]
        final = None if args.no_final_eval else evaluate(run, args, stages[-1])
        results.append(dict(name=run['name'], config=run['config'], extra=run['extra'], stages=stages,
                            epochs=sum(len(s.history) for s in summaries),
                            cpu_minutes=round(sum(s.cpu_seconds for s in summaries) / 60, 2),
                            wall_minutes=round(sum(s.seconds for s in summaries) / 60, 2),
                            hardware=summaries[-1].hardware, command=summaries[-1].command, curve=curve(summaries),
                            final_top1=final['top1'] if final else None))
    lines = ['| run | epochs | CPU-minutes | wall minutes | top-1, last epoch (eval subset) | top-1, full test split |',
             '|---|---|---|---|---|---|']
    for r in results:
        final = f'{r["final_top1"]:.2f}%' if r['final_top1'] is not None else '-'
        lines.append(f'| {r["name"]} | {r["epochs"]} | {r["cpu_minutes"]:.1f} | {r["wall_minutes"]:.1f} | '
                     f'{r["curve"][-1]["top1"]:.2f}% | {final} |')
    table = '\n'.join(lines)
    print(table)
    if args.report:
        report = Path(args.report)
        report.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report / 'table.md', table + '\n')
        atomic_write_json(report / 'results.json', dict(machine=cpu_name(),
                                                         platform=platform.platform(), runs=results))
        plot(results, report / 'accuracy_per_cpu_minute.png')
        print(f'wrote {report}/table.md, accuracy_per_cpu_minute.png, results.json')


if __name__ == '__main__':
    main()
