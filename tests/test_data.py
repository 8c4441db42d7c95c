import hashlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from prdarts_timm.data import (
    CIFAR10_MEAN, DatasetError, DatasetNotFoundError, MINI_CIFAR10_PATH, build_dataset, cifar_transforms,
    split_train, Cutout,
)
from prdarts_timm.models.prdarts import CIFAR10_MEAN as MODEL_MEAN  # re-exported from prdarts_timm.cifar

ROOT = Path(__file__).resolve().parents[1]
SHARED_SOURCE = ROOT.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def _readme_sha256() -> str:
    text = (MINI_CIFAR10_PATH.parent / 'README.md').read_text()
    return re.search(r'^- sha256: `([0-9a-f]{64})`', text, re.M).group(1)


@pytest.fixture(scope='module')
def mini_train():
    return build_dataset('mini', 'train')


@pytest.fixture(scope='module')
def mini_test():
    return build_dataset('mini', 'test')


def test_constants_come_from_the_model():
    assert CIFAR10_MEAN is MODEL_MEAN


@pytest.mark.parametrize('split, per_class', [('train', 200), ('test', 100)])
def test_mini_counts_and_balance(split, per_class, mini_train, mini_test):
    ds = mini_train if split == 'train' else mini_test
    assert ds.classes == CLASSES
    assert ds.class_to_idx == {c: i for i, c in enumerate(CLASSES)}
    assert len(ds) == 10 * per_class == len(ds.targets)
    assert Counter(ds.targets) == {i: per_class for i in range(10)}


def test_mini_labels_and_eval_transform(mini_test):
    img, label = mini_test[0]
    assert isinstance(img, Image.Image) and img.mode == 'RGB' and img.size == (32, 32)
    assert label == 0  # airplane
    ds = build_dataset('mini', 'test', transform=cifar_transforms(train=False))
    x, y = ds[len(ds) - 1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == CLASSES.index('truck')
    assert -3 < x.mean().item() < 3  # normalized


def test_train_transform_and_cutout(mini_train):
    img, _ = mini_train[5]
    torch.manual_seed(0)
    x = cifar_transforms(train=True)(img)
    assert x.shape == (3, 32, 32)
    x = cifar_transforms(train=True, cutout=16)(img)
    assert x.shape == (3, 32, 32)
    # Cutout zeroes a (clipped) square of at most 16x16 and at least 8x8 pixels
    torch.manual_seed(0)
    for _ in range(20):
        out = Cutout(16)(torch.ones(3, 32, 32))
        zeros = int((out[0] == 0).sum())
        assert 64 <= zeros <= 256 and bool((out == 0).all(0).eq(out[0] == 0).all())
    with pytest.raises(ValueError):
        cifar_transforms(train=True, cutout=-1)


def test_fixture_sha256_matches_readme():
    assert hashlib.sha256(MINI_CIFAR10_PATH.read_bytes()).hexdigest() == _readme_sha256()


def test_split_train():
    w, a = split_train(1000, 0.5, seed=0)
    assert len(w) == len(a) == 500
    assert not set(w) & set(a) and sorted(w + a) == list(range(1000))
    assert (w, a) == split_train(1000, 0.5, seed=0)
    assert w != split_train(1000, 0.5, seed=1)[0]
    w, a = split_train(10, 0.8, seed=3)
    assert len(w) == 8 and len(a) == 2
    for portion in (0., 1., -0.1, 1.5):
        with pytest.raises(ValueError, match='portion'):
            split_train(100, portion)
    with pytest.raises(ValueError, match='non-empty'):
        split_train(1, 0.5)


def _write_jpegs(folder: Path, n: int, color):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new('RGB', (32, 32), color).save(folder / f'{i:04d}.jpg', quality=90)


def test_imagefolder_valid(tmp_path):
    for split, n in (('train', 3), ('test', 2)):
        _write_jpegs(tmp_path / split / 'cat', n, (200, 10, 10))
        _write_jpegs(tmp_path / split / 'ant', n, (10, 10, 200))
    ds = build_dataset('imagefolder', 'train', root=str(tmp_path), transform=cifar_transforms(train=False))
    assert ds.classes == ['ant', 'cat'] and len(ds) == 6 and sorted(ds.targets) == [0, 0, 0, 1, 1, 1]
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0
    val = build_dataset('imagefolder', 'val', root=tmp_path)  # no val/ folder: falls back to test/
    assert len(val) == 4 and val.root == str(tmp_path / 'test')


def test_unknown_source_and_split():
    with pytest.raises(DatasetError, match=r"unknown data source 'cifar'.*'mini'"):
        build_dataset('cifar', 'train')
    with pytest.raises(DatasetError, match=r"split 'val'.*'train' or 'test'"):
        build_dataset('mini', 'val')
    with pytest.raises(DatasetError, match=r"'train', 'test' or 'val'"):
        build_dataset('imagefolder', 'training', root='.')


@pytest.mark.parametrize('source', ['imagefolder', 'torchvision'])
def test_missing_root(source):
    with pytest.raises(DatasetError, match='needs root='):
        build_dataset(source, 'train')


def test_root_does_not_exist(tmp_path):
    with pytest.raises(DatasetNotFoundError, match='does not exist') as e:
        build_dataset('imagefolder', 'train', root=tmp_path / 'nope')
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)


def test_root_without_split_folder(tmp_path):
    (tmp_path / 'training').mkdir()
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(DatasetNotFoundError, match=r"no 'train' split folder.*\['notes.txt', 'training'\]"):
        build_dataset('imagefolder', 'train', root=tmp_path)


def test_split_without_class_folders(tmp_path):
    _write_jpegs(tmp_path / 'train', 2, (0, 0, 0))  # images directly in train/, no class folders
    with pytest.raises(DatasetNotFoundError, match='has no class folders'):
        build_dataset('imagefolder', 'train', root=tmp_path)


def test_class_folder_without_images(tmp_path):
    _write_jpegs(tmp_path / 'train' / 'cat', 2, (0, 0, 0))
    (tmp_path / 'train' / 'dog').mkdir()
    (tmp_path / 'train' / 'dog' / 'readme.txt').write_text('not an image')
    with pytest.raises(DatasetNotFoundError, match=r"\['dog'\].*contain no images"):
        build_dataset('imagefolder', 'train', root=tmp_path)


def test_torchvision_not_downloaded(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"not found.*download=True.*source='imagefolder'"):
        build_dataset('torchvision', 'train', root=tmp_path)
    (tmp_path / 'cifar-10-batches-py').mkdir()  # present but empty: corrupted
    with pytest.raises(DatasetNotFoundError, match=r'incomplete or corrupted.*download=True') as e:
        build_dataset('torchvision', 'test', root=tmp_path)
    assert e.value.__suppress_context__


@pytest.mark.skipif(not SHARED_SOURCE.is_file(), reason='needs ../shared/data/cifar10-jpeg.tar.gz')
def test_make_script_reproduces_fixture(tmp_path):
    out = tmp_path / 'mini.tar'
    result = subprocess.run([sys.executable, 'recipes/make_mini_cifar10.py', '--source', str(SHARED_SOURCE), '--out',
                             str(out), '--train-per-class', '200', '--test-per-class', '100'], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    digest = result.stdout.split('sha256')[-1].strip()
    assert digest == _readme_sha256()
    assert out.read_bytes() == MINI_CIFAR10_PATH.read_bytes()
