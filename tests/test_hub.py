"""Hub folders: export in timm's layout, loading back (hf-hub: from a seeded cache, local-dir:, overlay file,
checkpoint_path), model cards, upload checks, fine-tuning from pretrained weights, bad input."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import timm
import torch

import prdarts_timm
from prdarts_timm import PretrainedWeightsError, get_genotype, pruned_layers, set_pruning, sparsity_report
from prdarts_timm.builder import create_model
from prdarts_timm.checkpoint import CheckpointError, decode_sparse, encode_sparse, read_state_dict
from prdarts_timm.data import MINI_CIFAR10_PATH
from prdarts_timm.hub import (
    REPOSITORY, CardError, HubError, card_values, check_card, check_folder, check_repo_id, export_folder,
    render_card,
)
from prdarts_timm.run_folder import StageSummary

ROOT = Path(__file__).resolve().parents[1]
CARD_TEMPLATE = ROOT / 'hub_cards' / 'prdarts.md'
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
HUB_ID = 'prdarts-test/prdarts_c10_mini.sp90_custom'


def searched_genotype() -> dict:
    """A cell no file in the package holds: what a new search would publish."""
    genotype = get_genotype('darts_v2').to_dict()
    genotype['normal'][0] = ['dil_conv_5x5', 0]
    genotype['name'] = 'searched_in_a_test'
    return genotype


def evaluation_for(model) -> dict:
    """What recipes/evaluate.py --output writes, computed here for the test's model."""
    report = sparsity_report(model)
    macs = prdarts_timm.count_macs(model)
    return dict(
        model='prdarts_c10_mini', input_size=[3, 32, 32], top1=12.5, top5=55.0, params=prdarts_timm.count_params(model),
        dataset=dict(source='mini', split='test', num_evaluated=64, description='mini CIFAR-10'),
        weights=dict(total=report.total, nonzero=report.nonzero, sparsity=report.sparsity),
        macs=macs.to_dict(), markdown_header='| a |\n|---|', markdown_row='| b |',
        latency=dict(cpu='test CPU', threads=1, batch_1=dict(median_ms=1.0), batch_64=dict(median_ms=9.0)),
        environment=dict(command='python recipes/evaluate.py ...', torch=torch.__version__, timm=timm.__version__,
                         prdarts_timm=prdarts_timm.__version__))


SUMMARY = dict(stages=[dict(stage='finetune', epochs=1, steps=2, global_batch=8, seconds=1.0, cpu_seconds=90.0,
                            hardware='test CPU', schedule='finetune: 1 epoch(s) of 8 images a step')],
               command='accelerate launch recipes/train.py ...', pruning=dict(k=0.1, global_k=False))


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A pruned, briefly trained network with a new genotype, exported: (folder, the model it holds)."""
    torch.manual_seed(0)
    model = timm.create_model('prdarts_c10_mini', C=4, layers=3, genotype=searched_genotype(), num_classes=10)
    set_pruning(model, 'fixed', k=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    card = render_card(CARD_TEMPLATE.read_text(), card_values(
        'prdarts_c10_mini.sp90_custom', HUB_ID, evaluation_for(model), SUMMARY, model))
    folder = export_folder(model, tmp_path_factory.mktemp('hub') / 'export', card,
                           extra_files={'train_config.yaml': 'k: 0.1\n'}, label_names=LABELS)
    return folder, model


LABELS = [f'class_{i}' for i in range(10)]  # the data set's classes, not the architecture's default CIFAR-10 names


def seed_hf_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The Hugging Face cache layout, as if the repo had been downloaded once."""
    repo = cache / f'models--{repo_id.replace("/", "--")}'
    snapshot = repo / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        shutil.copy(file, snapshot / file.name)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('0' * 40)


