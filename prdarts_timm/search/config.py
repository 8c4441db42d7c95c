"""The search recipe's config: every key a YAML file or ``--key value`` may set."""
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List

from ..config import RunConfig
from ..layers import check_k
from ..stage import Stage
from .phases import Phase

__all__ = ['SearchConfig']


@dataclass
class SearchConfig(RunConfig):
    """Defaults are the paper's CIFAR-10 search (method note 3.3), first-order steps aside. The keys both
    recipes have (data, speed, logging): :class:`prdarts_timm.config.RunConfig`."""
    output: str = 'runs/search'
    seed: int = 1234
    batch_size: int = 32  # per process
    checkpoint_every: int = 50
    # data: the train split is cut into a weight half and an alpha half
    train_portion: float = 0.5
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
    # architecture steps
    second_order: bool = True
    prune_arch_step: bool = False
    arch_lr: float = 3e-4
    arch_betas: List[float] = (0.5, 0.999)  # type: ignore[assignment]
    arch_weight_decay: float = 1e-3
    smoothing_beta: float = 0.0
    smoothing_sigma: float = 0.25

    # keys added after runs were made, with the value that continues such a run as it started
    ADDED_KEYS: ClassVar[Dict[str, Any]] = dict(data_format='pil', mixed_precision='no', channels_last=False,
                                                compile=False, cpu_threads=None, log_with='tensorboard',
                                                gradient_accumulation_steps=None)

    def __post_init__(self):
        super().__post_init__()
        check_k(self.k)
        if not 0 < self.train_portion < 1:
            raise ValueError(f'train_portion must be in (0, 1), got {self.train_portion}')
        for name in ('init_channels',):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        self.arch_betas = list(self.arch_betas)

    def phases(self) -> List[Stage]:
        if self.onestep:
            return [Phase('onestep', self.onestep_epochs, self.onestep_lr, self.lr_min, k=self.k)]
        return [
            Phase('pretrain', self.pretrain_epochs, self.pretrain_lr, self.lr_min),
            Phase('prune', self.prune_epochs, self.prune_lr, self.lr_min, arch_step=self.prune_arch_step, k=self.k),
            Phase('finetune', self.finetune_epochs, self.finetune_lr, self.lr_min, k=self.k),
        ]
