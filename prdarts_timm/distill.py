"""Knowledge distillation for the retraining recipe: the teacher and the loss.

A stage of ``recipes/train.py`` with ``distill_from`` set trains on
``(1 - distill_weight) * task loss + distill_weight * distillation_loss(student, teacher, distill_temperature)``
(Hinton et al., 2015: the KL divergence of the softened distributions, times T^2 so its gradients keep their
scale as T changes). The teacher sees the same augmented batch as the student, in eval mode, under ``no_grad``;
it is never trained and never saved with the run.

``distill_from`` names the teacher as one of:

* a run folder of ``recipes/train.py`` (its last complete stage) or one of its stage folders
  (``runs/dense/pretrain``): the network that stage trained, in the architecture it was trained as;
* a checkpoint file: inside a stage folder, as that stage; elsewhere, in the student's architecture (the dense
  parent of a pruned student);
* a model name with weights: a published tag (``prdarts_c10_micro.sp90_cifar10``), ``hf-hub:org/name`` or
  ``local-dir:folder``, loaded with ``pretrained=True``.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .builder import create_model, load_model
from .errors import ConfigError
from .retrain.config import STAGES
from .run_folder import TRAINING_ONLY_ARGS, TrainRun
from .training import input_size

__all__ = ['distillation_loss', 'load_teacher', 'check_teacher']


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch (computed in float32)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                    reduction='batchmean', log_target=True) * (t * t)


def _is_model_name(spec: str) -> bool:
    return spec.startswith(('hf-hub:', 'local-dir:')) or timm.is_model(spec.split('.')[0])


def _stage_of(folder: Path) -> Optional[Tuple[TrainRun, str]]:
    """(run, stage) where ``folder`` is a complete stage folder of a training run, else None."""
    run = TrainRun(folder.parent)
    return (run, folder.name) if folder.name in STAGES and run.is_complete(folder.name) else None


def load_teacher(spec: str, student_model: str, student_args: Dict[str, Any], cifar_stem: bool = False) -> nn.Module:
    """The teacher ``spec`` names (see the module docstring), in eval mode with every parameter frozen. A
    checkpoint outside a run folder is read into ``student_model`` built with ``student_args`` (its
    training-only parts left out) and ``cifar_stem``."""
    path = Path(spec)
    if path.is_dir():
        run, stage = _stage_of(path) or (TrainRun(path), TrainRun(path).last_complete_stage())
        teacher = run.load_inference_network(stage)
    elif path.is_file():
        found = _stage_of(path.parent)
        if found is not None:
            name, kwargs, stem = found[0].inference_args(found[1])
        else:
            name, stem = student_model, cifar_stem
            kwargs = {k: v for k, v in student_args.items() if k not in TRAINING_ONLY_ARGS}
        teacher = load_model(name.split('.')[0], path, cifar_stem=stem, hints=[
            f'distill_from {spec!r}: a checkpoint outside a run folder is read as the student\'s architecture '
            f'({student_model}); name a run folder\'s stage to take the architecture it was trained as'], **kwargs)
    elif _is_model_name(spec):
        teacher = create_model(spec, pretrained=True)
    else:
        raise ConfigError(f'distill_from {spec!r} is no file, no folder and no model name: name a run folder or one '
                          'of its stages (runs/x/pretrain), a checkpoint file, or a tag with weights '
                          '(prdarts_c10_micro.sp90_cifar10)')
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def check_teacher(teacher: nn.Module, student: nn.Module, spec: str) -> None:
    """A :class:`ConfigError` unless the teacher predicts the student's classes from the student's inputs."""
    if teacher.num_classes != student.num_classes:
        raise ConfigError(f'the teacher {spec!r} predicts {teacher.num_classes} classes and the student '
                          f'{student.num_classes}: distill from a teacher trained on the same classes')
    if input_size(teacher) != input_size(student):
        raise ConfigError(f'the teacher {spec!r} takes inputs of {input_size(teacher)} and the student '
                          f'{input_size(student)}: distill from a teacher of the same input size')
