"""The search recipe's config: every key a YAML file or ``--key value`` may set."""
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional

from ..data import DATA_FORMATS, SOURCES
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
    data_format: str = 'tensor'  # 'tensor': decoded once, augmented in batches on the device; 'pil': a DataLoader
    batch_size: int = 32  # per process
    num_workers: int = 0  # DataLoader workers (data_format pil)
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
    # speed
    mixed_precision: str = 'no'  # or 'bf16' (autocast)
    channels_last: bool = True  # supernet and batches in the channels-last memory format
    compile: bool = False  # torch.compile the supernet's forward (minutes of compiling first)
    # run
    checkpoint_every: int = 50
    log_every: int = 10

    # keys added after runs were made, with the value that continues such a run as it started
    ADDED_KEYS: ClassVar[Dict[str, Any]] = dict(data_format='pil', mixed_precision='no', channels_last=False,
                                                compile=False)

    def __post_init__(self):
        check_k(self.k)
        if self.data_source not in SOURCES:
            raise ValueError(f'data_source must be one of {SOURCES}, got {self.data_source!r}')
        if self.data_format not in DATA_FORMATS:
            raise ValueError(f'data_format must be one of {DATA_FORMATS}, got {self.data_format!r}')
        if self.mixed_precision not in ('no', 'bf16'):
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
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
