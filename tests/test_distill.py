"""Distillation (``distill_from``): the loss, the teacher's forms, and `recipes/train.py` with a teacher as real
processes: the teacher changes the run and never itself, a kill and resume gives the uninterrupted run's weights,
two gloo processes stay identical, a teacher that does not fit is a clear error."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from prdarts_timm.distill import check_teacher, distillation_loss, load_teacher
from prdarts_timm.errors import ConfigError
from prdarts_timm.retrain import build_model
from test_train_recipe import ENV, LAUNCH, ROOT, _fails, _free_port, _ok, run_all, train_cmd


def test_loss_is_the_softened_kl_times_t_squared():
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    assert distillation_loss(t, t, 4.0).abs() < 1e-6
    expected = (F.softmax(t / 2, 1) * (F.log_softmax(t / 2, 1) - F.log_softmax(s / 2, 1))).sum(1).mean() * 4
    torch.testing.assert_close(distillation_loss(s, t, 2.0), expected)
    assert distillation_loss(s.bfloat16(), t.bfloat16(), 2.0).dtype == torch.float32


def test_distillation_loss_goes_down_and_the_teacher_stays():
    torch.manual_seed(0)
    teacher = timm.create_model('prdarts_c10_mini', num_classes=10, C=8, layers=3).eval()
    student = build_model('prdarts_c10_mini', dict(num_classes=10, C=8, layers=3))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(16, 3, 32, 32)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        with torch.no_grad():
            target = teacher(x)
        loss = distillation_loss(student(x), target, 4.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


@pytest.fixture(scope='module')
def dense(tmp_path_factory):
    """A tiny dense run (the teacher) and one with 12 classes (a teacher that does not fit)."""
    tmp = tmp_path_factory.mktemp('distill')
    results = run_all(dict(
        dense=train_cmd(tmp / 'dense', '--stages', '[pretrain]', '--max_steps_per_epoch', '3'),
        classes=train_cmd(tmp / 'classes', '--stages', '[pretrain]', '--num_classes', '12', '--auxiliary_weight', '0'),
    ))
    for result in results.values():
        _ok(result)
    return tmp


def sparse_cmd(dense, out, *extra, launcher=()):
    return train_cmd(out, '--stages', '[prune, finetune]', '--source', str(dense / 'dense' / 'pretrain' /
                     'model.safetensors'), '--max_steps_per_epoch', '3', '--prune_epochs', '2', '--finetune_epochs',
                     '2', *extra, launcher=launcher)


def test_teacher_forms(dense, tmp_path):
    """A run folder, its stage folder, a checkpoint in it and one outside it: the same network."""
    x = torch.randn(2, 3, 32, 32)
    args = dict(num_classes=10, auxiliary=True)
    stage = dense / 'dense' / 'pretrain'
    outside = tmp_path / 'teacher.safetensors'
    outside.write_bytes((stage / 'model.safetensors').read_bytes())
    teachers = [load_teacher(str(spec), 'prdarts_c10_mini', args)
                for spec in (dense / 'dense', stage, stage / 'model.safetensors', outside)]
    with torch.no_grad():
        logits = [t(x) for t in teachers]
    for t, out in zip(teachers, logits):
        assert not t.training and not any(p.requires_grad for p in t.parameters())
        assert t.aux_head is None  # the inference network: no training-only parts
        torch.testing.assert_close(out, logits[0], atol=0, rtol=0)
    with pytest.raises(ConfigError, match='no file, no folder and no model name'):
        load_teacher(str(tmp_path / 'nothing'), 'prdarts_c10_mini', args)
    with pytest.raises(ConfigError, match=r'inputs of \(3, 224, 224\).*same input size'):
        check_teacher(timm.create_model('resnet18', num_classes=10), teachers[0], 'resnet18')


@pytest.fixture(scope='module')
def distilled(dense, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('distilled')
    teacher = ['--distill_from', str(dense / 'dense' / 'pretrain'), '--distill_weight', '0.7']
    results = run_all(dict(
        plain=sparse_cmd(dense, tmp / 'plain'),
        distilled=sparse_cmd(dense, tmp / 'distilled', *teacher),
        ddp=sparse_cmd(dense, tmp / 'ddp', *teacher, launcher=[*LAUNCH, '--multi_gpu', '--num_processes', '2',
                                                                '--main_process_port', _free_port()]),
    ))
    for result in results.values():
        _ok(result)
    return tmp, teacher


def test_the_teacher_changes_the_run_and_never_itself(dense, distilled):
    tmp, _ = distilled
    teacher_files = {p: p.read_bytes() for p in (dense / 'dense').rglob('*') if p.is_file()}
    for stage in ('prune', 'finetune'):
        plain, taught = (load_file(tmp / run / stage / 'model.safetensors') for run in ('plain', 'distilled'))
        assert any(not torch.equal(plain[k], taught[k]) for k in plain), stage
    assert {p: p.read_bytes() for p in (dense / 'dense').rglob('*') if p.is_file()} == teacher_files
    config = (tmp / 'distilled' / 'config.yaml').read_text()
    assert f'distill_from: {dense / "dense" / "pretrain"}' in config and 'distill_weight: 0.7' in config


def test_two_processes_with_a_teacher_stay_identical(distilled):
    tmp, _ = distilled
    for stage in ('prune', 'finetune'):
        ranks = json.loads((tmp / 'ddp' / stage / 'ranks.json').read_text())
        assert [r['rank'] for r in ranks] == [0, 1] and ranks[0]['state_sha256'] == ranks[1]['state_sha256']


def test_resume_with_a_teacher_equals_the_uninterrupted_run(dense, distilled, tmp_path):
    tmp, teacher = distilled
    killed = tmp_path / 'killed'
    proc = subprocess.Popen(sparse_cmd(dense, killed, *teacher), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / 'finetune' / 'checkpoints' / 'step_00000004').exists():  # inside the finetune stage
        assert proc.poll() is None and time.time() < deadline, 'training ended before it could be killed'
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / 'finetune' / 'summary.json').exists()
    resumed = subprocess.run([sys.executable, 'recipes/train.py', '--cpu', '--output', str(killed), '--resume'],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    _ok(resumed)
    assert 'resumed finetune from' in resumed.stdout + resumed.stderr
    reference = load_file(tmp / 'distilled' / 'finetune' / 'model.safetensors')
    for key, value in load_file(killed / 'finetune' / 'model.safetensors').items():
        assert torch.equal(value, reference[key]), key


def test_a_teacher_that_does_not_fit_is_refused(dense, tmp_path):
    results = run_all(dict(
        classes=sparse_cmd(dense, tmp_path / 'a', '--distill_from', str(dense / 'classes')),
        nothing=sparse_cmd(dense, tmp_path / 'b', '--distill_from', 'no_such_teacher'),
        weight=sparse_cmd(dense, tmp_path / 'c', '--distill_from', str(dense / 'dense'), '--distill_weight', '1.5'),
    ))
    _fails(results['classes'], 'ConfigError', 'predicts 12 classes and the student 10', 'same classes')
    _fails(results['nothing'], 'ConfigError', "distill_from 'no_such_teacher' is no file")
    _fails(results['weight'], 'ConfigError', 'distill_weight must be in [0, 1]')
