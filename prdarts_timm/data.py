""" Data sets and transforms for the search and training recipes.

Three sources, one call (:func:`build_dataset`):

* ``'mini'``: the embedded mini CIFAR-10 (``data_files/cifar10_mini.tar``, 200 train / 100 test images per
  class cut from the CIFAR-10 JPEG copy), held in memory, decoded on access. Offline smoke runs and tests.
* ``'imagefolder'``: ``root/<split>/<class>/*`` (the unpacked CIFAR-10 JPEG copy, ImageNet, ...).
* ``'torchvision'``: the original CIFAR-10 release through ``torchvision.datasets.CIFAR10``.

Figures measured on ``'mini'`` or on the JPEG copy must be labelled "CIFAR-10 (JPEG copy)".
For exact resume and any process count the recipes do not shuffle with a sampler: each epoch takes a seeded
permutation, :func:`shard_indices` gives a process its slice of every step, and :class:`SeededTransform`
seeds the augmentation of each (epoch, sample).
"""

import io
import os
import tarfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from .errors import DatasetError, DatasetNotFoundError
from .cifar import CIFAR10_MEAN, CIFAR10_STD

__all__ = [
    'CIFAR10_MEAN', 'CIFAR10_STD', 'DATA_FORMATS', 'MINI_CIFAR10_PATH', 'SOURCES', 'DatasetError', 'DatasetNotFoundError',
    'Cutout', 'MiniCIFAR10', 'SeededTransform', 'cifar_transforms', 'build_dataset', 'split_train',
    'shard_indices',
]

MINI_CIFAR10_PATH = Path(__file__).resolve().parent / 'data_files' / 'cifar10_mini.tar'
SOURCES = ('mini', 'imagefolder', 'torchvision')
DATA_FORMATS = ('tensor', 'pil')  # the recipes' two data paths (prdarts_timm.tensor_data, or PIL + DataLoader)
_IMG_EXTENSIONS = tuple(datasets.folder.IMG_EXTENSIONS)


class Cutout:
    """DARTS Cutout: zero a ``length`` x ``length`` square at a uniformly drawn centre (clipped at the border).

    Applied to a normalized CHW tensor, after ``Normalize`` as in DARTS. Draws from torch's global RNG, so
    ``torch.manual_seed`` (and DataLoader worker seeding) make it reproducible. torchvision's
    ``RandomErasing`` is not used: it keeps the whole rectangle inside the image, DARTS Cutout does not.
    """

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f'Cutout length must be >= 1, got {length}')
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        y = int(torch.randint(h, ()).item())
        x = int(torch.randint(w, ()).item())
        half = self.length // 2
        y1, y2 = max(y - half, 0), min(y + half, h)
        x1, x2 = max(x - half, 0), min(x + half, w)
        img = img.clone()
        img[..., y1:y2, x1:x2] = 0.
        return img

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(length={self.length})'


