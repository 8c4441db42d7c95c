"""torch.hub.load on a clone of this repository (source='local'): one entry point per registered model."""
import importlib.util
from pathlib import Path

import pytest
import timm
import torch

import prdarts_timm  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_model_is_an_entry_point():
    """What torch.hub lists (the public callables of hubconf.py; its list() reaches GitHub only)."""
    spec = importlib.util.spec_from_file_location('hubconf', ROOT / 'hubconf.py')
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_')]
    assert sorted(entries) == sorted(timm.list_models(module='prdarts'))
    model = torch.hub.load(str(ROOT), 'prdarts_c10_mini', source='local', num_classes=5, C=4, layers=3)
    assert model.num_classes == 5 and 'prdarts_c10_mini' in hubconf.prdarts_c10_mini.__doc__


@pytest.mark.parametrize('tag', ['', 'sp90_cifar10'])
def test_hub_load_gives_the_tags_logits(tag):
    kwargs = dict(pretrained_cfg=tag) if tag else {}
    model = torch.hub.load(str(ROOT), 'prdarts_c10_micro', source='local', pretrained=True, **kwargs).eval()
    reference = timm.create_model(f'prdarts_c10_micro.{tag or "sp99_cifar10"}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert model.pretrained_cfg['tag'] == (tag or 'sp99_cifar10')
