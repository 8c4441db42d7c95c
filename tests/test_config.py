import argparse

import pytest

from prdarts_timm.config import ConfigError, add_config_args, load_config
from prdarts_timm.search.config import SearchConfig


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_config_args(parser, SearchConfig)
    return parser.parse_args(list(argv))


def test_yaml_values_take_the_field_type(tmp_path):
    config_file = tmp_path / 'c.yaml'
    config_file.write_text('arch_lr: 3e-4\nweight_decay: 5e-4\nmax_steps_per_epoch: null\n')
    config = load_config(SearchConfig, str(config_file), _args('--lr_min', '1e-5', '--arch_betas', '[0.9, 1e-3]'))
    assert config.arch_lr == 3e-4 and config.weight_decay == 5e-4 and config.lr_min == 1e-5
    assert config.arch_betas == [0.9, 1e-3] and config.max_steps_per_epoch is None


@pytest.mark.parametrize('argv, message', [
    (('--batch_size', 'abc'), "'batch_size' must be int"),
    (('--batch_size', '2.5'), "'batch_size' must be int"),
    (('--second_order', 'maybe'), "'second_order' must be bool"),
    (('--k', '0'), 'fraction of weights KEPT'),
    (('--data_source', 'cifar100'), 'data_source must be one of'),
    (('--max_steps_per_epoch', '0'), 'max_steps_per_epoch must be >= 1'),
])
def test_bad_values_are_config_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SearchConfig, None, _args(*argv))


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        load_config(SearchConfig, str(tmp_path / 'none.yaml'))
    bad = tmp_path / 'bad.yaml'
    bad.write_text('- a list\n')
    with pytest.raises(ConfigError, match='mapping'):
        load_config(SearchConfig, str(bad))


def test_one_command_line_syntax_for_mappings_and_bare_booleans():
    """--model_kwargs takes KEY=VALUE items (as evaluate.py and timm's scripts) or one YAML mapping; a boolean key
    alone means true."""
    import argparse

    from prdarts_timm.config import add_config_args, parse_kwargs
    from prdarts_timm.retrain import TrainConfig

    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainConfig)
    config = load_config(TrainConfig, None, parser.parse_args(
        ['--model_kwargs', 'C=16', 'layers=8', 'in_chans=1', '--pretrained', '--reset_classifier', '--hflip', 'false',
         '--auxiliary_weight', '0']))
    assert config.model_kwargs == dict(C=16, layers=8, in_chans=1)
    assert config.pretrained is True and config.reset_classifier is True and config.hflip is False
    assert parse_kwargs(['{C: 16, layers: 8}']) == dict(C=16, layers=8)
    with pytest.raises(ConfigError, match='--model_kwargs takes KEY=VALUE items'):
        parse_kwargs(['C16'])
