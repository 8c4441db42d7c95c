"""What the recipes share around their training loops: how a run starts on accelerate (precision, threads,
trackers, its launch record), the data transforms a model takes, top-1 evaluation and the resume checks.

Above the search and the retraining (it knows nothing of either), below the recipes.
"""
import contextlib
import os
import shlex
import sys
from typing import Any, Callable, ContextManager, Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin
from timm.data import create_transform, resolve_data_config

from .cpu_allocator import keep_freed_memory
from .data import cifar_transforms
from .errors import ConfigError
from .profile import hardware_description
from .run_folder import Launch

__all__ = ['accuracy', 'check_num_processes', 'cpu_threads_per_process', 'data_transforms', 'input_size',
           'launch_command', 'start_accelerator', 'takes_cifar_inputs']


def input_size(model: nn.Module) -> Tuple[int, int, int]:
    """(channels, height, width) the model takes, as timm resolves it from its pretrained config."""
    return tuple(resolve_data_config(model=model)['input_size'])


def takes_cifar_inputs(model: nn.Module) -> bool:
    """Whether the model takes 32x32 inputs: those get the DARTS CIFAR transforms, others timm's."""
    return input_size(model)[1:] == (32, 32)


def data_transforms(model: nn.Module, cutout: int = 0, padding: int = 4, flip: bool = True) -> Tuple[Callable, Callable]:
    """(train, eval) transforms: the DARTS CIFAR ones (a crop of the image padded by ``padding``, ``flip``,
    ``cutout``) for a model of 32x32 inputs, timm's (``create_transform`` of its resolved data config)
    otherwise, where ``cutout`` must be 0."""
    if takes_cifar_inputs(model):
        return (cifar_transforms(train=True, cutout=cutout, padding=padding, flip=flip),
                cifar_transforms(train=False))
    if cutout:
        raise ConfigError(f'cutout applies to 32x32 inputs; this model takes {input_size(model)}: set cutout 0')
    data_config = resolve_data_config(model=model)
    return create_transform(**data_config, is_training=True), create_transform(**data_config, is_training=False)


