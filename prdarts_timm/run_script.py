"""Run a script that knows only timm (timm's own ``train.py``, ``validate.py``, ``benchmark.py``, or yours) with
the PR-DARTS models registered:

    python -m prdarts_timm.run_script path/to/pytorch-image-models/validate.py --model prdarts_c10_micro \\
        --pretrained --data-dir cifar10 ...

imports ``prdarts_timm`` (which registers the models and their tags with timm), then runs the script as
``__main__`` with the arguments after it, as ``python path/to/script.py ARGS...`` would (its folder first on
``sys.path``). timm's ``train.py`` can also import the plugin itself: ``--device-modules prdarts_timm``.
"""
import runpy
import sys
from pathlib import Path

import prdarts_timm  # noqa: F401  (registers the models with timm)

__all__ = ['main']


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        sys.exit(f'usage: python -m prdarts_timm.run_script SCRIPT [ARGS...]\n\n{__doc__}')
    script = Path(argv[0])
    if not script.is_file():
        sys.exit(f'error: {script} is no file: give the path of the script to run (e.g. validate.py of a '
                 'pytorch-image-models checkout; the timm wheel does not ship it)')
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))
    runpy.run_path(str(script), run_name='__main__')


if __name__ == '__main__':
    main()
