"""Files written before pruning state became opt-in (fixture made with commit 4fc5650, see its README) load
and give the same logits; their run folders resume to the same result as the old code's uninterrupted run.

"The same" is to float tolerance, not bit for bit: the expected values were computed on another CPU, and
oneDNN picks its convolution kernels (and so the order of float sums) by the instruction set it finds."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import prdarts_timm
from prdarts_timm.checkpoint import newest_accelerate_state, read_state_dict

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / 'tests' / 'fixtures' / 'legacy_v0'
EXPECTED = load_file(FIXTURE / 'expected' / 'logits.safetensors')
FILES = dict(pretrain='train/pretrain/model.safetensors', prune='expected/prune_model.safetensors',
             finetune='expected/finetune_model.safetensors', baked='expected/finetune_model_baked.safetensors',
             sparse='expected/finetune_model_baked.sparse.safetensors')
def _assert_close(got, want, msg=None):
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=msg)


ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')


@pytest.mark.parametrize('name', sorted(FILES))
def test_old_state_dicts_load_with_the_same_logits(name):
    model = timm.create_model('prdarts_c10_mini', C=4, layers=3).eval()
    model.load_state_dict(read_state_dict(FIXTURE / FILES[name]))
    with torch.no_grad():
        _assert_close(model(EXPECTED['input']), EXPECTED[name])
    modes = {layer.mode for _, layer in prdarts_timm.pruned_layers(model)}
    if name == 'pretrain':  # all-ones masks: nothing is pruned, so nothing of the pruning state is kept
        assert modes == {'dense'} and not any(k.endswith(('.scores', '.mask')) for k in model.state_dict())
    else:
        assert modes == {'fixed'}


def _run(cmd):
    result = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_an_old_training_run_resumes_to_the_old_result(tmp_path):
    run = tmp_path / 'train'
    shutil.copytree(FIXTURE / 'train', run)
    result = _run(['recipes/train.py', '--cpu', '--output', str(run), '--resume'])
    assert 'resumed prune from' in result.stdout
    for got, want in (('finetune/model.safetensors', 'finetune_model.safetensors'),
                      ('finetune/model_baked.safetensors', 'finetune_model_baked.safetensors')):
        got, want = load_file(run / got), load_file(FIXTURE / 'expected' / want)
        assert sorted(got) == sorted(want)
        for key in want:
            _assert_close(got[key], want[key], msg=lambda m, key=key: f'{key}: {m}')


def test_an_old_search_resumes_to_the_old_alpha(tmp_path):
    run = tmp_path / 'search'
    shutil.copytree(FIXTURE / 'search', run)
    _run(['recipes/search.py', '--cpu', '--config', str(run / 'config.yaml'), '--output', str(run), '--resume'])
    final = newest_accelerate_state(run / 'checkpoints')
    model = torch.load(final / 'custom_checkpoint_0.pkl', weights_only=True)['model']
    for key, want in load_file(FIXTURE / 'expected' / 'search_alpha.safetensors').items():
        _assert_close(model[key], want, msg=lambda m, key=key: f'{key}: {m}')
    assert json.loads((run / 'genotype.json').read_text()) == \
        json.loads((FIXTURE / 'expected' / 'search_genotype.json').read_text())
