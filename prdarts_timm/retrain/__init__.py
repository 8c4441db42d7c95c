"""Pruned retraining (HYDRA: pretrain, prune, finetune) of any timm model; ``recipes/train.py`` runs it."""
from .config import STAGES, TrainConfig
from .stages import (
    build_model, check_kept_fraction, follow_global_k, prepare_stage, read_source,
    set_drop_path_scale,
)
