"""CIFAR-10's per-channel mean and std (of the training split, in [0, 1]): the DARTS normalization that the
CIFAR models' ``pretrained_cfg``, the data transforms and the tensor data path share; and its class names in
label order (the CIFAR models' ``pretrained_cfg['label_names']``)."""

__all__ = ['CIFAR10_MEAN', 'CIFAR10_STD', 'CIFAR10_CLASSES']

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
