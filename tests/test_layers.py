import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import prdarts_timm.depthwise
import prdarts_timm.layers as layers_mod
from prdarts_timm import (
    PrunedConv2d, PrunedLinear, bake, convert_to_pruned, count_params, init_scores_scaled, kept_count,
    pruned_layers, set_global_k, set_pruning, sparsity_report, topk_mask,
)


@pytest.mark.parametrize('numel', [1, 7, 100, 270, 1000, 4608])
@pytest.mark.parametrize('k', [0.01, 0.05, 0.1, 0.5, 0.9, 0.999, 1.0])
def test_kept_count_follows_method_note(numel, k):
    # numel - int((1 - k) * numel), at least one weight
    assert kept_count(numel, k) == max(1, numel - int((1 - k) * numel))


@pytest.mark.parametrize('shape', [(16, 1, 3, 3), (32, 16, 1, 1), (10, 768), (144, 1, 5, 5)])
@pytest.mark.parametrize('k', [0.01, 0.1, 0.5, 0.95])
def test_mask_keeps_exact_count_and_largest_scores(shape, k):
    torch.manual_seed(0)
    layer = PrunedLinear(shape[1], shape[0]) if len(shape) == 2 else PrunedConv2d(
        shape[1] * (1 if shape[1] > 1 else shape[0]), shape[0], shape[2], groups=1 if shape[1] > 1 else shape[0])
    assert tuple(layer.weight.shape) == shape
    layer.set_mode('learn')
    layer.set_k(k)
    layer.pruned_weight()
    n_keep = kept_count(layer.weight.numel(), k)
    assert int(layer.mask.sum()) == n_keep
    kept = layer.scores.detach().abs()[layer.mask.bool()]
    dropped = layer.scores.detach().abs()[~layer.mask.bool()]
    if dropped.numel():
        assert kept.min() >= dropped.max()


def test_mask_count_exact_with_ties():
    scores = torch.ones(10, 10)
    for n in (1, 37, 50, 63, 99, 100):
        assert int(topk_mask(scores, n).sum()) == n


@pytest.mark.parametrize('bad', [0, 0.0, -0.1, 1.01, 2, float('nan'), True, '0.1', None])
def test_k_out_of_range_is_a_clear_error(bad):
    layer = PrunedLinear(4, 3)
    with pytest.raises(ValueError, match=r'fraction of weights KEPT.*\(0, 1\]'):
        layer.set_k(bad)
    with pytest.raises(ValueError, match='KEPT|needs k'):
        set_pruning(nn.Sequential(layer), 'learn', k=bad)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="expected one of"):
        PrunedLinear(4, 3).set_mode('prune')
    with pytest.raises(ValueError, match='needs k'):
        set_pruning(nn.Sequential(PrunedLinear(4, 3)), 'fixed')
    with pytest.raises(ValueError, match='convert_to_pruned'):
        set_pruning(nn.Sequential(nn.Linear(4, 3)), 'fixed', k=0.5)


def test_linear_straight_through_gradients_by_hand():
    torch.manual_seed(0)
    layer = PrunedLinear(6, 4, bias=False)
    layer.set_mode('learn')
    layer.set_k(0.25)
    x = torch.randn(5, 6)
    r = torch.randn(5, 4)
    (layer(x) * r).sum().backward()
    m = layer.mask
    g_hat = r.t() @ x  # dL/dW_hat for y = x W_hat^T, L = sum(y * r)
    assert torch.allclose(layer.scores.grad, torch.sign(layer.scores.detach()) * layer.weight.detach() * g_hat, atol=1e-6)
    assert layer.weight.grad is None  # frozen in score learning
    # pruned scores still get gradient (they can pop back up)
    assert (layer.scores.grad[m == 0] != 0).any()

    layer.set_mode('fixed')
    layer.scores.grad = None
    (layer(x) * r).sum().backward()
    assert torch.allclose(layer.weight.grad, m * g_hat, atol=1e-6)
    assert (layer.weight.grad[m == 0] == 0).all()
    assert layer.scores.grad is None


