"""Genotypes as data: a validated cell description with JSON read/write, and the published cells.

A genotype lists, for each intermediate node of a cell, two ``(op, input)`` edges. Inputs 0 and 1 are the
cell's inputs c_{k-2} and c_{k-1}; input ``j >= 2`` is intermediate node ``j - 2``. ``*_concat`` lists the
nodes whose outputs are concatenated into the cell output.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from .errors import GenotypeError
from .io import atomic_write_text

__all__ = ['PRIMITIVES', 'Genotype', 'GenotypeError', 'list_genotypes', 'get_genotype']

PRIMITIVES = (
    'none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect',
    'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5',
)

Edge = Tuple[str, int]
_KEYS = {'name', 'description', 'source', 'normal', 'normal_concat', 'reduce', 'reduce_concat'}
_REQUIRED = ('normal', 'normal_concat', 'reduce', 'reduce_concat')


def _check_cell(cell_name: str, edges: Sequence, concat: Sequence, where: str) -> Tuple[Tuple[Edge, ...], Tuple[int, ...]]:
    if not isinstance(edges, (list, tuple)) or not edges:
        raise GenotypeError(f'{where}: {cell_name!r} must be a non-empty list of [op, input] pairs')
    if len(edges) % 2:
        raise GenotypeError(
            f'{where}: {cell_name!r} has {len(edges)} edges; each intermediate node takes exactly 2 '
            f'inputs, so the edge count must be even (DARTS cells have 8: 4 nodes x 2)')
    checked: List[Edge] = []
    for i, edge in enumerate(edges):
        node = i // 2
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise GenotypeError(f'{where}: {cell_name}[{i}] = {edge!r} is not an [op, input] pair')
        op, index = edge
        if op not in PRIMITIVES:
            raise GenotypeError(
                f'{where}: {cell_name}[{i}] uses unknown op {op!r}; known ops: {", ".join(PRIMITIVES[1:])}')
        if op == 'none':
            raise GenotypeError(
                f"{where}: {cell_name}[{i}] is 'none'; a derived genotype has no zero edges (drop the edge and "
                f'pick another input for node {node})')
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < node + 2:
            raise GenotypeError(
                f'{where}: {cell_name}[{i}] reads input {index!r}, but node {node} can only read inputs '
                f'0..{node + 1} (0, 1: the cell inputs; 2..: earlier nodes)')
        checked.append((op, index))
    steps = len(edges) // 2
    concat_name = f'{cell_name}_concat'
    if (not isinstance(concat, (list, tuple)) or not concat
            or any(isinstance(c, bool) or not isinstance(c, int) for c in concat)):
        raise GenotypeError(f'{where}: {concat_name!r} must be a non-empty list of node indices, got {concat!r}')
    bad = [c for c in concat if not 2 <= c < steps + 2]
    if bad or len(set(concat)) != len(concat):
        raise GenotypeError(
            f'{where}: {concat_name} = {list(concat)} is invalid: indices must be unique intermediate nodes '
            f'in 2..{steps + 1} (this cell has {steps} nodes; DARTS uses [2, 3, 4, 5])')
    return tuple(checked), tuple(concat)


@dataclass(frozen=True)
class Genotype:
    """A DARTS-style cell pair (normal and reduction), validated on construction."""
    normal: Tuple[Edge, ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Edge, ...]
    reduce_concat: Tuple[int, ...]
    name: str = ''
    description: str = ''
    source: str = ''

    def __post_init__(self):
        where = f'genotype {self.name!r}' if self.name else 'genotype'
        normal, normal_concat = _check_cell('normal', self.normal, self.normal_concat, where)
        reduce, reduce_concat = _check_cell('reduce', self.reduce, self.reduce_concat, where)
        object.__setattr__(self, 'normal', normal)
        object.__setattr__(self, 'normal_concat', normal_concat)
        object.__setattr__(self, 'reduce', reduce)
        object.__setattr__(self, 'reduce_concat', reduce_concat)

    @classmethod
    def from_dict(cls, data: Dict, where: str = 'genotype') -> 'Genotype':
        if not isinstance(data, dict):
            raise GenotypeError(f'{where}: expected a JSON object with keys {sorted(_REQUIRED)}, got {type(data).__name__}')
        unknown = set(data) - _KEYS
        if unknown:
            raise GenotypeError(f'{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}')
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise GenotypeError(f'{where}: missing keys {missing}')
        try:
            return cls(**data)
        except GenotypeError as e:
            if where != 'genotype' and not str(e).startswith(where):
                raise GenotypeError(f'{where}: {e}') from None
            raise

    def to_dict(self) -> Dict:
        out = dict(
            normal=[list(e) for e in self.normal], normal_concat=list(self.normal_concat),
            reduce=[list(e) for e in self.reduce], reduce_concat=list(self.reduce_concat))
        for key in ('name', 'description', 'source'):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def to_json(self) -> str:
        """JSON text with one edge per line."""
        data = self.to_dict()
        lines = ['{']
        items = [(k, data[k]) for k in ('name', 'description', 'source') if k in data]
        items += [(k, data[k]) for k in _REQUIRED]
        for i, (key, value) in enumerate(items):
            if key in ('normal', 'reduce'):
                edges = ',\n'.join(f'    {json.dumps(e)}' for e in value)
                text = f'[\n{edges}\n  ]'
            else:
                text = json.dumps(value)
            lines.append(f'  {json.dumps(key)}: {text}' + (',' if i < len(items) - 1 else ''))
        return '\n'.join(lines + ['}', ''])

    @classmethod
    def load(cls, path: Union[str, Path]) -> 'Genotype':
        """Read a genotype JSON file; errors name the file and what is wrong in it."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise GenotypeError(f'genotype file {str(path)!r} does not exist') from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(f'genotype file {str(path)!r} is not valid JSON: {e}') from None
        return cls.from_dict(data, where=f'genotype file {str(path)!r}')

    def save(self, path: Union[str, Path]) -> None:
        """Write as JSON, atomically (a temporary file renamed into place)."""
        atomic_write_text(path, self.to_json())

    def without_meta(self) -> 'Genotype':
        return Genotype(self.normal, self.normal_concat, self.reduce, self.reduce_concat)

    def same_cells(self, other: 'Genotype') -> bool:
        """True when both genotypes describe the same cells (names and descriptions ignored)."""
        return self.without_meta() == other.without_meta()


def _published() -> Dict[str, Path]:
    folder = resources.files('prdarts_timm') / 'genotypes'
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith('.json')}


def list_genotypes() -> List[str]:
    """Names of the genotypes shipped with the package."""
    return sorted(_published())


def get_genotype(spec: Union[str, Path, Dict, Genotype]) -> Genotype:
    """A genotype from a shipped name (``'prdarts_99'``), a JSON file path, a dict, or a Genotype."""
    if isinstance(spec, Genotype):
        return spec
    if isinstance(spec, dict):
        return Genotype.from_dict(spec)
    if isinstance(spec, (str, Path)):
        published = _published()
        key = str(spec).lower()
        if key in published:
            return Genotype.load(published[key])
        if str(spec).endswith('.json') or os.sep in str(spec) or Path(spec).exists():
            return Genotype.load(spec)
        raise GenotypeError(
            f'unknown genotype {str(spec)!r}: not a shipped name ({", ".join(sorted(published))}) '
            'and not a path to a .json file')
    raise GenotypeError(f'cannot make a genotype from {type(spec).__name__}; pass a name, a JSON path or a dict')
