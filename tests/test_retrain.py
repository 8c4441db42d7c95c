"""The retraining stages, config and model building, in process (the recipe itself: test_train_recipe.py)."""
import pytest
import timm
import torch
import torch.nn as nn

from prdarts_timm import kept_count, pruned_layers
from prdarts_timm.builder import ModelError, adapt_to_cifar, create_model
from prdarts_timm.checkpoint import CheckpointError
from prdarts_timm.config import ConfigError, load_config
from prdarts_timm.retrain import (
    TrainConfig, build_model, check_kept_fraction, follow_global_k, prepare_stage, set_drop_path_scale,
)

TINY = dict(model='prdarts_c10_mini', model_kwargs=dict(C=4, layers=3))


def config(**kwargs) -> TrainConfig:
    return TrainConfig(**dict(TINY, **kwargs))


def build(cfg: TrainConfig, num_classes: int = 10) -> nn.Module:
    return build_model(cfg.model, cfg.model_args(num_classes), cifar_stem=cfg.cifar_stem)


def stage(model: nn.Module, name: str, cfg: TrainConfig, *source) -> None:
    prepare_stage(model, cfg.stage(name), *source, global_k=cfg.global_k)


def test_stage_states_and_trained_parameters():
    cfg = config(k=0.05)
    model = build(cfg)
    stage(model, 'pretrain', cfg)
    assert all(layer.mode == 'dense' for _, layer in pruned_layers(model))
    assert all(layer.scores is None and layer.mask is None for _, layer in pruned_layers(model))
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}

    pruned = build(cfg)
    stage(pruned, 'prune', cfg, pretrained, 'pretrain.safetensors')
    scores = {id(layer.scores) for _, layer in pruned_layers(pruned)}
    assert {id(p) for p in pruned.parameters() if p.requires_grad} == scores  # BN affine frozen too
    for _, layer in pruned_layers(pruned):
        assert layer.mode == 'learn' and layer.num_keep == kept_count(layer.weight.numel(), 0.05)
    pruned(torch.randn(2, 3, 32, 32))
    saved = pruned.state_dict()

    tuned = build(cfg)
    stage(tuned, 'finetune', cfg, saved, 'prune.safetensors')
    for name, layer in pruned_layers(tuned):
        assert layer.mode == 'fixed' and torch.equal(layer.mask, saved[f'{name}.mask'])
        assert layer.weight.requires_grad and not layer.scores.requires_grad
    assert all(p.requires_grad for n, p in tuned.named_parameters() if not n.endswith('.scores'))


def test_prepare_stage_refuses_wrong_sources():
    cfg = config(k=0.05)
    model = build(cfg)
    stage(model, 'pretrain', cfg)
    with pytest.raises(CheckpointError, match='prune starts from a checkpoint'):
        stage(build(cfg, 10), 'prune', cfg)
    dense = model.state_dict()
    with pytest.raises(CheckpointError, match=r'pruned at another k.*k=0.05 keeps'):
        stage(build(cfg, 10), 'finetune', cfg, dense, 'dense.safetensors')
    pruned = build(cfg, 10)
    stage(pruned, 'prune', cfg, dense, 'pretrain.safetensors')
    with pytest.raises(CheckpointError, match=r"already pruned .*--stages \[finetune\]"):
        stage(build(cfg, 10), 'prune', cfg, pruned.state_dict(), 'prune.safetensors')
    with pytest.raises(CheckpointError, match='global k=0.05 keeps'):
        stage(build(cfg, 10), 'finetune', config(k=0.05, global_k=True), pruned.state_dict(), 'x')
    with pytest.raises(CheckpointError, match='does not match the model'):
        stage(build(config(model_kwargs=dict(C=8, layers=3)), 10), 'finetune', cfg,
                      pruned.state_dict(), 'x')