@pytest.mark.parametrize('kwargs', [dict(groups=8, dilation=2, padding=2), dict(stride=2, padding=1), {}])
def test_conv_straight_through_gradients(kwargs):
    torch.manual_seed(1)
    layer = PrunedConv2d(8, 8, 3, bias=False, **kwargs)
    layer.set_mode('learn')
    layer.set_k(0.1)
    x = torch.randn(2, 8, 9, 9)
    out = layer(x)
    r = torch.randn_like(out)
    (out * r).sum().backward()
    w_hat = (layer.weight.detach() * layer.mask).requires_grad_()
    (layer._conv_forward(x, w_hat, None) * r).sum().backward()
    expected = torch.sign(layer.scores.detach()) * layer.weight.detach() * w_hat.grad
    assert torch.allclose(layer.scores.grad, expected, atol=1e-5)


@pytest.mark.parametrize('kernel,dilation,padding', [(5, 2, 4), (3, 1, 1), (3, 2, 2), (5, 1, 0), (3, 1, 2)])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('size', [(11, 10), (6, 7)])  # at 6 x 7 the 5 x 5 kernels reach past the output map
def test_depthwise_fast_backward_equals_aten(kernel, dilation, padding, channels_last, size, monkeypatch):
    """A stride-1 depthwise conv on the CPU trains through prdarts_timm.depthwise (input gradient as a conv of the
    flipped kernel; the weight's as plane correlations where the kernel reaches past the output map): the same
    forward and the same gradients as aten's, up to float rounding."""
    from prdarts_timm.depthwise import takes_fast_backward
    correlations = []  # the calls of the plane-correlation weight gradient
    plane_correlation = prdarts_timm.depthwise._weight_grad_by_plane_correlation
    monkeypatch.setattr(prdarts_timm.depthwise, '_weight_grad_by_plane_correlation',
                        lambda *a: correlations.append(1) or plane_correlation(*a))
    torch.manual_seed(0)
    layer = PrunedConv2d(6, 6, kernel, padding=padding, dilation=dilation, groups=6, bias=False)
    x = torch.randn(3, 6, *size)
    if channels_last:
        layer, x = layer.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    assert takes_fast_backward(layer, x)
    out = layer(x)
    r = torch.randn_like(out)
    grad_x, grad_w = torch.autograd.grad((out * r).sum(), [x, layer.weight])
    reference = F.conv2d(x, layer.weight, padding=padding, dilation=dilation, groups=6)  # aten's backward
    ref_x, ref_w = torch.autograd.grad((reference * r).sum(), [x, layer.weight])
    assert torch.equal(out, reference)
    torch.testing.assert_close(grad_x, ref_x)
    torch.testing.assert_close(grad_w, ref_w)
    assert len(correlations) == (dilation * (kernel - 1) + 1 > min(out.shape[2:]))  # that path where it reaches past
    small = (torch.randn(1, 2, 6, 7, dtype=torch.double, requires_grad=True),
             torch.randn(2, 1, kernel, kernel, dtype=torch.double, requires_grad=True))
    conv = lambda a, b: prdarts_timm.depthwise.depthwise_conv2d(a, b, (padding,) * 2, (dilation,) * 2)
    assert torch.autograd.gradcheck(conv, small) and torch.autograd.gradgradcheck(conv, small)  # the search's
    # second-order step differentiates through the backward


def test_depthwise_fast_backward_only_where_it_is_the_same_conv():
    from prdarts_timm.depthwise import takes_fast_backward
    x = torch.randn(2, 6, 8, 8)
    depthwise = PrunedConv2d(6, 6, 3, padding=1, groups=6, bias=False)
    assert takes_fast_backward(depthwise, x)
    assert not takes_fast_backward(PrunedConv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False), x)
    assert not takes_fast_backward(PrunedConv2d(6, 6, 3, padding=1, groups=6, bias=True), x)
    assert not takes_fast_backward(PrunedConv2d(6, 12, 3, padding=1, groups=6, bias=False), x)  # a multiplier
    assert not takes_fast_backward(PrunedConv2d(6, 6, 3, padding=1, bias=False), x)
    assert not takes_fast_backward(PrunedConv2d(6, 6, 3, padding=3, groups=6, bias=False), x)  # past its reach
    assert not takes_fast_backward(depthwise, x.double())
    with torch.no_grad():
        assert not takes_fast_backward(depthwise, x)  # inference: aten's forward, nothing saved for a backward
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not takes_fast_backward(depthwise, x)


def test_dense_mode_is_plain_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    layer = PrunedConv2d.from_dense(conv)
    x = torch.randn(2, 4, 8, 8)
    assert layer.mode == 'dense' and layer.k == 1.0
    assert torch.equal(layer(x), conv(x))


