"""torch.hub entry points: one per model prdarts-timm registers with timm, each ``timm.create_model`` by name.

    import torch
    model = torch.hub.load('path/to/prdarts-timm', 'prdarts_c10_micro', source='local', pretrained=True)
    model = torch.hub.load('path/to/prdarts-timm', 'prdarts_c10_micro', source='local', pretrained=True,
                           pretrained_cfg='sp90_cifar10')  # a tag other than the default

Every keyword goes to ``timm.create_model`` (``num_classes``, ``in_chans``, ``features_only``, ...).
"""
import timm

import prdarts_timm  # noqa: F401  (registers the models with timm)

dependencies = ['torch', 'timm', 'safetensors', 'huggingface_hub']


def _entry_point(name: str):
    def create(pretrained: bool = False, **kwargs):
        return timm.create_model(name, pretrained=pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = (f"timm.create_model('{name}', pretrained=pretrained, **kwargs). Tags with weights: "
                      f"{', '.join(timm.list_pretrained(name + '.*')) or 'none yet'}.")
    return create


for _name in timm.list_models(module='prdarts'):
    globals()[_name] = _entry_point(_name)
