""" A 32x32 data set held as one uint8 tensor, and the DARTS augmentation done in batches on its device.

The recipes' default data path (``data_format: tensor``), after airbench: the images of a split are decoded
once (:func:`load_image_tensors`) into ``images`` (N x C x 32 x 32, uint8: CIFAR-10's train split is 150 MB)
and ``targets``, cached on disk, moved to the training device, and each step's batch is cut, augmented and
normalized there with a few tensor ops (:func:`augment_batch`), without PIL or a DataLoader.

The augmentation is the DARTS one (pad-4 random crop with black padding, horizontal flip, then normalize,
then cutout), drawn per sample from a counter-based hash of (seed, epoch, sample index): the same sample in the
same epoch gets the same crop, flip and cutout on any device, any process count, and after a resume. (It is
not the same random stream as the PIL path's ``SeededTransform``: a run keeps the ``data_format`` it started
with.)

The cache: ``<root>/.prdarts_tensors/<split>.safetensors`` for an ImageFolder or torchvision root, or
``$PRDARTS_TIMM_CACHE`` / ``~/.cache/prdarts_timm`` when the root is not writable (a shared read-only copy)
and for the embedded mini CIFAR-10. Its metadata hold the content key of the data it was made from (file
names, sizes and modification times; the tar's sha256 for the mini set) and a sha256 of its tensors. A cache
whose key differs (the folder changed) or whose tensors do not match their checksum (a corrupt file) is
rebuilt, never used.
"""
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .data import CIFAR10_MEAN, CIFAR10_STD, MINI_CIFAR10_PATH, DatasetError, build_dataset
from .io import atomic_write, file_sha256

__all__ = ['ImageTensors', 'holdout_indices', 'load_image_tensors', 'content_key', 'augment_batch', 'normalize_batch', 'batches',
           'crop_batch', 'resize_batch', 'sample_hash', 'CACHE_FORMAT']

CACHE_FORMAT = '1'  # bump when the cached layout changes
_MASK32 = 0xFFFFFFFF


