"""PR-DARTS search, driven by accelerate: dense pretrain, prune, sparse finetune (or the one-step variant).

    accelerate launch recipes/search.py                                    # CPU demo, embedded mini CIFAR-10
    accelerate launch recipes/search.py --config recipes/configs/search_cifar10.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/search.py ... # data parallel, any number of ranks
    accelerate launch recipes/search.py --output runs/x --resume           # continue from the newest checkpoint

Any config key can be overridden on the command line (``--k 0.05 --second_order false``). The run folder
gets ``config.yaml``, ``genotypes/<phase>_<epoch>.json`` per epoch, ``genotype.json``, ``alpha_history.json``,
``cells.png``, ``alpha_history.png`` and ``checkpoints/step_*`` (accelerate ``save_state``).

The supernet is not wrapped in DDP: what it trains changes with the phase (weights, scores, alpha), which
DDP fixes at construction. Every gradient is averaged across processes explicitly instead (one all-reduce
per update, in ``prdarts_timm.search``), so weights, scores and alpha stay identical on every rank.
"""
import argparse
import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import Subset
from tqdm.auto import tqdm

from prdarts_timm.checkpoint import save_accelerate_state
from prdarts_timm.cli import run_main
from prdarts_timm.config import ConfigError, add_config_args, load_config
from prdarts_timm.data import SeededTransform, build_dataset, cifar_transforms, shard_indices, split_train
from prdarts_timm.distributed import broadcast_from_rank0, check_ranks_agree
from prdarts_timm.io import atomic_write_json
from prdarts_timm.run_folder import Launch, SearchRun, check_new_or_resume
from prdarts_timm.search import Architect, Supernet, enter_phase, search_step, trained_parameters
from prdarts_timm.stage import Stage
from prdarts_timm.search.config import SearchConfig
from prdarts_timm.tensor_data import batches, load_image_tensors
from prdarts_timm.training import check_num_processes, start_accelerator

DEFAULT_CONFIG = Path(__file__).resolve().parent / 'configs' / 'search_cpu_demo.yaml'


class SearchState:
    """What a checkpoint holds besides accelerate's RNG states: model, optimizers, schedulers, progress."""

    def __init__(self, model: Supernet, arch_optimizer: torch.optim.Optimizer):
        self.model, self.arch_optimizer = model, arch_optimizer
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.schedulers: Dict[str, CosineLRScheduler] = {}
        self.phase_index = self.epoch = self.step = self.global_step = 0
        self.num_processes = 1
        self.history: List[Dict] = []
        self.pending: Optional[Dict] = None  # loaded optimizer / scheduler states, applied once they exist

    def state_dict(self) -> Dict:
        return dict(
            model=self.model.state_dict(), arch_optimizer=self.arch_optimizer.state_dict(),
            optimizers={k: o.state_dict() for k, o in self.optimizers.items()},
            schedulers={k: s.state_dict() for k, s in self.schedulers.items()},
            phase_index=self.phase_index, epoch=self.epoch, step=self.step, global_step=self.global_step,
            num_processes=self.num_processes, history=self.history)

    def load_state_dict(self, state: Dict) -> None:
        check_num_processes(state['num_processes'], self.num_processes)
        self.model.load_state_dict(state['model'])
        self.arch_optimizer.load_state_dict(state['arch_optimizer'])
        for key in ('phase_index', 'epoch', 'step', 'global_step', 'history'):
            setattr(self, key, state[key])
        self.pending = dict(optimizers=state['optimizers'], schedulers=state['schedulers'])


def parse_args() -> Tuple[argparse.Namespace, SearchConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=str(DEFAULT_CONFIG), help='YAML config (default: the CPU demo)')
    parser.add_argument('--resume', action='store_true', help='continue the run in --output from its newest checkpoint')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even where a GPU is present')
    add_config_args(parser, SearchConfig)
    args = parser.parse_args()
    return args, load_config(SearchConfig, args.config, args)


def check_run_folder(config: SearchConfig, run: SearchRun, resume: bool) -> Tuple[SearchConfig, Optional[Path]]:
    """The run's config and the checkpoint to resume from (or None); refuses to overwrite a run or to resume
    another config's run."""
    try:
        config = check_new_or_resume(config, run.root, run.holds_run(), resume, 'search run')
    except ConfigError as e:
        raise ConfigError(f'{e} (--resume continues a run, --output names another folder)') from None
    return config, run.newest_checkpoint() if resume else None


