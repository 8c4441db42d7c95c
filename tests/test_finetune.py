"""Fine-tuning published weights on data of another domain (the README's commands, recipes/configs/finetune.yaml):
sparse keeps the tag's zeros and learns, dense releases them, grey / 28x28 images and a data set without a test
split work; and the pieces behind it (image fitting, the held-out split, augmentation switches)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

import prdarts_timm  # noqa: F401
from prdarts_timm.data import cifar_transforms
from prdarts_timm.retrain import TrainConfig
from prdarts_timm.synthetic_data import make_imagefolder
from prdarts_timm.tensor_data import ImageTensors, augment_batch, holdout_indices, normalize_batch

ROOT = Path(__file__).resolve().parents[1]
TAG = 'prdarts_c10_micro.sp90_cifar10'
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
# the README's sparse fine-tuning command, on a tiny data set (smaller batch and fewer epochs so it runs in seconds)
README_COMMAND = ['recipes/train.py', '--config', 'recipes/configs/finetune.yaml', '--model', TAG]
SMALL = ['--cpu', '--batch_size', '16', '--finetune_epochs', '3', '--pretrain_epochs', '2']


def weight_zeros(state, classifier=True):
    """Exact zeros of every conv / linear weight (``classifier=False``: of the backbone's only)."""
    return {k: v == 0 for k, v in state.items() if k.endswith('.weight') and v.dim() in (2, 4)
            and (classifier or not k.startswith('classifier.'))}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('finetune')
    rgb = make_imagefolder('glyphs', tmp / 'glyphs', train_per_class=12, test_per_class=3)
    grey = make_imagefolder('shapes', tmp / 'shapes_grey', train_per_class=8, test_per_class=0, size=28, mode='L')
    commands = dict(
        sparse=[*README_COMMAND, '--data_root', str(rgb), '--output', str(tmp / 'sparse'), *SMALL],
        dense=[*README_COMMAND, '--data_root', str(rgb), '--output', str(tmp / 'dense'), *SMALL,
               '--stages', '[pretrain]'],
        grey=[*README_COMMAND, '--data_root', str(grey), '--output', str(tmp / 'grey'), *SMALL,
              '--model_kwargs', 'in_chans=1', '--eval_split', 'holdout', '--holdout_fraction', '0.25'],
    )
    procs = {name: subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, cmd in commands.items()}
    results = {}
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f'{name}: {stderr[-3000:]}'
        results[name] = tmp / name
    return results


def summary(folder, stage):
    return json.loads((folder / stage / 'summary.json').read_text())


def test_sparse_finetune_learns_and_keeps_the_zero_pattern(runs):
    history = summary(runs['sparse'], 'finetune')['history']
    assert len(history) == 3
    assert history[-1]['train_loss'] < history[0]['train_loss']
    baked = load_file(str(runs['sparse'] / 'finetune' / 'model_baked.safetensors'))
    tag = timm.create_model(TAG, pretrained=True).state_dict()
    before, after = weight_zeros(tag, classifier=False), weight_zeros(baked, classifier=False)
    assert before.keys() == after.keys() and len(before) > 10
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert sum(int(z.sum()) for z in before.values()) > 0.5 * sum(z.numel() for z in before.values())
    # the config's reset_classifier: a new dense head, though the data have the tag's 10 classes
    assert (tag['classifier.weight'] == 0).float().mean() > 0.5
    assert baked['classifier.weight'].shape == (10, tag['classifier.weight'].shape[1])
    assert not (baked['classifier.weight'] == 0).any()


def test_dense_finetune_releases_the_zeros(runs):
    history = summary(runs['dense'], 'pretrain')['history']
    assert history[-1]['train_loss'] < history[0]['train_loss']
    state = load_file(str(runs['dense'] / 'pretrain' / 'model.safetensors'))
    zeros = sum(int(z.sum()) for z in weight_zeros(state).values())
    before = sum(int(z.sum()) for z in weight_zeros(timm.create_model(TAG, pretrained=True).state_dict()).values())
    # the mask is released: most zeros move (sparse fine-tuning keeps all of them). A few get no gradient (their
    # input or output is constant): 7.5% of them with issue 15's sp90 tag, under 5% with the tag it replaced
    assert zeros < 0.25 * before


def test_grey_28px_images_without_a_test_split(runs):
    record = summary(runs['grey'], 'finetune')
    assert record['history'][-1]['num_images'] == 20  # 2 of each class's 8 held out
    state = load_file(str(runs['grey'] / 'finetune' / 'model.safetensors'))
    assert state['stem0.0.weight'].shape[1] == 1  # timm adapted the pretrained stem to one channel


def test_fit_converts_channels_and_size():
    grey = ImageTensors(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8), torch.tensor([0, 1]), ['a', 'b'])
    rgb = grey.fit(3, (32, 32))
    assert rgb.images.shape == (2, 3, 32, 32) and rgb.images.dtype == torch.uint8
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    assert grey.fit(1, (28, 28)) is grey
    pixels = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    luma = ImageTensors(pixels, torch.tensor([0]), ['a']).fit(1, (8, 8)).images[0, 0]
    pil = torch.tensor(np.array(Image.fromarray(pixels[0].permute(1, 2, 0).numpy()).convert('L')))
    assert (luma.int() - pil.int()).abs().max() <= 1
    with pytest.raises(prdarts_timm.data.DatasetError, match='in_chans'):
        ImageTensors(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), torch.tensor([0]), ['a']).fit(3, (8, 8))


