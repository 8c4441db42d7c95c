"""The pieces both recipes share (prdarts_timm.training, distributed.averaged_step), called directly."""
import pytest
import timm
import torch
import torch.nn as nn

import prdarts_timm  # noqa: F401  (registers the models)
from prdarts_timm.config import ConfigError
from prdarts_timm.distributed import averaged_step
from prdarts_timm.training import accuracy, check_num_processes, data_transforms, input_size, takes_cifar_inputs


def test_resume_refuses_another_process_count():
    check_num_processes(2, 2)
    with pytest.raises(ConfigError, match=r'written by 2 process\(es\) and is resumed with 1'):
        check_num_processes(2, 1)


def test_32x32_models_get_the_darts_transforms_others_timms():
    small = timm.create_model('prdarts_c10_mini', C=4, layers=3)
    big = timm.create_model('prdarts_in1k', C=4, layers=3)
    assert takes_cifar_inputs(small) and input_size(small) == (3, 32, 32)
    assert not takes_cifar_inputs(big) and input_size(big) == (3, 224, 224)
    train, _ = data_transforms(small, cutout=16)
    assert any(type(t).__name__ == 'Cutout' for t in train.transforms)
    with pytest.raises(ConfigError, match='cutout applies to 32x32 inputs'):
        data_transforms(big, cutout=16)


def test_accuracy_counts_top1_top5_and_the_loss():
    torch.manual_seed(0)
    model = nn.Linear(8, 10).train()
    data = [(torch.randn(5, 8), torch.randint(0, 10, (5,))) for _ in range(3)]
    result = accuracy(model, data, torch.device('cpu'), top5=True)
    assert model.training  # mode restored
    x, y = torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data])
    with torch.no_grad():
        logits = model(x)
    correct1 = int((logits.argmax(1) == y).sum())
    assert result['num_samples'] == 15 and result['correct_top1'] == correct1
    assert result['top1'] == 100.0 * correct1 / 15
    assert result['correct_top5'] == int((logits.topk(5, 1).indices == y[:, None]).any(1).sum())
    assert result['loss'] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert accuracy(model, data, torch.device('cpu'))['top5'] is None


def test_averaged_step_is_a_plain_clipped_step_in_one_process():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    unused = nn.Parameter(torch.ones(2))
    x = torch.randn(6, 4)
    opt_a = torch.optim.SGD([*a.parameters(), unused], lr=0.1)
    params = [*a.parameters(), unused]
    loss = a(x).pow(2).sum()
    averaged_step(opt_a, params, torch.autograd.grad(loss, params, allow_unused=True), grad_clip=0.5)
    assert torch.equal(unused.grad, torch.zeros(2))
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    b(x).pow(2).sum().backward()
    nn.utils.clip_grad_norm_(list(b.parameters()), 0.5)
    opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def _frozen_bn_model():
    torch.manual_seed(0)
    model = timm.create_model('prdarts_c10_mini', C=4, layers=3, auxiliary=True).train()
    for m in model.modules():  # BN normalises with its running statistics: micro-batches then add up exactly
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


@pytest.mark.parametrize('grad_clip', [0.0, 0.1])  # the loss scaled by 1/2; the clip applied to the whole update
def test_two_accumulated_batches_of_32_make_the_update_of_one_batch_of_64(grad_clip):
    from accelerate import Accelerator
    from prdarts_timm.retrain.step import TrainingForward, accumulated_step

    torch.manual_seed(1)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    accelerator = Accelerator(cpu=True)
    start = _frozen_bn_model().state_dict()

    def train(accumulate, batch):
        model = _frozen_bn_model()
        accelerator.free_memory()
        accelerator.gradient_accumulation_steps = accumulate
        net, optimizer = accelerator.prepare(TrainingForward(model),
                                             torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9))
        for i in range(0, 64, batch):
            xb, yb = x[i:i + batch], y[i:i + batch]

            def loss_of():
                logits, aux = net(xb)
                return nn.functional.cross_entropy(logits, yb) + 0.4 * nn.functional.cross_entropy(aux, yb)
            accumulated_step(accelerator, net, optimizer, loss_of, grad_clip)
        return model.state_dict()

    one_step = train(1, 64)
    accumulated = train(2, 32)
    two_steps = train(1, 32)
    moved = [k for k in start if not torch.equal(start[k], one_step[k])]
    assert moved  # the update changed the weights
    for k in start:
        torch.testing.assert_close(accumulated[k], one_step[k], rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.allclose(two_steps[k], one_step[k], rtol=1e-4, atol=1e-5) for k in moved)
