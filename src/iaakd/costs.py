"""Parameters and multiply-accumulates (the paper's "FLOPs") of a model at a given input size."""

from __future__ import annotations

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from iaakd.models import MLSP, count_parameters
from iaakd.models.backbones import any_size_kwargs


def gmacs(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Giga multiply-accumulates of one forward pass (on the model's device; the meta device works).

    torch's counter gives 2 FLOPs per multiply-accumulate; the paper's "FLOPs" are MACs, so halve it.
    """
    example = torch.zeros(input_shape, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with counter, torch.no_grad():
        model(example)
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def backbone_costs(name: str, height: int, width: int, mlsp: bool = True) -> tuple[float, float]:
    """(million parameters, GMACs per image at height x width) of a timm model, without weights."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0, **any_size_kwargs(name))
    wrapped = MLSP(model) if mlsp else model
    return count_parameters(model) / 1e6, gmacs(wrapped, (1, 3, height, width))
