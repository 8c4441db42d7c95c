"""Progressive resizing (``pretrain_image_sizes``): the leading pretrain epochs train on images resized down,
the rest and every evaluation at the data's size; ``pretrain_crop_sizes``: the same on random crops of each side."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from prdarts_timm.retrain import TrainConfig
from prdarts_timm.tensor_data import crop_batch, resize_batch
from test_train_recipe import ENV, ROOT, _fails, _ok, run_all, train_cmd

PRETRAIN = ['--stages', '[pretrain]', '--pretrain_epochs', '2', '--auxiliary_weight', '0']


def test_resize_batch_keeps_the_memory_format_and_averages():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    small = resize_batch(x.contiguous(memory_format=torch.channels_last), 16)
    assert small.shape == (2, 3, 16, 16) and small.is_contiguous(memory_format=torch.channels_last)
    assert resize_batch(x, 16).is_contiguous()
    ones = resize_batch(torch.ones(1, 3, 32, 32), 12)  # antialiased: a mean of pixels, not a subsample
    torch.testing.assert_close(ones, torch.ones(1, 3, 12, 12))
    torch.testing.assert_close(resize_batch(x, 32), x)  # the data's own size: unchanged


def test_crop_batch_cuts_a_seeded_window_of_each_image():
    x = torch.randn(6, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    crops = crop_batch(x, 24, seed=7)
    assert crops.shape == (6, 3, 24, 24) and crops.is_contiguous(memory_format=torch.channels_last)
    assert crop_batch(x.contiguous(), 24, seed=7).is_contiguous()
    assert torch.equal(crop_batch(x, 24, seed=7), crops) and not torch.equal(crop_batch(x, 24, seed=8), crops)
    windows = [x[:, :, dy:dy + 24, dx:dx + 24] for dy in range(9) for dx in range(9)]
    for i in range(6):  # each image's crop is one of its own 24x24 windows
        assert any(torch.equal(crops[i], window[i]) for window in windows), i
    assert len({tuple(crops[i, 0, 0, :2].tolist()) for i in range(6)}) > 1  # drawn per image
    assert torch.equal(crop_batch(x, 32, seed=7), x)  # the data's own size: unchanged


def test_the_sizes_are_checked_against_the_epochs():
    assert TrainConfig(pretrain_epochs=3, pretrain_image_sizes=[16, 24]).stage('pretrain').image_sizes == (16, 24)
    stage = TrainConfig(pretrain_epochs=3, pretrain_image_sizes=[16, 24]).stage('pretrain')
    assert [stage.image_size(epoch) for epoch in range(3)] == [16, 24, None]
    assert TrainConfig(pretrain_image_sizes=[16]).stage('finetune').image_sizes == ()  # pretrain's only
    with pytest.raises(ValueError, match='pretrain_image_sizes gives the side'):
        TrainConfig(pretrain_epochs=1, pretrain_image_sizes=[16, 24])
    with pytest.raises(ValueError, match='>= 8 px'):
        TrainConfig(pretrain_epochs=2, pretrain_image_sizes=[4])
    crops = TrainConfig(pretrain_epochs=3, pretrain_crop_sizes=[24]).stage('pretrain')
    assert crops.image_sizes == (24,) and crops.image_crops and not TrainConfig().stage('pretrain').image_crops
    with pytest.raises(ValueError, match='pretrain_crop_sizes gives the side'):
        TrainConfig(pretrain_epochs=1, pretrain_crop_sizes=[16, 24])
    with pytest.raises(ValueError, match='set one of them'):
        TrainConfig(pretrain_epochs=2, pretrain_image_sizes=[16], pretrain_crop_sizes=[24])


def test_a_low_resolution_epoch_trains_on_smaller_images(tmp_path):
    """The full size given as a 'low' size changes nothing (bitwise); a smaller one trains other weights; the
    history names each epoch's side; sides the model cannot take are refused with the fix."""
    runs = {name: tmp_path / name for name in ('plain', 'full', 'small', 'too_big', 'aux', 'crops', 'crops_full',
                                                'crops_too_big')}
    results = run_all({
        'plain': train_cmd(runs['plain'], *PRETRAIN),
        'full': train_cmd(runs['full'], *PRETRAIN, '--pretrain_image_sizes', '[32]'),
        'small': train_cmd(runs['small'], *PRETRAIN, '--pretrain_image_sizes', '[16]'),
        'too_big': train_cmd(runs['too_big'], *PRETRAIN, '--pretrain_image_sizes', '[40]'),
        'aux': train_cmd(runs['aux'], '--stages', '[pretrain]', '--pretrain_epochs', '2', '--auxiliary_weight', '0.4',
                         '--pretrain_image_sizes', '[16]'),
        'crops': train_cmd(runs['crops'], *PRETRAIN, '--pretrain_crop_sizes', '[16]'),
        'crops_full': train_cmd(runs['crops_full'], *PRETRAIN, '--pretrain_crop_sizes', '[32]'),
        'crops_too_big': train_cmd(runs['crops_too_big'], *PRETRAIN, '--pretrain_crop_sizes', '[40]'),
    })
    for name in ('plain', 'full', 'small', 'crops', 'crops_full'):
        _ok(results[name])
    _fails(results['too_big'], 'ConfigError', 'pretrain_image_sizes [40]', 'give sides up to 32')
    _fails(results['crops_too_big'], 'ConfigError', 'pretrain_crop_sizes [40] crop', 'give sides up to 32')
    _fails(results['aux'], 'ConfigError', 'cannot train at 16x16', 'auxiliary_weight 0')
    weights = {name: load_file(runs[name] / 'pretrain' / 'model.safetensors')
               for name in ('plain', 'full', 'small', 'crops', 'crops_full')}
    for name in ('full', 'crops_full'):
        assert all(torch.equal(weights['plain'][k], v) for k, v in weights[name].items()), name
    for name in ('small', 'crops'):
        assert not all(torch.equal(weights['plain'][k], v) for k, v in weights[name].items()), name
    assert not all(torch.equal(weights['small'][k], v) for k, v in weights['crops'].items())  # crops, not resized
    history = json.loads((runs['crops'] / 'pretrain' / 'summary.json').read_text())['history']
    assert [(record['image_size'], record['image_crops']) for record in history] == [(16, True), (32, True)]
    summary = json.loads((runs['small'] / 'pretrain' / 'summary.json').read_text())
    history = summary['history']
    assert [record['image_size'] for record in history] == [16, 32]
    assert [record['hardware'] for record in history] == [summary['hardware']] * 2  # each epoch names its machine
    assert 'image_size' not in json.loads((runs['plain'] / 'pretrain' / 'summary.json').read_text())['history'][0]