def test_export_layout(exported):
    folder, model = exported
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors',
                                                        'train_config.yaml']
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in [folder, *folder.iterdir()]} == {
        oct(0o777 & ~umask), oct(0o666 & ~umask)}  # ordinary permissions, not mkstemp's / safetensors' 0600
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'prdarts_c10_mini' and config['num_classes'] == 10
    assert config['num_features'] == model.num_features and config['global_pool'] == 'avg'
    assert config['model_args']['genotype']['normal'][0] == ['dil_conv_5x5', 0]
    assert config['model_args']['C'] == 4 and config['pretrained_cfg']['input_size'] == [3, 32, 32]
    assert config['label_names'] == config['pretrained_cfg']['label_names'] == LABELS
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert list(loaded.pretrained_cfg['label_names']) == LABELS
    with pytest.raises(HubError, match='3 label names for a model of 10 classes'):
        export_folder(model, folder.parent / 'other', (folder / 'README.md').read_text(), label_names=LABELS[:3])
    unnamed = export_folder(model, folder.parent / 'unnamed', (folder / 'README.md').read_text())
    config = json.loads((unnamed / 'config.json').read_text())
    assert 'label_names' not in config and 'label_names' not in config['pretrained_cfg']
    from safetensors.torch import load_file
    state = load_file(folder / 'model.safetensors')
    assert not any(k.endswith(('.scores', '.mask')) or k.startswith('aux_head.') for k in state)
    assert all(v.is_contiguous() for v in state.values())
    assert [p.name for p in check_folder(folder)] == sorted(p.name for p in folder.iterdir())


def test_round_trip_logits_and_sparsity(exported, tmp_path):
    folder, model = exported
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    nonzero = sparsity_report(model).nonzero
    seed_hf_cache(tmp_path / 'cache', HUB_ID, folder)
    loaded = {
        'hf-hub': timm.create_model(f'hf-hub:{HUB_ID}', pretrained=True, cache_dir=tmp_path / 'cache'),
        'local-dir': timm.create_model(f'local-dir:{folder}', pretrained=True),
        'overlay': timm.create_model('prdarts_c10_mini', pretrained=True, C=4, layers=3, genotype=searched_genotype(),
                                     pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors'))),
        'checkpoint_path': timm.create_model('prdarts_c10_mini', C=4, layers=3, genotype=searched_genotype(),
                                             checkpoint_path=str(folder / 'model.safetensors')),
    }
    for how, net in loaded.items():
        net.eval()
        with torch.no_grad():
            assert torch.equal(net(x), expected), how
        assert sparsity_report(net).nonzero == nonzero, how
        assert all(layer.mode == 'fixed' for _, layer in pruned_layers(net)), how  # masks back from the zeros


def test_sparse_encoding_is_smaller_and_loads_the_same(exported, tmp_path):
    folder, _ = exported
    torch.manual_seed(0)
    model = timm.create_model('prdarts_c10_mini', layers=3, genotype=searched_genotype()).eval()  # 16 channels
    set_pruning(model, 'fixed', k=0.01)
    sparse_folder = export_folder(model, tmp_path / 'sparse', (folder / 'README.md').read_text(), sparse=True)
    plain, compact = sparse_folder / 'model.safetensors', sparse_folder / 'model.sparse.safetensors'
    assert compact.stat().st_size < 0.25 * plain.stat().st_size
    decoded, reference = read_state_dict(compact), read_state_dict(plain)
    assert decoded.keys() == reference.keys() and all(torch.equal(decoded[k], reference[k]) for k in reference)
    check_folder(sparse_folder)
    net = timm.create_model('prdarts_c10_mini', pretrained=True, layers=3, genotype=searched_genotype(),
                            pretrained_cfg_overlay=dict(file=str(compact))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), model(x))
    broken = encode_sparse(reference)
    del broken[next(k for k in broken if k.endswith('.__sparse_values'))]
    with pytest.raises(CheckpointError, match='sparse encoding .* incomplete or corrupt'):
        decode_sparse(broken)


def test_every_tag_with_weights_is_bundled_and_checked():
    from prdarts_timm.models import prdarts as family
    with_weights = sorted(timm.list_pretrained('prdarts*') + timm.list_pretrained('darts*'))
    assert with_weights == sorted(family.BUNDLED_WEIGHTS)  # no tag claims weights the package does not carry
    for tag, entry in family.BUNDLED_WEIGHTS.items():
        cfg = timm.models.get_pretrained_cfg(tag)
        assert cfg.hf_hub_id == check_repo_id(entry['hf_hub_id']) and Path(cfg.file).is_file()
        family._verify_bundled(cfg.file)
        timm.create_model(tag, pretrained=True)  # offline (HF_HUB_OFFLINE=1): from the bundled file


