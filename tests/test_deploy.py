"""Deployment forms (prdarts_timm.deploy): sparse kernels and ONNX give the masked network's logits."""
import copy

import pytest
import timm
import torch

import prdarts_timm
from prdarts_timm import bake, list_genotypes, set_pruning, set_random_masks
from prdarts_timm.builder import create_model
from prdarts_timm.compact import CompactOp, CompactPassThrough, compact
from prdarts_timm.deploy import (
    DeployError, SparseConv1x1, SparseLinear, export_onnx, load_deployed, onnx_session, use_sparse_kernels,
)
from prdarts_timm.layers import convert_to_pruned

ATOL = 1e-5  # sparse and dense products sum in another order: float32 rounding only


def random_masked(model: torch.nn.Module, k: float, seed: int = 0) -> torch.nn.Module:
    """``model`` with a random mask of k per layer, baked, in eval mode, BN statistics randomised."""
    set_random_masks(model, k, seed)
    torch.manual_seed(seed)
    for module in model.modules():  # BN statistics away from the identity, so folding errors would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return bake(model).eval()


@pytest.mark.parametrize('genotype', list_genotypes())
@pytest.mark.parametrize('k', [0.1, 0.01])
def test_compacted_and_sparse_kernels_give_the_masked_logits(genotype, k):
    masked = random_masked(timm.create_model('prdarts_c10_mini', genotype=genotype, C=8, layers=5, auxiliary=True), k)
    compacted = copy.deepcopy(masked)
    report = compact(compacted)
    assert report.channels_after < report.channels_before and report.params_after < report.params_before
    assert compacted.aux_head is None and any(isinstance(m, CompactOp) for m in compacted.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, prdarts_timm.PrunedLayer)) for m in compacted.modules())
    sparse = copy.deepcopy(masked)
    choices = use_sparse_kernels(sparse, torch.randn(1, 3, 32, 32), repeats=1, margin=float('inf'))
    swapped = [m for m in sparse.modules() if isinstance(m, (SparseConv1x1, SparseLinear))]
    assert len(swapped) == len(choices) > 0 and all(c.sparse for c in choices)
    assert isinstance(sparse.classifier, SparseLinear)
    both = copy.deepcopy(compacted)
    assert all(c.sparse for c in use_sparse_kernels(both, torch.randn(1, 3, 32, 32), repeats=1, margin=float('inf')))
    for batch in (1, 8):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = masked(x)
            for form in (compacted, sparse, both):
                torch.testing.assert_close(form(x), expected, atol=ATOL, rtol=0)


def test_compaction_of_the_imagenet_network_and_its_features():
    masked = random_masked(timm.create_model('prdarts_in1k', C=8, layers=5), 0.01)
    compacted = copy.deepcopy(masked)
    compact(compacted)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(compacted(x), masked(x), atol=ATOL, rtol=0)
        assert compacted.num_features < masked.num_features  # the classifier reads fewer channels
        features = compacted.forward_intermediates(x, intermediates_only=True)  # the kept channels only
        assert [f.shape[1] for f in features] == [info['num_chs'] for info in compacted.feature_info]
        features = copy.deepcopy(masked)
        features.reset_classifier(0)
        compact(features)  # no classifier: the features are the output, every channel computed
        torch.testing.assert_close(features(x), masked.forward_head(masked.forward_features(x), pre_logits=True),
                                   atol=ATOL, rtol=0)


@pytest.mark.parametrize('size', [(31, 31), (33, 33), (2, 2), (1, 1), (33, 2)])
def test_compaction_is_exact_at_odd_and_tiny_sizes(size):
    """Odd sizes make the factorized reductions read zeros past the edge, where absorbed constants do not apply;
    one pixel high or wide, their shifted path reads nothing but the edge."""
    for genotype in ('prdarts_99', 'darts_v2'):
        for k in (0.1, 0.01):
            masked = random_masked(timm.create_model('prdarts_c10_mini', genotype=genotype, C=8, layers=5), k)
            compacted = copy.deepcopy(masked)
            compact(compacted)
            x = torch.randn(2, 3, *size)
            with torch.no_grad():
                torch.testing.assert_close(compacted(x), masked(x), atol=ATOL, rtol=0)


