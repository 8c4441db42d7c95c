"""How a run starts on accelerate: the launcher's precision unless the recipe sets one, every core on a CPU
(shared among the processes), the trackers; launch.json records all of it; a resume in another precision is
refused."""
import json
import os
import subprocess
import sys

import pytest

from prdarts_timm.training import cpu_threads_per_process
from test_train_recipe import ENV, LAUNCH, ROOT, _fails, _free_port, _ok, run_all, train_cmd

CORES = len(os.sched_getaffinity(0))
SEARCH_TINY = ['--batch_size', '8', '--max_steps_per_epoch', '1', '--pretrain_epochs', '1', '--prune_epochs', '1',
               '--finetune_epochs', '1', '--init_channels', '4', '--layers', '3']


def every_core(cmd):
    """``cmd`` without the suite's ``--cpu_threads 1``: the threads as a user's launch gets them."""
    i = cmd.index('--cpu_threads')
    return cmd[:i] + cmd[i + 2:]


def launch_record(folder):
    return json.loads((folder / 'launch.json').read_text())


def test_the_launcher_decides_precision_and_every_core_works(tmp_path):
    bf16 = [*LAUNCH, '--num_processes', '1']
    bf16[bf16.index('--mixed_precision') + 1] = 'bf16'  # accelerate launch --mixed_precision bf16
    results = run_all(dict(
        train_bf16=every_core(train_cmd(tmp_path / 'bf16', '--stages', '[pretrain]', launcher=bf16)),
        train_two=every_core(train_cmd(tmp_path / 'two', '--stages', '[pretrain]', launcher=[
            'env', 'ACCELERATE_GRADIENT_ACCUMULATION_STEPS=2',  # what accelerate reads (its DeepSpeed config sets it)
            *LAUNCH, '--multi_gpu', '--num_processes', '2', '--main_process_port', _free_port()])),
        # DDP with a no_sync batch: the recipe checks the ranks' weights equal
        search_bf16=[*bf16, 'recipes/search.py', '--cpu', '--output', str(tmp_path / 'search'), *SEARCH_TINY],
        recipe_wins=train_cmd(tmp_path / 'fp32', '--stages', '[pretrain]', '--mixed_precision', 'no',
                              '--log_with', 'none', launcher=bf16),  # the suite's --cpu_threads 1 too
    ))
    for result in results.values():
        _ok(result)
    one = launch_record(tmp_path / 'bf16')
    assert one['mixed_precision'] == 'bf16' and one['cpu_threads_per_process'] == CORES
    assert one['trackers'] == ['tensorboard'] and list((tmp_path / 'bf16' / 'train').rglob('events.out.tfevents*'))
    two = launch_record(tmp_path / 'two')
    assert two['num_processes'] == 2 and two['cpu_threads_per_process'] == max(1, CORES // 2)
    assert two['mixed_precision'] == 'no' and two['gradient_accumulation_steps'] == 2
    assert one['gradient_accumulation_steps'] == 1
    assert launch_record(tmp_path / 'search')['mixed_precision'] == 'bf16'
    fp32 = launch_record(tmp_path / 'fp32')
    assert fp32['mixed_precision'] == 'no' and fp32['cpu_threads_per_process'] == 1 and fp32['trackers'] == []

    resumed = subprocess.run(every_core(train_cmd(tmp_path / 'bf16', '--stages', '[pretrain]', '--resume')), cwd=ROOT,
                             env=ENV, capture_output=True, text=True, timeout=300)
    _fails(resumed, 'ConfigError', "started with mixed_precision 'bf16'", "resumed with 'no'",
           '--mixed_precision bf16')


def test_threads_per_process(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.delenv('ACCELERATE_DYNAMO_BACKEND', raising=False)
    assert cpu_threads_per_process(3, 1) == 3
    assert cpu_threads_per_process(None, 1) == CORES
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    assert cpu_threads_per_process(None, 1) == 1  # set by hand: asked for
    monkeypatch.setenv('ACCELERATE_DYNAMO_BACKEND', 'NO')
    assert cpu_threads_per_process(None, 1) == CORES  # accelerate launch's default: not a request
    monkeypatch.setenv('OMP_NUM_THREADS', '5')
    assert cpu_threads_per_process(None, 1) == 5  # --num_cpu_threads_per_process 5


def test_launch_command_names_the_launcher_that_started_the_process(monkeypatch):
    from types import SimpleNamespace

    from prdarts_timm.training import launch_command

    monkeypatch.setattr(sys, 'argv', ['recipes/train.py', '--cpu', '--stages', '[pretrain]'])
    monkeypatch.delenv('ACCELERATE_DYNAMO_BACKEND', raising=False)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    one = SimpleNamespace(num_processes=1)
    assert launch_command(one) == "OMP_NUM_THREADS=1 python recipes/train.py --cpu --stages '[pretrain]'"
    monkeypatch.delenv('OMP_NUM_THREADS')
    assert launch_command(one) == "python recipes/train.py --cpu --stages '[pretrain]'"
    monkeypatch.setenv('ACCELERATE_DYNAMO_BACKEND', 'NO')  # accelerate launch sets it for every run
    assert launch_command(one) == "accelerate launch recipes/train.py --cpu --stages '[pretrain]'"
    assert launch_command(SimpleNamespace(num_processes=2)).startswith('accelerate launch --multi_gpu --num_processes 2 ')


def test_a_resume_with_another_accumulation_is_refused_with_the_way_to_set_it(tmp_path):
    from prdarts_timm.config import ConfigError
    from prdarts_timm.run_folder import Launch

    Launch(gradient_accumulation_steps=None).check_resumed_as(Launch(gradient_accumulation_steps=2), tmp_path)
    with pytest.raises(ConfigError, match=r"started with gradient_accumulation_steps 2 .* resumed with 1: .*"
                                          r"ACCELERATE_GRADIENT_ACCUMULATION_STEPS=2 accelerate launch .*"
                                          r"--gradient_accumulation_steps 2 of the recipe"):
        Launch(gradient_accumulation_steps=2).check_resumed_as(Launch(gradient_accumulation_steps=1), tmp_path)
