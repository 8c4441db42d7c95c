"""`recipes/train.py` end to end, as real processes: the three stages for a PR-DARTS network and a converted
timm MobileNet-v2, resume after a kill, two gloo processes, bad input; evaluate.py on the baked output."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from prdarts_timm import kept_count, topk_mask
from prdarts_timm.run_folder import TrainRun

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--batch_size', '8', '--max_steps_per_epoch', '2', '--pretrain_epochs', '1', '--prune_epochs', '1',
        '--finetune_epochs', '1', '--eval_max_batches', '1', '--checkpoint_every', '2', '--log_every', '1',
        '--cpu_threads', '1']  # one thread per process, launched or not: runs side by side, bitwise comparisons
MOBILENET = ['--model', 'mobilenetv2_100', '--cifar_stem', 'true', '--auxiliary_weight', '0', '--k', '0.1',
             '--global_k', 'true', '--model_ema', 'true', '--mixup', '0.2', '--cutmix', '0.2',
             '--mixed_precision', 'bf16', '--drop_path_rate', '0.1']
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
LAUNCH = [sys.executable, '-m', 'accelerate.commands.launch', '--num_machines', '1', '--mixed_precision', 'no',
          '--dynamo_backend', 'no']


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def train_cmd(out, *extra, launcher=()):
    return [*launcher, *([] if launcher else [sys.executable]), 'recipes/train.py', '--cpu', '--output', str(out),
            *TINY, *extra]


def run_all(cmds, timeout=600):
    """Start every command at once (each spends much of its time importing torch), wait for all."""
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, cmd in cmds.items()}
    done = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=timeout)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return done


def _ok(result):
    assert result.returncode == 0, result.stderr[-3000:]


def masks(state):
    return {k[:-len('.mask')]: v for k, v in state.items() if k.endswith('.mask')}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('train')
    results = run_all(dict(
        prdarts=train_cmd(tmp / 'prdarts', '--max_steps_per_epoch', '3', '--pretrain_epochs', '2', '--prune_epochs',
                          '3', '--drop_path_rate', '0.2',
                          launcher=[*LAUNCH, '--num_processes', '1']),
        mobilenet=train_cmd(tmp / 'mobilenet', *MOBILENET),
    ))
    for result in results.values():
        _ok(result)
    return tmp


def test_prdarts_three_stages(runs):
    out = runs / 'prdarts'
    pretrain, prune, finetune = (load_file(out / s / 'model.safetensors') for s in ('pretrain', 'prune', 'finetune'))
    # pretrain is dense: no pruning state saved at all (it is opt-in), and no weight of a pruned layer is zero
    assert not masks(pretrain) and not any(k.endswith('.scores') for k in pretrain)
    assert all(int((pretrain[f'{name}.weight'] == 0).sum()) == 0 for name in masks(prune))
    # prune: exactly k = 0.01 kept in every layer, and the weights (and every other parameter) as pretrained
    for name, mask in masks(prune).items():
        assert int(mask.sum()) == kept_count(mask.numel(), 0.01), name
        assert torch.equal(prune[f'{name}.weight'], pretrain[f'{name}.weight']), name
    for key, value in pretrain.items():
        if not key.endswith(('.scores', '.mask', 'running_mean', 'running_var', 'num_batches_tracked')):
            assert torch.equal(prune[key], value), key
    # the scores were learned: the final masks are not the magnitude pruning the stage started from
    magnitude = {name: topk_mask(pretrain[f'{name}.weight'], kept_count(mask.numel(), 0.01))
                 for name, mask in masks(prune).items()}
    assert sum(not torch.equal(mask, magnitude[name]) for name, mask in masks(prune).items()) >= 3
    # finetune: the prune stage's mask, untouched; the kept weights trained
    assert masks(finetune).keys() == masks(prune).keys()
    for name, mask in masks(finetune).items():
        assert torch.equal(mask, masks(prune)[name]), name
    assert sum(not torch.equal(finetune[f'{n}.weight'], prune[f'{n}.weight']) for n in masks(prune)) >= 3
    # baked: W * mask, pruned weights exact zeros, no scores / masks / auxiliary head
    baked = load_file(out / 'finetune' / 'model_baked.safetensors')
    assert not any(k.endswith(('.scores', '.mask')) or k.startswith('aux_head.') for k in baked)
    for name, mask in masks(finetune).items():
        if name.startswith('aux_head.'):
            continue
        assert torch.equal(baked[f'{name}.weight'], finetune[f'{name}.weight'] * mask), name
        assert int(torch.count_nonzero(baked[f'{name}.weight'])) <= kept_count(mask.numel(), 0.01)
    summary = json.loads((out / 'finetune' / 'summary.json').read_text())
    assert summary['steps'] == 3 and len(summary['history']) == 1 and summary['source'].endswith('prune/model.safetensors')
    assert 0.985 < summary['weights']['sparsity'] < 0.995
    assert json.loads((out / 'prune' / 'summary.json').read_text())['steps'] == 9
    assert not list(out.rglob('*.tmp'))


def test_mobilenet_global_k_ema_bf16_mixup(runs):
    out = runs / 'mobilenet'
    pretrain, prune, finetune = (load_file(out / s / 'model.safetensors') for s in ('pretrain', 'prune', 'finetune'))
    assert prune['conv_stem.weight'].shape == (32, 3, 3, 3)
    kept = {name: int(m.sum()) for name, m in masks(prune).items()}
    total = sum(m.numel() for m in masks(prune).values())
    assert sum(kept.values()) == kept_count(total, 0.1)  # one global threshold ...
    assert len({round(kept[n] / masks(prune)[n].numel(), 3) for n in kept}) > 3  # ... so layers differ
    # ... over the final scores (the per-layer counts followed the scores while they were learned)
    names = list(masks(prune))
    flat = torch.cat([prune[f'{n}.scores'].abs().flatten() for n in names])
    threshold = torch.topk(flat, kept_count(total, 0.1)).values.min()
    assert {n: int((prune[f'{n}.scores'].abs() >= threshold).sum()) for n in names} == kept
    for name in kept:
        assert torch.equal(prune[f'{name}.weight'], pretrain[f'{name}.weight'])
        assert torch.equal(masks(finetune)[name], masks(prune)[name])
    baked = load_file(out / 'finetune' / 'model_baked.safetensors')
    for name, mask in masks(finetune).items():
        assert torch.equal(baked[f'{name}.weight'], finetune[f'{name}.weight'] * mask), name
    assert (out / 'pretrain' / 'model_ema.safetensors').exists() and (out / 'finetune' / 'model_ema.safetensors').exists()
    assert not (out / 'prune' / 'model_ema.safetensors').exists()  # EMA of scores is not a thing
    summary = json.loads((out / 'finetune' / 'summary.json').read_text())
    assert summary['ema_top1'] is not None and summary['cifar_stem'] is True


def test_evaluate_reads_the_baked_output(runs, tmp_path):
    """--run builds the run's inference network as the run did (timm MobileNet, CIFAR stem, 10 classes)."""
    report = tmp_path / 'eval.json'
    result = subprocess.run([sys.executable, 'recipes/evaluate.py', '--run', str(runs / 'mobilenet'),
                             '--max_batches', '1', '--batch_size', '8', '--no_latency', '--output', str(report)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    _ok(result)
    data = json.loads(report.read_text())
    summary = json.loads((runs / 'mobilenet' / 'finetune' / 'summary.json').read_text())
    assert data['weights']['nonzero'] == summary['weights']['nonzero']
    assert data['input_size'] == [3, 32, 32] and data['model'] == 'mobilenetv2_100'
    assert data['checkpoint'] == str(runs / 'mobilenet' / 'finetune' / 'model_baked.safetensors')
    both = subprocess.run([sys.executable, 'recipes/evaluate.py', '--run', str(runs / 'mobilenet'), '--checkpoint',
                           'x.safetensors'], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert both.returncode == 2 and 'drop --checkpoint' in both.stderr
    unfinished = subprocess.run([sys.executable, 'recipes/evaluate.py', '--run', str(tmp_path)], cwd=ROOT, env=ENV,
                                capture_output=True, text=True, timeout=300)
    _fails(unfinished, 'RunFolderError', 'no complete finetune stage')


def test_export_of_the_dense_parent(runs, tmp_path):
    """``--stage pretrain`` exports a run's dense network (the parent tag, e.g. prdarts_c10.dense_cifar10): its
    card says dense, every number from its evaluation; timm loads it from the folder."""
    dense = runs / 'prdarts' / 'pretrain' / 'model.safetensors'
    evaluation, hub = tmp_path / 'eval.json', tmp_path / 'hub'
    steps = [
        ['recipes/evaluate.py', '--model', 'prdarts_c10_mini', '--checkpoint', str(dense), '--max_batches', '1',
         '--batch_size', '16', '--latency_warmup', '1', '--latency_repeats', '2', '--output', str(evaluation)],
        ['recipes/export.py', '--run', str(runs / 'prdarts'), '--stage', 'pretrain', '--evaluation', str(evaluation),
         '--name', 'prdarts_c10_mini.dense_cifar10', '--hub_id', 'prdarts-test/prdarts_c10_mini.dense',
         '--output', str(hub)],
    ]
    for step in steps:
        _ok(subprocess.run([sys.executable, *step], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300))
    card = (hub / 'README.md').read_text()
    assert 'A dense PR-DARTS (DASS) network' in card and 'retrained with the HYDRA pipeline' not in card
    assert '- **Sparsity allocation:** none: a dense network' in card and '- **Sparsity:** 0.00%' in card
    assert 'pretrain: 2 epoch(s)' in card and 'prune:' not in card  # the stages that made it, no later one
    model = timm.create_model(f'local-dir:{hub}', pretrained=True).eval()
    reference = TrainRun(runs / 'prdarts').load_inference_network('pretrain').eval()  # what the run trained
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    wrong = subprocess.run([sys.executable, *steps[1][:-2], '--output', str(tmp_path / 'other'), '--stage', 'prune'],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    _fails(wrong, 'HubError', 'evaluates another file')  # the evaluation is of the pretrain weights, not prune's


def test_evaluate_export_and_dry_run_push(runs, tmp_path):
    baked = runs / 'prdarts' / 'finetune' / 'model_baked.safetensors'
    evaluation, hub = tmp_path / 'eval.json', tmp_path / 'hub'
    steps = [
        ['recipes/evaluate.py', '--model', 'prdarts_c10_mini', '--checkpoint', str(baked), '--max_batches', '1',
         '--batch_size', '16', '--latency_warmup', '1', '--latency_repeats', '2', '--output', str(evaluation)],
        ['recipes/export.py', '--run', str(runs / 'prdarts'), '--evaluation', str(evaluation), '--name',
         'prdarts_c10_mini.sp99_cifar10', '--hub_id', 'prdarts-test/prdarts_c10_mini', '--output', str(hub)],
        ['recipes/push_to_hub.py', '--folder', str(hub), '--repo_id', 'prdarts-test/prdarts_c10_mini', '--dry-run'],
    ]
    results = [subprocess.run([sys.executable, *step], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
               for step in steps]
    for result in results:
        _ok(result)
    listed = results[2].stdout
    for name in ('config.json', 'model.safetensors', 'README.md', 'train_config.yaml', 'launch.json',
                 'evaluation.json'):
        assert f'  {name}  ' in listed
    card = (hub / 'README.md').read_text()
    data = json.loads(evaluation.read_text())
    assert f'value: {data["top1"]:.2f}' in card and data['markdown_row'] in card
    assert 'pretrain: 2 epoch(s), 6 steps of 8 images' in card
    assert '\n  - pretrain: 2 epoch(s) of 8 images a step; optimizer `' in card  # each stage's schedule, its config's
    assert 'drop path rate 0.2' in card and '\n  - finetune: ' in card
    assert "- **Sparsity allocation:** per layer, the paper's (HYDRA)" in card  # the prune stage's k, global_k
    again = subprocess.run([sys.executable, *steps[1]], cwd=ROOT, env=ENV, capture_output=True, text=True,
                           timeout=300)
    _fails(again, 'HubError', 'already exists', '--overwrite')


def test_export_deploy_folder_runs_in_onnx_runtime(runs, tmp_path):
    import timm
    from prdarts_timm.checkpoint import read_state_dict
    from prdarts_timm.compact import CompactCell
    from prdarts_timm.deploy import load_deployed, onnx_session
    out = tmp_path / 'deploy'
    cmd = [sys.executable, 'recipes/export.py', '--deploy', '--run', str(runs / 'prdarts'), '--output', str(out)]
    _ok(subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300))
    assert sorted(p.name for p in out.iterdir()) == ['deploy.json', 'model.onnx', 'model.safetensors']
    info = json.loads((out / 'deploy.json').read_text())
    assert info['model'] == 'prdarts_c10_mini' and info['onnx_opset'] == 18
    assert info['compaction']['channels_after'] < info['compaction']['channels_before']
    latency = info['onnx_latency_ms']  # the measured rule: the compacted ONNX only where it runs faster
    assert latency['baked'] > 0 and latency['compacted'] > 0
    assert info['onnx_compacted'] == (latency['compacted'] < latency['baked'])
    model = timm.create_model('prdarts_c10_mini', num_classes=10).eval()
    model.load_state_dict(read_state_dict(out / 'model.safetensors'))  # the baked weights, masks from the zeros
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    (logits,) = onnx_session(out / 'model.onnx').run(None, {'input': x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)
    deployed = load_deployed(out)  # the compacted PyTorch network, from the folder alone
    assert any(isinstance(m, CompactCell) for m in deployed.modules())
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0)
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    _fails(again, 'DeployError', 'already exists', '--overwrite')


def test_resume_after_kill_gives_the_same_weights(runs, tmp_path):
    reference = runs / 'prdarts'
    killed = tmp_path / 'killed'
    cmd = train_cmd(killed, '--max_steps_per_epoch', '3', '--pretrain_epochs', '2', '--prune_epochs', '3',
                    '--drop_path_rate', '0.2')
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (killed / 'prune' / 'checkpoints' / 'step_00000006').exists():  # kill inside the prune stage
        assert proc.poll() is None and time.time() < deadline, 'training ended before it could be killed'
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / 'pretrain' / 'summary.json').exists() and not (killed / 'prune' / 'summary.json').exists()
    newest = sorted((killed / 'prune' / 'checkpoints').glob('step_*'))[-1]
    before_kill = torch.load(newest / 'custom_checkpoint_0.pkl', weights_only=True)
    resumed = subprocess.run([sys.executable, 'recipes/train.py', '--cpu', '--output', str(killed), '--resume'],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)  # its own config.yaml
    _ok(resumed)
    assert 'resumed prune from' in resumed.stdout + resumed.stderr
    for stage in ('prune', 'finetune'):
        assert load_file(killed / stage / 'model.safetensors').keys() == load_file(
            reference / stage / 'model.safetensors').keys()
        for key, value in load_file(reference / stage / 'model.safetensors').items():
            assert torch.equal(load_file(killed / stage / 'model.safetensors')[key], value), (stage, key)
    for stage in ('prune', 'finetune'):
        history = [[{k: v for k, v in record.items() if k not in ('seconds', 'cpu_seconds')}  # time differs
                    for record in json.loads((d / stage / 'summary.json').read_text())['history']]
                   for d in (killed, reference)]
        assert history[0] == history[1]
    # the stage's time counts the segment before the kill too (6 of its 9 steps and 2 of its 3 evaluations)
    summary = json.loads((killed / 'prune' / 'summary.json').read_text())
    assert summary['seconds'] > before_kill['seconds'] > 0
    assert summary['cpu_seconds'] > before_kill['cpu_seconds'] > 0
    # its command reproduces the run: the one that started it, not the resume
    assert summary['command'] == json.loads((killed / 'launch.json').read_text())['command']
    assert '--resume' not in summary['command'] and '--prune_epochs 3' in summary['command']


def test_two_gloo_processes_give_identical_weights(tmp_path):
    out = tmp_path / 'ddp'
    result = subprocess.run(train_cmd(out, launcher=[*LAUNCH, '--multi_gpu', '--num_processes', '2',
                                                     '--main_process_port', _free_port()]),
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    _ok(result)
    for stage in ('pretrain', 'prune', 'finetune'):
        ranks = json.loads((out / stage / 'ranks.json').read_text())
        assert [r['rank'] for r in ranks] == [0, 1]
        assert ranks[0]['state_sha256'] == ranks[1]['state_sha256'], stage
        assert json.loads((out / stage / 'summary.json').read_text())['num_processes'] == 2


def _fails(result, *fragments):
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]


def test_bad_input_is_a_clear_error(runs, tmp_path):
    prune_out = str(runs / 'prdarts' / 'prune' / 'model.safetensors')
    before = {p: p.read_bytes() for p in (runs / 'prdarts').rglob('*') if p.is_file()}
    results = run_all(dict(
        unknown_model=train_cmd(tmp_path / 'a', '--model', 'mobilenetv2_1000'),
        other_k=train_cmd(tmp_path / 'e', '--stages', '[finetune]', '--source', prune_out, '--k', '0.1'),
        overwrite=train_cmd(runs / 'prdarts'),
        unknown_opt=train_cmd(tmp_path / 'g', '--opt', 'sgdd'),
        bad_k=train_cmd(tmp_path / 'k', '--k', '0'),
        missing_root=train_cmd(tmp_path / 'm', '--data_source', 'imagefolder', '--data_root', str(tmp_path / 'none')),
    ))
    _fails(results['unknown_model'], 'ModelError', "timm does not know a model named 'mobilenetv2_1000'",
           'mobilenetv2_100')
    _fails(results['other_k'], 'CheckpointError', 'pruned at another k', 'k=0.1 keeps', 'prune again at k=0.1')
    _fails(results['unknown_opt'], 'ConfigError', "opt 'sgdd'", 'list_optimizers')
    _fails(results['overwrite'], 'ConfigError', 'already holds a training run', '--resume')
    _fails(results['bad_k'], 'error: ConfigError: invalid config', 'fraction of weights KEPT')
    _fails(results['missing_root'], 'error: DatasetNotFoundError', str(tmp_path / 'none'))
    assert {p: p.read_bytes() for p in (runs / 'prdarts').rglob('*') if p.is_file()} == before
    assert not (tmp_path / 'e' / 'finetune' / 'model.safetensors').exists()


def test_bad_sources_in_process(runs, tmp_path):
    """The stages' source handling, called directly (the CLI formatting is tested above)."""
    from prdarts_timm.checkpoint import CheckpointError
    from prdarts_timm.retrain import TrainConfig, build_model, prepare_stage, read_source

    prune_out = runs / 'prdarts' / 'prune' / 'model.safetensors'
    config = TrainConfig(model='darts_v2_c10_mini', stages=['finetune'])
    prune, finetune = config.stage('prune'), config.stage('finetune')
    with pytest.raises(CheckpointError, match=r'stages \[pretrain, prune\].*set source'):
        read_source(prune, None)
    with pytest.raises(CheckpointError, match='nope.safetensors.* does not exist.*set source'):
        read_source(prune, tmp_path / 'nope.safetensors')
    (tmp_path / 'corrupt.safetensors').write_bytes(b'\x00' * 64)
    with pytest.raises(CheckpointError, match='cannot read checkpoint .* corrupt'):
        read_source(finetune, tmp_path / 'corrupt.safetensors')
    with pytest.raises(CheckpointError, match=r'does not match the model.*missing key\(s\).*same model, model_kwargs'):
        prepare_stage(build_model(config.model, config.model_args(10)), finetune, read_source(finetune, prune_out),
                      str(prune_out))