WIRING = dict(  # concat leaves out nodes 2 and 4, which later nodes read; node 5 reads a cell input
    normal=[['skip_connect', 0], ['avg_pool_3x3', 1], ['sep_conv_3x3', 2], ['max_pool_3x3', 1],
            ['dil_conv_3x3', 3], ['skip_connect', 2], ['skip_connect', 4], ['sep_conv_5x5', 0]],
    normal_concat=[3, 5],
    reduce=[['max_pool_3x3', 0], ['skip_connect', 1], ['skip_connect', 2], ['avg_pool_3x3', 0]],
    reduce_concat=[2, 3],
)


@pytest.mark.parametrize('kwargs', [dict(global_pool='max'), dict(global_pool='catavgmax'), dict(num_classes=0),
                                    dict(genotype=WIRING), dict(intermediate=2)], ids=str)
def test_compaction_of_other_heads_and_wirings(kwargs):
    kwargs = dict(kwargs)
    intermediate = kwargs.pop('intermediate', None)
    masked = random_masked(timm.create_model('prdarts_c10_mini', C=8, layers=5, **kwargs), 0.01)
    if intermediate is not None:
        masked.prune_intermediate_layers(intermediate)  # features of the second stage, no head
    compacted = copy.deepcopy(masked)
    compact(compacted)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compacted(x), masked(x), atol=ATOL, rtol=0)


def _cell_widths(model: torch.nn.Module, x: torch.Tensor) -> list:
    widths = []
    hooks = [cell.register_forward_hook(lambda m, args, out: widths.append(out.shape[1])) for cell in model.cells]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return widths


def test_compaction_through_the_cells_shared_tensors():
    """Constant channels are absorbed by the consumers that can take them; unread channels are not computed."""
    torch.manual_seed(0)
    model = bake(timm.create_model('prdarts_c10_mini', C=8, layers=5)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    for module in model.cells[1].modules():  # cell 1 computes constants only: BN shifts through pools and skips
        if isinstance(module, torch.nn.Conv2d):
            module.weight.data.zero_()
    model.classifier.weight.data[:, 1::2] = 0  # the classifier reads half of the last cell's channels
    compacted = copy.deepcopy(model)
    report = compact(compacted)
    x = torch.randn(3, 3, 32, 32)
    full, kept = _cell_widths(model, x), _cell_widths(compacted, x)
    assert kept[1] == len(model.cells[1].concat) < full[1]  # a placeholder channel per node, nothing read
    assert kept[-1] < full[-1] and compacted.classifier.in_features == kept[-1]
    assert kept[0] == full[0] and kept[2] == full[2]  # dense cells: every channel varies and is read
    assert report.channels_after < report.channels_before
    with torch.no_grad():
        torch.testing.assert_close(compacted(x), model(x), atol=ATOL, rtol=0)
    assert any(isinstance(m, CompactPassThrough) for m in compacted.modules())


@pytest.mark.parametrize('k', [0.1, 0.01])
def test_compacted_mobilenet_and_the_measured_rule(k):
    masked = random_masked(convert_to_pruned(create_model('mobilenetv2_035', cifar_stem=True, num_classes=10)), k)
    compacted = copy.deepcopy(masked)
    report = compact(compacted)
    assert report.channels_after < report.channels_before and report.params_after < report.params_before
    assert compacted.classifier.in_features == compacted.num_features < 1280
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, prdarts_timm.PrunedLayer)) for m in compacted.modules())
    sparse = copy.deepcopy(compacted)
    choices = use_sparse_kernels(sparse, torch.randn(8, 3, 32, 32), repeats=1, margin=float('inf'))
    assert sum(c.sparse for c in choices) == len(choices) == 1 + sum(  # classifier + every 1x1 conv
        1 for m in compacted.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1))
    for batch in (1, 8):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = masked(x)
            torch.testing.assert_close(compacted(x), expected, atol=ATOL, rtol=0)
            torch.testing.assert_close(sparse(x), expected, atol=ATOL, rtol=0)
    kept = copy.deepcopy(masked)
    choices = use_sparse_kernels(kept, torch.randn(1, 3, 32, 32), repeats=1, margin=0.0)  # never faster than 0
    assert choices and not any(c.sparse for c in choices)
    assert not any(isinstance(m, (SparseConv1x1, SparseLinear)) for m in kept.modules())
    assert all(c.dense_ms > 0 and c.sparse_ms > 0 and 0 < c.density <= 2 * k for c in choices)


