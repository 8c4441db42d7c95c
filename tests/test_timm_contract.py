"""The timm contract of a registered model: a new model is the plain network (pruning state is opt-in), the
checks timm makes of its own models, and pretrained loading the timm way (first-conv adaptation, new heads)."""
import copy

import pytest
import timm
import torch
import torch.nn as nn
from timm.models._features_fx import create_feature_extractor

import prdarts_timm
from prdarts_timm import PrunedConv2d, PrunedLinear, pruned_layers
from prdarts_timm.checkpoint import CheckpointError
from prdarts_timm.models.prdarts import BUNDLED_WEIGHTS

MODELS = timm.list_models(module='prdarts')
TAGS = sorted(BUNDLED_WEIGHTS)
SPARSE_TAGS = [tag for tag in TAGS if BUNDLED_WEIGHTS[tag]['file'].endswith('.sparse.safetensors')]  # not dense_*


def plain_copy(model: nn.Module) -> nn.Module:
    """The same network built from ``nn.Conv2d`` / ``nn.Linear``, with the same weights."""
    plain = copy.deepcopy(model)
    for parent in list(plain.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PrunedConv2d):
                layer = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                  child.padding, child.dilation, child.groups, child.bias is not None)
            elif isinstance(child, PrunedLinear):
                layer = nn.Linear(child.in_features, child.out_features, child.bias is not None)
            else:
                continue
            layer.load_state_dict({k: v for k, v in child.state_dict().items()})
            setattr(parent, name, layer)
    return plain


def _size(model, default=True):
    size = model.pretrained_cfg['input_size'][-1]
    if size == 224:  # the ImageNet network: smaller sizes keep the test fast
        return 64 if default else 40
    return size if default else 24


def _grads_reach_every_parameter(model, x):
    model.zero_grad(set_to_none=True)
    model(x).float().pow(2).mean().backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize('name', MODELS)
def test_a_new_model_is_the_plain_network(name):
    model = timm.create_model(name)
    plain = plain_copy(model)
    assert [(n, p.shape) for n, p in model.named_parameters()] == [(n, p.shape) for n, p in plain.named_parameters()]
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in plain.state_dict().items()]
    assert all(p.requires_grad for p in model.parameters())
    # memory: parameters + buffers are those of the plain network (BN statistics the only buffers)
    numel = lambda m: sum(t.numel() for t in [*m.parameters(), *m.buffers()])  # noqa: E731
    assert numel(model) == numel(plain)
    assert sum(p.numel() for p in model.parameters()) == prdarts_timm.count_params(model)
    assert all(layer.scores is None and layer.mask is None for _, layer in pruned_layers(model))


@pytest.mark.parametrize('name', MODELS)
def test_one_backward_reaches_every_parameter_eager_and_fx(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=42, layers=5).train()  # 5 cells: every cell type, less time
    x = torch.randn(1, 3, _size(model), _size(model))
    assert model(x).shape == (1, 42)
    assert _grads_reach_every_parameter(model, x) == []
    traced = torch.fx.symbolic_trace(model)
    assert _grads_reach_every_parameter(traced, x) == []
    # at another input size too
    y = torch.randn(1, 3, _size(model, False), _size(model, False))
    assert _grads_reach_every_parameter(model, y) == []


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg_names_real_modules_and_shapes(name):
    model = timm.create_model(name, num_classes=42, layers=5).eval()
    cfg = model.pretrained_cfg
    modules = dict(model.named_modules())
    first, classifier = modules[cfg['first_conv']], modules[cfg['classifier']]
    assert isinstance(first, nn.Conv2d) and first.in_channels == cfg['input_size'][0]
    assert isinstance(classifier, nn.Linear) and classifier.out_features == 42
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        assert tuple(features.shape[-2:]) == tuple(cfg['pool_size'])
        assert model(x).shape == (1, 42)
    pooled = timm.create_model(name, num_classes=0, layers=5).eval()
    unpooled = timm.create_model(name, num_classes=0, global_pool='', layers=5).eval()
    with torch.no_grad():
        assert pooled(x).shape == (1, pooled.num_features)
        assert unpooled(x).shape == (1, unpooled.num_features, *cfg['pool_size'])