def test_resume_inside_a_crop_epoch_equals_the_uninterrupted_run(tmp_path):
    """The crops are drawn from the epoch and the step: a run killed inside a crop epoch resumes to the weights of
    the run that was not interrupted."""
    args = ['--stages', '[pretrain]', '--auxiliary_weight', '0', '--pretrain_epochs', '3', '--max_steps_per_epoch',
            '3', '--pretrain_crop_sizes', '[16, 24]']
    reference, killed = tmp_path / 'reference', tmp_path / 'killed'
    proc = subprocess.Popen(train_cmd(killed, *args), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / 'pretrain' / 'checkpoints' / 'step_00000004').exists():  # step 1 of the 24 px epoch done
        assert proc.poll() is None and time.time() < deadline, 'training ended before it could be killed'
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / 'pretrain' / 'summary.json').exists()
    results = run_all({'reference': train_cmd(reference, *args),
                       'resumed': [sys.executable, 'recipes/train.py', '--cpu', '--output', str(killed), '--resume']})
    _ok(results['reference'])
    _ok(results['resumed'])
    assert 'resumed pretrain from' in results['resumed'].stdout + results['resumed'].stderr
    expected = load_file(reference / 'pretrain' / 'model.safetensors')
    for key, value in load_file(killed / 'pretrain' / 'model.safetensors').items():
        assert torch.equal(value, expected[key]), key
