"""Pruned retraining of any timm model (HYDRA, as PR-DARTS evaluates): dense pretrain, prune, sparse finetune.

    accelerate launch recipes/train.py                                     # CPU demo: prdarts_c10_mini, mini CIFAR-10
    accelerate launch recipes/train.py --config recipes/configs/train_cifar10.yaml
    accelerate launch recipes/train.py --model mobilenetv2_100 --cifar_stem true --auxiliary_weight 0
    accelerate launch recipes/train.py --stages '[finetune]' --source runs/x/prune/model.safetensors
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py ...  # data parallel, any number of ranks
    accelerate launch recipes/train.py --output runs/x --resume           # continue from the newest checkpoint
    accelerate launch recipes/train.py --model local-dir:hub/x --pretrained true --auxiliary_weight 0 \
        --stages '[finetune]' --data_source imagefolder --data_root my_data  # sparse fine-tuning of exported weights

Any config key can be overridden on the command line (``--k 0.1 --global_k true``). Stages run in order; each
starts from the previous stage's ``model.safetensors`` (the first one from ``source``, when given) and writes
into ``<output>/<stage>/``:

* ``model.safetensors``: the whole state (weights, scores, masks, BN), what the next stage reads;
  ``model_ema.safetensors`` with ``model_ema: true``; after finetune also ``model_baked.safetensors``, the
  inference network (W * mask in plain timm keys, pruned weights exact zeros, no auxiliary head: what
  evaluate.py and export read).
* ``summary.json`` (per-epoch loss and top-1, sparsity of the inference network, the source; written last:
  the stage is complete),
  ``ranks.json`` (every rank's state-dict sha256; the run fails if they differ) and ``checkpoints/step_*``
  (accelerate ``save_state``, every ``checkpoint_every`` steps).

Each stage prepares its own training forward with ``accelerator.prepare`` (DDP on several processes, the
precision and gradient accumulation accelerate is configured with) and steps through ``accelerator.accumulate``
/ ``backward`` / ``clip_grad_norm_``; BN statistics are averaged at every epoch end and checkpoint, so all
ranks hold the same model. timm's scheduler is stepped by the recipe (per update), not prepared: accelerate's
scheduler wrapper calls ``step()`` without the epoch timm's schedulers take.
Data are sharded by a seeded permutation per epoch and augmented with a seed per (epoch, sample), and timm
Mixup draws from a per-step seed, so a resumed stage continues exactly where it stopped.
"""
import argparse
import copy
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from prdarts_timm import bake, set_pruning, sparsity_report
from prdarts_timm.builder import drop_training_only
from prdarts_timm.checkpoint import (
    CheckpointError, load_accelerate_state, save_accelerate_state, save_safetensors, training_only,
)
from prdarts_timm.cli import run_main
from prdarts_timm.config import ConfigError, add_config_args, load_config
from prdarts_timm.distill import check_teacher, distillation_loss, load_teacher
from prdarts_timm.data import SeededTransform, build_dataset, shard_indices
from prdarts_timm.tensor_data import ImageTensors, batches, load_image_tensors, crop_batch, resize_batch
from prdarts_timm.profile import hardware_description
from prdarts_timm.stage import Stage
from prdarts_timm.run_folder import Launch, StageSummary, TrainRun, check_new_or_resume
from prdarts_timm.retrain import (
    STAGES, TrainConfig, build_model, follow_global_k, prepare_stage, read_source,
    set_drop_path_scale,
)
from prdarts_timm.retrain.step import TrainingForward, accumulated_step
from prdarts_timm.distributed import broadcast_from_rank0, check_ranks_agree
from prdarts_timm.training import (
    accuracy, check_num_processes, data_transforms, input_size, launch_command, start_accelerator,
    takes_cifar_inputs,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent / 'configs' / 'train_cpu_demo.yaml'


class TrainState:
    """What a checkpoint holds besides accelerate's own (the prepared model and optimizer, the RNG states): the
    stage's scheduler, EMA and progress. Registered once; its contents change with the stage."""

    def __init__(self, num_processes: int):
        self.num_processes = num_processes
        self.stage: Optional[Stage] = None
        self.model: Optional[nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler = None
        self.ema: Optional[ModelEmaV3] = None
        self.epoch = self.step = self.stage_step = 0
        self.history: List[Dict[str, Any]] = []
        self.epoch_losses: List[float] = []
        # the stage's time before this process took it over (a resumed run), and when this process did
        self.seconds_before = self.cpu_seconds_before = 0.0
        self.start_clock()

    def start_clock(self) -> None:
        self.clock_started = (time.time(), time.process_time())

    def elapsed(self) -> Tuple[float, float]:
        """(wall seconds, CPU seconds of this process) the stage has run, every resumed segment included."""
        wall, cpu = self.clock_started
        return (self.seconds_before + time.time() - wall, self.cpu_seconds_before + time.process_time() - cpu)

    def state_dict(self) -> Dict[str, Any]:
        seconds, cpu_seconds = self.elapsed()
        return dict(stage=self.stage.name, num_processes=self.num_processes, scheduler=self.scheduler.state_dict(),
                    ema=self.ema.state_dict() if self.ema is not None else None, epoch=self.epoch, step=self.step,
                    stage_step=self.stage_step, history=self.history,
                    epoch_losses=[float(loss) for loss in self.epoch_losses], seconds=seconds,
                    cpu_seconds=cpu_seconds)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        check_num_processes(state['num_processes'], self.num_processes)
        if state['stage'] != self.stage.name:
            raise CheckpointError(f'checkpoint of stage {state["stage"]!r} found where {self.stage.name!r} was '
                                  'expected')
        if 'model' in state:  # written before accelerate saved the prepared model and optimizer itself
            self.model.load_state_dict(state['model'])
            self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        if self.ema is not None:
            self.ema.load_state_dict(state['ema'])
        if self.stage.dense:  # exact zeros in the loaded weights are no pattern to keep
            set_pruning(self.model, 'dense')
            if self.ema is not None:
                set_pruning(self.ema.module, 'dense')
        self.epoch, self.step, self.stage_step, self.history, self.epoch_losses = (
            state['epoch'], state['step'], state['stage_step'], state['history'], state['epoch_losses'])
        # checkpoints written before the clock was carried hold no time: the stage then counts from the resume
        self.seconds_before, self.cpu_seconds_before = state.get('seconds', 0.0), state.get('cpu_seconds', 0.0)


def parse_args() -> Tuple[argparse.Namespace, TrainConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=None,
                        help="YAML config (default: the run's own config.yaml with --resume, else the CPU demo)")
    parser.add_argument('--resume', action='store_true', help='continue the run in --output from its newest checkpoint')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even where a GPU is present')
    add_config_args(parser, TrainConfig)
    args = parser.parse_args()
    path = args.config
    if path is None:
        saved = TrainRun(args.cfg_output or load_config(TrainConfig, str(DEFAULT_CONFIG)).output).config
        path = str(saved) if args.resume and saved.exists() else str(DEFAULT_CONFIG)
    return args, load_config(TrainConfig, path, args)


def plan_stages(config: TrainConfig, run: TrainRun,
                resume: bool) -> Tuple[TrainConfig, List[Tuple[str, Optional[Path]]]]:
    """The run's config and (stage, accelerate state to resume it from) for each stage still to run; refuses to
    overwrite a run or to resume one made with another config."""
    try:
        config = check_new_or_resume(config, run.root, run.holds_run(config.stages), resume, 'training run')
    except ConfigError as e:
        raise ConfigError(f'{e} (--resume continues a run, --output names another folder)') from None
    todo = [s for s in config.stages if not run.is_complete(s)]
    return config, [(s, run.newest_checkpoint(s) if resume and i == 0 else None) for i, s in enumerate(todo)]


def source_for(stage: Stage, config: TrainConfig) -> Optional[Path]:
    """The checkpoint ``stage`` starts from: ``source`` for the run's first stage, else the previous stage's
    output."""
    if config.stages.index(stage.name) == 0:
        return Path(config.source) if config.source else None
    return TrainRun(config.output).weights(STAGES[STAGES.index(stage.name) - 1])


def build_transforms(model: nn.Module, config: TrainConfig):
    """(train, eval) transforms: the DARTS CIFAR ones (crop, flip, cutout) for 32x32 models, timm's otherwise."""
    if not takes_cifar_inputs(model):
        if config.data_format == 'tensor':
            raise ConfigError(f'data_format tensor does the DARTS transforms of 32x32 models; {config.model} takes '
                              f'{input_size(model)}: set data_format pil (timm\'s transforms)')
        if config.cutout:
            raise ConfigError(f'cutout applies to 32x32 inputs; {config.model} takes {input_size(model)}: set '
                              'cutout 0')
    return data_transforms(model, config.cutout, padding=config.crop_padding, flip=config.hflip)


def loss_fn(config: TrainConfig, num_classes: int):
    """(mixup or None, criterion): timm Mixup with soft-target CE when mixup / cutmix is on."""
    if config.mixup > 0 or config.cutmix > 0:
        mixup = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, label_smoothing=config.label_smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    return None, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def build_optimizer(model: nn.Module, stage: Stage, config: TrainConfig, steps: int):
    """timm optimizer over what the stage trains (no weight decay on biases / norms) and timm scheduler,
    stepped per update; an unknown ``opt`` / ``sched`` name is a :class:`ConfigError`."""
    no_decay = model.no_weight_decay() if hasattr(model, 'no_weight_decay') else ()
    groups = param_groups_weight_decay(model, config.weight_decay, no_weight_decay_list=no_decay)
    try:
        optimizer = create_optimizer_v2(groups, opt=config.opt, lr=stage.lr, weight_decay=config.weight_decay,
                                        momentum=config.momentum)
    except (ValueError, AssertionError) as e:
        raise ConfigError(f'opt {config.opt!r}: {e} (any timm.optim.list_optimizers() name, e.g. momentum, '
                          'sgd, adamw)') from None
    try:
        scheduler, _ = create_scheduler_v2(optimizer, sched=config.sched, num_epochs=max(stage.epochs, 1),
                                           warmup_epochs=config.warmup_epochs, min_lr=config.min_lr,
                                           step_on_epochs=False, updates_per_epoch=steps)
    except (ValueError, AssertionError) as e:
        raise ConfigError(f'sched {config.sched!r}: {e} (timm scheduler names: cosine, step, multistep, tanh, '
                          'poly, plateau)') from None
    if scheduler is None:
        raise ConfigError(f'sched {config.sched!r} is not a timm scheduler name (cosine, step, multistep, tanh, '
                          'poly, plateau)')
    return optimizer, scheduler


def train_step(net: nn.Module, batch, state: TrainState, config: TrainConfig, criterion, mixup,
               accelerator: Accelerator, teacher: Optional[nn.Module] = None) -> torch.Tensor:
    """One batch through the prepared training forward ``net`` (maybe compiled): the loss (the distillation loss
    with a teacher, the auxiliary loss where there is a head), its backward, and where the batch completes an
    accumulation the clipped gradients' optimizer step. Returns the loss unread (no host sync)."""
    x, y = batch
    if mixup is not None:
        np.random.seed((config.seed * 1_000_003 + STAGES.index(state.stage.name) * 100_003 + state.stage_step)
                       % 2**32)
        x, y = mixup(x, y)

    def loss_of() -> torch.Tensor:
        logits, aux = net(x)
        loss = criterion(logits, y)
        if teacher is not None:  # eval mode, frozen: the same batch, no graph
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = ((1 - config.distill_weight) * loss
                    + config.distill_weight * distillation_loss(logits, teacher_logits, config.distill_temperature))
        if aux is not None:
            loss = loss + config.auxiliary_weight * criterion(aux, y)
        return loss

    return accumulated_step(accelerator, net, state.optimizer, loss_of, config.grad_clip)


def evaluate(model: nn.Module, data: Union[Dataset, ImageTensors], config: TrainConfig,
             accelerator: Accelerator) -> Dict[str, float]:
    """Top-1 on ``data``, shared out across processes. With ``eval_max_batches`` on a fixed random subset
    of that many batches (the same for every run: split files are sorted by class)."""
    order = torch.arange(len(data))
    if config.eval_max_batches is not None:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
        order = order[:config.eval_max_batches * config.batch_size].sort().values
    mine = order[accelerator.process_index::accelerator.num_processes].tolist()
    result = accuracy(model, batches(data, mine, config.batch_size, accelerator.device, config.channels_last,
                                     config.num_workers), accelerator.device, autocast=accelerator.autocast,
                      accelerator=accelerator)
    return dict(top1=result['top1'], loss=result['loss'], num_images=result['num_samples'])


def sync_models(state: TrainState, accelerator: Accelerator) -> None:
    """BN statistics averaged across processes (each saw its own shard; timm's ``distribute_bn``), in the model
    and its EMA: every rank holds the same model."""
    if accelerator.num_processes > 1:
        for model in [state.model] + ([state.ema.module] if state.ema is not None else []):
            distribute_bn(model, accelerator.num_processes, reduce=True)


def state_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_outputs(state: TrainState, config: TrainConfig, run: TrainRun, source: Optional[Path],
                  accelerator: Accelerator) -> None:
    """The stage's weights, then its summary (last: it marks the stage complete). Its time counts every resumed
    segment; the CPU time is summed over the processes (a resumed segment's earlier time is rank 0's, saved with
    the checkpoint, counted once per process). Its command is the one that started the run (``launch.json``), which
    reproduces it, not a resume's."""
    seconds, cpu_seconds = state.elapsed()
    cpu_seconds = accelerator.reduce(torch.tensor([cpu_seconds], device=accelerator.device), reduction='sum').item()
    if not accelerator.is_main_process:
        return
    model, stage = state.model, state.stage
    meta = dict(stage=stage.name, model=config.model, k=str(config.k), global_k=str(config.global_k))
    save_safetensors(model.state_dict(), run.weights(stage.name), metadata=meta)
    if state.ema is not None:
        save_safetensors(state.ema.module.state_dict(), run.ema_weights(stage.name), metadata=meta)
    if stage.bakes:  # the inference network: masks baked in, no auxiliary head
        baked = drop_training_only(bake(copy.deepcopy(model))).state_dict()
        save_safetensors(baked, run.baked, metadata=dict(meta, baked='true'))
    report = sparsity_report(model)
    report.layers = [layer for layer in report.layers if not layer.name.startswith(training_only(model))]
    StageSummary(
        stage=stage.name, model=config.model, model_args=config.model_args(model.num_classes),
        cifar_stem=config.cifar_stem, k=stage.k, global_k=config.global_k,
        source=str(source) if source else ('pretrained' if config.pretrained else None),
        epochs=stage.epochs, steps=state.stage_step, num_processes=accelerator.num_processes,
        global_batch=config.batch_size * accelerator.num_processes, seconds=round(seconds, 1),
        cpu_seconds=round(cpu_seconds, 1), hardware=hardware_description(accelerator.device),
        command=Launch.read(run.launch).command if run.launch.exists() else launch_command(accelerator),
        top1=state.history[-1]['top1'] if state.history else None,
        ema_top1=state.history[-1].get('ema_top1') if state.history else None,
        weights=dict(total=report.total, nonzero=report.nonzero, sparsity=report.sparsity),
        history=state.history).write(run.summary(stage.name))


def stage_model(stage: Stage, config: TrainConfig, num_classes: int,
                accelerator: Accelerator) -> Tuple[nn.Module, Optional[Path], bool]:
    """(model, source checkpoint, from pretrained weights): the stage's model in the state it trains, on the
    device, the same on every rank."""
    from_pretrained = config.pretrained and config.stages.index(stage.name) == 0
    source = None if from_pretrained else source_for(stage, config)
    model = build_model(config.model, config.model_args(num_classes), cifar_stem=config.cifar_stem,
                        pretrained=config.pretrained, reset_classifier=config.reset_classifier)
    prepare_stage(model, stage, None if from_pretrained else read_source(stage, source), str(source),
                  global_k=config.global_k, pretrained=from_pretrained)
    model.to(accelerator.device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    broadcast_from_rank0(model)
    return model, source, from_pretrained


def stage_data(model: nn.Module, config: TrainConfig, train_set: Union[Dataset, ImageTensors],
               eval_set: Union[Dataset, ImageTensors], augment_seed: int) -> Tuple[Any, Any]:
    """(train, eval) data as ``model`` takes them: tensors fitted to its input size and channels (the tensor
    path augments in ``batches``), or the PIL sets with their transforms."""
    train_transform, eval_transform = build_transforms(model, config)
    if isinstance(train_set, ImageTensors):  # resized / channel-adapted to what the model takes, where needed
        channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels  # in_chans
        size = input_size(model)[1:]
        return train_set.fit(channels, size), eval_set.fit(channels, size)
    eval_set.transform = eval_transform
    return SeededTransform(train_set, train_transform, seed=augment_seed), eval_set


def end_epoch(state: TrainState, eval_set: Union[Dataset, ImageTensors], config: TrainConfig,
              accelerator: Accelerator) -> None:
    """BN statistics synced, the epoch's train loss and evaluation recorded in ``state.history``, logged."""
    stage = state.stage.name
    sync_models(state, accelerator)
    losses = [float(loss) for loss in state.epoch_losses]
    train_loss = accelerator.reduce(torch.tensor(float(np.mean(losses or [0.0])), device=accelerator.device),
                                    reduction='mean').item()
    seconds, cpu_seconds = state.elapsed()  # the stage's time to this epoch's end, before its evaluation
    record = dict(epoch=state.epoch, steps=state.stage_step, train_loss=train_loss if state.epoch_losses else None,
                  seconds=round(seconds, 1), cpu_seconds=round(cpu_seconds, 1),
                  **evaluate(state.model, eval_set, config, accelerator))
    record['hardware'] = hardware_description(accelerator.device)  # a resumed run may go on elsewhere
    if state.ema is not None:
        record['ema_top1'] = evaluate(state.ema.module, eval_set, config, accelerator)['top1']
    if state.stage.image_sizes:  # progressive resizing: the side this epoch trained at
        record['image_size'] = state.stage.image_size(state.epoch) or input_size(state.model)[-1]
        record['image_crops'] = state.stage.image_crops
    state.history.append(record)
    accelerator.log({f'{stage}/top1': record['top1'], f'{stage}/eval_loss': record['loss']},
                    step=state.stage_step)  # each stage's tags on its own step axis
    accelerator.print(f'[{stage} epoch {state.epoch + 1}/{state.stage.epochs}] train loss {record["train_loss"]}, '
                      f'top-1 {record["top1"]:.2f}% on {record["num_images"]} {config.eval_split} images')


def check_image_sizes(stage: Stage, model: nn.Module, config: TrainConfig) -> None:
    """A :class:`ConfigError` unless ``model`` trains at each of the stage's progressive-resizing sides: at most
    its input size, and large enough for its layers (a training forward of a copy at the smallest side; the
    PR-DARTS auxiliary head, for one, needs about 30 px)."""
    if not stage.image_sizes:
        return
    key, side = stage.image_sizes_key, min(input_size(model)[1:])
    if max(stage.image_sizes) > side:
        raise ConfigError(f'{key} {list(stage.image_sizes)} {"crop" if stage.image_crops else "resize"} training '
                          f'images down, and {config.model} takes '
                          f'{side}x{side}: give sides up to {side}')
    smallest, channels = min(stage.image_sizes), input_size(model)[0]
    try:
        with torch.no_grad():
            TrainingForward(copy.deepcopy(model).train())(torch.zeros(2, channels, smallest, smallest))
    except RuntimeError as e:
        raise ConfigError(f'{config.model} cannot train at {smallest}x{smallest} ({e}): give {key} larger sides '
                          '(a PR-DARTS auxiliary head needs about 30 px: auxiliary_weight 0 trains without it)') from None


def run_stage(stage: Stage, resume_from: Optional[Path], state: TrainState, config: TrainConfig,
              train_set: Union[Dataset, ImageTensors], eval_set: Union[Dataset, ImageTensors],
              accelerator: Accelerator, teacher: Optional[nn.Module] = None) -> None:
    run = TrainRun(config.output)
    stage_index = STAGES.index(stage.name)  # seeds: each stage draws its own streams
    set_seed(config.seed + stage_index)
    model, source, from_pretrained = stage_model(stage, config, len(train_set.classes), accelerator)
    if teacher is not None:
        check_teacher(teacher, model, config.distill_from)
    check_image_sizes(stage, model, config)
    augment_seed = config.seed * 10 + stage_index
    train_data, eval_set = stage_data(model, config, train_set, eval_set, augment_seed)
    world, rank, bs = accelerator.num_processes, accelerator.process_index, config.batch_size
    accumulate = accelerator.gradient_accumulation_steps
    steps = len(train_data) // (bs * world)  # batches per process, a whole number of updates
    steps = min(steps, config.max_steps_per_epoch or steps) // accumulate * accumulate
    if steps == 0:
        raise ConfigError(f'no training step fits an epoch: {len(train_data)} images, batch_size {bs} x {world} '
                          f'process(es) x {accumulate} accumulated batch(es). Lower batch_size or '
                          'gradient_accumulation_steps, or use more data.')
    epochs = stage.epochs

    state.stage, state.model = stage, model
    accelerator.free_memory()  # the previous stage's prepared model and optimizer; accelerate's step count to 0
    optimizer, state.scheduler = build_optimizer(model, stage, config, steps // accumulate)
    net, state.optimizer = accelerator.prepare(TrainingForward(model), optimizer)
    # an EMA of trained weights (a stage that learns scores only has none to average)
    state.ema = (ModelEmaV3(model, decay=config.model_ema_decay) if config.model_ema and 'weights' in stage.groups
                 else None)
    state.epoch = state.step = state.stage_step = 0
    state.history, state.epoch_losses = [], []
    state.seconds_before = state.cpu_seconds_before = 0.0
    mixup, criterion = loss_fn(config, model.num_classes)
    if resume_from is not None:
        load_accelerate_state(accelerator, resume_from)
        accelerator.print(f'resumed {stage.name} from {resume_from} (epoch {state.epoch}, step {state.step})')
    if config.compile:
        net = torch.compile(net)
    trainable = sum(p.numel() for g in state.optimizer.param_groups for p in g['params'])
    start = 'its pretrained weights' if from_pretrained else f'k={stage.k}, source {source}'
    accelerator.print(f'[{stage.name}] {config.model}: {epochs} epoch(s) of {steps} steps, {trainable} trained '
                      f'parameters, {start}')

    state.start_clock()
    drop_path_base, stage_first_step = {}, state.stage_step
    while state.epoch < epochs:
        if isinstance(train_data, SeededTransform):
            train_data.epoch = state.epoch
        set_drop_path_scale(model, state.epoch / epochs, drop_path_base)
        perm = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(
            (config.seed * 100 + stage_index) * 10_000 + state.epoch))
        mine = shard_indices(perm, steps, bs, world, rank, state.step)
        model.train()
        size = stage.image_size(state.epoch)  # progressive resizing: this epoch's side (None: the data's)
        bar = tqdm(total=steps, initial=state.step, disable=not accelerator.is_local_main_process,
                   desc=f'{stage.name} {state.epoch + 1}/{epochs}' + (f' at {size}x{size}' if size else ''))
        for x, y in batches(train_data, mine, bs, accelerator.device, config.channels_last, config.num_workers,
                            augment=True, seed=augment_seed, epoch=state.epoch, cutout=config.cutout,
                            padding=config.crop_padding, flip=config.hflip, alternate_flip=config.alternate_flip):
            if size is not None:  # the seed: this batch's crops, the same on resuming
                x = (crop_batch(x, size, (augment_seed * 1_000 + state.epoch) * 100_000 + state.step)
                     if stage.image_crops else resize_batch(x, size))
            step_started = time.time()
            loss = train_step(net, (x, y), state, config, criterion, mixup, accelerator, teacher)
            if config.compile and state.stage_step == stage_first_step:
                accelerator.print(f'[{stage.name}] torch.compile: the first step took {time.time() - step_started:.1f} s')
            state.epoch_losses.append(loss)
            state.step += 1
            state.stage_step += 1
            if accelerator.sync_gradients:  # this batch completed an update
                updates = state.stage_step // accumulate
                if stage.mode == 'learn':  # the mask follows the scores
                    follow_global_k(model, stage.k, config.global_k)
                state.scheduler.step_update(updates)
                if state.ema is not None:
                    state.ema.update(model, step=updates)
            bar.update(1)
            if state.stage_step % config.log_every == 0:  # the only per-step read of the loss (a host sync)
                lr = state.optimizer.param_groups[0]['lr']
                bar.set_postfix(loss=f'{loss.item():.3f}', lr=f'{lr:.4g}')
                accelerator.log({f'{stage.name}/loss': loss.item(), f'{stage.name}/lr': lr}, step=state.stage_step)
            if state.stage_step % config.checkpoint_every == 0 and accelerator.sync_gradients:  # no pending gradient
                sync_models(state, accelerator)
                save_accelerate_state(accelerator, run.checkpoints(stage.name), state.stage_step)
        bar.close()
        end_epoch(state, eval_set, config, accelerator)
        state.epoch += 1
        state.step, state.epoch_losses = 0, []
    save_accelerate_state(accelerator, run.checkpoints(stage.name), state.stage_step)
    check_ranks_agree(dict(rank=accelerator.process_index, state_sha256=state_sha256(model),
                           ema_sha256=state_sha256(state.ema.module) if state.ema is not None else None),
                      run.ranks(stage.name), 'the trained model (or its EMA)')
    write_outputs(state, config, run, source, accelerator)
    accelerator.wait_for_everyone()
    accelerator.print(f'[{stage.name}] done: {run.weights(stage.name)}')


def main() -> None:
    args, config = parse_args()
    run = TrainRun(config.output)
    config, plan = plan_stages(config, run, args.resume)
    accelerator, launch = start_accelerator(args.cpu, config)  # precision, threads, trackers; launch.json
    accelerator.wait_for_everyone()
    if args.resume and run.launch.exists():
        Launch.read(run.launch).check_resumed_as(launch, run.launch)
    if accelerator.is_main_process and not args.resume:
        run.write_start(config, launch)
    if config.data_format == 'tensor':  # decoded once at the model's input size (cached on disk), held on the device
        size = input_size(build_model(config.model, config.model_args(config.num_classes or 1),
                                      cifar_stem=config.cifar_stem))[1:]
        train_set = load_image_tensors(config.data_source, 'train', config.data_root, config.download, size=size)
        if config.eval_split == 'holdout':
            train_set, eval_set = train_set.holdout(config.holdout_fraction, seed=config.seed)
        else:
            eval_set = load_image_tensors(config.data_source, config.eval_split, config.data_root, config.download,
                                          size=size)
        train_set, eval_set = train_set.to(accelerator.device), eval_set.to(accelerator.device)
    elif config.eval_split == 'holdout':
        raise ConfigError('eval_split holdout is carved from the decoded train split: set data_format tensor')
    else:
        train_set = build_dataset(config.data_source, 'train', root=config.data_root, download=config.download)
        eval_set = build_dataset(config.data_source, config.eval_split, root=config.data_root,
                                 download=config.download)
    teacher = None
    if config.distill_from:  # the same on every rank: loaded from the same file, never trained
        teacher = load_teacher(config.distill_from, config.model, config.model_args(len(train_set.classes)),
                               config.cifar_stem)
        teacher.to(accelerator.device,
                   memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    state = TrainState(accelerator.num_processes)
    accelerator.register_for_checkpointing(state)
    accelerator.init_trackers('train', config={k: str(v) for k, v in dataclasses.asdict(config).items()})
    if not plan:
        accelerator.print(f'every stage of {config.stages} is complete in {config.output}; nothing to resume')
    for stage, resume_from in plan:
        run_stage(config.stage(stage), resume_from, state, config, train_set, eval_set, accelerator, teacher)
    accelerator.end_training()


if __name__ == '__main__':
    run_main(main)