def search_data(config: SearchConfig, accelerator: Accelerator) -> Tuple[Any, Any, int]:
    """(weight data, alpha data, number of classes): the train split, cut in two with ``train_portion``."""
    if config.data_format == 'tensor':  # decoded once (cached on disk), held on the training device
        train_set = load_image_tensors(config.data_source, 'train', config.data_root, config.download)
        weight_idx, alpha_idx = split_train(len(train_set), config.train_portion, seed=config.seed)
        weight_data = train_set.subset(weight_idx).to(accelerator.device)
        alpha_data = train_set.subset(alpha_idx).to(accelerator.device)
    else:
        train_set = build_dataset(config.data_source, 'train', root=config.data_root, download=config.download)
        weight_idx, alpha_idx = split_train(len(train_set), config.train_portion, seed=config.seed)
        transform = cifar_transforms(train=True)
        weight_data = SeededTransform(Subset(train_set, weight_idx), transform, config.seed)
        alpha_data = SeededTransform(Subset(train_set, alpha_idx), transform, config.seed + 1)
    return weight_data, alpha_data, len(train_set.classes)


def epoch_batches(weight_data, alpha_data, config: SearchConfig, epoch_seed: int, steps: int, skip: int,
                  accelerator: Accelerator) -> Iterator[Tuple[Tuple, Tuple]]:
    """This process's (weight batch, alpha batch) pairs of one epoch of ``steps`` steps, from a seeded
    permutation, minus the first ``skip`` steps (resume). Each step takes ``batch_size`` samples per process."""
    world, rank, bs = accelerator.num_processes, accelerator.process_index, config.batch_size
    g = torch.Generator().manual_seed(epoch_seed)
    perms = [torch.randperm(len(weight_data), generator=g), torch.randperm(len(alpha_data), generator=g)]
    halves = [batches(data, shard_indices(perm, steps, bs, world, rank, skip), bs, accelerator.device,
                      config.channels_last, config.num_workers, augment=True, seed=seed, epoch=epoch_seed)
              for data, perm, seed in zip((weight_data, alpha_data), perms, (config.seed, config.seed + 1))]
    yield from zip(*halves)


def steps_per_epoch(n_weight: int, n_alpha: int, config: SearchConfig, world: int) -> int:
    steps = min(n_weight, n_alpha) // (config.batch_size * world)
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps


