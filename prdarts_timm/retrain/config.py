"""The retraining recipe's config: every key a YAML file or ``--key value`` may set."""
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from ..config import RunConfig
from ..layers import check_k
from ..stage import Stage

__all__ = ['STAGES', 'TrainConfig']

STAGES = ('pretrain', 'prune', 'finetune')


@dataclass
class TrainConfig(RunConfig):
    """Defaults: the CPU demo (a mini PR-DARTS network on the embedded mini CIFAR-10, 99% sparsity). The keys
    both recipes have (data, speed, logging): :class:`prdarts_timm.config.RunConfig`."""
    output: str = 'runs/train'
    stages: List[str] = field(default_factory=lambda: list(STAGES))
    source: Optional[str] = None  # checkpoint the first stage starts from (default: the previous stage's output)
    # model
    model: str = 'prdarts_c10_mini'  # any timm.create_model name (also hf-hub:org/name, local-dir:folder)
    pretrained: bool = False  # the first stage starts from the model's pretrained weights (new head if needed)
    reset_classifier: bool = False  # with pretrained: a new dense classifier even for the same class count
    genotype: Optional[str] = None  # PR-DARTS models: a shipped genotype name or a search's genotype.json
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # more create_model kwargs (C, layers, ...)
    num_classes: Optional[int] = None  # default: the number of classes of the data
    cifar_stem: bool = False  # timm ResNet / MobileNet: 32x32 stem (prdarts_timm.builder.adapt_to_cifar)
    auxiliary_weight: float = 0.4  # PR-DARTS models: weight of the auxiliary head's loss (0 = no head)
    drop_path_rate: float = 0.0  # ramped linearly from 0 over each stage, as in the DARTS evaluation
    drop_rate: float = 0.0
    # distillation (prdarts_timm.distill): a teacher for every stage of the run (null = none)
    distill_from: Optional[str] = None  # a run folder or its stage, a checkpoint file, or a tag with weights
    distill_weight: float = 0.5  # loss = (1 - w) * task loss + w * T^2 * KL(teacher || student) at temperature T
    distill_temperature: float = 4.0
    # pruning
    k: float = 0.01  # fraction of weights kept
    global_k: bool = False  # one threshold across all layers instead of k per layer
    # data
    eval_split: str = 'test'  # or 'holdout': holdout_fraction of each train class, not trained on
    holdout_fraction: float = 0.1
    cutout: int = 16  # DARTS cutout length on 32x32 inputs (0 = off)
    crop_padding: int = 4  # DARTS random crop of 32x32 inputs padded by this many pixels (0 = no crop)
    hflip: bool = True  # random horizontal flips of 32x32 inputs (off for text, digits, ...)
    alternate_flip: bool = False  # each image's flip drawn once, then alternated every epoch (tensor data)
    mixup: float = 0.0  # timm Mixup alphas (0 = off)
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    # optimisation (timm optimizer and scheduler names)
    pretrain_epochs: int = 3
    prune_epochs: int = 2
    finetune_epochs: int = 2
    # progressive resizing: the side each leading pretrain epoch trains at (images resized down from the data's size,
    # antialiased; e.g. [16, 16, 24]: two epochs at 16x16, one at 24x24, the rest at full size; evaluation at full size)
    pretrain_image_sizes: List[int] = field(default_factory=list)
    # the same with random crops of each side instead (objects keep the scale they have at evaluation, where resizing
    # shrinks them): e.g. [24, 24]: two epochs on 24x24 windows of the (augmented) images, the rest at full size
    pretrain_crop_sizes: List[int] = field(default_factory=list)
    pretrain_lr: float = 0.05
    prune_lr: float = 0.1
    finetune_lr: float = 0.01
    opt: str = 'momentum'
    momentum: float = 0.9
    weight_decay: float = 3e-4
    sched: str = 'cosine'
    warmup_epochs: int = 0
    min_lr: float = 0.0
    model_ema: bool = False  # EMA of the weights in pretrain and finetune (timm ModelEmaV3)
    model_ema_decay: float = 0.999
    # run
    eval_max_batches: Optional[int] = None  # evaluate on the first N batches of eval_split only

    # keys added after runs were made, with the value that continues such a run as it started
    ADDED_KEYS: ClassVar[Dict[str, Any]] = dict(data_format='pil', channels_last=False, compile=False,
                                                 crop_padding=4, hflip=True, holdout_fraction=0.1,
                                                 reset_classifier=False, alternate_flip=False,
                                                 distill_from=None, distill_weight=0.5, distill_temperature=4.0,
                                                 cpu_threads=None, log_with='tensorboard',
                                                 gradient_accumulation_steps=None, pretrain_image_sizes=[],
                                                 pretrain_crop_sizes=[])

    def __post_init__(self):
        super().__post_init__()
        check_k(self.k)
        self.stages = list(self.stages)
        if not self.stages or self.stages != [s for s in STAGES if s in self.stages]:
            raise ValueError(f'stages must be a non-empty list of {list(STAGES)} in that order, each once; got '
                             f'{self.stages}')
        for name in ('eval_max_batches', 'num_classes'):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1 (or null), got {getattr(self, name)}')
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f'holdout_fraction must be in (0, 1), got {self.holdout_fraction}')
        for name in ('pretrain_epochs', 'prune_epochs', 'finetune_epochs', 'warmup_epochs', 'cutout', 'crop_padding'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        for name in ('auxiliary_weight', 'drop_path_rate', 'drop_rate', 'mixup', 'cutmix', 'label_smoothing',
                     'weight_decay'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ValueError(f'mixup / cutmix mix pairs of images: batch_size must be even, got {self.batch_size}')
        if self.alternate_flip and not (self.hflip and self.data_format == 'tensor'):
            raise ValueError('alternate_flip alternates the flips of the tensor data path: it needs hflip true and '
                             'data_format tensor')
        self.pretrain_image_sizes = [int(size) for size in self.pretrain_image_sizes]
        self.pretrain_crop_sizes = [int(size) for size in self.pretrain_crop_sizes]
        if self.pretrain_image_sizes and self.pretrain_crop_sizes:
            raise ValueError('pretrain_image_sizes (resized images) and pretrain_crop_sizes (random crops) both give '
                             'the leading epochs\' sides: set one of them')
        self.stage('pretrain')  # the Stage record checks its image sizes against its epochs
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f'distill_weight must be in [0, 1], got {self.distill_weight}')
        if self.distill_temperature <= 0:
            raise ValueError(f'distill_temperature must be > 0, got {self.distill_temperature}')
        if self.pretrained and self.source:
            raise ValueError('pretrained and source both say where the first stage starts: set one of them')
        if self.reset_classifier and not self.pretrained:
            raise ValueError('reset_classifier replaces the classifier of pretrained weights: set pretrained true, '
                             'or reset_classifier false')
        if self.pretrained and self.auxiliary_weight > 0:
            raise ValueError('pretrained weights come without the auxiliary head (it is training only): set '
                             'auxiliary_weight 0 to fine-tune from them')
        if not 0 < self.model_ema_decay < 1:
            raise ValueError(f'model_ema_decay must be in (0, 1), got {self.model_ema_decay}')

    def stage(self, name: str) -> Stage:
        """The stage ``name`` of this config as a record (:class:`~prdarts_timm.stage.Stage`): what it trains and
        how, its k, epochs and learning rates."""
        crops = getattr(self, f'{name}_crop_sizes', ())  # only pretrain has the two size keys
        return Stage.of(name, self.k, getattr(self, f'{name}_epochs'), getattr(self, f'{name}_lr'), lr_min=self.min_lr,
                        image_sizes=crops or getattr(self, f'{name}_image_sizes', ()), image_crops=bool(crops))

    def model_args(self, num_classes: int) -> Dict[str, Any]:
        """The ``timm.create_model`` kwargs this config asks for (the PR-DARTS auxiliary head only if weighted)."""
        kwargs = dict(self.model_kwargs, num_classes=self.num_classes or num_classes)
        if self.genotype is not None:
            kwargs['genotype'] = self.genotype
        if self.auxiliary_weight > 0:
            kwargs['auxiliary'] = True
        if self.drop_path_rate > 0:
            kwargs['drop_path_rate'] = self.drop_path_rate
        if self.drop_rate > 0:
            kwargs['drop_rate'] = self.drop_rate
        return kwargs
