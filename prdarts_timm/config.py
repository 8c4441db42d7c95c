"""Recipe configs: a dataclass of known keys, filled from a YAML file, then from command-line overrides."""
import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Type, TypeVar

import yaml

from .data import DATA_FORMATS, SOURCES
from .errors import ConfigError

__all__ = ['ConfigError', 'RunConfig', 'add_config_args', 'parse_kwargs', 'load_config', 'config_to_yaml', 'check_same_config']

T = TypeVar('T')


@dataclasses.dataclass
class RunConfig:
    """The keys both recipes' configs have (where the run goes, data, speed, logging), checked once. The
    search's ``SearchConfig`` and the retraining's ``TrainConfig`` add their own and may change a default."""
    output: str = 'runs/run'
    seed: int = 0
    # data
    data_source: str = 'mini'
    data_root: Optional[str] = None
    download: bool = False
    data_format: str = 'tensor'  # 'tensor': decoded once, augmented in batches on the device; 'pil': a DataLoader
    batch_size: int = 64  # per process
    num_workers: int = 0  # DataLoader workers (data_format pil)
    # steps
    grad_clip: float = 5.0  # 0 = off
    max_steps_per_epoch: Optional[int] = None
    # batches whose gradients make one update (null: as accelerate is configured, its environment variable
    # ACCELERATE_GRADIENT_ACCUMULATION_STEPS, set by accelerate launch for DeepSpeed; 1 without it)
    gradient_accumulation_steps: Optional[int] = None
    # speed
    mixed_precision: Optional[str] = None  # null: as accelerate is configured (accelerate config / launch); no, bf16
    cpu_threads: Optional[int] = None  # torch threads per process on a CPU (null: the machine's cores / processes)
    channels_last: bool = True  # model and batches in the channels-last memory format
    compile: bool = False  # torch.compile the training forward (minutes of compiling first)
    # run
    checkpoint_every: int = 200  # steps
    log_every: int = 10
    log_with: str = 'tensorboard'  # accelerate's tracker names: tensorboard, wandb, mlflow, ..., all; none = no tracker

    def __post_init__(self):
        if self.data_source not in SOURCES:
            raise ValueError(f'data_source must be one of {SOURCES}, got {self.data_source!r}')
        if self.data_format not in DATA_FORMATS:
            raise ValueError(f'data_format must be one of {DATA_FORMATS}, got {self.data_format!r}')
        if self.mixed_precision not in (None, 'no', 'bf16'):
            raise ValueError(f"mixed_precision must be null (accelerate's configuration), 'no' or 'bf16', got "
                             f'{self.mixed_precision!r}')
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f'cpu_threads must be >= 1 (or null for every core), got {self.cpu_threads}')
        if self.gradient_accumulation_steps is not None and self.gradient_accumulation_steps < 1:
            raise ValueError(f'gradient_accumulation_steps must be >= 1 (or null: as accelerate is configured), got '
                             f'{self.gradient_accumulation_steps}')
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f'max_steps_per_epoch must be >= 1 (or null for whole epochs), got '
                             f'{self.max_steps_per_epoch}')
        for name in ('batch_size', 'checkpoint_every', 'log_every'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        for name in ('num_workers', 'grad_clip'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')


def parse_kwargs(items: Sequence[str], option: str = '--model_kwargs') -> Dict[str, Any]:
    """Keyword arguments from the command line, as timm's scripts take them: ``KEY=VALUE`` items, each value read
    as YAML (``C=16 layers=8 in_chans=1``); one YAML mapping (``'{C: 16}'``) is read too."""
    if len(items) == 1 and not items[0].partition('=')[1]:
        try:
            value = yaml.safe_load(items[0])
        except yaml.YAMLError:
            value = None
        if isinstance(value, dict):
            return value
    kwargs: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ConfigError(f'{option} takes KEY=VALUE items, got {item!r} (e.g. {option} C=16 layers=8)')
        try:
            kwargs[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f'{option} {item!r}: the value is not valid YAML ({e})') from None
    return kwargs


def add_config_args(parser: argparse.ArgumentParser, cls: Type) -> None:
    """One ``--key value`` option per config field (values parsed as YAML: ``0.01``, ``true``, ``[1, 2]``). A
    boolean key alone means true (``--pretrained`` = ``--pretrained true``); a mapping key takes ``KEY=VALUE``
    items (:func:`parse_kwargs`)."""
    group = parser.add_argument_group('config overrides (any key of the config file)')
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if hint is bool:
            group.add_argument(f'--{f.name}', dest=f'cfg_{f.name}', type=yaml.safe_load, default=None, nargs='?',
                               const=True, metavar='BOOL')
        elif typing.get_origin(hint) in (dict, typing.Dict):
            group.add_argument(f'--{f.name}', dest=f'cfg_{f.name}', default=None, nargs='+', metavar='KEY=VALUE',
                               type=str)
        elif hint in (str, Optional[str]):  # taken as written: --mixed_precision no is 'no', not YAML's false
            group.add_argument(f'--{f.name}', dest=f'cfg_{f.name}', default=None, metavar=f.name.upper(),
                               type=_string_or_null if hint is Optional[str] else str)
        else:
            group.add_argument(f'--{f.name}', dest=f'cfg_{f.name}', type=yaml.safe_load, default=None,
                               metavar=f.name.upper())


def load_config(cls: Type[T], path: Optional[str], args: Optional[argparse.Namespace] = None) -> T:
    """The config from ``path`` (YAML; keys must be fields of ``cls``) with ``args`` overrides on top."""
    data: Dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f'config file {str(file)!r} does not exist')
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f'config file {str(file)!r} is not valid YAML: {e}') from None
        if not isinstance(data, dict):
            raise ConfigError(f'config file {str(file)!r} must hold a mapping of keys to values')
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f'unknown config key(s) {unknown} in {path}; known keys: {", ".join(sorted(known))}')
    hints = typing.get_type_hints(cls)
    if args is not None:
        for name in known:
            value = getattr(args, f'cfg_{name}', None)
            if value is not None:
                is_mapping = typing.get_origin(hints[name]) in (dict, typing.Dict)
                data[name] = parse_kwargs(value, f'--{name}') if is_mapping else value
    for name, value in data.items():
        try:
            data[name] = _coerce(value, hints[name])
        except (TypeError, ValueError):
            raise ConfigError(f'config key {name!r} must be {_type_name(hints[name])}, got {value!r}') from None
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f'invalid config ({path or "defaults"}): {e}') from None


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (YAML reads ``3e-4`` as a string: it becomes a float here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise TypeError(value)
        return dict(value)
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise TypeError(value)
        return [_coerce(v, args[0]) for v in value] if args else list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or int(value) != float(value):
            raise TypeError(value)
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(value)
    return value


def _string_or_null(text: str) -> Optional[str]:
    return None if text == 'null' else text


def _type_name(hint: Any) -> str:
    if hint in (str, Optional[str]):
        return 'a string (quote it in YAML: \'no\', \'true\' and \'null\' are read as other types)'
    return getattr(hint, '__name__', None) or str(hint).replace('typing.', '')


def config_to_yaml(config: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=True)


def check_same_config(config: T, folder: Path) -> T:
    """``config`` as the run in ``folder`` was made, or a :class:`ConfigError` if it differs from the
    ``config.yaml`` the run wrote (resuming a run with another config would silently mix two experiments).

    A key the saved config lacks was added to the recipe after the run started: the run goes on with the value
    that reproduces how it was made, ``type(config).ADDED_KEYS[key]`` (a config file that sets such a key to
    something else is a conflict as any other)."""
    saved = yaml.safe_load((Path(folder) / 'config.yaml').read_text())
    added = {k: v for k, v in getattr(type(config), 'ADDED_KEYS', {}).items() if k not in saved}
    fields = {f.name: f for f in dataclasses.fields(config)}
    config = dataclasses.replace(config, **{k: v for k, v in added.items()
                                            if getattr(config, k) == fields[k].default})
    saved.update(added)
    differ = sorted(k for k, v in dataclasses.asdict(config).items() if saved.get(k) != v and k != 'output')
    # ^ where the run folder is does not change the run: a moved folder resumes
    if differ:
        raise ConfigError(f'cannot resume {folder}: it was run with another config (keys that differ: {differ}); '
                          'resume with the same config, or start a new run in another output folder')
    return config