def build_phase_optimizers(state: SearchState, phase: Stage, config: SearchConfig, total_steps: int) -> None:
    state.optimizers, state.schedulers = {}, {}
    for group, params in trained_parameters(state.model, phase).items():
        opt = create_optimizer_v2(params, opt='momentum', lr=phase.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
        state.optimizers[group] = opt
        state.schedulers[group] = CosineLRScheduler(opt, t_initial=max(total_steps, 1), lr_min=phase.lr_min,
                                                    t_in_epochs=False)
    if state.pending is not None:
        for group, opt in state.optimizers.items():
            opt.load_state_dict(state.pending['optimizers'][group])
            state.schedulers[group].load_state_dict(state.pending['schedulers'][group])
        state.pending = None


def record_epoch(state: SearchState, phase: Stage, run: SearchRun, accelerator: Accelerator) -> None:
    state.history.append(dict(phase=phase.name, epoch=state.epoch, global_step=state.global_step,
                              **state.model.alpha_softmax()))
    if accelerator.is_main_process:
        genotype = state.model.genotype()
        genotype.save(run.epoch_genotype(phase.name, state.epoch))
        atomic_write_json(run.alpha_history, state.history)
        accelerator.print(f'[{phase.name} epoch {state.epoch}] genotype: {genotype.to_dict()}')


def main() -> None:
    args, config = parse_args()
    run = SearchRun(config.output)
    config, resume_from = check_run_folder(config, run, args.resume)
    accelerator, launch = start_accelerator(args.cpu, config)  # precision, threads, trackers; launch.json
    if accelerator.gradient_accumulation_steps != 1:  # the weight and architecture steps alternate every batch
        raise ConfigError(f'the search takes one batch per update; gradient_accumulation_steps is '
                          f'{accelerator.gradient_accumulation_steps} (from the config or accelerate\'s '
                          'configuration): set --gradient_accumulation_steps 1, or raise batch_size instead')
    accelerator.wait_for_everyone()
    if resume_from is not None and run.launch.exists():
        Launch.read(run.launch).check_resumed_as(launch, run.launch)
    set_seed(config.seed)

    weight_data, alpha_data, num_classes = search_data(config, accelerator)
    n_steps = steps_per_epoch(len(weight_data), len(alpha_data), config, accelerator.num_processes)
    if n_steps == 0:
        raise ConfigError(f'no search step fits an epoch: {len(weight_data)} weight / {len(alpha_data)} alpha '
                          f'samples, batch_size {config.batch_size} x {accelerator.num_processes} process(es). '
                          'Lower batch_size or use more data.')

    if config.channels_last and config.init_channels < 4 and accelerator.device.type == 'cpu':
        # torch 2.14's CPU backward corrupts the heap on such a channels-last supernet (AVX2 EPYC; 4 runs)
        raise ConfigError(f'init_channels {config.init_channels} with channels_last crashes the CPU kernels of '
                          'this torch: set channels_last false, or init_channels 4 or more')
    model = Supernet(C=config.init_channels, layers=config.layers, num_classes=num_classes)
    model.to(accelerator.device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    broadcast_from_rank0(model)
    if config.compile:
        model.compile()  # in place: state-dict keys and parameters stay those of the supernet
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr, betas=tuple(config.arch_betas),
                                      weight_decay=config.arch_weight_decay)
    architect = Architect(model, arch_optimizer, second_order=config.second_order,
                          smoothing_beta=config.smoothing_beta, smoothing_sigma=config.smoothing_sigma)
    state = SearchState(model, arch_optimizer)
    state.num_processes = accelerator.num_processes
    accelerator.register_for_checkpointing(state)

    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f'resumed from {resume_from} (phase {state.phase_index}, epoch {state.epoch}, '
                          f'step {state.step})')
    elif accelerator.is_main_process:
        run.write_start(config, launch)
    accelerator.init_trackers('search', config={k: str(v) for k, v in dataclasses.asdict(config).items()})

    phases = config.phases()
    for phase_index in range(state.phase_index, len(phases)):
        phase = phases[phase_index]
        resuming_phase = state.pending is not None and phase_index == state.phase_index
        if not resuming_phase:
            state.phase_index, state.epoch, state.step = phase_index, 0, 0
        enter_phase(model, phase, init_scores=not resuming_phase)
        build_phase_optimizers(state, phase, config, phase.epochs * n_steps)
        while state.epoch < phase.epochs:
            epoch_seed = config.seed * 10_000 + phase_index * 1_000 + state.epoch
            if config.data_format == 'pil':
                weight_data.epoch = alpha_data.epoch = epoch_seed
            bar = tqdm(total=n_steps, initial=state.step, desc=f'{phase.name} {state.epoch + 1}/{phase.epochs}',
                       disable=not accelerator.is_local_main_process)
            for train_batch, val_batch in epoch_batches(weight_data, alpha_data, config, epoch_seed, n_steps,
                                                        state.step, accelerator):
                with accelerator.autocast():
                    stats = search_step(model, phase, architect, state.optimizers, train_batch, val_batch,
                                        grad_clip=config.grad_clip, weight_decay=config.weight_decay)
                state.step += 1
                state.global_step += 1
                phase_step = state.epoch * n_steps + state.step
                for scheduler in state.schedulers.values():
                    scheduler.step_update(phase_step)
                bar.update(1)
                if state.global_step % config.log_every == 0:  # the only per-step read of the losses (a host sync)
                    stats = {k: v.item() for k, v in stats.items()}
                    bar.set_postfix({k: f'{v:.3f}' for k, v in stats.items()})
                    accelerator.log({f'{phase.name}/{k}': v for k, v in stats.items()}, step=state.global_step)
                if state.global_step % config.checkpoint_every == 0:
                    save_accelerate_state(accelerator, run.checkpoints, state.global_step)
            bar.close()
            record_epoch(state, phase, run, accelerator)
            state.epoch += 1
            state.step = 0

    state.phase_index = len(phases)
    save_accelerate_state(accelerator, run.checkpoints, state.global_step)
    write_results(model, state, run, accelerator)
    accelerator.end_training()


def write_results(model: Supernet, state: SearchState, run: SearchRun, accelerator: Accelerator) -> None:
    """``ranks.json`` (every rank's alpha; the run fails if they differ), then the genotype and its pictures."""
    alpha = torch.cat([a.detach().reshape(-1) for a in model.arch_parameters()]).cpu()
    alpha_sha256 = hashlib.sha256(alpha.numpy().tobytes()).hexdigest()
    check_ranks_agree(dict(rank=accelerator.process_index, alpha_sha256=alpha_sha256, genotype=model.genotype().to_dict()),
                      run.ranks, 'alpha (the search)')
    if accelerator.is_main_process:
        from prdarts_timm.plots import plot_alpha_history, plot_cells

        genotype = model.genotype()
        genotype.save(run.genotype)
        plot_cells(genotype, run.cells_picture)
        plot_alpha_history(state.history, run.alpha_picture)
        accelerator.print(f'final genotype written to {run.genotype}')


if __name__ == '__main__':
    run_main(main)