def test_holdout_is_per_class_seeded_and_disjoint():
    targets = [0] * 10 + [1] * 5 + [2] * 2
    kept, held = holdout_indices(targets, 0.2, seed=3)
    assert sorted(kept + held) == list(range(len(targets))) and not set(kept) & set(held)
    assert [sum(targets[i] == c for i in held) for c in range(3)] == [2, 1, 1]
    assert (kept, held) == holdout_indices(targets, 0.2, seed=3)
    assert held != holdout_indices(targets, 0.2, seed=4)[1]
    with pytest.raises(prdarts_timm.data.DatasetError, match='at least 2 per class'):
        holdout_indices([0, 0, 1], 0.5)
    with pytest.raises(ValueError, match='holdout_fraction'):
        TrainConfig(holdout_fraction=1.0)


def test_augmentation_switches():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    index = torch.arange(4)
    assert torch.equal(augment_batch(images, index, 0, 0, padding=0, flip=False), normalize_batch(images))
    flipped = augment_batch(images, index, 0, 0, padding=0)
    assert not torch.equal(flipped, normalize_batch(images))  # some of the 4 are flipped
    image = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    assert torch.equal(cifar_transforms(train=True, padding=0, flip=False)(image), cifar_transforms(train=False)(image))
    with pytest.raises(ValueError, match='crop_padding'):
        TrainConfig(crop_padding=-1)


def test_reset_classifier_gives_pretrained_weights_a_new_dense_head():
    from prdarts_timm.retrain import build_model
    config = TrainConfig(model=TAG, pretrained=True, reset_classifier=True, auxiliary_weight=0)
    torch.manual_seed(0)
    model = build_model(config.model, config.model_args(10), pretrained=True, reset_classifier=True)
    tag = timm.create_model(TAG, pretrained=True)
    assert not torch.equal(model.classifier.weight, tag.classifier.weight)
    assert not (model.classifier.weight == 0).any() and (tag.classifier.weight == 0).any()
    assert torch.equal(model.stem0[0].weight, tag.stem0[0].weight)  # the backbone is the tag's
    with pytest.raises(ValueError, match='reset_classifier replaces the classifier of pretrained weights'):
        TrainConfig(reset_classifier=True)


def test_readme_command_on_a_folder_as_it_comes(tmp_path):
    """The README's fine-tuning command with the default config on RGB, grey and RGBA images of many sizes; one
    unreadable file in such a folder is refused with its path and the fix."""
    from test_tensor_data import _mixed_folder

    data = _mixed_folder(tmp_path / 'photos')  # 72 train images: one step of 64 per epoch
    broken = _mixed_folder(tmp_path / 'broken', per_class=2)
    (broken / 'train' / 'cat' / 'broken.png').write_bytes(b'\x89PNG but not really')
    commands = dict(
        mixed=[*README_COMMAND, '--cpu', '--data_root', str(data), '--output', str(tmp_path / 'mixed')],
        broken=[*README_COMMAND, '--cpu', '--data_root', str(broken), '--output', str(tmp_path / 'b')],
    )
    procs = {name: subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, cmd in commands.items()}
    results = {name: (proc.wait(timeout=600), proc.stderr.read()) for name, proc in procs.items()}
    assert results['mixed'][0] == 0, results['mixed'][1][-3000:]
    record = summary(tmp_path / 'mixed', 'finetune')
    assert record['epochs'] == 5 and record['history'][-1]['num_images'] == 12
    code, stderr = results['broken']
    assert code == 1 and 'Traceback' not in stderr
    assert f"error: DatasetError: '{broken / 'train' / 'cat' / 'broken.png'}' cannot be read as an image" in stderr
    assert 'delete or replace that file' in stderr
