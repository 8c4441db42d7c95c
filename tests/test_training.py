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