@dataclass
class ImageTensors:
    """A decoded split: ``images`` N x C x H x W uint8, ``targets`` N int64, ``classes`` (index order)."""
    images: torch.Tensor
    targets: torch.Tensor
    classes: List[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: Union[str, torch.device]) -> 'ImageTensors':
        return ImageTensors(self.images.to(device), self.targets.to(device), self.classes)

    def subset(self, indices: Sequence[int]) -> 'ImageTensors':
        index = torch.as_tensor(list(indices), dtype=torch.long, device=self.images.device)
        return ImageTensors(self.images[index], self.targets[index], self.classes)

    def fit(self, channels: int, size: Tuple[int, int]) -> 'ImageTensors':
        """The images as a model with ``channels`` input channels and an ``size`` (H, W) input takes them: grey
        repeated to RGB or RGB to grey (ITU-R 601 luma, as PIL's ``convert('L')``), and resized (bilinear,
        antialiased, as timm's resize of a PIL image). Unchanged where they already fit."""
        images = self.images
        if images.shape[1] != channels:
            if images.shape[1] == 1:
                images = images.expand(-1, channels, -1, -1)
            elif images.shape[1] == 3 and channels == 1:
                luma = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
                images = (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            else:
                raise DatasetError(f'images with {images.shape[1]} channels do not fit a model that takes {channels}: '
                                   'set the model\'s in_chans to the images\' channel count')
        if tuple(images.shape[-2:]) != tuple(size):
            images = _resized(images, size)
        if images is self.images:
            return self
        return ImageTensors(images.contiguous(), self.targets, self.classes)

    def holdout(self, fraction: float, seed: int = 0) -> Tuple['ImageTensors', 'ImageTensors']:
        """(train, held out): ``fraction`` of each class's images, drawn with ``seed``, held out for
        evaluation (at least one per class), the rest to train on; both keep the original order."""
        return tuple(self.subset(part) for part in holdout_indices(self.targets.cpu().tolist(), fraction, seed))


def holdout_indices(targets: Sequence[int], fraction: float, seed: int = 0) -> Tuple[List[int], List[int]]:
    """(kept, held out) indices: ``fraction`` of each class (at least one image, never all of a class's
    images) held out, drawn by a seeded permutation per class; both lists sorted."""
    if not 0 < fraction < 1:
        raise DatasetError(f'the held-out fraction must be in (0, 1), got {fraction}')
    by_class: dict = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < 2:
            raise DatasetError(f'class {label} has {len(members)} image(s): holding some out for evaluation needs '
                               'at least 2 per class (or give the data set a test split)')
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        order = torch.randperm(len(members), generator=generator).tolist()
        held += [members[j] for j in order[:count]]
        kept += [members[j] for j in order[count:]]
    return sorted(kept), sorted(held)


# ----- decoding and the cache -----

def content_key(source: str, split: str, dataset) -> str:
    """What a cached split depends on: the sha256 of the file list with sizes and modification times (the
    folder of the ImageFolder split, the torchvision batch files) or of the tar's bytes (the mini set).
    ``dataset`` is the split as :func:`~prdarts_timm.data.build_dataset` found it."""
    digest = hashlib.sha256(f'{CACHE_FORMAT}|{source}|{split}'.encode())
    if source == 'mini':
        digest.update(file_sha256(MINI_CIFAR10_PATH).encode())
        return digest.hexdigest()
    folder = Path(dataset.root)
    if source == 'torchvision':
        folder = folder / dataset.base_folder
    files = sorted(p for p in folder.rglob('*') if p.is_file())
    for p in files:
        st = p.stat()
        digest.update(f'{p.relative_to(folder).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
    return digest.hexdigest()


def _tensor_sha256(images: torch.Tensor, targets: torch.Tensor) -> str:
    digest = hashlib.sha256()
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(targets.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cache_file(source: str, split: str, root: Optional[str]) -> Path:
    name = f'{split}.safetensors'
    if source != 'mini' and root is not None:
        folder = Path(root) / '.prdarts_tensors'
        try:
            folder.mkdir(exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder / name
        except OSError:
            pass  # a read-only root: the user cache below
    base = Path(os.environ.get('PRDARTS_TIMM_CACHE') or Path.home() / '.cache' / 'prdarts_timm')
    tag = hashlib.sha256(f'{source}|{Path(root).resolve() if root else ""}'.encode()).hexdigest()[:16]
    return base / f'{source}-{tag}' / name


def _read_cache(path: Path, key: str) -> Optional[ImageTensors]:
    """The cached split, or None (with a warning saying why) when it is missing, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), 'pt') as f:
            meta = f.metadata() or {}
            images, targets = f.get_tensor('images'), f.get_tensor('targets')
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        warnings.warn(f'tensor cache {path} is unreadable ({e}); rebuilding it')
        return None
    if meta.get('content_key') != key:
        warnings.warn(f'tensor cache {path} was made from other data (the folder changed); rebuilding it')
        return None
    if meta.get('tensor_sha256') != _tensor_sha256(images, targets):
        warnings.warn(f'tensor cache {path} does not match its checksum (a corrupt file); rebuilding it')
        return None
    return ImageTensors(images, targets, json.loads(meta['classes']))


def _resized(images: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """uint8 N x C x H x W resized to ``size`` (bilinear, antialiased, as timm's resize of a PIL image)."""
    return F.interpolate(images.float(), size=tuple(size), mode='bilinear', antialias=True,
                         align_corners=False).round().clamp(0, 255).to(torch.uint8)


def _decode(dataset, size: Optional[Tuple[int, int]] = None, what: str = 'images') -> ImageTensors:
    """Every image of ``dataset`` (PIL items) as uint8 CHW: resized to ``size`` (H, W) where it differs, or, with
    no ``size``, all of one size. Grey stays one channel, everything else becomes RGB (an RGBA image loses its
    alpha, as PIL's ``convert('RGB')``); a mix of grey and colour is made RGB throughout."""
    images, shape = [], None
    for i in tqdm(range(len(dataset)), desc=f'decoding {what}', unit='img', mininterval=2, leave=False):
        try:
            img, _ = dataset[i]
        except DatasetError:
            raise
        except (OSError, ValueError, SyntaxError) as e:  # what PIL raises for a file it cannot read
            raise DatasetError(f'{_item_name(dataset, i)} cannot be read as an image ({type(e).__name__}: {e}): '
                               'delete or replace that file') from None
        array = np.asarray(img.convert('RGB') if img.mode not in ('RGB', 'L') else img, dtype=np.uint8)
        image = torch.from_numpy(array.copy()[:, :, None] if array.ndim == 2 else array.copy()).permute(2, 0, 1)
        if size is not None and tuple(image.shape[1:]) != tuple(size):
            image = _resized(image[None], size)[0]
        if shape is None:
            shape = image.shape[1:]
        elif image.shape[1:] != shape:
            raise DatasetError(
                f'data_format tensor holds images of one size, but {_item_name(dataset, i)} is {image.shape[2]}x'
                f'{image.shape[1]} and the first was {shape[1]}x{shape[0]}: pass size= (the recipes pass the '
                'model\'s input size), or set data_format: pil')
        images.append(image)
    if len({t.shape[0] for t in images}) > 1:  # grey and colour images mixed: all RGB
        images = [t.expand(3, -1, -1) if t.shape[0] == 1 else t for t in images]
    return ImageTensors(torch.stack(images), torch.as_tensor(list(dataset.targets), dtype=torch.long),
                        list(dataset.classes))


def _item_name(dataset, index: int) -> str:
    """What a user calls item ``index``: its file (ImageFolder), else its index."""
    samples = getattr(dataset, 'samples', None)
    return repr(samples[index][0]) if samples else f'image {index}'


def load_image_tensors(source: str, split: str, root: Optional[str] = None, download: bool = False,
                       cache: bool = True, size: Optional[Tuple[int, int]] = None) -> ImageTensors:
    """One split of a data set (as :func:`~prdarts_timm.data.build_dataset` finds it) as uint8 tensors, from the
    cache when it is current, else decoded and cached (atomically). ``cache=False`` only decodes. ``size``
    (H, W): every image resized to it as it is decoded (images of any sizes; the cache is kept per size);
    without it the images must all be of one size."""
    dataset = build_dataset(source, split, root=root, download=download)  # the clear errors for bad input
    key = content_key(source, split, dataset) + (f'|{size[0]}x{size[1]}' if size is not None else '')
    path = _cache_file(source, split if size is None else f'{split}-{size[0]}x{size[1]}', root) if cache else None
    if path is not None:
        cached = _read_cache(path, key)
        if cached is not None:
            return cached
    data = _decode(dataset, size, what=f'the {split} split of {root or source}')
    if path is not None:
        meta = dict(content_key=key, tensor_sha256=_tensor_sha256(data.images, data.targets),
                    classes=json.dumps(data.classes), format=CACHE_FORMAT)
        try:
            atomic_write(path, lambda tmp: save_file(dict(images=data.images.contiguous(), targets=data.targets),
                                                     tmp, metadata=meta))
        except OSError as e:
            warnings.warn(f'could not write the tensor cache {path} ({e}); the split is decoded again next time')
    return data


# ----- augmentation -----

def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix of int64 values in [0, 2**32) (xorshift-multiply rounds; both multipliers are below
    2**31, so no product overflows int64)."""
    x = x & _MASK32
    x = ((x >> 16) ^ x) * 0x7FEB352D & _MASK32
    x = ((x >> 15) ^ x) * 0x31848BAB & _MASK32
    return (x >> 16) ^ x


def sample_hash(seed: int, epoch: int, indices: torch.Tensor, draws: int) -> torch.Tensor:
    """``len(indices) x draws`` independent 32-bit values for each (seed, epoch, sample index)."""
    base = int(_hash32(torch.tensor((seed * 0x9E3779B1 + epoch) & _MASK32, dtype=torch.long)))
    base = int(_hash32(torch.tensor((base ^ (seed >> 32)) + 0x632BE5AB & _MASK32, dtype=torch.long)))
    h = _hash32(indices.long() + base)
    counter = torch.arange(draws, device=indices.device, dtype=torch.long) * 0x61C88647
    return _hash32(h[:, None] ^ counter[None, :])


def _norm_constants(channels: int, device, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(CIFAR10_MEAN, device=device, dtype=dtype)
    std = torch.tensor(CIFAR10_STD, device=device, dtype=dtype)
    if channels != 3:
        mean, std = mean.mean().expand(channels), std.mean().expand(channels)
    return (mean * 255).view(1, -1, 1, 1), (std * 255).view(1, -1, 1, 1)


def normalize_batch(images: torch.Tensor, dtype: torch.dtype = torch.float32,
                    channels_last: bool = False) -> torch.Tensor:
    """uint8 N x C x H x W -> normalized float (CIFAR-10 mean / std), as ToTensor + Normalize do."""
    return _laid_out(_normalized(images), dtype, channels_last)


def _normalized(images: torch.Tensor) -> torch.Tensor:
    mean, std = _norm_constants(images.shape[1], images.device, torch.float32)
    return (images.float() - mean) / std


def _laid_out(x: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()).to(dtype)


def augment_batch(images: torch.Tensor, indices: torch.Tensor, seed: int, epoch: int, cutout: int = 0,
                  padding: int = 4, dtype: torch.dtype = torch.float32, channels_last: bool = False,
                  flip: bool = True, alternate_flip: bool = False) -> torch.Tensor:
    """The DARTS train transform of ``images`` (uint8 N x C x H x W; sample ``indices`` seed the draws):
    ``padding`` px black padding and a random crop back to H x W (0 = no crop), a horizontal flip with p = 0.5
    (``flip=False``: none, for data whose mirror image is another thing, like text), normalize, then cutout (a
    ``cutout`` x ``cutout`` square zeroed at a uniform centre, clipped at the border; 0 = off).

    ``alternate_flip`` (airbench's alternating flip): each sample's flip is drawn once, in epoch 0, and every
    later epoch shows the other side than the epoch before, so two consecutive epochs see both sides of every
    image instead of a random half of them twice."""
    n, c, h, w = images.shape
    device = images.device
    draws = sample_hash(seed, epoch, indices.to(device), 5)
    dy, dx = draws[:, 0] % (2 * padding + 1), draws[:, 1] % (2 * padding + 1)
    if not flip:
        flip = torch.zeros_like(dy)
    elif alternate_flip:
        flip = ((sample_hash(seed, 0, indices.to(device), 3)[:, 2] >> 7) & 1) ^ (epoch & 1)
    else:
        flip = (draws[:, 2] >> 7) & 1
    padded = F.pad(images, (padding, padding, padding, padding)).permute(0, 2, 3, 1)  # N x H' x W' x C
    ar_h, ar_w = torch.arange(h, device=device), torch.arange(w, device=device)
    rows = dy[:, None] + ar_h[None, :]
    cols = dx[:, None] + torch.where(flip[:, None].bool(), (w - 1) - ar_w[None, :], ar_w[None, :])
    crop = padded[torch.arange(n, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    x = _normalized(crop.permute(0, 3, 1, 2))  # N x C x H x W, channels-last in memory
    if cutout > 0:
        cy, cx, half = draws[:, 3] % h, draws[:, 4] % w, cutout // 2
        inside_y = (ar_h[None, :] >= cy[:, None] - half) & (ar_h[None, :] < cy[:, None] + half)
        inside_x = (ar_w[None, :] >= cx[:, None] - half) & (ar_w[None, :] < cx[:, None] + half)
        x = x.masked_fill((inside_y[:, :, None] & inside_x[:, None, :])[:, None], 0.)
    return _laid_out(x, dtype, channels_last)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A batch (N x C x H x W, normalized) resized to ``size`` x ``size`` (bilinear, antialiased: a smaller image,
    not an aliased subsample), in the memory format it came in: progressive resizing's low-resolution epochs."""
    resized = F.interpolate(x, size=(size, size), mode='bilinear', antialias=True, align_corners=False)
    return _in_memory_format_of(x, resized)


def crop_batch(x: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """A random ``size`` x ``size`` window of each image of a batch (N x C x H x W, normalized), drawn from
    ``seed``, in the memory format it came in: low-resolution epochs that keep the objects' scale."""
    n, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    dy = torch.randint(0, h - size + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, w - size + 1, (n,), generator=g).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows, cols = dy[:, None] + ar[None, :], dx[:, None] + ar[None, :]
    crop = x.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return _in_memory_format_of(x, crop.permute(0, 3, 1, 2))


def _in_memory_format_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` laid out as ``x`` is (channels-last or contiguous)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def batches(data: Union[Dataset, ImageTensors], indices: Sequence[int], batch_size: int, device: torch.device,
            channels_last: bool = False, num_workers: int = 0, augment: bool = False, seed: int = 0, epoch: int = 0,
            cutout: int = 0, padding: int = 4, flip: bool = True,
            alternate_flip: bool = False) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of ``indices`` on ``device``, in the recipes' two data formats. From :class:`ImageTensors`:
    cut from the tensors there, augmented (``augment``: :func:`augment_batch` seeded by ``seed``, ``epoch`` and
    the sample index) or only normalized. From a data set: a DataLoader (its transform augments)."""
    if isinstance(data, ImageTensors):
        for start in range(0, len(indices), batch_size):
            index = torch.tensor(indices[start:start + batch_size], device=device)
            images = data.images[index]
            x = (augment_batch(images, index, seed, epoch, cutout=cutout, padding=padding, channels_last=channels_last,
                               flip=flip, alternate_flip=alternate_flip) if augment
                 else normalize_batch(images, channels_last=channels_last))
            yield x, data.targets[index]
        return
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for x, y in DataLoader(Subset(data, list(indices)), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                           generator=torch.Generator()):
        yield x.to(device).contiguous(memory_format=memory_format), y.to(device)
