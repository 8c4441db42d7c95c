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


def test_the_wheel_carries_the_license_the_typing_marker_and_the_weights(tmp_path):
    """pip builds a wheel (setuptools >= 77: the license string) holding LICENSE, py.typed, the bundled weights and
    the project's URLs."""
    import subprocess
    import sys
    import tomllib
    import zipfile

    result = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                             str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob('prdarts_timm-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names)
    assert 'prdarts_timm/py.typed' in names and 'prdarts_timm/weights/index.json' in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    assert 'License-Expression: Apache-2.0' in metadata and 'Project-URL: Repository' in metadata
    assert re.search(r'Requires-Dist: timm<1\.1,>=1\.0\.15|Requires-Dist: timm>=1\.0\.15,<1\.1', metadata)
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    assert 'Apache License' in (ROOT / 'LICENSE').read_text() and project['project']['license'] == 'Apache-2.0'


def test_the_card_and_the_package_name_one_repository():
    import tomllib

    from prdarts_timm.hub import REPOSITORY

    urls = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['urls']
    assert urls['Repository'] == urls['Homepage'] == REPOSITORY


def test_the_readmes_first_snippet_classifies_an_image(tmp_path):
    """The README opens with loading a tag and printing an image's class name: that code, run as written."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    readme = (ROOT / 'README.md').read_text()
    assert readme.index('## Classify an image') < readme.index('## Quickstart')
    code = re.search(r'## Classify an image.*?```python\n(.*?)```', readme, re.S).group(1)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / 'cat.png')
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(__import__('os').environ, HF_HUB_OFFLINE='1'))
    assert result.returncode == 0, result.stderr[-2000:]
    name, share = result.stdout.split()
    from prdarts_timm.cifar import CIFAR10_CLASSES
    assert name in CIFAR10_CLASSES and share.endswith('%')
