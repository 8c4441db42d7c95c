"""Hugging Face Hub folders for pruned networks: export in timm's layout, model cards, checks before upload.

An exported folder holds ``config.json`` (timm's: architecture, num_classes, num_features, global_pool,
pretrained_cfg, and ``model_args`` with everything the architecture needs, the genotype included),
``model.safetensors`` (masks baked in: pruned weights are exact zeros, no scores, contiguous tensors),
``README.md`` (the model card, rendered from a template in ``hub_cards/``) and the files that produced the
weights (recipe config, launch config, evaluation JSON). ``timm.create_model('hf-hub:org/name',
pretrained=True)`` and ``'local-dir:<folder>'`` rebuild the network from it with no code change, and the
pruned layers take their masks back from the zeros.
"""
import copy
import json
import os
import re
import shutil
import string
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import timm
import torch
import torch.nn as nn
from huggingface_hub import ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import safe_open
from timm.models import save_for_hf

from .builder import drop_training_only
from .checkpoint import encode_sparse, read_state_dict, save_safetensors
from .errors import CardError, CheckpointError, HubError
from .io import atomic_write, atomic_write_folder, atomic_write_json, file_sha256, read_json_object
from .layers import bake
from .run_folder import StageSummary, epoch_spans

__all__ = ['HubError', 'CardError', 'card_repo_id', 'export_args', 'export_folder', 'card_values', 'render_card', 'check_card',
           'check_folder', 'check_repo_id', 'read_json', 'bundle_weights', 'bundled_file', 'stage_schedule',
           'REQUIRED_FILES']

REQUIRED_FILES = ('config.json', 'model.safetensors', 'README.md')
REPOSITORY = 'https://github.com/prdarts-timm/prdarts-timm'  # also pyproject.toml's [project.urls]


def export_args(model: nn.Module) -> Dict[str, Any]:
    """The ``model_args`` config.json must carry to rebuild ``model`` by its architecture name."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    if cfg.get('cifar_stem'):
        raise HubError(f'{type(model).__name__} has the CIFAR stem of prdarts_timm.builder.adapt_to_cifar, which '
                       'timm.create_model cannot rebuild from config.json: share its baked state dict and load it '
                       'with prdarts_timm.builder.create_model(name, cifar_stem=True) + load_state_dict instead')
    return dict(getattr(model, 'arch_args', None) or {})


def export_folder(model: nn.Module, folder: Union[str, os.PathLike], card: str,
                  extra_files: Optional[Mapping[str, Union[str, bytes]]] = None, overwrite: bool = False,
                  sparse: bool = False, label_names: Optional[Sequence[str]] = None) -> Path:
    """Write ``model`` (pruned or baked; baked here, auxiliary head dropped) as a Hub folder in timm's layout.

    ``label_names``: the class names in label order (the data set's classes), written into ``config.json`` as
    timm does (``label_names`` and ``pretrained_cfg.label_names``); without them none are written, whatever the
    model's default config names (a network fine-tuned on other data keeps its architecture's config).

    ``sparse=True`` adds ``model.sparse.safetensors``, the same tensors in the compact form of
    :func:`prdarts_timm.checkpoint.encode_sparse`; ``model.safetensors`` stays, so any timm or safetensors
    tool loads the folder. The PR-DARTS models load either (``pretrained_cfg_overlay=dict(file=...)``).

    The folder is written complete under a temporary name, then renamed: an interrupted export leaves no
    half-written folder. An existing folder is replaced only with ``overwrite=True``.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise HubError(f'{folder} already exists and is not empty; choose another output folder or pass '
                       'overwrite=True (--overwrite)')
    check_card(card)
    model = drop_training_only(bake(copy.deepcopy(model))).eval()
    args = export_args(model)
    if label_names is not None and len(label_names) != model.num_classes:
        raise HubError(f'{len(label_names)} label names for a model of {model.num_classes} classes: pass the names '
                       'of the classes it was trained on, in label order')
    model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k != 'label_names'}
    if label_names is not None:
        model.pretrained_cfg['label_names'] = tuple(label_names)
    model_config = dict(label_names=list(label_names)) if label_names is not None else None

    def write(tmp: Path) -> None:
        save_for_hf(model, str(tmp), model_config=model_config, model_args=args, safe_serialization=True)
        if sparse:
            save_safetensors(encode_sparse(model.state_dict()), tmp / 'model.sparse.safetensors',
                             metadata={'format': 'pt', 'encoding': 'prdarts_timm.checkpoint.encode_sparse'})
        (tmp / 'README.md').write_text(card)
        for name, content in (extra_files or {}).items():
            path = tmp / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    atomic_write_folder(folder, write)
    return folder