@pytest.mark.parametrize('name,kwargs', [('prdarts_c10_mini', dict(C=8, layers=5)), ('mobilenetv2_035', {})])
def test_onnx_runtime_gives_the_pytorch_logits(name, kwargs, tmp_path):
    model = create_model(name, cifar_stem=name.startswith('mobilenet'), num_classes=10, **kwargs)
    masked = random_masked(convert_to_pruned(model), 0.01)
    deployed = copy.deepcopy(masked)
    compact(deployed)  # the form recipes/export.py --deploy writes
    path = export_onnx(deployed, tmp_path / 'model.onnx', (3, 32, 32))
    session = onnx_session(path)
    for batch in (1, 8):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = masked(x)
        (logits,) = session.run(None, {'input': x.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ['model.onnx']  # atomic: no temporary file left


def test_bad_input_is_a_clear_error(tmp_path):
    model = timm.create_model('prdarts_c10_mini', C=8, layers=5)
    set_pruning(model, 'fixed', k=0.1)
    with pytest.raises(DeployError, match=r'not baked.*prdarts_timm.bake\(model\)'):
        use_sparse_kernels(model, torch.randn(1, 3, 32, 32))
    with pytest.raises(DeployError, match='not baked'):
        export_onnx(model, tmp_path / 'model.onnx', (3, 32, 32))
    bake(model).eval()
    use_sparse_kernels(model, torch.randn(1, 3, 32, 32), repeats=1, margin=float('inf'))
    with pytest.raises(DeployError, match='ONNX cannot express'):
        export_onnx(model, tmp_path / 'model.onnx', (3, 32, 32))
    assert not (tmp_path / 'model.onnx').exists()
    with pytest.raises(DeployError, match='not a deployment folder.*deploy_folder'):
        load_deployed(tmp_path)
    with pytest.raises(DeployError, match='1x1 conv'):
        SparseConv1x1(torch.nn.Conv2d(4, 4, 3))
    unbaked = timm.create_model('prdarts_c10_mini', C=8, layers=5)
    set_pruning(unbaked, 'fixed', k=0.1)
    with pytest.raises(DeployError, match='not baked'):
        compact(unbaked)
    with pytest.raises(DeployError, match='no dead channels'):
        compact(bake(timm.create_model('prdarts_c10_mini', C=8, layers=5)).eval())  # dense: every channel in use
    with pytest.raises(DeployError, match='no dead channels'):
        compact(create_model('mobilenetv2_035', num_classes=10))  # a dense timm model
    compacted = random_masked(timm.create_model('prdarts_c10_mini', C=8, layers=5), 0.01)
    compact(compacted)
    with pytest.raises(DeployError, match='already compacted'):
        compact(compacted)
    with pytest.raises(DeployError, match='takes a PR-DARTS network or a timm MobileNet-v2'):
        compact(create_model('resnet18', num_classes=10))


def test_deploy_folder_keeps_the_baked_onnx_when_nothing_compacts(tmp_path):
    import json
    from prdarts_timm.deploy import deploy_folder
    model = bake(timm.create_model('prdarts_c10_mini', C=8, layers=5)).eval()  # dense: no dead channels
    folder = deploy_folder(model, tmp_path / 'deploy', (3, 32, 32), dict(model='prdarts_c10_mini'))
    info = json.loads((folder / 'deploy.json').read_text())
    assert 'no dead channels' in info['compaction']['skipped']
    assert info['onnx_compacted'] is False and info['onnx_latency_ms'] is None
    assert sorted(p.name for p in folder.iterdir()) == ['deploy.json', 'model.onnx', 'model.safetensors']
    x = torch.randn(2, 3, 32, 32)
    (logits,) = onnx_session(folder / 'model.onnx').run(None, {'input': x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-4, rtol=1e-4)
