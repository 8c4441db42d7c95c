"""The search recipe's config: every key a YAML file or ``--key value`` may set."""
from dataclasses import dataclass
from typing import List, Optional

from ..data import SOURCES
from ..layers import check_k
from .phases import Phase

__all__ = ['SearchConfig']


@dataclass
class SearchConfig:
    """Defaults are the paper's CIFAR-10 search (method note 3.3), first-order steps aside."""
    output: str = 'runs/search'
    seed: int = 1234
    # data: the train split is cut into a weight half and an alpha half
    data_source: str = 'mini'
    data_root: Optional[str] = None
    download: bool = False
    train_portion: float = 0.5
    batch_size: int = 32  # per process
    num_workers: int = 0
    # supernet
    init_channels: int = 16
    layers: int = 8
    k: float = 0.01
    # schedule
    onestep: bool = False
    pretrain_epochs: int = 100
    prune_epochs: int = 50
    finetune_epochs: int = 100
    onestep_epochs: int = 50
    pretrain_lr: float = 0.025
    prune_lr: float = 0.1
    finetune_lr: float = 0.025
    onestep_lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.0
    weight_decay: float = 1e-3
    grad_clip: float = 5.0
    max_steps_per_epoch: Optional[int] = None
    # architecture steps
    second_order: bool = True
    prune_arch_step: bool = False
    arch_lr: float = 3e-4
    arch_betas: List[float] = (0.5, 0.999)  # type: ignore[assignment]
    arch_weight_decay: float = 1e-3
    smoothing_beta: float = 0.0
    smoothing_sigma: float = 0.25
    # run
    checkpoint_every: int = 50
    log_every: int = 10

    def __post_init__(self):
        check_k(self.k)
        if self.data_source not in SOURCES:
            raise ValueError(f'data_source must be one of {SOURCES}, got {self.data_source!r}')
        if not 0 < self.train_portion < 1:
            raise ValueError(f'train_portion must be in (0, 1), got {self.train_portion}')
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f'max_steps_per_epoch must be >= 1 (or null for whole epochs), got '
                             f'{self.max_steps_per_epoch}')
        for name in ('batch_size', 'init_channels', 'checkpoint_every', 'log_every'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        self.arch_betas = list(self.arch_betas)

    def phases(self) -> List[Phase]:
        if self.onestep:
            return [Phase('onestep', self.onestep_epochs, self.onestep_lr, self.lr_min)]
        return [
            Phase('pretrain', self.pretrain_epochs, self.pretrain_lr, self.lr_min),
            Phase('prune', self.prune_epochs, self.prune_lr, self.lr_min, arch_step=self.prune_arch_step),
            Phase('finetune', self.finetune_epochs, self.finetune_lr, self.lr_min),
        ]