def test_global_k_ranks_the_inference_network_and_follows_the_scores():
    cfg = config(k=0.1, global_k=True)
    model = build(cfg, 10)
    stage(model, 'prune', cfg, build(cfg, 10).state_dict(), 'x')
    check_kept_fraction(model, 0.1, True)
    ranked = [layer for name, layer in pruned_layers(model) if not name.startswith('aux_head.')]
    aux = [layer for name, layer in pruned_layers(model) if name.startswith('aux_head.')]
    assert aux and all(layer.num_keep == kept_count(layer.weight.numel(), 0.1) for layer in aux)
    assert sum(layer.num_keep for layer in ranked) == kept_count(sum(l.weight.numel() for l in ranked), 0.1)
    with pytest.raises(CheckpointError, match='per layer'):
        check_kept_fraction(model, 0.1, False)
    before = ranked[0].num_keep
    with torch.no_grad():  # this layer's scores now outrank every other layer's (x1000 did not always)
        top = max(float(layer.scores.abs().max()) for layer in ranked)
        ranked[0].scores.abs_().add_(top)
    follow_global_k(model, cfg.k, cfg.global_k)
    assert ranked[0].num_keep == min(ranked[0].weight.numel(), kept_count(sum(l.weight.numel() for l in ranked), 0.1))
    assert ranked[0].num_keep > before
    check_kept_fraction(model, 0.1, True)


def test_config_validation(tmp_path):
    for bad, match in [(dict(stages=['finetune', 'prune']), 'stages must be'), (dict(stages=[]), 'stages must be'),
                       (dict(k=1.5), 'fraction of weights KEPT'), (dict(mixed_precision='fp16'), 'bf16'),
                       (dict(model_ema_decay=1.0), 'model_ema_decay'), (dict(cutout=-1), 'cutout'),
                       (dict(mixup=0.2, batch_size=7), 'batch_size must be even'),
                       (dict(pretrained=True), 'auxiliary_weight 0'),
                       (dict(pretrained=True, auxiliary_weight=0, source='x'), 'set one of them')]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)
    file = tmp_path / 'c.yaml'
    file.write_text('model_kwargs: {C: 4, layers: 3}\nstages: [prune, finetune]\n')
    assert load_config(TrainConfig, str(file)).model_kwargs == dict(C=4, layers=3)
    file.write_text('model_kwargs: 3\n')
    with pytest.raises(ConfigError, match="'model_kwargs' must be"):
        load_config(TrainConfig, str(file))


def test_auxiliary_head_only_for_prdarts():
    assert build(config(), 10).aux_head is not None
    assert build(config(auxiliary_weight=0), 10).aux_head is None
    with pytest.raises(ConfigError, match=r'resnet18 has no auxiliary head: build it without one \(auxiliary_weight 0'):
        build(config(model='resnet18', model_kwargs={}), 10)


def test_drop_path_ramp():
    model = build(config(drop_path_rate=0.2), 10)
    base = {}
    set_drop_path_scale(model, 0.5, base)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates and rates == pytest.approx([0.1] * len(rates))
    set_drop_path_scale(model, 1.0, base)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates == pytest.approx([0.2] * len(rates))


@pytest.mark.parametrize('name', ['resnet18', 'mobilenetv2_100'])
def test_cifar_stem(name):
    plain = timm.create_model(name, num_classes=10)
    model = create_model(name, cifar_stem=True, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert plain.forward_features(x).shape[-2:] == (1, 1)  # ImageNet stem: 32x32 collapses to 1x1
    assert model.forward_features(x).shape[-2:] == (4, 4)  # total stride 8
    assert model.pretrained_cfg['input_size'] == (3, 32, 32) and 'hf_hub_id' not in model.pretrained_cfg
    assert timm.data.resolve_data_config(model=model)['input_size'] == (3, 32, 32)
    if name == 'resnet18':
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert isinstance(model.maxpool, nn.Identity)
    else:
        assert model.conv_stem.stride == (1, 1) and model.blocks[1][0].conv_dw.stride == (1, 1)
        assert model.blocks[2][0].conv_dw.stride == (2, 2)
    assert [i['reduction'] for i in model.feature_info][-1] == 8


def test_cifar_stem_refuses_what_it_cannot_adapt():
    with pytest.raises(ModelError, match='no CIFAR stem adaptation for VisionTransformer'):
        create_model('vit_tiny_patch16_224', cifar_stem=True)
    with pytest.raises(ModelError, match='already have the CIFAR stem'):
        adapt_to_cifar(timm.create_model('prdarts_c10_mini', C=4, layers=3))
    with pytest.raises(ModelError, match="Did you mean"):
        create_model('resnet1')


def test_genotype_file_builds_cifar_and_imagenet_networks(tmp_path):
    from prdarts_timm import get_genotype
    searched = get_genotype('darts_v2')
    searched.save(tmp_path / 'genotype.json')
    for name in ('prdarts_c10_mini', 'prdarts_in1k'):
        model = build(config(model=name, genotype=str(tmp_path / 'genotype.json'), auxiliary_weight=0), 10)
        assert model.genotype == searched
