"""`recipes/search.py` end to end, as real processes: a reduced demo run, determinism, resume after a kill,
two gloo processes, and bad input."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prdarts_timm import Genotype

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--init_channels', '2', '--layers', '3', '--channels_last', 'false', '--batch_size', '8', '--max_steps_per_epoch', '2',
        '--pretrain_epochs', '1', '--prune_epochs', '1', '--finetune_epochs', '1', '--checkpoint_every', '2',
        '--log_every', '1', '--prune_arch_step', 'true', '--cpu_threads', '1']  # one thread each, as launched side by side
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
LAUNCH = [sys.executable, '-m', 'accelerate.commands.launch']


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def search_cmd(out, *extra, launcher=()):
    return [*launcher, *([] if launcher else [sys.executable]), 'recipes/search.py', '--cpu', '--output', str(out),
            *TINY, *extra]


def search(out, *extra, launcher=(), timeout=600):
    return subprocess.run(search_cmd(out, *extra, launcher=launcher), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def final_alpha(out: Path) -> torch.Tensor:
    newest = sorted((out / 'checkpoints').glob('step_*'))[-1]
    state = torch.load(newest / 'custom_checkpoint_0.pkl', weights_only=True)
    return torch.cat([state['model']['alphas_normal'].flatten(), state['model']['alphas_reduce'].flatten()])


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('search') / 'run'
    result = search(out, launcher=[*LAUNCH, '--num_processes', '1', '--num_machines', '1', '--mixed_precision',
                                   'no', '--dynamo_backend', 'no'])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_reduced_main_command_writes_genotype_and_pictures(demo_run):
    genotype = Genotype.load(demo_run / 'genotype.json')
    assert len(genotype.normal) == 8
    assert sorted(p.name for p in (demo_run / 'genotypes').iterdir()) == [
        'finetune_000.json', 'pretrain_000.json', 'prune_000.json']
    for picture in ('cells.png', 'alpha_history.png'):
        assert (demo_run / picture).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (demo_run / 'config.yaml').exists() and (demo_run / 'alpha_history.json').exists()
    assert not list(demo_run.rglob('*.tmp'))


def test_same_seed_same_genotype_and_bitwise_alpha(demo_run, tmp_path):
    again, other = tmp_path / 'again', tmp_path / 'other_seed'
    other_run = subprocess.Popen(search_cmd(other, '--seed', '7'), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # side by side: one thread each
    result = search(again)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(final_alpha(again), final_alpha(demo_run))
    assert (again / 'genotype.json').read_text() == (demo_run / 'genotype.json').read_text()
    assert other_run.wait(timeout=600) == 0
    assert not torch.equal(final_alpha(other), final_alpha(demo_run))


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    longer = ['--max_steps_per_epoch', '3', '--pretrain_epochs', '2', '--finetune_epochs', '2', '--second_order',
              'true', '--checkpoint_every', '4']
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    uninterrupted = subprocess.Popen(search_cmd(full, *longer), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # side by side with the killed run
    cmd = search_cmd(killed, *longer)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (killed / 'checkpoints' / 'step_00000004').exists():  # kill once a mid-run checkpoint exists
        assert proc.poll() is None and time.time() < deadline, 'search ended before it could be killed'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / 'genotype.json').exists()
    resumed = subprocess.run(cmd + ['--resume'], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed from' in resumed.stdout + resumed.stderr
    assert uninterrupted.wait(timeout=600) == 0
    assert torch.equal(final_alpha(killed), final_alpha(full))
    assert (killed / 'genotype.json').read_text() == (full / 'genotype.json').read_text()


def test_two_gloo_processes_keep_alpha_identical(tmp_path):
    """First- and second-order searches, each as 2 gloo processes, started side by side."""
    procs = {}
    for order in ('false', 'true'):
        launcher = [*LAUNCH, '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision',
                    'no', '--dynamo_backend', 'no', '--main_process_port', _free_port()]
        procs[order] = subprocess.Popen(search_cmd(tmp_path / order, '--second_order', order, launcher=launcher),
                                        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import json
    for order, proc in procs.items():
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        out = tmp_path / order
        ranks = json.loads((out / 'ranks.json').read_text())
        assert [r['rank'] for r in ranks] == [0, 1]
        assert ranks[0]['alpha_sha256'] == ranks[1]['alpha_sha256'], order
        assert ranks[0]['genotype'] == ranks[1]['genotype'] == Genotype.load(out / 'genotype.json').to_dict()


def _fails(result, *fragments):
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]


def test_bad_input_is_a_clear_error_and_leaves_outputs_intact(demo_run, tmp_path):
    config = tmp_path / 'bad.yaml'
    config.write_text('init_channel: 4\n')
    (tmp_path / 'empty' / 'train').mkdir(parents=True)
    before = {p: p.read_bytes() for p in demo_run.rglob('*') if p.is_file()}
    cases = dict(
        unknown_key=(search_cmd(tmp_path / 'a', '--config', str(config)), "unknown config key(s) ['init_channel']"),
        bad_k=(search_cmd(tmp_path / 'k', '--k', '2'), 'error: ConfigError: invalid config'),
        missing_root=(search_cmd(tmp_path / 'b', '--data_source', 'imagefolder', '--data_root',
                                 str(tmp_path / 'missing')), 'error: DatasetNotFoundError'),
        empty_root=(search_cmd(tmp_path / 'c', '--data_source', 'imagefolder', '--data_root', str(tmp_path / 'empty')),
                    'DatasetNotFoundError'),
        other_config=(search_cmd(demo_run, '--k', '0.05', '--resume'), "another config (keys that differ: ['k'])"),
        overwrite=(search_cmd(demo_run), 'error: ConfigError', 'already holds a search run'),
        tiny_channels_last=(search_cmd(tmp_path / 'd', '--channels_last', 'true'), 'error: ConfigError',
                            'init_channels 2 with channels_last'),
    )
    procs = {name: subprocess.Popen(case[0], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
             for name, case in cases.items()}  # each fails while starting up: run them side by side
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        _fails(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), *cases[name][1:])
    assert {p: p.read_bytes() for p in demo_run.rglob('*') if p.is_file()} == before

