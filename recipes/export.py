"""Export a retrained network as a Hugging Face Hub folder in timm's layout, with its model card.

    python recipes/evaluate.py --model prdarts_c10_mini --checkpoint runs/x/finetune/model_baked.safetensors \\
        --data_source imagefolder --data_root cifar10 --output runs/x/eval.json
    python recipes/export.py --run runs/x --evaluation runs/x/eval.json \\
        --name prdarts_c10_mini.sp99_cifar10 --hub_id my-org/prdarts_c10_mini.sp99_cifar10 --output hub/prdarts_c10_mini

Reads the run folder of ``recipes/train.py`` (``finetune/model_baked.safetensors``, every stage's
``summary.json``, ``config.yaml``, ``launch.json``) and the ``recipes/evaluate.py`` JSON of that same baked
file (checked by sha256), and writes ``--output``: ``config.json`` (with ``label_names``, the evaluated data set's
classes in label order), ``model.safetensors`` (masks baked in),
``model.sparse.safetensors`` with ``--sparse`` (the same tensors, compact), ``README.md`` (rendered from
``hub_cards/prdarts.md``; every number from the evaluation and the summaries,
a missing one is an error), ``train_config.yaml``, ``launch.json``, ``evaluation.json`` (and
``evaluation_<source>_<split>.json`` for each of ``--more_evaluations``, e.g. the embedded mini test split the
package's tests check the weights on). A run of ``--stages '[prune, finetune]' --source <pretrain run>`` gets
the pretrain stage's budget from the summary beside its source. Then
``timm.create_model('local-dir:<output>', pretrained=True)`` loads it, and after ``recipes/push_to_hub.py``,
``'hf-hub:<hub_id>'``. An existing folder is replaced only with ``--overwrite``.

``--deploy`` (with ``--run`` and ``--output``) writes the deployment folder instead
(``prdarts_timm.deploy.deploy_folder``): ``model.safetensors`` (the baked state dict), ``model.onnx`` (ONNX
opset 18, batch size dynamic, input ``input``, output ``logits``; run it with ONNX Runtime: the compacted
network where ONNX Runtime runs it faster than the baked one, measured at batch size 1 on one thread) and
``deploy.json`` (model, its args, input size, the source checkpoint's sha256, compaction figures, the two
latencies).

    python recipes/export.py --deploy --run runs/x --output deploy/x
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict

import prdarts_timm  # noqa: F401  (registers the models)
from prdarts_timm import bake
from prdarts_timm.cli import run_main
from prdarts_timm.config import load_config
from prdarts_timm.deploy import deploy_folder
from prdarts_timm.hub import (
    HubError, bundle_weights, card_values, check_repo_id, export_folder, read_json, render_card, stage_schedule,
)
from prdarts_timm.io import file_sha256
from prdarts_timm.retrain import STAGES, TrainConfig
from prdarts_timm.run_folder import TrainRun, chain_commands
from prdarts_timm.stage import learns_mask
from prdarts_timm.training import input_size

CARD_TEMPLATE = Path(__file__).resolve().parents[1] / 'hub_cards' / 'prdarts.md'
CHECKOUT_WEIGHTS = Path(__file__).resolve().parents[1] / 'prdarts_timm' / 'weights'  # what --bundle writes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--run', required=True, help='the output folder of recipes/train.py')
    parser.add_argument('--evaluation', help='recipes/evaluate.py --output JSON of the baked weights (Hub folder)')
    parser.add_argument('--more_evaluations', nargs='*', default=[],
                        help='more evaluate.py JSONs of the same baked file (other splits), listed in the card')
    parser.add_argument('--name', help='model name with tag, e.g. prdarts_c10_mini.sp99_cifar10 (Hub folder)')
    parser.add_argument('--hub_id', help='the Hub repo the folder is for, namespace/name (Hub folder)')
    parser.add_argument('--output', required=True, help='folder to write')
    parser.add_argument('--template', default=str(CARD_TEMPLATE), help='model card template')
    parser.add_argument('--stage', default='finetune', choices=STAGES,
                        help="the stage whose network to export: finetune (the baked sparse network, the default) or, "
                             "for a dense run, pretrain")
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --output folder')
    parser.add_argument('--sparse', action='store_true',
                        help='also write model.sparse.safetensors (compact: indices + values of the kept weights)')
    parser.add_argument('--bundle', action='store_true',
                        help='maintainers: also make this folder the weights the package carries for --name '
                             '(prdarts_timm/weights + index.json), so pretrained=True loads them offline')
    parser.add_argument('--deploy', action='store_true',
                        help='write the deployment folder instead: model.safetensors (baked), model.onnx, deploy.json')
    args = parser.parse_args()
    if not args.deploy:
        missing = [f'--{k}' for k in ('evaluation', 'name', 'hub_id') if getattr(args, k) is None]
        if missing:
            parser.error(f'a Hub folder needs {", ".join(missing)} (or pass --deploy for the deployment folder)')
    return args


def read_evaluation(path: str, baked: Path) -> Dict[str, Any]:
    """An evaluate.py JSON, checked to be of ``baked`` (sha256)."""
    evaluation = read_json(Path(path), 'evaluation JSON')
    if evaluation.get('checkpoint_sha256') != file_sha256(baked):
        raise HubError(f'{path} evaluates another file than {baked} (sha256 differs): run '
                       f'recipes/evaluate.py --checkpoint {baked} --output ... and pass that JSON')
    return evaluation


def deploy(args: argparse.Namespace, run: TrainRun) -> None:
    """The deployment folder of the run's baked network (prdarts_timm.deploy.deploy_folder)."""
    model = bake(run.load_inference_network(args.stage))  # the masks taken back from the zeros: written in again
    name, model_args, cifar_stem = run.inference_args(args.stage)
    weights = run.inference_weights(args.stage)
    info = dict(model=name, model_args=model_args, cifar_stem=cifar_stem, checkpoint=str(weights),
                checkpoint_sha256=file_sha256(weights))
    folder = deploy_folder(model, args.output, input_size(model), info, overwrite=args.overwrite)
    print(f'deployment folder {folder}: ' + ', '.join(sorted(p.name for p in folder.iterdir())))


