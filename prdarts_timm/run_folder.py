"""The folders the recipes write, defined once: what is in them, where, and typed records to read and write.

A **training run** (``recipes/train.py --output <run>``, :class:`TrainRun`)::

    <run>/config.yaml                  the run's config (a resume must match it)
    <run>/launch.json                  how it was launched (:class:`Launch`)
    <run>/<stage>/model.safetensors    the stage's whole state: what the next stage reads
    <run>/<stage>/model_ema.safetensors           with model_ema
    <run>/finetune/model_baked.safetensors        the inference network (masks baked in, no auxiliary head)
    <run>/<stage>/summary.json         :class:`StageSummary`, written last: the stage is complete
    <run>/<stage>/ranks.json           every rank's state-dict sha256
    <run>/<stage>/checkpoints/step_*   accelerate states

A **search run** (``recipes/search.py --output <run>``, :class:`SearchRun`): ``config.yaml``,
``checkpoints/step_*``, ``genotypes/<phase>_<epoch>.json``, ``alpha_history.json``, ``ranks.json``,
``genotype.json`` (written last) and its pictures.

Train, evaluate, export, the Hub card and deployment read these through this module, never by string keys of
their own. Both kinds refuse to write over an existing run and to resume one made with another config
(:func:`check_new_or_resume`).
"""
import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import torch.nn as nn

from .builder import load_model
from .checkpoint import newest_accelerate_state
from .config import check_same_config, config_to_yaml
from .errors import ConfigError, RunFolderError
from .io import atomic_write_json, atomic_write_text, read_json_object
from .retrain.config import STAGES
from .stage import KINDS

__all__ = ['RunFolderError', 'Launch', 'StageSummary', 'TrainRun', 'SearchRun', 'chain_commands', 'check_new_or_resume']

T = TypeVar('T')
TRAINING_ONLY_ARGS = ('auxiliary', 'drop_path_rate', 'drop_rate')  # model args the inference network lacks


def _read_json(path: Path, what: str) -> Dict[str, Any]:
    return read_json_object(path, what, RunFolderError, damaged='the file is damaged: run the stage again')