def test_bundled_weights_load_offline_and_are_sha256_checked(exported, tmp_path, monkeypatch):
    from prdarts_timm.models import prdarts as family
    folder, model = exported
    bundled = tmp_path / 'weights'
    bundled.mkdir()
    shutil.copy(folder / 'model.safetensors', bundled / 'custom.safetensors')
    digest = __import__('hashlib').sha256((bundled / 'custom.safetensors').read_bytes()).hexdigest()
    monkeypatch.setattr(family, 'WEIGHTS_DIR', bundled)
    monkeypatch.setattr(family, 'BUNDLED_WEIGHTS', {'prdarts_c10_mini.custom': dict(
        file='custom.safetensors', sha256=digest, hf_hub_id=HUB_ID)})
    monkeypatch.setattr(family, '_VERIFIED', {})
    source = family._weights('prdarts_c10_mini.custom')
    assert source == dict(hf_hub_id=HUB_ID, file=str(bundled / 'custom.safetensors'))
    cfg = dict(timm.models.get_pretrained_cfg('prdarts_c10_mini').to_dict(), tag='custom', **source)
    net = timm.create_model('prdarts_c10_mini', pretrained=True, pretrained_cfg=cfg, C=4, layers=3,
                            genotype=searched_genotype()).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), model(x))
    monkeypatch.setattr(family, '_VERIFIED', {})
    (bundled / 'custom.safetensors').write_bytes(b'x' + (bundled / 'custom.safetensors').read_bytes()[1:])
    with pytest.raises(CheckpointError, match='bundled weights .* are corrupt .* reinstall'):
        timm.create_model('prdarts_c10_mini', pretrained=True, pretrained_cfg=cfg, C=4, layers=3,
                          genotype=searched_genotype())
    (bundled / 'custom.safetensors').unlink()
    with pytest.raises(CheckpointError, match='are missing from this install.*hf-hub:'):
        timm.create_model('prdarts_c10_mini', pretrained=True, pretrained_cfg=cfg, C=4, layers=3,
                          genotype=searched_genotype())


def test_bundle_weights_adds_the_compact_file_and_its_index_entry(exported, tmp_path):
    from prdarts_timm.hub import bundle_weights
    folder, model = exported
    card = (folder / 'README.md').read_text()
    sparse_folder = export_folder(model, tmp_path / 'sparse', card, sparse=True)
    weights = tmp_path / 'weights'
    entry = bundle_weights(sparse_folder, 'prdarts_c10_mini.sp99_cifar10', HUB_ID, weights)
    assert entry == json.loads((weights / 'index.json').read_text())['prdarts_c10_mini.sp99_cifar10']
    assert entry['file'] == 'prdarts_c10_mini.sp99_cifar10.sparse.safetensors' and entry['hf_hub_id'] == HUB_ID
    assert entry['sha256'] == __import__('hashlib').sha256((weights / entry['file']).read_bytes()).hexdigest()
    bundled, plain = read_state_dict(weights / entry['file']), read_state_dict(sparse_folder / 'model.safetensors')
    assert bundled.keys() == plain.keys() and all(torch.equal(bundled[k], plain[k]) for k in plain)
    with pytest.raises(HubError, match='not a registered model.tag'):
        bundle_weights(sparse_folder, 'prdarts_c10_mini.sp42_nowhere', HUB_ID, weights)
    (sparse_folder / 'README.md').unlink()
    with pytest.raises(HubError, match=r"lacks \['README.md'\]"):
        bundle_weights(sparse_folder, 'prdarts_c10_mini.sp99_cifar10', HUB_ID, weights)
    assert list(json.loads((weights / 'index.json').read_text())) == ['prdarts_c10_mini.sp99_cifar10']