@torch.inference_mode()
def accuracy(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], device: torch.device,
             top5: bool = False, autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             accelerator: Optional[Any] = None,
             memory_format: torch.memory_format = torch.preserve_format) -> Dict[str, Any]:
    """Top-1 (and top-5) accuracy and mean cross-entropy of ``model`` (in eval mode, its mode restored after)
    over ``batches`` (moved to ``device`` in ``memory_format``, e.g. ``torch.channels_last`` for a model converted
    to it; the logits computed under ``autocast()``).

    With an ``accelerator``, each process passes its own share of the data and the counts are summed over the
    processes (``accelerator.reduce``; they are sums already, not per-sample results for
    ``gather_for_metrics``): every process gets the figures of the whole set."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, loss sum, samples
    for x, y in batches:
        x, y = x.to(device, memory_format=memory_format), y.to(device)
        with autocast():
            logits = model(x)
        hit1 = logits.argmax(dim=1) == y
        hit5 = ((logits.topk(5, dim=1).indices == y[:, None]).any(dim=1) | hit1) if top5 else hit1
        counts += torch.stack([hit1.sum(), hit5.sum(), nn.functional.cross_entropy(logits.float(), y, reduction='sum'),
                               torch.tensor(y.numel(), device=y.device)]).double()
    model.train(was_training)
    if accelerator is not None and accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction='sum')
    correct1, correct5, loss_sum, seen = counts.cpu().tolist()
    seen = int(seen)
    return dict(num_samples=seen, correct_top1=int(correct1), top1=100.0 * correct1 / max(seen, 1),
                correct_top5=int(correct5) if top5 else None, top5=100.0 * correct5 / max(seen, 1) if top5 else None,
                loss=loss_sum / max(seen, 1))


def check_num_processes(saved: int, current: int) -> None:
    """A checkpoint written by ``saved`` processes resumes only with as many: the data order and the batch size
    per step depend on the count."""
    if saved != current:
        raise ConfigError(f'this checkpoint was written by {saved} process(es) and is resumed with {current}: the '
                          'data order and batch size per step would change. Resume with the same number of '
                          'processes.')


def cpu_threads_per_process(requested: Optional[int], local_processes: int) -> int:
    """Torch threads for each process of a run on a CPU: ``requested`` (the config's ``cpu_threads``), else the
    ``OMP_NUM_THREADS`` the process was given (``accelerate launch --num_cpu_threads_per_process N``, or set by
    hand), else the cores this process may run on shared out among the machine's processes. accelerate's launcher
    sets ``OMP_NUM_THREADS=1`` whenever it is not told otherwise: from it, a 1 is taken as that default, which
    would leave all but one core idle, not as a request (ask for one thread with ``cpu_threads: 1``)."""
    if requested is not None:
        return requested
    given = int(os.environ.get('OMP_NUM_THREADS') or 0)
    launcher_default = given == 1 and _launched_by_accelerate()
    if given and not launcher_default:
        return given
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_processes))


def start_accelerator(cpu: bool, config: Any) -> Tuple[Accelerator, Launch]:
    """The run's ``Accelerator`` and its launch record. ``config.mixed_precision`` and
    ``config.gradient_accumulation_steps`` (null: what ``accelerate config`` / ``accelerate launch`` set),
    ``config.log_with`` (accelerate's tracker names; ``none``: no tracker); on a CPU, ``cpu_threads_per_process``
    torch threads and freed memory kept (:func:`~prdarts_timm.cpu_allocator.keep_freed_memory`). A prepared model
    runs in DDP without broadcasting its buffers at every forward: the recipes average BN statistics themselves
    (each epoch's end and checkpoint), as they did before DDP."""
    log_with = None if config.log_with == 'none' else config.log_with
    accumulation = (None if config.gradient_accumulation_steps is None  # accelerate reads its configuration
                    else GradientAccumulationPlugin(num_steps=config.gradient_accumulation_steps))
    try:
        accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision, project_dir=config.output,
                                  log_with=log_with, gradient_accumulation_plugin=accumulation,
                                  kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    except (ValueError, ImportError) as e:
        raise ConfigError(f'accelerate cannot start this run ({e}); check mixed_precision (no, bf16), '
                          'gradient_accumulation_steps (>= 1) and log_with (an installed tracker, e.g. '
                          'tensorboard, or none)') from None
    threads = None
    if accelerator.device.type == 'cpu':
        keep_freed_memory()
        local = int(os.environ.get('LOCAL_WORLD_SIZE') or accelerator.num_processes)
        threads = cpu_threads_per_process(config.cpu_threads, local)
        torch.set_num_threads(threads)
    launch = Launch(num_processes=accelerator.num_processes, distributed_type=str(accelerator.distributed_type),
                    mixed_precision=accelerator.mixed_precision, device=str(accelerator.device),
                    hardware=hardware_description(accelerator.device), command=launch_command(accelerator),
                    cpu_threads_per_process=threads,
                    trackers=[str(getattr(t, 'value', t)) for t in accelerator.log_with],
                    gradient_accumulation_steps=accelerator.gradient_accumulation_steps)
    return accelerator, launch


def launch_command(accelerator: Accelerator) -> str:
    """The command that launched this process, as a user would type it: ``accelerate launch`` with the process
    count where accelerate's launcher started it, else ``python`` (with the ``OMP_NUM_THREADS`` it was given)."""
    if not _launched_by_accelerate():
        threads = os.environ.get('OMP_NUM_THREADS')
        return (f'OMP_NUM_THREADS={threads} ' if threads else '') + f'python {shlex.join(sys.argv)}'
    processes = f' --multi_gpu --num_processes {accelerator.num_processes}' if accelerator.num_processes > 1 else ''
    return f'accelerate launch{processes} {shlex.join(sys.argv)}'


def _launched_by_accelerate() -> bool:
    """Whether accelerate's launcher started this process (it sets ``ACCELERATE_DYNAMO_BACKEND`` for every run)."""
    return 'ACCELERATE_DYNAMO_BACKEND' in os.environ