@pytest.mark.parametrize('name', ['prdarts_c10_mini', 'prdarts_in1k'])
def test_fx_feature_extractor_backward(name):
    model = timm.create_model(name, layers=5).train()
    x = torch.randn(2, 3, _size(model), _size(model))
    extractor = create_feature_extractor(model, return_nodes={f'cells.{len(model.cells) - 1}': 'out'})
    extractor(x)['out'].mean().backward()
    used = {n for n, _ in extractor.named_parameters()}
    assert used and all(p.grad is not None for n, p in extractor.named_parameters() if n in used)


def test_pruning_state_appears_when_asked_and_leaves_with_bake():
    model = timm.create_model('prdarts_c10_mini')
    plain_keys = list(model.state_dict())
    prdarts_timm.init_scores_scaled(model)
    prdarts_timm.set_pruning(model, 'learn', k=0.1)
    assert all(layer.scores is not None and layer.mask is not None for _, layer in pruned_layers(model))
    assert {k for k in model.state_dict() if k.endswith(('.scores', '.mask'))}
    prdarts_timm.set_pruning(model, 'fixed', k=0.1)
    nonzero = prdarts_timm.sparsity_report(model).nonzero
    prdarts_timm.bake(model)
    assert list(model.state_dict()) == plain_keys
    assert all(layer.scores is None and layer.mask is None for _, layer in pruned_layers(model))
    assert prdarts_timm.sparsity_report(model).nonzero == nonzero
    converted = prdarts_timm.convert_to_pruned(timm.create_model('resnet18', num_classes=3))
    assert list(converted.state_dict()) == list(timm.create_model('resnet18', num_classes=3).state_dict())


LOADS = [dict(in_chans=1), dict(in_chans=2), dict(in_chans=5), dict(num_classes=0), dict(num_classes=5),
         dict(features_only=True), dict(num_classes=0, global_pool=''), dict(in_chans=1, num_classes=5)]


@pytest.mark.parametrize('tag', TAGS)
def test_pretrained_loads_the_timm_way(tag):
    reference = timm.create_model(tag, pretrained=True).eval()
    stem = reference.stem0[0].weight.detach()
    x = torch.randn(2, 3, 32, 32)
    for kwargs in LOADS:
        model = timm.create_model(tag, pretrained=True, **kwargs).eval()
        chans = kwargs.get('in_chans', 3)
        with torch.no_grad():
            out = model(torch.randn(2, chans, 32, 32))
        if kwargs.get('features_only'):
            assert [o.shape[1] for o in out] == model.feature_info.channels(), kwargs
            continue
        if kwargs.get('global_pool') == '':
            assert out.shape == (2, reference.num_features, 8, 8), kwargs
        else:
            assert out.shape == (2, kwargs.get('num_classes', 10) or reference.num_features), kwargs
        if chans != 3:  # timm's adapt_input_conv: the 3-channel stem summed (1) or repeated and rescaled
            expected = stem.sum(1, keepdim=True) if chans == 1 else \
                stem.repeat(1, (chans + 2) // 3, 1, 1)[:, :chans] * (3 / chans)
            assert torch.allclose(model.stem0[0].weight, expected, atol=1e-6), kwargs
        # the cells are the pretrained ones: same weights, same zeros
        assert torch.equal(model.cells[-1].preprocess1[1].weight, reference.cells[-1].preprocess1[1].weight)
    # the pretrained network with the default head gives the published logits' shape and its zeros
    with torch.no_grad():
        assert reference(x).shape == (2, 10)


@pytest.mark.parametrize('tag', SPARSE_TAGS)
def test_a_plain_sgd_loop_keeps_the_tags_zero_pattern(tag):
    torch.manual_seed(0)
    model = timm.create_model(tag, pretrained=True, num_classes=5).train()
    zeros = {n: (p == 0) for n, p in model.named_parameters() if p.dim() > 1 and not n.startswith('classifier')}
    assert sum(int(z.sum()) for z in zeros.values()) > 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(3):
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    for n, was_zero in zeros.items():
        now_zero = params[n] == 0
        assert torch.equal(now_zero, was_zero), n  # the zeros stayed, and nothing else became zero
    assert all(p.requires_grad for p in model.parameters())
    assert not any(k.endswith(('.scores', '.mask')) for k in model.state_dict())


def test_an_architecture_timm_cannot_adapt_stays_a_clear_error():
    tag = TAGS[0]
    for kwargs in (dict(C=16), dict(layers=8), dict(genotype='darts_v2')):
        with pytest.raises(CheckpointError, match='do not fit this PRDarts.*another genotype / C / layers'):
            timm.create_model(tag, pretrained=True, **kwargs)
