"""The package's imports only go down (docs/architecture.md): read from the source with ``ast``, nothing imported.

* no import cycle between the modules of ``prdarts_timm`` (module-level and function-level imports alike,
  relative imports resolved, a submodule import counting as an import of its packages too);
* no module of ``prdarts_timm`` imports a recipe (``recipes/`` are scripts on top of the library);
* every module imports only from its own layer or the layers below (``LAYERS``, the picture of
  docs/architecture.md);
* no function-level import of a ``prdarts_timm`` module: inside the package such an import can only be there
  to dodge a cycle. A function may import an optional or heavy third-party dependency lazily (ONNX, ONNX
  Runtime, matplotlib, TensorBoard: ``LAZY_ALLOWED``), so that ``import prdarts_timm`` does not need them.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'prdarts_timm'
LAZY_ALLOWED = {'onnx', 'onnxruntime', 'matplotlib', 'tensorboard'}
# bottom first; a module (or package) belongs to the first layer that names it or a package above it
LAYERS = [
    ('bottom', ['errors', 'io', 'distributed', 'cifar', 'cpu_allocator']),
    ('maths', ['depthwise', 'layers', 'ops', 'genotypes', 'pruning', 'profile', 'stage']),
    ('models', ['models', 'checkpoint', 'builder']),
    ('data and configs', ['data', 'tensor_data', 'synthetic_data', 'config']),
    ('search / retraining', ['search', 'retrain']),
    ('shared training pieces', ['training', 'run_folder', 'cli', 'distill', 'run_script']),
    ('export', ['compact', 'deploy', 'hub', 'plots']),
]


def _modules() -> Dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, from its ``__init__.py``)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob('*.py')):
        parts = list(path.relative_to(ROOT).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        found['.'.join(parts)] = path
    return found


def _imports(name: str, path: Path) -> Iterator[Tuple[str, int, bool]]:
    """(imported dotted name, line, inside a function) for each import of the module ``name`` at ``path``; for
    ``from X import y`` both ``X`` and ``X.y`` (``y`` may be a submodule)."""
    is_package = path.name == '__init__.py'
    tree = ast.parse(path.read_text(), str(path))

    def visit(node: ast.AST, in_function: bool) -> Iterator[Tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ''
                if child.level:
                    anchor = name.split('.') if is_package else name.split('.')[:-1]
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = '.'.join(anchor + ([base] if base else []))
                yield base, child.lineno, in_function
                for alias in child.names:
                    yield f'{base}.{alias.name}', child.lineno, in_function
            yield from visit(child, inner)

    yield from visit(tree, False)


def _graph() -> Tuple[Dict[str, Set[str]], List[Tuple[str, str, int]]]:
    """(module -> package modules it imports, every function-level import as (module, target, line))."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    lazy = []
    for name, path in modules.items():
        for target, line, in_function in _imports(name, path):
            if in_function:
                lazy.append((name, target, line))
            parts = target.split('.')
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                module = '.'.join(parts[:i])
                if module in modules and module != name and not name.startswith(module + '.'):
                    graph[name].add(module)
    return graph, lazy


def _find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_imports():
    graph, _ = _graph()
    assert len(graph) > 20
    assert 'prdarts_timm.errors' in graph['prdarts_timm.compact.cells']  # relative, two levels
    assert {'prdarts_timm.models', 'prdarts_timm.models.prdarts'} <= graph['prdarts_timm.builder']
    assert 'prdarts_timm.cifar' in graph['prdarts_timm.data'] and 'prdarts_timm.models' not in graph['prdarts_timm.data']
    assert 'prdarts_timm.compact' in graph['prdarts_timm.deploy.folder']
    assert _find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def test_no_import_cycle():
    cycle = _find_cycle(_graph()[0])
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


RUNS_USER_SCRIPTS = {'prdarts_timm.run_script'}  # its one job: run the script a user names (timm's validate.py)


def test_the_library_imports_no_recipe():
    offenders = []
    for name, path in _modules().items():
        offenders += [f'{name}:{line} imports {target}' for target, line, _ in _imports(name, path)
                      if target.split('.')[0] == 'recipes']
        source = path.read_text()
        offenders += [f'{name} loads a file as a module ({call})' for call in ('spec_from_file_location', 'run_path')
                      if call in source and name not in RUNS_USER_SCRIPTS]
    assert not offenders, offenders


def test_function_level_imports_are_only_optional_dependencies():
    _, lazy = _graph()
    offenders = sorted({f'{name}:{line} imports {target.split(".")[0] if not target.startswith(PACKAGE) else target}'
                        for name, target, line in lazy
                        if target.startswith(PACKAGE + '.') or target == PACKAGE
                        or target.split('.')[0] not in LAZY_ALLOWED})
    assert not offenders, ('import these at module level (a package module imported inside a function dodges a '
                           f'cycle; only {sorted(LAZY_ALLOWED)} may be imported lazily): {offenders}')


def _layer(module: str) -> int:
    if module == PACKAGE:
        return len(LAYERS)  # the package's __init__ re-exports from any layer
    parts = module.split('.')[1:]
    for i, (_, names) in enumerate(LAYERS):
        if parts[0] in names:
            return i
    raise AssertionError(f'{module} is in no layer of LAYERS: add it (and to docs/architecture.md)')


def test_imports_only_go_down():
    graph, _ = _graph()
    upward = [f'{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})'
              for name, targets in sorted(graph.items()) for target in sorted(targets)
              if _layer(target) > _layer(name)]
    assert not upward, upward
