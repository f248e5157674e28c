"""The knowledge distiller (teacher head, Fig. 5) and the student network (Fig. 4).

Both return ``(distribution, aesthetic_feature)``: the softmax over 10 score bins, and the input of
the output layer, which is what the student imitates (f_t, f_s).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NUM_BINS = 10


class Distiller(nn.Module):
    """BatchNorm on the concatenated GSFs, then linear layers with ReLU, then a 10-way softmax."""

    def __init__(self, input_dim: int, hidden: Sequence[int] = (512, 256), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(input_dim)]
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.output = nn.Linear(width, NUM_BINS)
        self.feature_dim = width

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aesthetic_feature = self.body(features)
        return torch.softmax(self.output(aesthetic_feature), dim=1), aesthetic_feature


class Student(nn.Module):
    """A CNN backbone, an FC layer to the teacher feature's size (f_s), and an FC softmax layer."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone  # timm model with num_classes=0: returns pooled features
        self.to_feature = nn.Sequential(nn.Linear(backbone.num_features, feature_dim), nn.ReLU(inplace=True))
        self.output = nn.Linear(feature_dim, NUM_BINS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aesthetic_feature = self.to_feature(self.backbone(images))
        return torch.softmax(self.output(aesthetic_feature.float()), dim=1), aesthetic_feature
