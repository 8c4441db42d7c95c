"""The run folders' definition (prdarts_timm.run_folder): records round-trip, damaged files are clear errors,
a run is neither overwritten nor resumed with another config, and a run's summaries follow its source."""
import dataclasses
import json

import pytest

from prdarts_timm.config import ConfigError
from prdarts_timm.errors import RunFolderError
from prdarts_timm.retrain import TrainConfig
from prdarts_timm.run_folder import Launch, SearchRun, StageSummary, TrainRun, check_new_or_resume


def test_stage_summary_round_trips_and_reads_older_and_newer_files(tmp_path):
    summary = StageSummary(stage='finetune', model='prdarts_c10_micro', k=0.1, epochs=3, steps=9, top1=42.5,
                           weights=dict(total=100, nonzero=10, sparsity=0.9),
                           history=[dict(epoch=0, top1=42.5, train_loss=1.5)])
    run = TrainRun(tmp_path / 'run')
    summary.write(run.summary('finetune'))
    assert run.is_complete('finetune') and not run.is_complete('prune')
    assert run.read_summary('finetune') == summary
    data = json.loads(run.summary('finetune').read_text())
    run.summary('finetune').write_text(json.dumps(dict(data, written_by_a_newer_version=1)))
    assert run.read_summary('finetune') == summary  # an unknown key is ignored
    run.summary('finetune').write_text(json.dumps(dict(stage='finetune', top1=1.0)))
    assert run.read_summary('finetune').history == []  # an older file: what it lacks keeps its default


@pytest.mark.parametrize('text, message', [('{"stage": "finet', 'not valid JSON'), ('[1, 2]', 'not a JSON object'),
                                           ('{"stage": "search"}', 'names no stage')])
def test_a_damaged_summary_is_a_clear_error(tmp_path, text, message):
    run = TrainRun(tmp_path)
    run.summary('prune').parent.mkdir()
    run.summary('prune').write_text(text)
    with pytest.raises(RunFolderError, match=message):
        run.read_summary('prune')
    with pytest.raises(RunFolderError, match='does not exist'):
        run.read_summary('finetune')


def test_launch_round_trips(tmp_path):
    launch = Launch(num_processes=2, distributed_type='MULTI_CPU', command='accelerate launch x.py')
    run = TrainRun(tmp_path)
    run.write_start(TrainConfig(), launch)
    assert Launch.read(run.launch) == launch
    assert 'stages' in run.config.read_text()


def test_summaries_follow_the_source_run(tmp_path):
    dense = TrainRun(tmp_path / 'dense')
    StageSummary(stage='pretrain').write(dense.summary('pretrain'))
    pruned = TrainRun(tmp_path / 'k0.01')
    StageSummary(stage='prune', source=str(dense.weights('pretrain'))).write(pruned.summary('prune'))
    StageSummary(stage='finetune', source=str(pruned.weights('prune'))).write(pruned.summary('finetune'))
    assert [s.stage for s in pruned.summaries()] == ['pretrain', 'prune', 'finetune']
    dense.summary('pretrain').unlink()  # the source run is gone: the run's own stages only
    assert [s.stage for s in pruned.summaries()] == ['prune', 'finetune']
    StageSummary(stage='finetune', source='pretrained').write(dense.summary('finetune'))
    assert [s.stage for s in dense.summaries()] == ['finetune']


def test_a_run_is_not_overwritten_nor_resumed_with_another_config(tmp_path):
    config = TrainConfig(output=str(tmp_path))
    run = TrainRun(tmp_path)
    assert not run.holds_run(config.stages)
    assert check_new_or_resume(config, run.root, run.holds_run(config.stages), False, 'training run') == config
    with pytest.raises(ConfigError, match='nothing to resume'):
        check_new_or_resume(config, run.root, False, True, 'training run')
    run.write_start(config, Launch())
    StageSummary(stage='pretrain').write(run.summary('pretrain'))
    assert run.holds_run(config.stages)
    with pytest.raises(ConfigError, match='already holds a training run'):
        check_new_or_resume(config, run.root, run.holds_run(config.stages), False, 'training run')
    assert check_new_or_resume(config, run.root, True, True, 'training run') == config
    with pytest.raises(ConfigError, match=r"another config \(keys that differ: \['seed'\]\)"):
        check_new_or_resume(dataclasses.replace(config, seed=1), run.root, True, True, 'training run')


def test_a_search_run_holds_a_run_once_it_has_a_checkpoint_or_a_genotype(tmp_path):
    run = SearchRun(tmp_path)
    assert not run.holds_run() and run.newest_checkpoint() is None
    (run.checkpoints / 'step_00000003').mkdir(parents=True)
    assert run.holds_run() and run.newest_checkpoint().name == 'step_00000003'
    assert run.epoch_genotype('pretrain', 2).name == 'pretrain_002.json'


def test_training_commands_chain_as_written():
    """A dense run moved after it trained: the prune + finetune command names it by the dense command's output."""
    from prdarts_timm.run_folder import chain_commands
    dense = "accelerate launch recipes/train.py --cpu --config c.yaml --output runs/weights/dense --stages '[pretrain]'"
    assert chain_commands([dense + ' --resume']) == [dense]  # a resumed run's command, as it started
    sparse = ("accelerate launch recipes/train.py --cpu --output runs/weights/k0.1 --stages '[prune, finetune]' "
              '--source runs/weights/prdarts_c10_micro/dense/pretrain/model.safetensors --k 0.1')
    chained = chain_commands([dense, sparse])
    assert chained[0] == dense
    assert '--source runs/weights/dense/pretrain/model.safetensors --k 0.1' in chained[1]
    assert "--stages '[prune, finetune]'" in chained[1]
    assert chain_commands([sparse]) == [sparse]  # nothing earlier to name
    assert chain_commands([dense, sparse.replace('--source', '--pretrained true --x')]) == [
        dense, sparse.replace('--source', '--pretrained true --x')]


def test_hardware_segments_name_each_machine_a_resumed_stage_ran_on():
    one = StageSummary(stage='pretrain', hardware='A', history=[dict(hardware='A'), dict(hardware='A')])
    assert one.hardware_segments() == 'A'
    assert StageSummary(stage='pretrain', hardware='A').hardware_segments() == 'A'  # no epochs recorded
    assert StageSummary(stage='pretrain', hardware='A', history=[{}, {}]).hardware_segments() == 'A'  # older run
    moved = StageSummary(stage='pretrain', hardware='B', history=[{}, {}, dict(hardware='A'), dict(hardware='A'),
                                                                   dict(hardware='B')])
    assert moved.hardware_segments() == 'not recorded (epochs 1-2); A (epochs 3-4); B (epoch 5)'
