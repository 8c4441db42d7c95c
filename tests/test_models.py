"""The timm model contract, for every registered model, on small inputs."""
import pytest
import timm
import torch
import torch.nn as nn
from timm.models import group_parameters
from timm.models._features_fx import create_feature_extractor

import prdarts_timm
from prdarts_timm import PRDarts, PretrainedWeightsError, PrunedConv2d, PrunedLinear, count_params, pruned_layers

MODELS = timm.list_models(module='prdarts')


def _input(model, batch=2):
    size = 32 if model.pretrained_cfg['input_size'][-1] == 32 else 64
    return torch.randn(batch, model.pretrained_cfg['input_size'][0], size, size)


def test_family_is_registered():
    assert set(timm.list_models('prdarts*')) >= {
        'prdarts_c10', 'prdarts_c10_tiny', 'prdarts_c10_medium', 'prdarts_c10_large', 'prdarts_c10_mini',
        'prdarts90_c10', 'prdarts95_c10', 'prdarts_in1k'}
    assert {'darts_v2_c10', 'darts_v2_c10_mini'} <= set(MODELS)
    assert not any('pruned' in name for name in MODELS)


def test_published_sizes():
    # DARTS paper: 3.3M parameters for DARTS-V2 at 36/20 without the auxiliary head
    assert round(count_params(timm.create_model('darts_v2_c10')) / 1e6, 1) == 3.3
    # method note 6.3 (computed): PR-DARTS 99% cell at 36/20 has 1.701M conv+linear weights
    assert round(count_params(timm.create_model('prdarts_c10'), conv_linear_only=True) / 1e6, 3) == 1.701
    assert round(count_params(timm.create_model('prdarts_c10_tiny'), conv_linear_only=True) / 1e6, 3) == 0.980
    assert round(count_params(timm.create_model('prdarts90_c10'), conv_linear_only=True) / 1e6, 3) == 3.890


@pytest.mark.parametrize('name', MODELS)
def test_pretrained_cfg_is_complete(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    for key in ('input_size', 'mean', 'std', 'crop_pct', 'interpolation', 'num_classes', 'first_conv',
                'classifier', 'license', 'tag'):
        assert cfg.get(key) not in (None, ''), key
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg['first_conv']], PrunedConv2d)
    assert modules[cfg['first_conv']].in_channels == cfg['input_size'][0]
    assert isinstance(modules[cfg['classifier']], PrunedLinear)
    assert model.num_classes == cfg['num_classes']
    # every conv / linear is a pruned layer, so any model can be pruned as is
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())


@pytest.mark.parametrize('name', MODELS)
def test_forward_head_features_and_classifier(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    out = model(x)
    assert out.shape == (2, model.num_classes)
    feats = model.forward_features(x)
    last = model.feature_info[-1]
    assert feats.shape == (2, model.num_features, x.shape[-2] // last['reduction'], x.shape[-1] // last['reduction'])
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert torch.equal(model.forward_head(feats), out)
    assert model.get_classifier() is model.classifier

    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.get_classifier().out_features == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, '')
    assert model(x).shape == feats.shape


@pytest.mark.parametrize('name', MODELS)
def test_constructor_options(name):
    model = timm.create_model(name, num_classes=0).eval()
    x = _input(model)
    assert model(x).shape == (2, model.num_features)
    model = timm.create_model(name, num_classes=0, global_pool='').eval()
    assert model(x).dim() == 4
    model = timm.create_model(name, in_chans=1, num_classes=7).eval()
    assert model(x[:, :1]).shape == (2, 7)
    with pytest.raises(ValueError, match='num_classes=0'):
        timm.create_model(name, num_classes=3, global_pool='')


@pytest.mark.parametrize('name', MODELS)
def test_features_only_and_intermediates(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    info = model.feature_info
    final, inter = model.forward_intermediates(x)
    assert len(inter) == len(info)
    for f, i in zip(inter, info):
        assert f.shape == (2, i['num_chs'], x.shape[-2] // i['reduction'], x.shape[-1] // i['reduction'])
    assert torch.allclose(final, model.forward_features(x))
    only_last = model.forward_intermediates(x, indices=1, intermediates_only=True, stop_early=True)
    assert len(only_last) == 1 and torch.allclose(only_last[0], inter[-1])

    out_indices = tuple(range(1, len(info)))
    features = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
    outs = features(x)
    assert [o.shape[1] for o in outs] == features.feature_info.channels() == [info[i]['num_chs'] for i in out_indices]
    for o, red in zip(outs, features.feature_info.reduction()):
        assert o.shape[-1] == x.shape[-1] // red

    default = timm.create_model(name, features_only=True).eval()  # timm's default out_indices: all points
    assert [o.shape[1] for o in default(x)] == [i['num_chs'] for i in info]

    kept = model.prune_intermediate_layers(indices=[0, 1])
    assert kept == [0, 1]
    assert len(model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)) == 2


@pytest.mark.parametrize('name', MODELS)
def test_grad_checkpointing_matches(name):
    torch.manual_seed(0)
    model = timm.create_model(name, drop_path_rate=0.0).train()
    x = _input(model)
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    got = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(ref, got))


@pytest.mark.parametrize('name', MODELS)
def test_group_matcher_and_no_weight_decay(name):
    model = timm.create_model(name, auxiliary=name.endswith('c10_mini'))
    groups = group_parameters(model, model.group_matcher())
    grouped = {n for names in groups.values() for n in names}
    assert grouped == {n for n, _ in model.named_parameters()}
    assert len(groups) >= len(model.cells) + 1
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() <= names


@pytest.mark.parametrize('name', MODELS)
def test_torchscript_and_channels_last(name):
    model = timm.create_model(name, layers=5).eval()  # depth does not change what scripting sees; time does
    x = _input(model)
    ref = model(x)
    scripted = torch.jit.script(model)
    assert torch.allclose(scripted(x), ref, atol=1e-5)
    model = model.to(memory_format=torch.channels_last)
    assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-4)


