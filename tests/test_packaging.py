import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_quickstart():
    """CI must install and test the way the README tells a newcomer to."""
    readme = (ROOT / 'README.md').read_text()
    block = re.search(r'## Quickstart.*?```bash\n(.*?)```', readme, re.S).group(1).strip().splitlines()
    ci = (ROOT / '.ci' / 'run').read_text()
    install = [line for line in block if line.startswith('pip install')]
    assert len(install) == 1 and install[0] in ci
    assert 'pytest' in block and re.search(r'^pytest$', ci, re.M)
