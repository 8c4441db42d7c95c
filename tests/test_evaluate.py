"""MAC counting, latency, and `recipes/evaluate.py` end to end (as a process) on a baked tiny checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Subset

import prdarts_timm
from prdarts_timm import PrunedConv2d, PrunedLinear, set_pruning
from prdarts_timm.checkpoint import CheckpointError, load_state_dict_checked, read_state_dict
from prdarts_timm.data import build_dataset, cifar_transforms
from prdarts_timm.profile import count_macs, measure_latency
from prdarts_timm.training import data_transforms, input_size

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
TINY = dict(C=4, layers=3)
TINY_ARGS = ['--model', 'prdarts_c10_mini', '--model_kwargs', 'C=4', 'layers=3']
PUBLISHED = 'prdarts_c10_micro.sp99_cifar10'
BATCH, BATCHES = 250, 2  # the first 500 mini test images: classes 0 to 4


def evaluate(*args, timeout=300):
    return subprocess.run([sys.executable, 'recipes/evaluate.py', *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def tiny_model(**kwargs) -> nn.Module:
    return timm.create_model('prdarts_c10_mini', **TINY, **kwargs)


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        PrunedConv2d(3, 4, 3, padding=1, bias=False),             # 8x8 out
        nn.ReLU(),
        PrunedConv2d(4, 8, 3, stride=2, padding=1, groups=2),     # 4x4 out, 2 input channels per group
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        PrunedLinear(8, 5),
    )


def test_macs_by_hand_dense_and_fixed_mask():
    net = small_net()
    dense = count_macs(net, (3, 8, 8))
    assert [(m.kind, m.dense) for m in dense.layers] == [
        ('conv', 8 * 8 * 4 * 3 * 3 * 3), ('conv', 4 * 4 * 8 * 2 * 3 * 3), ('linear', 8 * 5)]
    assert dense.dense == dense.effective == 6912 + 2304 + 40
    assert [m.name for m in dense.layers] == ['0', '2', '5']

    set_pruning(net, 'fixed', k=0.1)  # kept = numel - int(0.9 * numel): 11 of 108, 15 of 144, 4 of 40
    sparse = count_macs(net, (3, 8, 8))
    assert [m.dense for m in sparse.layers] == [m.dense for m in dense.layers]
    assert [m.effective for m in sparse.layers] == [8 * 8 * 11, 4 * 4 * 15, 4]
    assert sparse.to_dict()['effective'] == 704 + 240 + 4

    set_pruning(net, 'learn', k=0.1)  # same scores, same top-k: same count, mask cache untouched
    assert [m.effective for m in count_macs(net, (3, 8, 8)).layers] == [704, 240, 4]


def test_macs_dense_model_and_train_mode_kept():
    model = tiny_model()
    model.train()
    model.cells[0].eval()
    report = count_macs(model)
    assert report.dense == report.effective > 0
    assert len(report.layers) == len(prdarts_timm.sparsity_report(model).layers)
    assert model.training and not model.cells[0].training and model.cells[1].training
    assert model.stem0[1].num_batches_tracked.item() == 0  # the forward ran in eval mode: no BN update


def test_measure_latency_restores_threads_and_mode():
    model = small_net().train()
    before = torch.get_num_threads()
    result = measure_latency(model, 4, (3, 8, 8), threads=1, warmup=1, repeats=3)
    assert torch.get_num_threads() == before and model.training
    assert set(result) >= {'median_ms', 'p90_ms', 'threads', 'batch_size'}
    assert result['threads'] == 1 and result['batch_size'] == 4 and 0 < result['median_ms'] <= result['p90_ms']


@pytest.fixture(scope='module')
def baked(tmp_path_factory):
    """A baked tiny PR-DARTS checkpoint at k = 0.05 (safetensors) and the model it came from."""
    torch.manual_seed(0)
    model = tiny_model()
    prdarts_timm.init_scores_scaled(model)
    set_pruning(model, 'fixed', k=0.05)
    prdarts_timm.bake(model)
    path = tmp_path_factory.mktemp('ckpt') / 'baked.safetensors'
    save_file(model.state_dict(), str(path))
    return path, model


@pytest.fixture(scope='module')
def runs(baked, tmp_path_factory):
    """Every recipes/evaluate.py run of this file, started together (each spends most of its time importing
    torch and timm): name -> (CompletedProcess, JSON report or None)."""
    tmp = tmp_path_factory.mktemp('eval')
    ckpt = str(baked[0])
    wrapped = tmp / 'wrapped.pth'
    torch.save({'state_dict': baked[1].state_dict(), 'epoch': 3}, wrapped)
    (tmp / 'corrupt.safetensors').write_bytes(b'not a checkpoint at all')
    cases = dict(
        baked=[*TINY_ARGS, '--checkpoint', ckpt, '--batch_size', str(BATCH), '--max_batches', str(BATCHES),
               '--no_latency', '--output', str(tmp / 'baked.json')],
        latency=[*TINY_ARGS, '--checkpoint', str(wrapped), '--max_batches', '1', '--batch_size', '16', '--threads',
                 '1', '--latency_warmup', '1', '--latency_repeats', '2', '--output', str(tmp / 'latency.json')],
        missing=[*TINY_ARGS, '--checkpoint', str(tmp / 'nope.safetensors'), '--no_latency'],
        corrupt=[*TINY_ARGS, '--checkpoint', str(tmp / 'corrupt.safetensors'), '--no_latency'],
        mismatch=['--model', 'prdarts_c10_mini', '--model_kwargs', 'C=8', 'layers=3', '--checkpoint', ckpt,
                  '--no_latency'],
        unknown_model=['--model', 'prdarts_c10_minii', '--checkpoint', ckpt, '--no_latency'],
        missing_root=[*TINY_ARGS, '--random_weights', '--data_source', 'imagefolder', '--data_root',
                      str(tmp / 'none'), '--no_latency'],
        no_weights=['--model', 'prdarts_c10_micro.sp99_cifar10', '--no_latency'],
        tag_without_weights=['--model', 'prdarts_c10_tiny.sp99_cifar10', '--pretrained', '--no_latency'],
        pretrained=['--model', PUBLISHED, '--pretrained', '--no_latency', '--output', str(tmp / 'pretrained.json')],
    )
    procs = {name: subprocess.Popen([sys.executable, 'recipes/evaluate.py', *args], cwd=ROOT, env=ENV,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in cases.items()}
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        report = tmp / f'{name}.json'
        results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr),
                         json.loads(report.read_text()) if report.exists() else None)
    return results


def _succeeded(run):
    result, data = run
    assert result.returncode == 0, result.stderr[-3000:]
    return result, data


def test_evaluate_baked_checkpoint_matches_report_and_plain_loop(baked, runs):
    path, model = baked
    result, data = _succeeded(runs['baked'])
    report = prdarts_timm.sparsity_report(model)
    assert data['weights']['nonzero'] == report.nonzero and data['weights']['total'] == report.total
    assert report.nonzero < 0.06 * report.total
    assert [layer['nonzero'] for layer in data['weights']['layers']] == [layer.nonzero for layer in report.layers]
    assert data['params'] == prdarts_timm.count_params(model)
    assert data['macs']['effective'] < data['macs']['dense']

    fresh = tiny_model()
    fresh.load_state_dict(load_file(str(path)))  # baked: masks restored from the zeros
    dataset = build_dataset('mini', 'test', transform=cifar_transforms(train=False))
    loader = DataLoader(Subset(dataset, range(BATCH * BATCHES)), batch_size=BATCH, shuffle=False)
    fresh.eval()
    correct1 = correct5 = total = 0
    with torch.no_grad():
        for x, y in loader:
            logits = fresh(x)
            correct1 += int((logits.argmax(1) == y).sum())
            correct5 += int((logits.topk(5, 1).indices == y[:, None]).any(1).sum())
            total += len(y)
    assert data['num_samples'] == total == BATCH * BATCHES
    assert data['correct_top1'] == correct1 and data['top1'] == pytest.approx(100 * correct1 / total)
    assert data['correct_top5'] == correct5
    assert data['latency'] is None

    for key in ('markdown_header', 'markdown_row', 'dataset', 'environment', 'input_size', 'top5', 'macs'):
        assert key in data
    assert data['environment']['torch'] == torch.__version__ and data['environment']['timm'] == timm.__version__
    assert 'recipes/evaluate.py' in data['environment']['command']
    assert data['dataset']['split'] == 'test' and data['dataset']['num_evaluated'] == total
    assert result.stdout.rstrip().splitlines()[-1] == data['markdown_row']
    assert data['markdown_row'].startswith('| prdarts_c10_mini | ') and data['markdown_row'].endswith('| n/a |')
    assert data['markdown_row'].count('|') == data['markdown_header'].splitlines()[0].count('|') == 9


def test_evaluate_latency_and_wrapped_torch_checkpoint(baked, runs):
    _, data = _succeeded(runs['latency'])
    latency = data['latency']
    assert latency['threads'] == 1 and latency['cpu'] == data['environment']['cpu']
    for batch in (1, 64):
        assert latency[f'batch_{batch}']['batch_size'] == batch and latency[f'batch_{batch}']['median_ms'] > 0
    assert data['markdown_row'].endswith(f'| {latency["batch_1"]["median_ms"]:.2f} ms (1 thr) |')
    assert data['weights']['nonzero'] == prdarts_timm.sparsity_report(baked[1]).nonzero


def test_transform_follows_the_model_input_size():
    assert input_size(tiny_model()) == (3, 32, 32)
    big = timm.create_model('prdarts_in1k', C=4, layers=3)
    transform = data_transforms(big)[1]
    assert input_size(big) == (3, 224, 224)
    from PIL import Image
    assert transform(Image.new('RGB', (32, 32))).shape == (3, 224, 224)


def _fails(run, *fragments):
    result, _ = run
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]


def test_missing_checkpoint(runs):
    _fails(runs['missing'], 'CheckpointError', 'nope.safetensors', 'does not exist')


def test_corrupt_checkpoint(runs, tmp_path):
    _fails(runs['corrupt'], 'CheckpointError', 'cannot read checkpoint', 'corrupt')
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(b'this is not a torch file')
    with pytest.raises(CheckpointError, match='cannot read checkpoint .* corrupt'):
        read_state_dict(bad)
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='does not hold a state dict'):
        read_state_dict(tmp_path / 'list.pth')


def test_checkpoint_that_does_not_match_the_architecture(runs, baked):
    _fails(runs['mismatch'], 'CheckpointError', 'does not match the model', 'shape mismatch', 'checkpoint [', '--model',
           '--num_classes', '--genotype')
    state = load_file(str(baked[0]))
    with pytest.raises(CheckpointError, match=r'missing key\(s\).*unexpected key\(s\)'):
        load_state_dict_checked(tiny_model(genotype='darts_v2'), state, 'ckpt.safetensors')
    with pytest.raises(CheckpointError, match=r'classifier\.weight.*with num_classes 10'):
        load_state_dict_checked(tiny_model(num_classes=5), state, 'ckpt.safetensors')


def test_missing_data_folder(runs):
    _fails(runs['missing_root'], 'error: DatasetNotFoundError', 'none')


def test_unknown_model(runs):
    _fails(runs['unknown_model'], 'ModelError', "timm does not know a model named 'prdarts_c10_minii'",
           "timm.list_models('prdarts*')", 'prdarts_c10_mini')


def test_training_checkpoint_with_auxiliary_head_loads_into_the_inference_network():
    """A pretrain checkpoint keeps its auxiliary head (training only): the inference network (no auxiliary)
    loads it without those keys and computes the same logits; a network with the head still needs them."""
    torch.manual_seed(0)
    trained = tiny_model(auxiliary=True).eval()
    state = trained.state_dict()
    assert any(k.startswith('aux_head.') for k in state)
    inference = load_state_dict_checked(tiny_model(), dict(state), 'pretrain.safetensors').eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(inference(x), trained(x))
    without_head = {k: v for k, v in state.items() if not k.startswith('aux_head.')}
    with pytest.raises(CheckpointError, match=r'missing key\(s\).*aux_head'):
        load_state_dict_checked(tiny_model(auxiliary=True), without_head, 'inference.safetensors')


def test_pretrained_reproduces_the_cards_figure(runs):
    """``--pretrained`` evaluates the tag's published weights: the mini-split top-1 of its card."""
    result, data = _succeeded(runs['pretrained'])
    stated = json.loads((ROOT / 'hub' / PUBLISHED / 'evaluation_mini_test.json').read_text())
    assert data['pretrained'] and data['checkpoint'] is None
    assert data['dataset']['num_evaluated'] == stated['dataset']['num_evaluated'] == 1000
    assert abs(data['top1'] - stated['top1']) <= 0.5, (data['top1'], stated['top1'])
    assert data['weights']['nonzero'] == stated['weights']['nonzero']
    assert data['dataset']['classes'] == list(prdarts_timm.cifar.CIFAR10_CLASSES)
    assert 'evaluate prdarts_c10_micro' in result.stderr  # the progress bar


def test_a_tag_is_never_evaluated_with_random_weights(runs):
    result, _ = runs['no_weights']
    assert result.returncode == 2 and '--pretrained' in result.stderr and '--random_weights' in result.stderr
    _fails(runs['tag_without_weights'], 'PretrainedWeightsError',
           'no pretrained weights exist for prdarts_c10_tiny.sp99_cifar10')