def _from_dict(cls: type, data: Dict[str, Any]) -> Any:
    """A record from its JSON object: keys it does not know are ignored (written by a newer version), keys it
    lacks keep their defaults (an older one)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Launch:
    """``launch.json``: how a run was launched (process count, precision, CPU threads per process, hardware, the
    command), as accelerate and the recipe resolved them."""
    num_processes: int = 1
    distributed_type: Optional[str] = None
    mixed_precision: Optional[str] = None
    device: Optional[str] = None
    hardware: Optional[str] = None
    command: Optional[str] = None
    cpu_threads_per_process: Optional[int] = None  # torch threads of each process on a CPU (None: a GPU run)
    trackers: List[str] = field(default_factory=list)
    gradient_accumulation_steps: Optional[int] = None  # batches per update (None: a run recorded before the key)

    def write(self, path: Path) -> None:
        atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> 'Launch':
        return _from_dict(cls, _read_json(path, 'launch record'))

    def check_resumed_as(self, current: 'Launch', path: Path) -> None:
        """A run resumes in the precision it started in (a resumed run must equal an uninterrupted one): a
        :class:`ConfigError` otherwise; the same for the gradient accumulation. Runs recorded before a setting was
        (``None``) are not checked for it."""
        # where each setting comes from: accelerate's launcher passes --gradient_accumulation_steps on to DeepSpeed
        # runs only, so for the others its environment variable is the launcher-side way
        launcher = dict(mixed_precision='accelerate launch --mixed_precision {} ...',
                        gradient_accumulation_steps='ACCELERATE_GRADIENT_ACCUMULATION_STEPS={} accelerate launch ...')
        for key, how in launcher.items():
            started, resumed = getattr(self, key), getattr(current, key)
            if started is not None and started != resumed:
                raise ConfigError(f'this run started with {key} {started!r} ({path}) and is resumed with {resumed!r}: '
                                  f'resume it as it was launched ({how.format(started)}, or --{key} {started} of '
                                  'the recipe)')


@dataclass
class StageSummary:
    """``<stage>/summary.json``: what one stage of a training run trained, from what, how long, and its
    per-epoch curve (``history``: epoch, steps, train_loss, seconds and cpu_seconds of the stage at the epoch's end
    (this process's CPU time; runs before issue 27 lack both), top1, loss, num_images[, ema_top1][, image_size],
    hardware (the machine that trained the epoch: a run resumed elsewhere has several; older runs lack it))."""
    stage: str
    model: Optional[str] = None
    model_args: Dict[str, Any] = field(default_factory=dict)
    cifar_stem: bool = False
    k: Optional[float] = None
    global_k: bool = False
    source: Optional[str] = None  # a checkpoint path, 'pretrained' or None (from scratch)
    epochs: Optional[int] = None
    steps: Optional[int] = None
    num_processes: Optional[int] = None
    global_batch: Optional[int] = None
    seconds: Optional[float] = None  # wall time of the stage, every resumed segment included
    cpu_seconds: Optional[float] = None  # CPU time of the training processes, summed (not data-loader workers)
    hardware: Optional[str] = None
    command: Optional[str] = None
    top1: Optional[float] = None
    ema_top1: Optional[float] = None
    weights: Dict[str, Any] = field(default_factory=dict)  # total, nonzero, sparsity of the inference network
    history: List[Dict[str, Any]] = field(default_factory=list)

    def write(self, path: Path) -> None:
        atomic_write_json(path, dataclasses.asdict(self))

    def hardware_segments(self) -> Optional[str]:
        """Where the stage trained: ``hardware``, or, where its epochs ran on several machines (a run resumed on
        another), each with its epochs, e.g. ``A (epochs 1-3); B (epochs 4-30)``; epochs recorded without it
        (before the key existed) are "not recorded"."""
        machines = [record.get('hardware') for record in self.history]
        if len(set(machines)) <= 1 and (not machines or machines[0] in (None, self.hardware)):
            return self.hardware
        return '; '.join(f'{machine or "not recorded"} ({epochs})' for machine, epochs in epoch_spans(machines))

    @classmethod
    def read(cls, path: Path) -> 'StageSummary':
        data = _read_json(path, 'stage summary')
        if data.get('stage') not in STAGES:
            raise RunFolderError(f'stage summary {str(path)!r} names no stage of {list(STAGES)}: it was not written '
                                 'by recipes/train.py')
        return _from_dict(cls, data)


class TrainRun:
    """The folder of one ``recipes/train.py`` run (see the module docstring)."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self.config = self.root / 'config.yaml'
        self.launch = self.root / 'launch.json'

    def __repr__(self) -> str:
        return f'TrainRun({str(self.root)!r})'

    def stage(self, stage: str) -> Path:
        return self.root / stage

    def weights(self, stage: str) -> Path:
        return self.root / stage / 'model.safetensors'

    def ema_weights(self, stage: str) -> Path:
        return self.root / stage / 'model_ema.safetensors'

    @property
    def baked(self) -> Path:
        """The inference network of the finetune stage: what evaluate, export and deployment read."""
        return self.root / 'finetune' / 'model_baked.safetensors'

    def summary(self, stage: str) -> Path:
        return self.root / stage / 'summary.json'

    def ranks(self, stage: str) -> Path:
        return self.root / stage / 'ranks.json'

    def checkpoints(self, stage: str) -> Path:
        return self.root / stage / 'checkpoints'

    def is_complete(self, stage: str) -> bool:
        return self.summary(stage).is_file()

    def newest_checkpoint(self, stage: str) -> Optional[Path]:
        return newest_accelerate_state(self.checkpoints(stage))

    def read_summary(self, stage: str) -> StageSummary:
        return StageSummary.read(self.summary(stage))

    def summaries(self) -> List[StageSummary]:
        """Every complete stage's summary, in order, preceded by those of the run its first stage started from
        (``source``): a run that pruned and fine-tuned a dense run lists the dense run's pretrain first."""
        return [summary for summary, _ in self.summaries_and_runs()]

    def summaries_and_runs(self) -> List[Tuple[StageSummary, 'TrainRun']]:
        """:meth:`summaries`, each with the run folder that holds it (its config is that stage's)."""
        records = [(self.read_summary(s), self) for s in STAGES if self.is_complete(s)]
        while records and records[0][0].source and records[0][0].source != 'pretrained':
            path = Path(records[0][0].source).parent / 'summary.json'
            if not path.is_file():
                break  # the source run is gone (or was never a run folder): the run's own stages only
            earlier = StageSummary.read(path)
            if STAGES.index(earlier.stage) >= STAGES.index(records[0][0].stage):
                break
            records.insert(0, (earlier, TrainRun(path.parent.parent)))
        return records

    def inference_weights(self, stage: str) -> Path:
        """The file of ``stage``'s network as it infers: the baked network of a stage that bakes it, else its
        ``model.safetensors``."""
        return self.stage(stage) / self.baked.name if KINDS[stage]['bakes'] else self.weights(stage)

    def last_complete_stage(self) -> str:
        complete = [s for s in STAGES if self.is_complete(s)]
        if not complete:
            raise RunFolderError(f'{self.root} holds no complete stage (no <stage>/summary.json): finish a stage of '
                                 'the run first')
        return complete[-1]

    def inference_args(self, stage: str = 'finetune') -> Tuple[str, Dict[str, Any], bool]:
        """(model name, create_model kwargs, cifar_stem) of the network ``stage`` trained (by default the run's
        inference network, the finetune stage's), without the training-only parts (auxiliary head, drop rates)."""
        if not self.is_complete(stage) or not self.inference_weights(stage).is_file():
            raise RunFolderError(f'{self.root} holds no complete {stage} stage ({self.inference_weights(stage)} and '
                                 f'{self.summary(stage)}): they are written when it ends')
        summary = self.read_summary(stage)
        if summary.model is None:
            raise RunFolderError(f'{self.summary(stage)} names no model: it was not written by recipes/train.py')
        kwargs = {k: v for k, v in summary.model_args.items() if k not in TRAINING_ONLY_ARGS}
        return summary.model, kwargs, summary.cifar_stem

    def load_inference_network(self, stage: str = 'finetune') -> nn.Module:
        """The network ``stage`` trained (by default the run's inference network, ``finetune/model_baked``) in
        the architecture it was trained as (without the pretrained tag it may have started from: these weights
        are the run's)."""
        name, kwargs, cifar_stem = self.inference_args(stage)
        return load_model(name.split('.')[0], self.inference_weights(stage), cifar_stem=cifar_stem, **kwargs)

    def write_start(self, config: Any, launch: Launch) -> None:
        """``config.yaml`` and ``launch.json`` of a new run."""
        atomic_write_text(self.config, config_to_yaml(config))
        launch.write(self.launch)

    def holds_run(self, stages: List[str]) -> bool:
        return any(self.is_complete(s) or self.newest_checkpoint(s) is not None for s in stages)


class SearchRun:
    """The folder of one ``recipes/search.py`` run (see the module docstring)."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self.config = self.root / 'config.yaml'
        self.launch = self.root / 'launch.json'
        self.checkpoints = self.root / 'checkpoints'
        self.genotype = self.root / 'genotype.json'
        self.alpha_history = self.root / 'alpha_history.json'
        self.ranks = self.root / 'ranks.json'
        self.cells_picture = self.root / 'cells.png'
        self.alpha_picture = self.root / 'alpha_history.png'

    def __repr__(self) -> str:
        return f'SearchRun({str(self.root)!r})'

    def epoch_genotype(self, phase: str, epoch: int) -> Path:
        return self.root / 'genotypes' / f'{phase}_{epoch:03d}.json'

    def newest_checkpoint(self) -> Optional[Path]:
        return newest_accelerate_state(self.checkpoints)

    def holds_run(self) -> bool:
        return self.genotype.exists() or self.newest_checkpoint() is not None

    def write_start(self, config: Any, launch: Launch) -> None:
        """``config.yaml`` and ``launch.json`` of a new run."""
        atomic_write_text(self.config, config_to_yaml(config))
        launch.write(self.launch)


def epoch_spans(values: Sequence[Any]) -> List[Tuple[Any, str]]:
    """Each run of equal consecutive per-epoch ``values`` with its epochs (1-based), e.g. ``[16, 16, 32]`` ->
    ``[(16, 'epochs 1-2'), (32, 'epoch 3')]``: the machines a resumed stage trained on, the image sides of a
    progressive one."""
    spans: List[List[Any]] = []  # [value, first epoch, last epoch]
    for epoch, value in enumerate(values, 1):
        if spans and spans[-1][0] == value:
            spans[-1][2] = epoch
        else:
            spans.append([value, epoch, epoch])
    return [(value, f'epoch {a}' if a == b else f'epochs {a}-{b}') for value, a, b in spans]


def _option(args: List[str], name: str) -> Optional[int]:
    """The index of ``name``'s value in ``args`` (``--name value``), or None."""
    return next((i + 1 for i, a in enumerate(args[:-1]) if a == name), None)


def chain_commands(commands: Sequence[str]) -> List[str]:
    """Training commands, one per run that made a network (a dense run, then prune + finetune from it), as they
    chain when run in order: a later run's ``--source <run>/<stage>/<file>`` names the earlier run by the
    ``--output`` of its command. (A run folder moved after it trained keeps its recorded command, whose
    ``--output`` is no longer where the later run found it.) A run resumed after a stop recorded its last segment's
    command: its ``--resume`` goes, the run is started as its first segment was."""
    chained: List[str] = []
    previous_output = None
    for command in commands:
        args = shlex.split(command)
        if '--resume' in args:
            args.remove('--resume')
            command = shlex.join(args)
        source = _option(args, '--source')
        if source is not None and previous_output is not None and Path(args[source]).parent.name in STAGES:
            path = Path(args[source])
            args[source] = str(Path(previous_output) / path.parent.name / path.name)
            command = shlex.join(args)
        output = _option(args, '--output')
        previous_output = args[output] if output is not None else None
        chained.append(command)
    return chained


def check_new_or_resume(config: T, root: Path, holds_run: bool, resume: bool, what: str) -> T:
    """``config`` as the run in ``root`` goes on: a new run must not write over one (``holds_run``), a resume
    needs the run's ``config.yaml`` and the same config (:func:`prdarts_timm.config.check_same_config`).
    ``what`` names the kind of run in the messages (``'training run'``, ``'search run'``)."""
    if not resume:
        if holds_run:
            raise ConfigError(f'{root} already holds a {what}; resume it, or write the new run to another folder')
        return config
    if not (root / 'config.yaml').exists():
        raise ConfigError(f'nothing to resume in {root}: it holds no {what} (no config.yaml); start a new run')
    return check_same_config(config, root)