def main() -> None:
    args = parse_args()
    run = TrainRun(args.run)
    run.inference_args(args.stage)  # a clear error unless the stage is complete
    if args.deploy:
        deploy(args, run)
        return
    baked, records = run.inference_weights(args.stage), run.summaries_and_runs()
    records = records[:[s.stage for s, _ in records].index(args.stage) + 1]  # the stages that made its network
    summaries = [s for s, _ in records]
    final = summaries[-1]
    check_repo_id(args.hub_id)
    evaluation = read_evaluation(args.evaluation, baked)
    more = [read_evaluation(path, baked) for path in args.more_evaluations]
    architecture = args.name.split('.')[0]
    if architecture != final.model.split('.')[0]:
        raise HubError(f'--name {args.name} names {architecture}, but the run trained {final.model}')
    model = run.load_inference_network(args.stage)

    runs = {r.root: r for _, r in records}  # a run with several stages here (prune, finetune) appears once
    configs = {root: load_config(TrainConfig, str(r.config)) for root, r in runs.items()}
    summary = dict(stages=[dict(stage=s.stage, epochs=s.epochs, steps=s.steps, global_batch=s.global_batch,
                                seconds=s.seconds, cpu_seconds=s.cpu_seconds, hardware=s.hardware_segments(),
                                schedule=stage_schedule(s, configs[r.root]))
                         for s, r in records],
                   history=final.history,
                   commands=chain_commands(list(dict.fromkeys(s.command for s in summaries if s.command))))
    prune = next((s for s in summaries if learns_mask(s.stage)), None)  # the stage that chose the mask
    summary['pruning'] = (dict(k=prune.k, global_k=prune.global_k) if prune
                          else dict(dense=True) if final.k == 1 else dict(kept_from=summaries[0].source))
    card = render_card(Path(args.template).read_text(),
                       card_values(args.name, args.hub_id, evaluation, summary, model, more))
    extra = {'train_config.yaml': run.config.read_text(), 'evaluation.json': json.dumps(evaluation, indent=1)}
    extra.update({f'evaluation_{e["dataset"]["source"]}_{e["dataset"]["split"]}.json': json.dumps(e, indent=1)
                  for e in more})
    if run.launch.exists():
        extra['launch.json'] = run.launch.read_text()
    label_names = evaluation['dataset'].get('classes')  # the evaluated data set's classes, in label order
    if label_names is None:
        print(f'note: {args.evaluation} names no classes (written by an older evaluate.py): config.json gets no '
              'label_names; evaluate again to have them')
    folder = export_folder(model, args.output, card, extra_files=extra, overwrite=args.overwrite, sparse=args.sparse,
                           label_names=label_names)
    print(f'exported {args.name} to {folder}: ' + ', '.join(sorted(p.name for p in folder.iterdir())))
    print(f"load it with timm.create_model('local-dir:{folder}', pretrained=True) after import prdarts_timm")
    if args.bundle:
        entry = bundle_weights(folder, args.name, args.hub_id, CHECKOUT_WEIGHTS)
        print(f'bundled {args.name}: {CHECKOUT_WEIGHTS / entry["file"]} (sha256 {entry["sha256"][:12]}...)')


if __name__ == '__main__':
    run_main(main)