def test_card_lists_more_evaluations_of_the_same_weights(exported):
    folder, model = exported
    other = evaluation_for(model)
    other.update(top1=31.25, top5=80.0, dataset=dict(source='imagefolder', split='test', num_evaluated=10000))
    card = render_card(CARD_TEMPLATE.read_text(), card_values(
        'prdarts_c10_mini.sp90_custom', HUB_ID, evaluation_for(model), SUMMARY, model, [other]))
    assert ('- Also: top-1 31.25%, top-5 80.00% on the 10,000 images of the `test` split of data source '
            '`imagefolder`: `python recipes/evaluate.py ...`') in card
    del other['environment']
    with pytest.raises(CardError, match=r"lacks \['command'\]"):
        card_values('x.y', HUB_ID, evaluation_for(model), SUMMARY, model, [other])


def test_pretrained_without_weights_is_a_clear_error():
    with pytest.raises(PretrainedWeightsError, match='no pretrained weights exist for prdarts_c10_mini'):
        timm.create_model('prdarts_c10_mini', pretrained=True)


def test_card_renders_only_with_every_value(exported):
    folder, model = exported
    card = (folder / 'README.md').read_text()
    from huggingface_hub import ModelCard
    parsed = ModelCard(card, ignore_metadata_errors=False)
    assert parsed.data.library_name == 'timm' and 'pruning' in parsed.data.tags
    assert parsed.data.pipeline_tag == 'image-classification'
    assert f'pip install git+{REPOSITORY}' in card and f'[repository]({REPOSITORY})' in card
    readme = (ROOT / 'README.md').read_text()  # the README's fine-tuning command, for this repo
    assert 'accelerate launch recipes/train.py --config recipes/configs/finetune.yaml' in readme
    assert ('accelerate launch recipes/train.py --config recipes/configs/finetune.yaml \\\n'
            f'    --model hf-hub:{HUB_ID} --data_root my_data --output runs/my_finetune') in card
    assert "print(model.pretrained_cfg['label_names'][index])" in card
    assert 'a separate tool and run' in card  # which latency this is
    assert parsed.data.eval_results[0].metric_value == 12.5
    assert "per layer, the paper's (HYDRA): every pruned layer keeps the top 0.1" in card
    assert '- **Cell:** `searched_in_a_test`: ' in card  # which cell it holds, by name
    assert '- Budget: finetune: 1 epoch(s), 2 steps of 8 images, 1 s, 1.5 CPU-minutes (test CPU)\n' in card
    assert 'prdarts_c10_mini.sp90_custom' in card and 'hf-hub:' + HUB_ID in card and '$' not in card.split('```bibtex')[0]
    evaluation = evaluation_for(model)
    del evaluation['latency']
    with pytest.raises(CardError, match=r"no value for \['cpu', 'latency_b1_ms'"):
        render_card(CARD_TEMPLATE.read_text(), card_values('x.y', HUB_ID, evaluation, SUMMARY, model))
    values = card_values('x.y', HUB_ID, evaluation_for(model), dict(SUMMARY, pruning=dict(k=0.01, global_k=True)), model)
    assert values['allocation'].startswith('one global threshold (`global_k: true`): the top 0.01')
    with pytest.raises(CardError, match=r"no value for \['allocation'\]"):  # how the mask was allocated, unknown
        render_card(CARD_TEMPLATE.read_text(), card_values('x.y', HUB_ID, evaluation_for(model),
                                                           dict(SUMMARY, pruning={}), model))
    with pytest.raises(CardError, match="library_name must be 'timm'"):
        check_card(card.replace('library_name: timm', 'library_name: transformers'))
    with pytest.raises(CardError, match='metadata is invalid'):
        check_card(card.replace('value: 12.50', 'value: [unclosed'))


def test_card_names_the_cell_and_what_it_was_searched_for():
    """A flagship tag at 90% holds the cell searched for 99% (issue 28): its card says so in words."""
    cell = card_values('x.y', HUB_ID, {}, {}, timm.create_model('prdarts_c10_micro'))['cell']
    assert cell.startswith('`PRDARTS_99`: PR-DARTS (DASS) three-phase search at 99% sparsity')
    unnamed = {k: v for k, v in get_genotype('darts_v2').to_dict().items() if k not in ('name', 'description')}
    model = timm.create_model('prdarts_c10_mini', C=4, layers=3, genotype=unnamed)
    assert card_values('x.y', HUB_ID, {}, {}, model)['cell'] == 'a cell without a name: the genotype below'


