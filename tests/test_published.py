"""The published tags: each loads offline through its registry name from the bundled file, and its top-1 on
the embedded mini test split is the figure its model card states, within TOLERANCE."""
import json
from pathlib import Path

import pytest
import timm
from torch.utils.data import DataLoader

import prdarts_timm  # noqa: F401  (registers the models)
from prdarts_timm.cifar import CIFAR10_CLASSES
from prdarts_timm.data import build_dataset
from prdarts_timm.hub import bundled_file
from prdarts_timm.io import file_sha256
from prdarts_timm.models.prdarts import BUNDLED_WEIGHTS, WEIGHTS_DIR
from prdarts_timm.training import accuracy, data_transforms
from test_timm_contract import SPARSE_TAGS  # a dense tag (dense_cifar10) has no mask to keep

ROOT = Path(__file__).resolve().parents[1]
HUB_FOLDERS = ROOT / 'hub'  # the exported folders of the published tags, ready for recipes/push_to_hub.py
# Percentage points. The card's figure was measured on the same 1,000 images with the same weights; another
# CPU, torch or BLAS may round a borderline logit the other way: 0.5 points allows 5 of 1,000 images to flip.
TOLERANCE = 0.5


def test_every_bundled_tag_has_its_hub_folder():
    assert sorted(BUNDLED_WEIGHTS) == sorted(p.name for p in HUB_FOLDERS.iterdir() if p.is_dir())


@pytest.mark.parametrize('tag', sorted(BUNDLED_WEIGHTS))
def test_published_tag_loads_offline_and_matches_its_card(tag):
    folder, entry = HUB_FOLDERS / tag, BUNDLED_WEIGHTS[tag]
    assert file_sha256(bundled_file(folder)) == entry['sha256']  # the bundled file is the folder's (compact if sparse)
    assert file_sha256(WEIGHTS_DIR / entry['file']) == entry['sha256']
    stated = json.loads((folder / 'evaluation_mini_test.json').read_text())
    card = (folder / 'README.md').read_text()
    assert f"- Also: top-1 {stated['top1']:.2f}%" in card and f"hf-hub:{entry['hf_hub_id']}" in card
    from huggingface_hub import ModelCard
    assert ModelCard(card, ignore_metadata_errors=False).data.pipeline_tag == 'image-classification'
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == tag.split('.')[0]
    assert config['label_names'] == config['pretrained_cfg']['label_names'] == list(CIFAR10_CLASSES)

    model = timm.create_model(tag, pretrained=True)  # HF_HUB_OFFLINE=1 in the suite: the bundled file
    assert model.pretrained_cfg['tag'] == tag.split('.')[1]
    assert tuple(model.pretrained_cfg['label_names']) == CIFAR10_CLASSES  # what the indices mean
    report = prdarts_timm.sparsity_report(model)
    assert report.nonzero == stated['weights']['nonzero']  # masks restored from the zeros
    # channels-last in batches of 32, as recipes/evaluate.py (the card's figure) runs: on a 2-core AMD EPYC the
    # flagship forwards 250 contiguous images in 4x the time of eight channels-last batches of 32
    import torch
    loader = DataLoader(build_dataset('mini', 'test', transform=data_transforms(model)[1]), batch_size=32)
    model.to(memory_format=torch.channels_last)
    measured = accuracy(model, loader, device=torch.device('cpu'), top5=True, memory_format=torch.channels_last)
    assert measured['num_samples'] == stated['dataset']['num_evaluated'] == 1000
    assert abs(measured['top1'] - stated['top1']) <= TOLERANCE, (measured['top1'], stated['top1'])


SP99_ARCHITECTURES = sorted(tag.split('.')[0] for tag in BUNDLED_WEIGHTS if tag.endswith('.sp99_cifar10'))


@pytest.mark.parametrize('architecture', SP99_ARCHITECTURES)
def test_the_bare_name_loads_the_99_percent_tag(architecture):
    """``timm.create_model('prdarts_c10', pretrained=True)`` gives the paper's setting, the 99% tag (the first in
    default_cfgs), whatever other tags the architecture has (a dense parent among them)."""
    import torch

    model = timm.create_model(architecture, pretrained=True)
    assert model.pretrained_cfg['tag'] == 'sp99_cifar10'
    tagged = timm.create_model(f'{architecture}.sp99_cifar10', pretrained=True).state_dict()
    assert all(torch.equal(value, tagged[key]) for key, value in model.state_dict().items())


SMALLEST_SPARSE_TAG = min(SPARSE_TAGS, key=lambda tag: (WEIGHTS_DIR / BUNDLED_WEIGHTS[tag]['file']).stat().st_size)


@pytest.mark.parametrize('tag', [SMALLEST_SPARSE_TAG])  # any tag shows it; the smallest file trains fastest
def test_sparse_finetuning_from_a_published_tag_keeps_its_mask(tag, tmp_path):
    import os
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file
    from test_hub import _tiny_imagefolder

    data = _tiny_imagefolder(tmp_path / 'data')  # 3 classes, 8 images per split
    cmd = [sys.executable, 'recipes/train.py', '--cpu', '--model', tag, '--pretrained', 'true', '--auxiliary_weight',
           '0', '--stages', '[finetune]', '--finetune_epochs', '1', '--data_source', 'imagefolder', '--data_root',
           str(data), '--batch_size', '8', '--output', str(tmp_path / 'run')]
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    tuned = load_file(tmp_path / 'run' / 'finetune' / 'model.safetensors')
    original = timm.create_model(tag, pretrained=True)
    assert tuned['classifier.weight'].shape[0] == 3 and tuned['classifier.mask'].eq(1).all()  # new dense head
    for name, layer in prdarts_timm.pruned_layers(original):
        if name != 'classifier':
            assert torch.equal(tuned[f'{name}.mask'], layer.mask), name  # the sparsity is kept exactly


@pytest.mark.parametrize('tag', sorted(BUNDLED_WEIGHTS)[:1])
def test_published_tag_gives_the_same_logits_through_every_loading_path(tag, tmp_path):
    import torch
    from test_hub import seed_hf_cache

    folder, entry = HUB_FOLDERS / tag, BUNDLED_WEIGHTS[tag]
    seed_hf_cache(tmp_path / 'cache', entry['hf_hub_id'], folder)
    architecture = tag.split('.')[0]
    models = {
        'registry': timm.create_model(tag, pretrained=True),
        'hf-hub': timm.create_model(f'hf-hub:{entry["hf_hub_id"]}', pretrained=True, cache_dir=tmp_path / 'cache'),
        'local-dir': timm.create_model(f'local-dir:{folder}', pretrained=True),
        'overlay': timm.create_model(architecture, pretrained=True,
                                     pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors'))),
    }
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = {name: model.eval()(x) for name, model in models.items()}
    nonzero = {name: prdarts_timm.sparsity_report(model).nonzero for name, model in models.items()}
    for name in models:
        assert torch.equal(logits[name], logits['registry']), name
        assert nonzero[name] == nonzero['registry'], name
