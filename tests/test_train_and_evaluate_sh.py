"""benchmarks/train_and_evaluate.sh, the functions the CPU training scripts source: the library it runs is its own
checkout's, ahead of whatever the environment put on PYTHONPATH or installed (a `git worktree`'s run stays that
commit's), and a bad THREADS is a clear error."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source(tmp_path, **env):
    script = f'source {ROOT}/benchmarks/train_and_evaluate.sh && echo "$PYTHONPATH"'
    return subprocess.run(['bash', '-c', script], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, **env))


def test_its_checkout_comes_first_on_pythonpath(tmp_path):
    result = _source(tmp_path, PYTHONPATH='/elsewhere')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f'{ROOT}:/elsewhere'


def test_a_bad_thread_count_names_the_fix(tmp_path):
    result = _source(tmp_path, THREADS='two')
    assert result.returncode == 2 and "THREADS='two'" in result.stderr and 'THREADS=2' in result.stderr
