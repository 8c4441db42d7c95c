"""A stage of training, as data: what the pruned layers do in it, what it trains, how it starts, its k and its
schedule. The search's phases and the retraining's stages are both :class:`Stage` records, built from each
recipe's config (``SearchConfig.phases()``, ``TrainConfig.stage(name)``) and read by the recipes,
:func:`~prdarts_timm.retrain.prepare_stage` and :func:`~prdarts_timm.search.enter_phase`: nothing branches on a
stage's name. What a name means is this table (``KINDS``):

| name     | trains (group: the pruned layers' mode while it steps) | scores initialised | k      | bakes |
|----------|--------------------------------------------------------|--------------------|--------|-------|
| pretrain | weights: dense                                          | no                 | 1      | no    |
| prune    | scores: learn (top-k mask re-selected)                  | yes (scaled)       | target | no    |
| finetune | weights: fixed (the mask it starts with)                | no                 | target | yes   |
| onestep  | weights: fixed, then scores: learn                      | yes (scaled)       | target | no    |

"bakes": the stage writes the inference network when it ends (retraining). A stage enters the mode of its first
group; a stage of several groups switches to each group's mode for that group's step.
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .layers import MODES, check_k

__all__ = ['Stage', 'KINDS', 'learns_mask']

KINDS: Dict[str, Dict[str, Any]] = {
    'pretrain': dict(trains=(('weights', 'dense'),), init_scores=False, bakes=False),
    'prune': dict(trains=(('scores', 'learn'),), init_scores=True, bakes=False),
    'finetune': dict(trains=(('weights', 'fixed'),), init_scores=False, bakes=True),
    'onestep': dict(trains=(('weights', 'fixed'), ('scores', 'learn')), init_scores=True, bakes=False),
}


@dataclass(frozen=True)
class Stage:
    """One stage: ``trains`` is ((parameter group, pruned layers' mode), ...) in step order; ``k`` the kept
    fraction it uses (1 for a dense stage); ``arch_step``: the search's alpha step runs in it."""
    name: str
    trains: Tuple[Tuple[str, str], ...]
    init_scores: bool
    bakes: bool
    k: float
    epochs: int
    lr: float
    lr_min: float = 0.0
    arch_step: bool = True
    image_sizes: Tuple[int, ...] = ()  # progressive resizing: the side of the training images in each leading epoch
    image_crops: bool = False  # those images are random crops of that side (objects keep their scale), not resized

    @classmethod
    def of(cls, name: str, k: float, epochs: int, lr: float, lr_min: float = 0.0, arch_step: bool = True,
           image_sizes: Tuple[int, ...] = (), image_crops: bool = False) -> 'Stage':
        """The stage ``name`` (a key of :data:`KINDS`) at target kept fraction ``k`` (a dense stage keeps all)."""
        if name not in KINDS:
            raise ValueError(f'unknown stage {name!r}; expected one of {tuple(KINDS)}')
        kind = KINDS[name]
        dense = kind['trains'][0][1] == 'dense'
        return cls(name=name, k=1.0 if dense else check_k(k), epochs=epochs, lr=lr, lr_min=lr_min,
                   arch_step=arch_step, image_sizes=tuple(image_sizes), image_crops=image_crops,
                   **kind)

    def image_size(self, epoch: int) -> Optional[int]:
        """The side the training images of ``epoch`` are resized down or cropped to (None: the size the data has)."""
        return self.image_sizes[epoch] if epoch < len(self.image_sizes) else None

    @property
    def image_sizes_key(self) -> str:
        """The config key that gave ``image_sizes`` (``pretrain_crop_sizes`` or ``pretrain_image_sizes``)."""
        return f'{self.name}_{"crop" if self.image_crops else "image"}_sizes'

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f'stage {self.name}: epochs must be >= 0, got {self.epochs}')
        if not self.trains or any(group not in ('weights', 'scores') or mode not in MODES
                                  for group, mode in self.trains):
            raise ValueError(f'stage {self.name}: trains must be (group, mode) pairs of weights / scores and '
                             f'{MODES}, got {self.trains}')
        check_k(self.k)
        if len(self.image_sizes) > self.epochs or any(size < 8 for size in self.image_sizes):
            raise ValueError(f'{self.image_sizes_key} gives the side (>= 8 px) of some of the {self.epochs} '
                             f'{self.name} epochs (the rest train at full size), got {list(self.image_sizes)}')

    @property
    def mode(self) -> str:
        """The pruned layers' mode the stage enters (its first group's)."""
        return self.trains[0][1]

    @property
    def dense(self) -> bool:
        return self.mode == 'dense'

    @property
    def groups(self) -> Tuple[str, ...]:
        """The parameter groups it trains, in step order."""
        return tuple(group for group, _ in self.trains)


def learns_mask(name: str) -> bool:
    """Whether the stage ``name`` chooses the mask (learns scores): where a run's sparsity was decided."""
    return any(mode == 'learn' for _, mode in KINDS[name]['trains'])