@pytest.mark.parametrize('name', MODELS)
def test_fx_trace(name):
    model = timm.create_model(name, layers=5).eval()
    x = _input(model)
    ref = model(x)
    traced = torch.fx.symbolic_trace(model)
    assert torch.allclose(traced(x), ref, atol=1e-5)
    last_cell = f'cells.{len(model.cells) - 1}'
    extractor = create_feature_extractor(model, return_nodes={last_cell: 'out'})
    assert torch.allclose(extractor(x)['out'], model.forward_features(x), atol=1e-5)


@pytest.mark.parametrize('name', ['prdarts_c10_mini', 'prdarts_in1k'])
def test_torch_compile_fullgraph(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    ref = model(x)
    compiled = torch.compile(model, fullgraph=True, backend='eager')
    assert torch.allclose(compiled(x), ref, atol=1e-5)


@pytest.mark.slow  # inductor's C++ codegen takes minutes on 2 cores
def test_torch_compile_fullgraph_inductor_sparse():
    model = timm.create_model('prdarts_c10_mini').eval()
    prdarts_timm.init_scores_scaled(model)
    prdarts_timm.set_pruning(model, 'fixed', k=0.1)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    compiled = torch.compile(model, fullgraph=True)
    assert torch.allclose(compiled(x), ref, atol=1e-4)


def test_auxiliary_head_and_drop_path():
    model = timm.create_model('prdarts_c10_mini', auxiliary=True, drop_path_rate=0.2)
    x = torch.randn(2, 3, 32, 32)
    logits, aux = model.forward_aux(x)
    assert logits.shape == aux.shape == (2, 10)
    assert model(x).shape == (2, 10)  # forward stays a plain tensor
    model.eval()
    assert torch.equal(model(x), model(x))  # no drop path in eval
    drop = [m for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert drop and all(m.drop_prob == 0.2 for m in drop)
    model.reset_classifier(4)
    assert model.forward_aux(x)[1].shape == (2, 4)


def test_genotype_override_and_pruning_whole_model():
    model = timm.create_model('prdarts_c10_mini', genotype='darts_v2')
    assert model.genotype.name == 'DARTS_V2'
    prdarts_timm.set_pruning(model, 'fixed', k=0.01)
    report = prdarts_timm.sparsity_report(model)
    assert report.sparsity > 0.985
    assert all(layer.mode == 'fixed' for _, layer in pruned_layers(model))


def test_pretrained_without_weights_is_a_clear_error():
    for name in ('prdarts_c10_tiny', 'prdarts_in1k.sp99_in1k', 'darts_v2_c10_mini'):
        with pytest.raises(PretrainedWeightsError,
                           match=r'no pretrained weights exist.*Tags with weights: prdarts_c10\.dense_cifar10'):
            timm.create_model(name, pretrained=True)
    assert timm.list_models(module='prdarts', pretrained=True) == [
        'prdarts_c10.dense_cifar10', 'prdarts_c10.sp90_cifar10', 'prdarts_c10.sp95_cifar10', 'prdarts_c10.sp99_cifar10',
        'prdarts_c10_micro.sp90_cifar10', 'prdarts_c10_micro.sp95_cifar10',
        'prdarts_c10_micro.sp99_cifar10']  # the bundled tags (test_published)
    with pytest.raises(RuntimeError, match=r'Invalid pretrained tag \(nope\)'):
        timm.create_model('prdarts_c10.nope', pretrained=True)


def test_bad_network_arguments():
    with pytest.raises(ValueError, match='layers >= 3'):
        PRDarts(layers=2)
    with pytest.raises(ValueError, match="stem_type"):
        PRDarts(stem_type='mnist')


def test_training_forward_is_the_forward():
    """forward_aux's logits are forward's, with grad checkpointing too, and its auxiliary logits are the head
    applied to the output of cell aux_index computed cell by cell."""
    torch.manual_seed(0)
    model = timm.create_model('prdarts_c10_mini', C=8, layers=6, auxiliary=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        train_logits, aux = model.forward_aux(x)
        s0 = model.stem0(x)
        s1 = model.stem1(s0)
        for i, cell in enumerate(model.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == model.aux_index:
                expected_aux = model.aux_head(s1)
        model.set_grad_checkpointing(True)
        checkpointed, checkpointed_aux = model.forward_aux(x)
    assert torch.equal(train_logits, logits) and torch.equal(checkpointed, logits)
    torch.testing.assert_close(aux, expected_aux, rtol=0, atol=1e-6)
    assert torch.equal(checkpointed_aux, aux)
    assert torch.equal(model.forward_head(model.forward_features(x)), logits)


def test_the_training_forward_checkpoints_each_cell():
    """With grad checkpointing, forward_aux recomputes each cell in the backward (its states run twice) and the
    gradients stay those of the plain forward."""
    torch.manual_seed(0)
    model = timm.create_model('prdarts_c10_mini', C=8, layers=6, auxiliary=True).train()
    x = torch.randn(3, 3, 32, 32)
    calls = []
    for i, cell in enumerate(model.cells):
        cell._forward_states = (lambda f, i: lambda states: calls.append(i) or f(states))(cell._forward_states, i)

    def grads(checkpointing):
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad()
        calls.clear()
        logits, aux = model.forward_aux(x)
        (logits.sum() + aux.sum()).backward()
        return len(calls), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_calls, plain = grads(False)
    checkpointed_calls, checkpointed = grads(True)
    assert plain_calls == len(model.cells) and checkpointed_calls == 2 * len(model.cells)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