def test_scaled_init_equals_layerwise_magnitude_pruning():
    torch.manual_seed(0)
    model = nn.Sequential(PrunedConv2d(8, 16, 3), PrunedConv2d(16, 16, 3, groups=16), PrunedLinear(16, 10))
    init_scores_scaled(model)
    for _, layer in pruned_layers(model):
        fan_in = layer.weight[0].numel()
        w = layer.weight.detach()
        assert torch.allclose(layer.scores, math.sqrt(6.0 / fan_in) * w / w.abs().max())
        for k in (0.01, 0.1, 0.5):
            n = kept_count(w.numel(), k)
            assert torch.equal(topk_mask(layer.scores, n), topk_mask(w, n))


def test_fixed_mode_never_changes_the_mask():
    torch.manual_seed(0)
    model = nn.Sequential(PrunedConv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), PrunedLinear(8 * 36, 4))
    set_pruning(model, 'fixed', k=0.1)
    masks = [layer.mask.clone() for _, layer in pruned_layers(model)]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(4, 3, 6, 6)), torch.randint(0, 4, (4,))).backward()
        opt.step()
        with torch.no_grad():  # even scores moved by hand must not move a fixed mask
            for _, layer in pruned_layers(model):
                layer.scores.mul_(-3.0).add_(torch.randn_like(layer.scores))
    model(torch.randn(1, 3, 6, 6))
    for mask, (_, layer) in zip(masks, pruned_layers(model)):
        assert torch.equal(mask, layer.mask)
        assert not layer.scores.requires_grad


def test_learn_mode_reselects_only_when_scores_move(monkeypatch):
    calls = []
    real = layers_mod.topk_mask
    monkeypatch.setattr(layers_mod, 'topk_mask', lambda s, n, out=None: calls.append(1) or real(s, n, out))
    layer = PrunedLinear(10, 10)
    layer.set_mode('learn')
    layer.set_k(0.2)
    x = torch.randn(3, 10)
    layer(x), layer(x), layer.eval(), layer(x)
    assert len(calls) == 1
    opt = torch.optim.SGD([layer.scores], lr=1.0)
    layer.train()
    layer(x).sum().backward()
    opt.step()
    before = layer.mask.clone()
    layer(x)
    assert len(calls) == 2
    layer.set_k(0.5)
    layer(x)
    assert len(calls) == 3 and int(layer.mask.sum()) == 50 and not torch.equal(before, layer.mask)
    layer.set_k(1.0)  # nothing pruned: the full mask is filled once, moving scores do not re-select it
    layer(x)
    layer(x).sum().backward()
    opt.step()
    layer(x)
    assert len(calls) == 4 and bool(layer.mask.all())


def test_set_pruning_freezes_the_right_tensors():
    model = nn.Sequential(PrunedConv2d(3, 4, 3), PrunedLinear(4, 2))
    set_pruning(model, 'learn', k=0.5)
    for _, layer in pruned_layers(model):
        assert layer.scores.requires_grad and not layer.weight.requires_grad and not layer.bias.requires_grad
    set_pruning(model, 'fixed', k=0.5)
    for _, layer in pruned_layers(model):
        assert not layer.scores.requires_grad and layer.weight.requires_grad
    set_pruning(model, 'dense')
    for _, layer in pruned_layers(model):
        assert layer.k == 1.0 and layer.weight.requires_grad and layer.mask is None and layer.scores is None
    assert list(model.state_dict()) == list(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2)).state_dict())


def test_bake_equals_masked_forward_and_reloads_sparse():
    torch.manual_seed(0)
    model = timm.create_model('prdarts_c10_mini', num_classes=10).eval()
    init_scores_scaled(model)
    set_pruning(model, 'fixed', k=0.05)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    report = sparsity_report(model)
    sd_keys = set(model.state_dict())
    assert any(k.endswith('.scores') for k in sd_keys) and any(k.endswith('.mask') for k in sd_keys)

    bake(model)
    assert torch.allclose(model(x), ref, atol=1e-6)
    state = model.state_dict()
    assert not any(k.endswith(('.scores', '.mask')) for k in state)
    assert sparsity_report(model).nonzero == report.nonzero

    fresh = timm.create_model('prdarts_c10_mini', num_classes=10).eval()
    fresh.load_state_dict(state)
    assert torch.allclose(fresh(x), ref, atol=1e-6)
    for _, layer in pruned_layers(fresh):
        assert layer.mode == 'fixed'
        assert torch.equal(layer.mask, (layer.weight != 0).float())
    assert sparsity_report(fresh).nonzero == report.nonzero