def cifar_transforms(train: bool, cutout: int = 0, padding: int = 4, flip: bool = True) -> transforms.Compose:
    """DARTS CIFAR transforms: train = RandomCrop(32, pad ``padding``; 0 = none), flip (``flip``), ToTensor,
    Normalize[, Cutout(cutout)]; eval = ToTensor, Normalize. ``cutout`` (0 = off) applies to the train
    transform only."""
    if cutout < 0:
        raise ValueError(f'cutout must be >= 0 (0 = off), got {cutout}')
    normalize = [transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    if not train:
        return transforms.Compose(normalize)
    ops = ([transforms.RandomCrop(32, padding=padding)] if padding > 0 else []) + (
        [transforms.RandomHorizontalFlip()] if flip else []) + normalize
    if cutout > 0:
        ops.append(Cutout(cutout))
    return transforms.Compose(ops)


class MiniCIFAR10(Dataset):
    """One split of the embedded mini CIFAR-10 tar, JPEG bytes in memory, decoded (RGB) on access.

    Same interface as ``ImageFolder``: ``classes``, ``class_to_idx``, ``targets``; items are
    ``(image, label)`` with ``label`` the alphabetical class index.
    """

    def __init__(self, split: str, path: Path = MINI_CIFAR10_PATH, transform: Optional[Callable] = None):
        if split not in ('train', 'test'):
            raise DatasetError(f"split {split!r} is not in the mini CIFAR-10; use 'train' or 'test'")
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(
                f'mini CIFAR-10 tar not found at {path}; regenerate it with recipes/make_mini_cifar10.py '
                f'or reinstall the package')
        found: Dict[str, List[Tuple[str, bytes]]] = {}
        with tarfile.open(path, 'r:') as tar:
            for member in tar:
                parts = member.name.split('/')
                if member.isfile() and len(parts) == 3 and parts[0] == split:
                    found.setdefault(parts[1], []).append((parts[2], tar.extractfile(member).read()))
        if not found:
            raise DatasetError(f'no {split}/<class>/*.jpg members in {path}; regenerate it with '
                               f'recipes/make_mini_cifar10.py')
        self.split = split
        self.transform = transform
        self.classes: List[str] = sorted(found)
        self.class_to_idx: Dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        self.images: List[bytes] = []
        self.targets: List[int] = []
        for cls in self.classes:
            for _, data in sorted(found[cls]):
                self.images.append(data)
                self.targets.append(self.class_to_idx[cls])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = Image.open(io.BytesIO(self.images[index])).convert('RGB')
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(split={self.split!r}, n={len(self)}, classes={len(self.classes)})'


def _load_image(path: str) -> Image.Image:
    """torchvision's default loader (PIL, RGB), with an error that names a file PIL cannot read."""
    try:
        return datasets.folder.default_loader(path)
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise DatasetError(f'{path!r} cannot be read as an image ({type(e).__name__}: {e}): delete or replace that '
                           'file') from None


def _image_folder(root: str, split: str, transform: Optional[Callable]) -> datasets.ImageFolder:
    if split not in ('train', 'test', 'val'):
        raise DatasetError(f"split must be 'train', 'test' or 'val' for source='imagefolder', got {split!r}")
    if not os.path.isdir(root):
        raise DatasetNotFoundError(f'ImageFolder root {root!r} does not exist (or is not a folder); pass the '
                                   f'folder that holds the train/ and test/ (or val/) sub-folders')
    folder = os.path.join(root, split)
    if split == 'val' and not os.path.isdir(folder):
        folder = os.path.join(root, 'test')  # 'val' falls back to 'test' when there is no val/ folder
    if not os.path.isdir(folder):
        present = sorted(os.listdir(root))
        wanted = "'val' (or 'test')" if split == 'val' else repr(split)
        raise DatasetNotFoundError(
            f'no {wanted} split folder in ImageFolder root {root!r}; it holds {present or "nothing"}. '
            f'Expected layout: root/{split}/<class>/<image> (pass the parent of the split folders as root)')
    with os.scandir(folder) as it:
        class_dirs = sorted(e.name for e in it if e.is_dir())
    if not class_dirs:
        raise DatasetNotFoundError(
            f'split folder {folder!r} has no class folders; expected {folder}/<class>/<image> '
            f'(one sub-folder per class, images inside it)')
    ds = datasets.ImageFolder(folder, transform=transform, loader=_load_image, allow_empty=True)
    counts = torch.bincount(torch.tensor(ds.targets, dtype=torch.long), minlength=len(ds.classes))
    empty = [c for c, n in zip(ds.classes, counts.tolist()) if n == 0]
    if empty:
        raise DatasetNotFoundError(
            f'class folder(s) {empty} in {folder!r} contain no images (extensions {", ".join(_IMG_EXTENSIONS)}); '
            'add images or remove the empty folders')
    return ds


def _torchvision_cifar10(root: str, split: str, transform: Optional[Callable],
                         download: bool) -> datasets.CIFAR10:
    if split not in ('train', 'test'):
        raise DatasetError(f"split must be 'train' or 'test' for source='torchvision', got {split!r}")
    missing = ("pass download=True on a machine with internet access, or use source='imagefolder' "
               "(the JPEG copy) or source='mini'")
    if not download and not os.path.isdir(os.path.join(root, datasets.CIFAR10.base_folder)):
        raise DatasetNotFoundError(f'torchvision CIFAR-10 not found under {root!r} '
                                   f'(no {datasets.CIFAR10.base_folder}/ folder); {missing}')
    try:
        return datasets.CIFAR10(root, train=split == 'train', transform=transform, download=download)
    except RuntimeError as e:
        if download:
            raise
        raise DatasetNotFoundError(f'torchvision CIFAR-10 under {root!r} is incomplete or corrupted ({e}); '
                                   f'{missing}') from None


def build_dataset(
        source: str,
        split: str,
        root: Optional[str] = None,
        transform: Optional[Callable] = None,
        download: bool = False,
) -> Dataset:
    """A data set split with ``.classes`` and ``.targets``; items are ``(image, label)``.

    Args:
        source: ``'mini'`` (embedded mini CIFAR-10, ``root`` ignored), ``'imagefolder'``
            (``root/<split>/<class>/*``) or ``'torchvision'`` (``torchvision.datasets.CIFAR10`` in ``root``).
        split: ``'train'`` or ``'test'``. For ``'imagefolder'`` also ``'val'``, which reads ``root/val``,
            or ``root/test`` when there is no ``val`` folder.
        root: data folder, required for ``'imagefolder'`` and ``'torchvision'``.
        transform: applied to each PIL image (e.g. :func:`cifar_transforms`).
        download: ``'torchvision'`` only: download CIFAR-10 into ``root`` if absent.

    Raises:
        DatasetError: (a ``ValueError``; ``DatasetNotFoundError`` is also a ``FileNotFoundError``) with the
            problem and the fix: unknown source or split, missing root or split folder, empty class folders,
            CIFAR-10 not downloaded.
    """
    if source not in SOURCES:
        raise DatasetError(f'unknown data source {source!r}; use one of {", ".join(map(repr, SOURCES))}')
    if source == 'mini':
        return MiniCIFAR10(split, transform=transform)
    if root is None:
        raise DatasetError(f"source={source!r} needs root= (the data folder); "
                           f"or use source='mini' for the embedded mini CIFAR-10")
    root = os.fspath(root)
    if source == 'imagefolder':
        return _image_folder(root, split, transform)
    return _torchvision_cifar10(root, split, transform, download)


class SeededTransform(Dataset):
    """Applies ``transform`` with an RNG seeded by (seed, epoch, index): augmentation is the same for a given
    sample and epoch whatever the process count, worker count, or a resume in the middle of an epoch.
    Set ``epoch`` before each epoch."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        with torch.random.fork_rng(devices=[]):  # the CPU generator only: transforms draw from it
            torch.default_generator.manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index) % 2**63)
            return self.transform(image), target


def shard_indices(perm: torch.Tensor, steps: int, batch_size: int, world: int, rank: int,
                  skip: int = 0) -> List[int]:
    """Process ``rank``'s samples for steps ``skip .. steps - 1`` of an epoch ordered by ``perm``.

    Step ``s`` takes ``perm[s * batch_size * world : (s + 1) * batch_size * world]``, and each process its own
    ``batch_size`` slice of it, so the global batch of a step is the same for 1 or N processes (at the same
    global batch size) and a resume at step ``skip`` sees exactly the batches it missed.
    """
    if steps * batch_size * world > len(perm):
        raise ValueError(f'{steps} steps of {batch_size} x {world} samples do not fit in {len(perm)} samples')
    return torch.cat([perm[(s * world + rank) * batch_size:(s * world + rank + 1) * batch_size]
                      for s in range(skip, steps)] or [perm[:0]]).tolist()


def split_train(dataset_len: int, portion: float = 0.5, seed: int = 0) -> Tuple[List[int], List[int]]:
    """DARTS search split of a train set: ``(weight_indices, alpha_indices)``.

    A seeded random permutation of ``range(dataset_len)``; the first ``int(portion * dataset_len)`` indices
    train the weights, the rest the architecture (alphas). Both lists are sorted, disjoint and together cover
    every index; the same ``(dataset_len, portion, seed)`` always gives the same split.
    """
    if not 0. < portion < 1.:
        raise ValueError(f'portion must be in (0, 1) (the weight share of the train set), got {portion}')
    n_weight = int(portion * dataset_len)
    if n_weight < 1 or n_weight >= dataset_len:
        raise ValueError(f'cannot split {dataset_len} samples with portion={portion}: both halves must be '
                         f'non-empty')
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(dataset_len, generator=g)
    return sorted(perm[:n_weight].tolist()), sorted(perm[n_weight:].tolist())
