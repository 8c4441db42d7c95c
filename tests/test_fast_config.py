"""The fast CIFAR-10 schedule (recipes/configs/fast_cifar10.yaml) end to end on the embedded mini CIFAR-10, run
through benchmarks/bench_recipe.py as the measurement runs it (accelerate launch, then evaluate.py, the report)."""
import json
import subprocess
import sys

import yaml

from test_train_recipe import ENV, ROOT, _ok

TINY = '--data_source,mini,--batch_size,16,--max_steps_per_epoch,3,--eval_max_batches,1,--pretrain_epochs,2'


def test_fast_config_three_stages_and_the_report(tmp_path):
    config = yaml.safe_load((ROOT / 'recipes' / 'configs' / 'fast_cifar10.yaml').read_text())
    assert config['alternate_flip'] and config['auxiliary_weight'] == 0 and config['cutout'] == 0
    result = subprocess.run(
        [sys.executable, 'benchmarks/bench_recipe.py', '--run', f'fast=recipes/configs/fast_cifar10.yaml:{TINY}',
         '--stages', '[pretrain, prune, finetune]', '--output', str(tmp_path / 'runs'), '--threads', '1',
         '--report', str(tmp_path / 'report')], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    _ok(result)
    run = tmp_path / 'runs' / 'fast'
    for stage in ('pretrain', 'prune', 'finetune'):
        summary = json.loads((run / stage / 'summary.json').read_text())
        assert summary['k'] == (1.0 if stage == 'pretrain' else 0.01)
        times = [record['cpu_seconds'] for record in summary['history']]
        assert times == sorted(times) and times[0] > 0 and times[-1] <= summary['cpu_seconds']
    assert len(json.loads((run / 'pretrain' / 'summary.json').read_text())['history']) == 2
    launch = json.loads((run / 'launch.json').read_text())
    assert launch['num_processes'] == 1
    assert launch['cpu_threads_per_process'] == 1  # --threads 1 reaches the recipe (the launcher's 1 alone does not)
    report = json.loads((tmp_path / 'report' / 'results.json').read_text())
    (fast,) = report['runs']
    evaluation = json.loads((run / 'eval_finetune.json').read_text())
    assert fast['final_top1'] == evaluation['top1'] and evaluation['dataset']['num_evaluated'] == 1000
    # every reported stage counts: 2 pretrain + 1 prune + 3 finetune epochs, CPU time adding up across the stages
    assert [p['stage'] for p in fast['curve']] == ['pretrain'] * 2 + ['prune'] + ['finetune'] * 3
    assert [p['epoch'] for p in fast['curve']] == [1, 2, 3, 4, 5, 6] and not any(p['spread'] for p in fast['curve'])
    minutes = [p['cpu_minutes'] for p in fast['curve']]
    stages_cpu = sum(json.loads((run / s / 'summary.json').read_text())['cpu_seconds']
                     for s in ('pretrain', 'prune', 'finetune'))
    assert minutes == sorted(minutes) and fast['cpu_minutes'] == round(stages_cpu / 60, 2) >= minutes[-1]
    assert (tmp_path / 'report' / 'accuracy_per_cpu_minute.png').stat().st_size > 10_000
    assert '| fast | 6 |' in (tmp_path / 'report' / 'table.md').read_text()


def test_bench_recipe_keeps_a_list_value_whole():
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    try:
        from bench_recipe import parse_run
    finally:
        sys.path.pop(0)
    run = parse_run('p=recipes/configs/fast_cifar10.yaml:--pretrain_epochs,12,--pretrain_image_sizes,[16,20,24],--k,0.1')
    assert run['extra'] == ['--pretrain_epochs', '12', '--pretrain_image_sizes', '[16,20,24]', '--k', '0.1']