def card_values(name: str, hub_id: str, evaluation: Mapping[str, Any], summary: Mapping[str, Any],
                model: nn.Module, more_evaluations: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
    """The card's fields, every number from ``evaluation`` (recipes/evaluate.py JSON), ``more_evaluations``
    (the same weights on other splits) and ``summary`` (the stages' summary.json); absent figures stay None, so
    :func:`render_card` refuses them."""
    def get(data: Any, *path: str) -> Any:
        for key in path:
            data = data.get(key) if isinstance(data, Mapping) else None
        return data

    def fmt(value: Any, spec: str) -> Optional[str]:
        return None if value is None else format(value, spec)

    env = evaluation.get('environment') or {}
    latency = evaluation.get('latency') or {}
    sparsity = get(evaluation, 'weights', 'sparsity')
    arch = getattr(model, 'arch_args', None) or {}
    history = summary.get('history') or []
    budget = '; '.join(_stage_budget(s) for s in summary.get('stages') or ()) or None
    schedules = [s.get('schedule') for s in summary.get('stages') or ()]
    return dict(
        name=name, hub_id=hub_id, architecture=name.split('.')[0], repository=REPOSITORY,
        dataset_name=get(evaluation, 'dataset', 'description') and (
            'CIFAR-10 (JPEG copy)' if get(evaluation, 'dataset', 'source') in ('mini', 'imagefolder')
            else 'CIFAR-10'),
        split=get(evaluation, 'dataset', 'split'), num_images=get(evaluation, 'dataset', 'num_evaluated'),
        top1=fmt(evaluation.get('top1'), '.2f'), top5=fmt(evaluation.get('top5'), '.2f'),
        sparsity_pct=fmt(None if sparsity is None else 100 * sparsity, '.2f'),
        weights_total=fmt(get(evaluation, 'weights', 'total'), ','),
        weights_nonzero=fmt(get(evaluation, 'weights', 'nonzero'), ','),
        params=fmt(evaluation.get('params'), ','),
        dense_macs=fmt(get(evaluation, 'macs', 'dense'), ','),
        effective_macs=fmt(get(evaluation, 'macs', 'effective'), ','),
        image_size='x'.join(map(str, evaluation['input_size'][1:])) if evaluation.get('input_size') else None,
        channels=arch.get('C'), layers=arch.get('layers'),
        genotype=json.dumps(arch['genotype'], separators=(',', ':')) if arch.get('genotype') else None,
        cell=_cell(arch['genotype']) if arch.get('genotype') else None,
        markdown_header=evaluation.get('markdown_header'), markdown_row=evaluation.get('markdown_row'),
        cpu=latency.get('cpu'), threads=latency.get('threads'),
        latency_b1_ms=fmt(get(latency, 'batch_1', 'median_ms'), '.2f'),
        latency_b64_ms=fmt(get(latency, 'batch_64', 'median_ms'), '.2f'),
        eval_command=env.get('command'), torch_version=env.get('torch'), timm_version=env.get('timm'),
        prdarts_version=env.get('prdarts_timm'), train_command=_commands(summary), train_budget=budget,
        train_schedule=''.join(f'\n  - {s}' for s in schedules) if schedules and all(schedules) else None,
        last_top1=history[-1].get('top1') if history else None,
        allocation=_allocation(summary.get('pruning') or {}),
        introduction=_introduction(summary.get('pruning') or {}, sparsity),
        more_evaluations=''.join(_more_evaluation_line(e) for e in more_evaluations),
    )


def _cell(genotype: Mapping[str, Any]) -> str:
    """The card's line on which cell the network holds: the genotype's name and what it was searched for (a tag
    trained at another sparsity than its cell was searched for says so by this line beside its own sparsity)."""
    name = genotype.get('name')
    if not name:
        return 'a cell without a name: the genotype below'
    description = genotype.get('description')
    return f'`{name}`' + (f': {description}' if description else '')


def stage_schedule(summary: StageSummary, config: Any) -> str:
    """One stage's line of the card's schedule: its epochs, batch and image sizes (as its ``summary``'s history
    records them), optimizer, learning rate and schedule, and what else its run's ``config`` (a ``TrainConfig``)
    turned on."""
    stage = summary.stage
    parts = [f'{stage}: {summary.epochs} epoch(s) of {summary.global_batch} images a step']
    sizes = [record.get('image_size') for record in summary.history]
    if len(set(sizes)) > 1 and None not in sizes:  # progressive resizing: each side with its epochs
        parts[0] += ', ' + ', '.join(f'{size} px ({epochs})' for size, epochs in epoch_spans(sizes))
        if any(record.get('image_crops') for record in summary.history):
            parts[0] += ' (the smaller sides as random crops)'
    warmup = f' after {config.warmup_epochs} warm-up epoch(s)' if config.warmup_epochs else ''
    parts.append(f'optimizer `{config.opt}` (momentum {config.momentum:g}), lr {getattr(config, f"{stage}_lr"):g} '
                 f'`{config.sched}` to {config.min_lr:g}{warmup}, weight decay {config.weight_decay:g}')
    extras = [f'{name.replace("_", " ")} {getattr(config, name):g}' for name in (
        'label_smoothing', 'auxiliary_weight', 'drop_path_rate', 'cutout', 'mixup', 'cutmix', 'grad_clip')
        if getattr(config, name)]
    augment = (f'random crop (padding {config.crop_padding})' if config.crop_padding else 'no random crop') + (
        ', flips alternated per epoch' if config.alternate_flip else ', random flips' if config.hflip else '')
    extras.append(augment)
    if config.model_ema:
        extras.append(f'EMA of the weights (decay {config.model_ema_decay:g})')
    if config.distill_from:
        extras.append(f'distilled from `{config.distill_from}` (weight {config.distill_weight:g}, temperature '
                      f'{config.distill_temperature:g})')
    return '; '.join(parts + extras)


def _stage_budget(stage: Mapping[str, Any]) -> str:
    """One stage's line of the card's budget: its steps, its wall time (every resumed segment), its CPU time where
    the summary has it (written since the time was carried through resumes) and the hardware it ran on."""
    line = f'{stage["stage"]}: {stage["epochs"]} epoch(s), {stage["steps"]} steps of {stage["global_batch"]} images'
    if stage.get('seconds') is not None:
        line += f', {stage["seconds"]:.0f} s'
    if stage.get('cpu_seconds') is not None:
        line += f', {stage["cpu_seconds"] / 60:.1f} CPU-minutes'
    if stage.get('hardware'):
        line += f' ({stage["hardware"]})'
    return line


def _allocation(pruning: Mapping[str, Any]) -> Optional[str]:
    """How the kept weights were spread over the layers, from ``summary['pruning']``: the prune stage's ``k``
    and ``global_k``, or ``kept_from`` (the source whose zero pattern a run without a prune stage kept)."""
    if pruning.get('k') is not None:
        if pruning.get('global_k'):
            return (f"one global threshold (`global_k: true`): the top {pruning['k']:g} of all pruned layers' "
                    'weights together, by learned score, so each layer keeps what its scores earn')
        return (f"per layer, the paper's (HYDRA): every pruned layer keeps the top {pruning['k']:g} of its own "
                'weights, by learned score')
    if pruning.get('kept_from'):
        return f"the zero pattern of the weights it was fine-tuned from (`{pruning['kept_from']}`), kept"
    if pruning.get('dense'):
        return 'none: a dense network, every weight trained and kept'
    return None


def _introduction(pruning: Mapping[str, Any], sparsity: Optional[float]) -> Optional[str]:
    """The card's opening paragraph: a sparse network (pruned and retrained with HYDRA) or a dense one (the
    pretrain stage alone: the parent the sparse tags are pruned from)."""
    paper = ('PR-DARTS (DASS) network: DARTS cells searched for hard pruning\n'
             '([arXiv:2207.06968](https://arxiv.org/abs/2207.06968))')
    if pruning.get('dense'):
        return (f'A dense {paper}, trained dense (the pretrain stage of the HYDRA pipeline) by the\n'
                f'[`prdarts-timm`]({REPOSITORY}) package: the parent its sparse tags are pruned and retrained from, a\n'
                'teacher for distillation and a reference for what pruning costs.')
    if sparsity is None:
        return None
    return (f'A {100 * sparsity:.2f}% sparse {paper}, pruned and retrained with the HYDRA pipeline\n'
            f'(pretrain, learn scores, finetune) by the [`prdarts-timm`]({REPOSITORY}) package.\n'
            'The pruned weights are exact zeros in `model.safetensors`; loading into the `prdarts_timm` model restores\n'
            'the masks from them, so the network stays exactly as sparse when you fine-tune it.')


def _commands(summary: Mapping[str, Any]) -> Optional[str]:
    """The training command(s) in order, as markdown code: ``summary['commands']`` (one per run that made the
    weights, e.g. pretrain, then prune + finetune from it) or ``summary['command']``."""
    commands = summary.get('commands') or ([summary['command']] if summary.get('command') else [])
    return ', then '.join(f'`{c}`' for c in commands) or None


def _more_evaluation_line(evaluation: Mapping[str, Any]) -> str:
    """A card line for an evaluation of the same weights on another split; an incomplete JSON is refused."""
    dataset = evaluation.get('dataset') or {}
    values = dict(split=dataset.get('split'), source=dataset.get('source'), n=dataset.get('num_evaluated'),
                  top1=evaluation.get('top1'), top5=evaluation.get('top5'),
                  command=(evaluation.get('environment') or {}).get('command'))
    missing = sorted(k for k, v in values.items() if v is None)
    if missing:
        raise CardError(f'an extra evaluation JSON lacks {missing}: pass a whole evaluation report (what '
                        'recipes/evaluate.py writes)')
    return (f"- Also: top-1 {values['top1']:.2f}%, top-5 {values['top5']:.2f}% on the {values['n']:,} images of "
            f"the `{values['split']}` split of data source `{values['source']}`: `{values['command']}`\n")


def card_repo_id(folder: Union[str, os.PathLike]) -> str:
    """The Hub repo an exported folder was made for: the ``hf-hub:`` name its card loads."""
    found = set(re.findall(r"hf-hub:([\w.-]+/[\w.-]+)", (Path(folder) / 'README.md').read_text()))
    if len(found) != 1:
        raise HubError(f'the card of {folder} names {len(found)} hf-hub: repos ({sorted(found)}), not one: export '
                       'the folder again with recipes/export.py')
    return found.pop()


def read_json(path: Path, what: str) -> Dict[str, Any]:
    """The JSON object in ``path``, or a :class:`HubError` naming ``what`` the file is (a summary, an evaluation)."""
    return read_json_object(path, what, HubError)


def render_card(template: str, values: Mapping[str, Any]) -> str:
    """``template`` (``string.Template``: ``$name`` / ``${name}``) with ``values``; a missing value is a
    :class:`CardError` naming it, never an empty field. The result's metadata is checked (:func:`check_card`)."""
    names = {m.group('named') or m.group('braced') for m in string.Template.pattern.finditer(template)} - {None}
    missing = sorted(n for n in names if values.get(n) is None)
    if missing:
        raise CardError(f'cannot render the model card: no value for {missing}. Every number comes from the '
                        'evaluation JSON and the run summary: pass the whole evaluation report of the exported '
                        'checkpoint, latency included')
    card = string.Template(template).substitute({k: values[k] for k in names})
    check_card(card)
    return card


def check_card(card: str) -> None:
    """Parse the card's YAML metadata as the Hub does (``huggingface_hub.ModelCard``, offline) and check the
    fields a timm model card needs."""
    try:
        parsed = ModelCard(card, ignore_metadata_errors=False)
    except Exception as e:  # malformed YAML or model-index
        raise CardError(f'the model card metadata is invalid: {e}') from None
    data = parsed.data.to_dict()
    problems = []
    if data.get('library_name') != 'timm':
        problems.append("library_name must be 'timm'")
    for tag in ('image-classification', 'timm'):
        if tag not in (data.get('tags') or []):
            problems.append(f'tags must include {tag!r}')
    if not data.get('license'):
        problems.append('license is missing')
    if not parsed.data.eval_results:
        problems.append('model-index has no results')
    if problems:
        raise CardError(f'the model card metadata is incomplete: {"; ".join(problems)}')


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if the Hub accepts it as ``namespace/name``, else a :class:`HubError` that says why."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f'{repo_id!r} is not a valid Hub repo id: {e} Use namespace/name with letters, digits, '
                       "'-', '_' and '.' (e.g. my-org/prdarts_c10_mini.sp99_cifar10)") from None
    if '/' not in repo_id:
        raise HubError(f'{repo_id!r} has no namespace: use namespace/name (your user or organisation name first)')
    return repo_id