def test_stage_schedule_line():
    """The card's schedule of a stage: progressive image sizes from its curve, the config's optimisation, and
    distillation where the run had a teacher."""
    from prdarts_timm.retrain import TrainConfig
    config = TrainConfig(opt='nesterov', pretrain_lr=0.1, warmup_epochs=1, label_smoothing=0.1, crop_padding=2,
                         data_format='tensor', alternate_flip=True, distill_from='runs/dense/pretrain', cutout=0,
                         auxiliary_weight=0.0)
    history = [dict(image_size=16), dict(image_size=16), dict(image_size=24), dict(image_size=32)]
    line = prdarts_timm.hub.stage_schedule(StageSummary('pretrain', epochs=4, global_batch=128, history=history), config)
    assert line.startswith('pretrain: 4 epoch(s) of 128 images a step, 16 px (epochs 1-2), 24 px (epoch 3), '
                           '32 px (epoch 4); optimizer `nesterov` (momentum 0.9), lr 0.1 `cosine` to 0 after 1 '
                           'warm-up epoch(s), weight decay 0.0003; label smoothing 0.1; grad clip 5; random crop '
                           '(padding 2), flips alternated per epoch; distilled from `runs/dense/pretrain` (weight 0.5, '
                           'temperature 4)')
    assert 'crops' not in line
    crops = [dict(record, image_crops=True) for record in history]  # pretrain_crop_sizes: the history says so
    line = prdarts_timm.hub.stage_schedule(StageSummary('pretrain', epochs=4, global_batch=128, history=crops), config)
    assert '32 px (epoch 4) (the smaller sides as random crops); optimizer' in line
    finetune = StageSummary('finetune', epochs=2, global_batch=8, history=[dict(image_size=32)] * 2)
    assert 'px' not in prdarts_timm.hub.stage_schedule(finetune, config)


