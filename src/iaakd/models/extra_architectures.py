"""Architectures for which timm has a weights entry but no builder.

timm lists ``resnext101_32x48d.fb_wsl_ig1b_ft_in1k`` (the paper's ResNeXt101 32x48d, Instagram WSL)
among its pretrained configs, but registers no ``resnext101_32x48d`` builder, and maps the old name
``ig_resnext101_32x48d`` to the *32x8d* model with only a warning (METHOD.md). Registering the builder
here, with timm's own config, makes the full name work like any other. Imported by the backbone factory.
"""

from __future__ import annotations

import timm
import timm.models.resnet as timm_resnet
from timm.models import register_model

# register_model reads the pretrained configs of the module that defines the builder.
default_cfgs = {"resnext101_32x48d": timm_resnet.default_cfgs["resnext101_32x48d"]}

if "resnext101_32x48d" not in timm.list_models():

    @register_model
    def resnext101_32x48d(pretrained: bool = False, **kwargs) -> timm_resnet.ResNet:
        """ResNeXt-101 32x48d, as ``resnext101_32x8d`` with a base width of 48."""
        model_args = dict(block=timm_resnet.Bottleneck, layers=(3, 4, 23, 3), cardinality=32, base_width=48)
        return timm_resnet._create_resnet("resnext101_32x48d", pretrained, **dict(model_args, **kwargs))
