"""The tensor data path: decoding and its cache, and the batched DARTS augmentation."""
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prdarts_timm.data import CIFAR10_MEAN, CIFAR10_STD, DatasetError, build_dataset, shard_indices
from prdarts_timm.tensor_data import augment_batch, load_image_tensors, normalize_batch, sample_hash


def _folder(root, classes=('cat', 'dog'), per_class=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for split in ('train', 'test'):
        for c in classes:
            os.makedirs(root / split / c, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f'{i}.png')
    return root


def _images(n=16, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_decoded_split_equals_the_images(tmp_path):
    root = _folder(tmp_path / 'data')
    data = load_image_tensors('imagefolder', 'train', str(root))
    reference = build_dataset('imagefolder', 'train', root=str(root))
    assert data.images.shape == (12, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes == reference.classes and data.targets.tolist() == reference.targets
    for i in (0, 7, 11):
        assert torch.equal(data.images[i], torch.from_numpy(np.array(reference[i][0])).permute(2, 0, 1))


def test_cache_is_used_then_rebuilt_when_the_folder_changes_or_the_file_is_corrupt(tmp_path, monkeypatch):
    from prdarts_timm import tensor_data

    root = _folder(tmp_path / 'data')
    first = load_image_tensors('imagefolder', 'train', str(root))
    cache = root / '.prdarts_tensors' / 'train.safetensors'
    assert cache.is_file()
    decoded = []
    real_decode = tensor_data._decode
    monkeypatch.setattr(tensor_data, '_decode', lambda *a, **kw: decoded.append(1) or real_decode(*a, **kw))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a current cache is read without a word
        again = load_image_tensors('imagefolder', 'train', str(root))
    assert not decoded and torch.equal(again.images, first.images)

    # stale: one image replaced (new content, new mtime)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / 'train' / 'cat' / '0.png')
    os.utime(root / 'train' / 'cat' / '0.png', ns=(1, 1))
    with pytest.warns(UserWarning, match='other data'):
        stale = load_image_tensors('imagefolder', 'train', str(root))
    assert decoded == [1] and int(stale.images[0].sum()) == 0 and torch.equal(stale.images[1:], first.images[1:])

    # corrupt: one byte of the image tensor flipped in the file
    blob = bytearray(cache.read_bytes())
    blob[-100] ^= 0xFF
    cache.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match='checksum'):
        fixed = load_image_tensors('imagefolder', 'train', str(root))
    assert decoded == [1, 1] and torch.equal(fixed.images, stale.images)

    # unreadable: cut short
    cache.write_bytes(cache.read_bytes()[:50])
    with pytest.warns(UserWarning, match='unreadable'):
        assert torch.equal(load_image_tensors('imagefolder', 'train', str(root)).images, stale.images)


def test_read_only_root_caches_in_the_user_cache(tmp_path, monkeypatch):
    from prdarts_timm import tensor_data

    root = _folder(tmp_path / 'data')
    monkeypatch.setenv('PRDARTS_TIMM_CACHE', str(tmp_path / 'cache'))
    real_access = os.access  # a read-only root (the tests may run as root, who can write anywhere)
    monkeypatch.setattr(tensor_data.os, 'access', lambda p, mode: False if str(root) in str(p) else real_access(p, mode))
    load_image_tensors('imagefolder', 'test', str(root))
    assert not list((root / '.prdarts_tensors').glob('*.safetensors'))
    assert list((tmp_path / 'cache').rglob('test.safetensors'))


def test_images_of_other_sizes_are_a_clear_error(tmp_path):
    root = _folder(tmp_path / 'data')
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(root / 'train' / 'dog' / 'odd.png')
    with pytest.raises(DatasetError, match='data_format: pil'):
        load_image_tensors('imagefolder', 'train', str(root))


def test_augmentation_is_the_darts_transform_with_the_drawn_parameters():
    images, indices = _images(), torch.arange(100, 116)
    out = augment_batch(images, indices, seed=3, epoch=5, cutout=16)
    draws = sample_hash(3, 5, indices, 5)
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    for i in range(len(images)):
        dy, dx, flip, cy, cx = (int(draws[i, 0] % 9), int(draws[i, 1] % 9), int(draws[i, 2] >> 7 & 1),
                                int(draws[i, 3] % 32), int(draws[i, 4] % 32))
        crop = F.pad(images[i], (4, 4, 4, 4))[:, dy:dy + 32, dx:dx + 32]  # RandomCrop(32, padding=4), fill 0
        if flip:
            crop = crop.flip(-1)
        want = (crop.float() / 255 - mean) / std  # ToTensor, Normalize
        want[:, max(cy - 8, 0):min(cy + 8, 32), max(cx - 8, 0):min(cx + 8, 32)] = 0  # DARTS Cutout(16)
        torch.testing.assert_close(out[i], want, rtol=1e-5, atol=1e-5)


def test_draws_cover_every_crop_and_flip_evenly():
    draws = sample_hash(0, 0, torch.arange(20_000), 5)
    dy, flip = draws[:, 0] % 9, draws[:, 2] >> 7 & 1
    assert torch.bincount(dy, minlength=9).min() > 20_000 / 9 * 0.9
    assert abs(flip.float().mean().item() - 0.5) < 0.02
    assert not torch.equal(sample_hash(0, 1, torch.arange(8), 5), sample_hash(0, 0, torch.arange(8), 5))
    assert not torch.equal(sample_hash(1, 0, torch.arange(8), 5), sample_hash(0, 0, torch.arange(8), 5))


def test_same_batches_for_one_or_two_processes_and_after_a_resume():
    images = _images(64)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    steps, bs = 4, 8

    def augmented(indices):
        index = torch.tensor(indices)
        return augment_batch(images[index], index, seed=7, epoch=2, cutout=16)

    one = augmented(shard_indices(perm, steps, 2 * bs, 1, 0))  # global batch 16 on one process
    ranks = [augmented(shard_indices(perm, steps, bs, 2, r)) for r in (0, 1)]  # 8 + 8 on two
    for s in range(steps):
        assert torch.equal(one[s * 2 * bs:(s + 1) * 2 * bs],
                           torch.cat([ranks[0][s * bs:(s + 1) * bs], ranks[1][s * bs:(s + 1) * bs]]))
    resumed = augmented(shard_indices(perm, steps, 2 * bs, 1, 0, skip=1))  # a resume at step 1
    assert torch.equal(resumed, one[2 * bs:])


def test_channels_last_and_normalize():
    images = _images(4)
    x = augment_batch(images, torch.arange(4), 0, 0, channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, augment_batch(images, torch.arange(4), 0, 0))
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize_batch(images), (images.float() / 255 - mean) / std)


def test_alternating_flip_shows_the_other_side_every_epoch():
    """Epoch 0 draws each sample's flip (about half flipped); every later epoch flips what the epoch before did
    not. Crops and cutout still follow (seed, epoch, sample)."""
    images, index = _images(64), torch.arange(64)
    plain = [augment_batch(images, index, seed=3, epoch=e, padding=0) for e in range(3)]
    alternating = [augment_batch(images, index, seed=3, epoch=e, padding=0, alternate_flip=True) for e in range(3)]
    unflipped = normalize_batch(images)
    flipped = [torch.tensor([torch.equal(a[i], unflipped[i].flip(-1)) and not torch.equal(a[i], unflipped[i])
                             for i in range(64)]) for a in alternating]
    assert 16 < int(flipped[0].sum()) < 48
    assert torch.equal(flipped[1], ~flipped[0]) and torch.equal(flipped[2], flipped[0])
    assert not torch.equal(plain[1], alternating[1])  # the random flips do not alternate
    cropped = augment_batch(images, index, seed=3, epoch=1, padding=4, alternate_flip=True, cutout=8)
    assert torch.equal(cropped, augment_batch(images, index, seed=3, epoch=1, padding=4, alternate_flip=True,
                                              cutout=8))


def _mixed_folder(root, per_class=24, classes=('cat', 'dog', 'owl'), seed=0):
    """A user's folder as it comes: RGB, grey and RGBA images of many sizes."""
    rng = np.random.default_rng(seed)
    sizes, modes = [(20, 30), (48, 48), (64, 40), (32, 32), (17, 90)], ['RGB', 'L', 'RGBA']
    for split, count in (('train', per_class), ('test', 4)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                h, w = sizes[i % len(sizes)]
                mode = modes[i % len(modes)]
                channels = {'RGB': 3, 'L': 1, 'RGBA': 4}[mode]
                pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
                Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(root / split / c / f'{i}.png')
    return root


def test_images_of_any_size_are_resized_as_they_are_decoded(tmp_path):
    root = _mixed_folder(tmp_path / 'data', per_class=5)
    data = load_image_tensors('imagefolder', 'train', str(root), size=(32, 32))
    assert data.images.shape == (15, 3, 32, 32) and data.images.dtype == torch.uint8
    dataset = build_dataset('imagefolder', 'train', root=str(root))
    first = torch.from_numpy(np.asarray(dataset[0][0])).permute(2, 0, 1)[None]  # 20x30, resized as fit() does
    assert torch.equal(data.images[0], F.interpolate(first.float(), size=(32, 32), mode='bilinear', antialias=True,
                                                     align_corners=False).round().clamp(0, 255).to(torch.uint8)[0])
    assert (root / '.prdarts_tensors' / 'train-32x32.safetensors').is_file()  # cached per size
    again = load_image_tensors('imagefolder', 'train', str(root), size=(16, 16))
    assert again.images.shape[-2:] == (16, 16) and (root / '.prdarts_tensors' / 'train-16x16.safetensors').is_file()


def test_an_unreadable_image_is_named_in_both_data_paths(tmp_path):
    root = _folder(tmp_path / 'data')
    (root / 'train' / 'dog' / 'broken.png').write_bytes(b'not an image at all')
    with pytest.raises(DatasetError, match=r"broken\.png' cannot be read as an image .*delete or replace"):
        load_image_tensors('imagefolder', 'train', str(root), size=(32, 32))
    dataset = build_dataset('imagefolder', 'train', root=str(root))
    broken = next(i for i, (path, _) in enumerate(dataset.samples) if path.endswith('broken.png'))
    with pytest.raises(DatasetError, match=r"broken\.png' cannot be read as an image"):
        dataset[broken]