def test_checkpoint_with_mask_stays_sparse_after_load():
    src = nn.Sequential(PrunedLinear(20, 20))
    set_pruning(src, 'fixed', k=0.1)
    dst = nn.Sequential(PrunedLinear(20, 20))
    dst.load_state_dict(src.state_dict())
    assert dst[0].mode == 'fixed' and dst[0].num_keep == 40
    assert torch.equal(dst[0].pruned_weight(), src[0].pruned_weight())


def test_global_k_keeps_one_threshold_across_layers():
    torch.manual_seed(0)
    model = nn.Sequential(PrunedLinear(50, 40), PrunedLinear(40, 10))
    set_pruning(model, 'learn', k=0.1)  # creates the scores
    with torch.no_grad():
        model[1].scores.mul_(10)  # the second layer's scores dominate the global ranking
    set_pruning(model, 'fixed', k=0.1, global_k=True)
    all_scores = torch.cat([model[0].scores.abs().flatten(), model[1].scores.abs().flatten()])
    total_keep = kept_count(all_scores.numel(), 0.1)
    assert sum(int(m.mask.sum()) for m in model) == total_keep
    threshold = torch.topk(all_scores, total_keep).values.min()
    for layer in model:
        assert (layer.scores.abs()[layer.mask.bool()] >= threshold).all()
        assert (layer.scores.abs()[~layer.mask.bool()] <= threshold).all()
    assert model[1].k > model[0].k


def test_convert_timm_models_keeps_outputs():
    torch.manual_seed(0)
    for name in ('mobilenetv2_100', 'resnet18'):
        model = timm.create_model(name, num_classes=10).eval()
        x = torch.randn(1, 3, 64, 64)
        ref = model(x)
        n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
        params = count_params(model)
        convert_to_pruned(model)
        assert sum(1 for _ in pruned_layers(model)) == n_layers
        assert count_params(model) == params
        assert torch.equal(model(x), ref)
        set_pruning(model, 'fixed', k=0.01)
        assert sparsity_report(model).sparsity > 0.98


def test_convert_refuses_conv_subclasses_it_cannot_copy():
    model = timm.create_model('tf_mobilenetv3_small_minimal_100', num_classes=10)
    with pytest.raises(TypeError, match='Conv2dSame'):
        convert_to_pruned(model)


def test_sparsity_report_counts_used_weights():
    model = nn.Sequential(PrunedConv2d(4, 8, 3), nn.Conv2d(8, 8, 1), PrunedLinear(8, 2))
    set_pruning(model, 'fixed', k=0.25)
    report = sparsity_report(model)
    assert [r.name for r in report.layers] == ['0', '1', '2']
    assert report.layers[0].nonzero == kept_count(4 * 8 * 9, 0.25)
    assert report.layers[1].nonzero == 64
    assert report.total == 4 * 8 * 9 + 64 + 16
    assert 'total' in str(report) and report.to_dict()['nonzero'] == report.nonzero


def test_learn_mode_checkpoint_holds_the_current_mask():
    torch.manual_seed(0)
    layer = PrunedLinear(20, 20)
    layer.set_mode('learn')
    layer.set_k(0.1)
    x = torch.randn(4, 20)
    opt = torch.optim.SGD([layer.scores], lr=10.0)
    layer(x).pow(2).sum().backward()
    opt.step()  # the scores moved; no forward since
    fresh = PrunedLinear(20, 20)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), layer(x))
    assert torch.equal(fresh.mask, topk_mask(layer.scores, layer.num_keep))


def test_loading_baked_weights_sets_trainable_tensors():
    src = nn.Sequential(PrunedLinear(10, 10))
    set_pruning(src, 'fixed', k=0.3)
    bake(src)
    dst = nn.Sequential(PrunedLinear(10, 10))
    set_pruning(dst, 'learn', k=0.5)
    dst.load_state_dict(src.state_dict())  # the plain weights replace the pruning state; their zeros stay
    assert dst[0].mode == 'fixed' and dst[0].weight.requires_grad and dst[0].bias.requires_grad
    assert dst[0].scores is None and dst[0].num_keep == kept_count(100, 0.3)
    assert list(dst.state_dict()) == ['0.weight', '0.bias']
    # a baked layer is a plain one and can be pruned again
    init_scores_scaled(src)
    set_pruning(src, 'learn', k=0.5)
    assert src[0].scores.requires_grad and src[0].num_keep == 50
