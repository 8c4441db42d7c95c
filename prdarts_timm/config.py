"""Recipe configs: a dataclass of known keys, filled from a YAML file, then from command-line overrides."""
import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Type, TypeVar

import yaml

__all__ = ['ConfigError', 'add_config_args', 'load_config', 'config_to_yaml']

T = TypeVar('T')


class ConfigError(ValueError):
    """A config file or override that does not fit the recipe; the message names the key and the fix."""


def add_config_args(parser: argparse.ArgumentParser, cls: Type) -> None:
    """One ``--key value`` option per config field (values parsed as YAML: ``0.01``, ``true``, ``[1, 2]``)."""
    group = parser.add_argument_group('config overrides (any key of the config file)')
    for f in dataclasses.fields(cls):
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
    if args is not None:
        for name in known:
            value = getattr(args, f'cfg_{name}', None)
            if value is not None:
                data[name] = value
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f'invalid config ({path or "defaults"}): {e}') from None


def config_to_yaml(config: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=True)