def check_folder(folder: Union[str, os.PathLike]) -> List[Path]:
    """The files of an exported folder, after checking it is complete and loadable by timm: the required
    files exist, config.json names an architecture timm knows, the safetensors file reads, the card parses."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f'{folder} is not a folder; pass the folder recipes/export.py wrote')
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise HubError(f'{folder} lacks {missing}: export it again with recipes/export.py')
    try:
        config = json.loads((folder / 'config.json').read_text())
    except json.JSONDecodeError as e:
        raise HubError(f'{folder / "config.json"} is not valid JSON ({e}); export again') from None
    architecture = config.get('architecture')
    if not architecture or not timm.is_model(architecture):
        raise HubError(f'{folder / "config.json"} names architecture {architecture!r}, which timm does not know '
                       '(with prdarts_timm imported); export a registered model')
    try:
        with safe_open(str(folder / 'model.safetensors'), 'pt') as f:
            keys = list(f.keys())
    except Exception as e:
        raise HubError(f'{folder / "model.safetensors"} cannot be read ({e}); the file is corrupt or truncated: '
                       'export again') from None
    if any(re.search(r'\.(scores|mask)$', k) for k in keys):
        raise HubError(f'{folder / "model.safetensors"} holds pruning scores / masks: export bakes them, so '
                       'export again with recipes/export.py')
    if (folder / 'model.sparse.safetensors').exists():
        try:
            same = _states_equal(read_state_dict(folder / 'model.sparse.safetensors'),
                                 read_state_dict(folder / 'model.safetensors'))
        except CheckpointError as e:
            raise HubError(str(e)) from None
        if not same:
            raise HubError(f'{folder / "model.sparse.safetensors"} does not hold the tensors of model.safetensors: '
                           'export again')
    check_card((folder / 'README.md').read_text())
    return sorted(p for p in folder.rglob('*') if p.is_file() and not p.name.startswith('.'))


def bundled_file(folder: Union[str, os.PathLike]) -> Path:
    """The file of an exported ``folder`` that a checkout bundles: the compact ``model.sparse.safetensors`` of a
    sparse tag, else ``model.safetensors`` (a dense tag, e.g. ``dense_cifar10``)."""
    compact = Path(folder) / 'model.sparse.safetensors'
    return compact if compact.is_file() else Path(folder) / 'model.safetensors'


def bundle_weights(folder: Union[str, os.PathLike], name: str, hub_id: str,
                   weights_dir: Union[str, os.PathLike]) -> Dict[str, str]:
    """Make the exported ``folder`` the weights a source checkout carries for tag ``name`` (``model.tag``): its
    compact ``model.sparse.safetensors`` (else ``model.safetensors``) is copied into ``weights_dir`` (the
    checkout's ``prdarts_timm/weights``, given by the caller: the library never writes into where it is
    installed) and ``index.json`` there gets the entry (file, sha256, hf_hub_id) that timm's registry reads on
    the next import. Maintainers run it (``recipes/export.py --bundle``) when publishing a tag."""
    folder, weights_dir = Path(folder), Path(weights_dir)
    check_folder(folder)
    check_repo_id(hub_id)
    if '.' not in name or name not in timm.list_models(name.split('.')[0], include_tags=True):
        raise HubError(f'{name!r} is not a registered model.tag: add the tag to the model family\'s default_cfgs '
                       'first (e.g. prdarts_c10_micro.sp99_cifar10)')
    source = bundled_file(folder)
    file = f'{name}.{"sparse." if source.name.startswith("model.sparse") else ""}safetensors'
    atomic_write(weights_dir / file, lambda tmp: shutil.copyfile(source, tmp))
    index_path = weights_dir / 'index.json'
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[name] = dict(file=file, sha256=file_sha256(weights_dir / file), hf_hub_id=hub_id)
    atomic_write_json(index_path, dict(sorted(index.items())))
    return index[name]


def _states_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