def test_bad_input(exported, tmp_path):
    folder, model = exported
    with pytest.raises(HubError, match='already exists'):
        export_folder(model, folder, (folder / 'README.md').read_text())
    for bad in ('no-namespace', 'org/has space', 'org/../x', 'org/' + 'x' * 100):
        with pytest.raises(HubError, match='repo id|namespace'):
            check_repo_id(bad)
    broken = tmp_path / 'broken'
    shutil.copytree(folder, broken)
    data = (broken / 'model.safetensors').read_bytes()
    (broken / 'model.safetensors').write_bytes(data[:len(data) // 2])
    with pytest.raises(HubError, match='corrupt or truncated'):
        check_folder(broken)
    shutil.copy(folder / 'model.safetensors', broken / 'model.safetensors')
    config = json.loads((broken / 'config.json').read_text())
    config['architecture'] = 'prdarts_c10_nope'
    (broken / 'config.json').write_text(json.dumps(config))
    with pytest.raises(HubError, match="architecture 'prdarts_c10_nope', which timm does not know"):
        check_folder(broken)
    with pytest.raises(CheckpointError, match='do not fit this PRDarts.*local-dir'):  # wrong shapes
        timm.create_model('prdarts_c10_mini', pretrained=True, C=8, layers=3, genotype=searched_genotype(),
                          pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')))
    with pytest.raises(HubError, match='CIFAR stem'):
        export_folder(create_model('resnet18', cifar_stem=True, num_classes=10), tmp_path / 'r',
                      (folder / 'README.md').read_text())


def _tiny_imagefolder(root: Path, classes=('cat', 'dog', 'frog'), per_split=8) -> Path:
    with tarfile.open(MINI_CIFAR10_PATH) as tar:
        for member in tar:
            parts = member.name.split('/')
            if member.isfile() and len(parts) == 3 and parts[1] in classes:
                folder = root / parts[0] / parts[1]
                folder.mkdir(parents=True, exist_ok=True)
                if len(list(folder.iterdir())) < per_split:
                    (folder / parts[2]).write_bytes(tar.extractfile(member).read())
    return root


def test_finetune_from_pretrained_keeps_or_releases_the_mask(exported, tmp_path):
    folder, model = exported
    data = _tiny_imagefolder(tmp_path / 'data')
    common = ['recipes/train.py', '--cpu', '--model', f'local-dir:{folder}', '--pretrained', 'true',
              '--auxiliary_weight', '0', '--data_source', 'imagefolder', '--data_root', str(data), '--batch_size', '8',
              '--pretrain_epochs', '1', '--finetune_epochs', '1']
    procs = {stage: subprocess.Popen([sys.executable, *common, '--stages', f'[{stage}]', '--output',
                                      str(tmp_path / stage)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for stage in ('finetune', 'pretrain')}
    for stage, proc in procs.items():
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
    from safetensors.torch import load_file
    sparse = load_file(tmp_path / 'finetune' / 'finetune' / 'model.safetensors')
    dense = load_file(tmp_path / 'pretrain' / 'pretrain' / 'model.safetensors')
    original = {name: layer.mask for name, layer in pruned_layers(model)}
    assert sparse['classifier.weight'].shape[0] == 3
    for name, mask in original.items():
        if name == 'classifier':
            assert sparse['classifier.mask'].eq(1).all()  # the new head is dense
            continue
        assert torch.equal(sparse[f'{name}.mask'], mask), name  # sparsity kept exactly
        assert not sparse[f'{name}.weight'][mask == 0].any(), name
        assert f'{name}.mask' not in dense and f'{name}.scores' not in dense, name  # released: plain layers
    assert int(torch.count_nonzero(dense['stem0.0.weight'])) > int(torch.count_nonzero(original['stem0.0']))


def test_safetensors_metadata_is_written_in_sorted_order():
    from safetensors.torch import load, save

    from prdarts_timm.checkpoint import _sorted_metadata
    data = save({'w': torch.ones(3)}, metadata={'format': 'pt', 'encoding': 'x'})
    size = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + size])
    header['__metadata__'] = {'format': 'pt', 'encoding': 'x'}  # the order a hash map may give
    text = json.dumps(header, separators=(',', ':')).encode()
    shuffled = data[:8] + text + b' ' * (size - len(text)) + data[8 + size:]
    canonical = _sorted_metadata(shuffled)
    assert canonical == _sorted_metadata(data) and b'{"encoding":"x","format":"pt"}' in canonical
    assert torch.equal(load(canonical)['w'], torch.ones(3))


def test_push_uploads_the_folder_and_deletes_what_it_no_longer_holds(exported, monkeypatch, capsys):
    """recipes/push_to_hub.py against a stand-in HfApi: the repo the card was exported for, every stale file of
    the repo deleted (delete_patterns), another repo refused unless --allow_other_repo."""
    import runpy
    import sys as _sys

    import huggingface_hub

    folder, _ = exported
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(('create_repo', repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(('upload_folder', kwargs['repo_id'], kwargs))
            return 'commit'

    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)

    def push(*args):
        monkeypatch.setattr(_sys, 'argv', ['push_to_hub.py', '--folder', str(folder), *args])
        runpy.run_path(str(ROOT / 'recipes' / 'push_to_hub.py'), run_name='__main__')

    push('--repo_id', HUB_ID)
    (upload,) = [c for c in calls if c[0] == 'upload_folder']
    assert upload[1] == HUB_ID and upload[2]['delete_patterns'] == ['*']
    assert upload[2]['folder_path'] == str(folder)
    calls.clear()
    with pytest.raises(SystemExit) as refused:
        push('--repo_id', 'someone-else/other')
    assert f'was exported for {HUB_ID}' in str(refused.value) and '--allow_other_repo' in str(refused.value)
    assert calls == []
    push('--repo_id', 'someone-else/other', '--allow_other_repo')
    assert [c[1] for c in calls] == ['someone-else/other', 'someone-else/other']
