"""The GPU path (``pytest -m cuda``; skipped where torch sees no CUDA device): the pruned layers, the search step,
a bf16 retraining step and the tensor augmentation on the GPU agree with the CPU, and what stays CPU-only says so.
"""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import prdarts_timm
from prdarts_timm import bake, set_pruning
from prdarts_timm.compact import compact
from prdarts_timm.deploy import DeployError
from prdarts_timm.layers import PrunedConv2d, topk_mask
from prdarts_timm.search import Architect, Phase, Supernet, enter_phase, search_step, trained_parameters
from prdarts_timm.tensor_data import augment_batch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device (run on a GPU machine)')]
CUDA = torch.device('cuda')


@pytest.fixture(autouse=True)
def no_tf32():
    """Comparisons with the CPU in full float32 (TF32 convolutions and matmuls round to 10 mantissa bits)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_topk_masks_equal_the_cpu_ones():
    g = torch.Generator().manual_seed(0)
    for shape in ((64, 32, 3, 3), (10, 512), (96, 1, 5, 5)):
        scores = torch.randn(shape, generator=g)
        for keep in (1, scores.numel() // 100 + 1, scores.numel() // 2, scores.numel() - 3):
            assert torch.equal(topk_mask(scores, keep), topk_mask(scores.to(CUDA), keep).cpu()), (shape, keep)
    cl = torch.randn(32, 16, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    assert torch.equal(topk_mask(cl, 50), topk_mask(cl.to(CUDA), 50).cpu())


@pytest.mark.parametrize('mode', ['dense', 'learn', 'fixed'])
def test_pruned_layer_gradients_match_the_cpu(mode):
    torch.manual_seed(0)
    layer = PrunedConv2d(8, 16, 3, padding=1)
    set_pruning(layer, mode, k=0.1 if mode != 'dense' else None)
    gpu = copy.deepcopy(layer).to(CUDA)
    x = torch.randn(4, 8, 12, 12)
    for net, inp in ((layer, x), (gpu, x.to(CUDA))):
        net(inp).square().sum().backward()
    for (name, p), q in zip(layer.named_parameters(), gpu.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-3, msg=name)


@pytest.mark.parametrize('phase_name,second_order', [
    ('pretrain', False), ('pretrain', True), ('prune', False), ('prune', True), ('finetune', False),
    ('finetune', True)])
def test_search_step_on_the_gpu_follows_the_cpu(phase_name, second_order):
    """Losses and alpha after one step agree; in the prune phase's second-order step the finite difference moves
    the scores across mask flips (see Architect.alpha_grads), so rounding decides it: that case only has to run."""
    losses = []
    for device, fmt in (('cpu', torch.contiguous_format), (CUDA, torch.channels_last)):
        torch.manual_seed(0)
        model = Supernet(C=4, layers=3)
        phase = Phase(phase_name, 1, 0.025, k=0.1)
        enter_phase(model, phase)
        model.to(device, memory_format=fmt)
        optimizers = {g: torch.optim.SGD(p, lr=0.025) for g, p in trained_parameters(model, phase).items()}
        architect = Architect(model, torch.optim.SGD(model.arch_parameters(), lr=0.1), second_order=second_order)  # Adam's
        # step is +-lr wherever a gradient is near 0, whatever its rounding: SGD's follows the gradient
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
        batch = (x.to(device).contiguous(memory_format=fmt), y.to(device))
        stats = search_step(model, phase, architect, optimizers, batch, batch)
        losses.append({k: v.item() for k, v in stats.items()})
        losses.append(torch.cat([a.detach().cpu().reshape(-1) for a in model.arch_parameters()]))
    assert losses[0].keys() == losses[2].keys()
    for key in losses[0]:  # train-mode BN over 8 samples of 4 channels magnifies rounding: loose tolerances
        assert abs(losses[0][key] - losses[2][key]) < 1e-2 * abs(losses[0][key]), (key, losses[0], losses[2])
    if (phase_name, second_order) == ('prune', True):
        assert torch.isfinite(losses[3]).all()
        return
    torch.testing.assert_close(losses[3], losses[1], rtol=1e-2, atol=2e-4)


def test_bf16_retraining_step_learns():
    torch.manual_seed(0)
    model = timm.create_model('prdarts_c10_mini', C=8, layers=5, auxiliary=True).to(
        CUDA, memory_format=torch.channels_last)
    set_pruning(model, 'fixed', k=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(32, 3, 32, 32, device=CUDA).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,), device=CUDA)
    masks = {n: m.mask.clone() for n, m in prdarts_timm.pruned_layers(model)}
    losses = []
    for _ in range(8):
        with torch.autocast('cuda', dtype=torch.bfloat16):
            logits, aux = model.forward_aux(x)
            loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, layer in prdarts_timm.pruned_layers(model):
        assert torch.equal(layer.mask, masks[name]), name
        assert not (layer.pruned_weight() * (1 - layer.mask)).any(), name


def test_augmentation_on_the_gpu_equals_the_cpu():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    index = torch.arange(500, 564)
    cpu = augment_batch(images, index, seed=1, epoch=2, cutout=16)
    gpu = augment_batch(images.to(CUDA), index.to(CUDA), seed=1, epoch=2, cutout=16, channels_last=True)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-6)


def test_compaction_on_the_gpu_is_a_clear_error():
    model = bake(prdarts_timm.set_random_masks(timm.create_model('prdarts_c10_mini', C=8, layers=5), k=0.1)).eval()
    with pytest.raises(DeployError, match='runs on the CPU'):
        compact(model.to(CUDA))
