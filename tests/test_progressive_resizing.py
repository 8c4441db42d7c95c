"""Progressive resizing (``pretrain_image_sizes``): the leading pretrain epochs train on images resized down,
the rest and every evaluation at the data's size."""
import json

import pytest
import torch
from safetensors.torch import load_file

from prdarts_timm.retrain import TrainConfig
from prdarts_timm.tensor_data import resize_batch
from test_train_recipe import _fails, _ok, run_all, train_cmd

PRETRAIN = ['--stages', '[pretrain]', '--pretrain_epochs', '2', '--auxiliary_weight', '0']


def test_resize_batch_keeps_the_memory_format_and_averages():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    small = resize_batch(x.contiguous(memory_format=torch.channels_last), 16)
    assert small.shape == (2, 3, 16, 16) and small.is_contiguous(memory_format=torch.channels_last)
    assert resize_batch(x, 16).is_contiguous()
    ones = resize_batch(torch.ones(1, 3, 32, 32), 12)  # antialiased: a mean of pixels, not a subsample
    torch.testing.assert_close(ones, torch.ones(1, 3, 12, 12))
    torch.testing.assert_close(resize_batch(x, 32), x)  # the data's own size: unchanged


def test_the_sizes_are_checked_against_the_epochs():
    assert TrainConfig(pretrain_epochs=3, pretrain_image_sizes=[16, 24]).stage('pretrain').image_sizes == (16, 24)
    stage = TrainConfig(pretrain_epochs=3, pretrain_image_sizes=[16, 24]).stage('pretrain')
    assert [stage.image_size(epoch) for epoch in range(3)] == [16, 24, None]
    assert TrainConfig(pretrain_image_sizes=[16]).stage('finetune').image_sizes == ()  # pretrain's only
    with pytest.raises(ValueError, match='pretrain_image_sizes gives the side'):
        TrainConfig(pretrain_epochs=1, pretrain_image_sizes=[16, 24])
    with pytest.raises(ValueError, match='>= 8 px'):
        TrainConfig(pretrain_epochs=2, pretrain_image_sizes=[4])


def test_a_low_resolution_epoch_trains_on_smaller_images(tmp_path):
    """The full size given as a 'low' size changes nothing (bitwise); a smaller one trains other weights; the
    history names each epoch's side; sides the model cannot take are refused with the fix."""
    runs = {name: tmp_path / name for name in ('plain', 'full', 'small', 'too_big', 'aux')}
    results = run_all({
        'plain': train_cmd(runs['plain'], *PRETRAIN),
        'full': train_cmd(runs['full'], *PRETRAIN, '--pretrain_image_sizes', '[32]'),
        'small': train_cmd(runs['small'], *PRETRAIN, '--pretrain_image_sizes', '[16]'),
        'too_big': train_cmd(runs['too_big'], *PRETRAIN, '--pretrain_image_sizes', '[40]'),
        'aux': train_cmd(runs['aux'], '--stages', '[pretrain]', '--pretrain_epochs', '2', '--auxiliary_weight', '0.4',
                         '--pretrain_image_sizes', '[16]'),
    })
    for name in ('plain', 'full', 'small'):
        _ok(results[name])
    _fails(results['too_big'], 'ConfigError', 'pretrain_image_sizes [40]', 'give sides up to 32')
    _fails(results['aux'], 'ConfigError', 'cannot train at 16x16', 'auxiliary_weight 0')
    weights = {name: load_file(runs[name] / 'pretrain' / 'model.safetensors') for name in ('plain', 'full', 'small')}
    assert all(torch.equal(weights['plain'][k], v) for k, v in weights['full'].items())
    assert not all(torch.equal(weights['plain'][k], v) for k, v in weights['small'].items())
    summary = json.loads((runs['small'] / 'pretrain' / 'summary.json').read_text())
    history = summary['history']
    assert [record['image_size'] for record in history] == [16, 32]
    assert [record['hardware'] for record in history] == [summary['hardware']] * 2  # each epoch names its machine
    assert 'image_size' not in json.loads((runs['plain'] / 'pretrain' / 'summary.json').read_text())['history'][0]
