"""The knowledge distiller (teacher head, Fig. 5) and the student network (Fig. 4).

Both return ``(output, aesthetic_feature)``: by default the softmax over 10 score bins (the other
outputs of ``iaakd.tasks`` set ``output_size`` and ``activation``), and the input of the output layer,
which is what the student imitates (f_t, f_s).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NUM_BINS = 10
ACTIVATIONS = {
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "sigmoid": torch.sigmoid,
    "identity": lambda logits: logits,
}


class Distiller(nn.Module):
    """BatchNorm on the concatenated GSFs, then linear layers with ReLU, then a 10-way softmax."""

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.0,
        output_size: int = NUM_BINS,
        activation: str = "softmax",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(input_dim)]
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.output = nn.Linear(width, output_size)
        self.activation = activation
        self.feature_dim = width

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aesthetic_feature = self.body(features)
        return ACTIVATIONS[self.activation](self.output(aesthetic_feature)), aesthetic_feature


class Student(nn.Module):
    """A CNN backbone, an FC layer to the teacher feature's size (f_s), and an FC softmax layer."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, output_size: int = NUM_BINS, activation: str = "softmax"
    ) -> None:
        super().__init__()
        self.backbone = backbone  # timm model with num_classes=0: returns pooled features
        self.to_feature = nn.Sequential(nn.Linear(backbone.num_features, feature_dim), nn.ReLU(inplace=True))
        self.output = nn.Linear(feature_dim, output_size)
        self.activation = activation

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aesthetic_feature = self.to_feature(self.backbone(images))
        return ACTIVATIONS[self.activation](self.output(aesthetic_feature.float())), aesthetic_feature
