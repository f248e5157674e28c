"""The knowledge distiller (teacher head, Fig. 5) and the student network (Fig. 4).

Both return ``(output, aesthetic_feature)``: by default the softmax over 10 score bins (the other
outputs of ``iaakd.tasks`` set ``output_size`` and ``activation``), and the input of the output layer,
which is what the student imitates (f_t, f_s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
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


HEAD_START = "output bias at the training targets"  # in training checkpoints' keys: older ones do not resume


def start_output_at(layer: nn.Linear, bias: np.ndarray) -> None:
    """Sets the output layer's bias to ``bias`` (``Task.output_bias`` of the training targets), so that the
    untrained head predicts about the targets' mean; the weights keep their initialisation."""
    with torch.no_grad():
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


NUM_TAGS = 66  # AVA's semantic tags, ids 1..66 (0: none)
SEMANTIC_MODES = ("none", "input", "target")


class StudentOutput(NamedTuple):
    output: torch.Tensor  # distribution, score or probability (``iaakd.tasks``)
    aesthetic_feature: torch.Tensor  # f_s, what imitates the teacher feature f_t
    tag_logits: torch.Tensor | None = None  # semantic="target": the predicted two-hot tag vector, as logits


class Student(nn.Module):
    """A CNN backbone, an FC layer to the teacher feature's size (f_s), and an FC softmax layer.

    The semantic-guidance baselines of Table XII use AVA's two tags per image as a two-hot vector:
    ``semantic="input"`` (multi-modal) encodes it with two FC layers and concatenates the result with the
    visual feature before f_s; ``semantic="target"`` (multi-task) predicts it from the visual feature
    (trained with BCE, Eq. 9).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        output_size: int = NUM_BINS,
        activation: str = "softmax",
        semantic: str = "none",
        semantic_hidden: int = 64,
    ) -> None:
        super().__init__()
        if semantic not in SEMANTIC_MODES:
            raise ValueError(f"Student: semantic {semantic!r} is not one of {SEMANTIC_MODES}")
        self.backbone = backbone  # timm model with num_classes=0: returns pooled features
        self.semantic = semantic
        merged = backbone.num_features
        if semantic == "input":
            self.encode_tags = nn.Sequential(
                nn.Linear(NUM_TAGS, semantic_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(semantic_hidden, semantic_hidden),
                nn.ReLU(inplace=True),
            )
            merged += semantic_hidden
        if semantic == "target":
            self.predict_tags = nn.Linear(backbone.num_features, NUM_TAGS)
        self.to_feature = nn.Sequential(nn.Linear(merged, feature_dim), nn.ReLU(inplace=True))
        self.output = nn.Linear(feature_dim, output_size)
        self.activation = activation

    def forward(self, images: torch.Tensor, tags: torch.Tensor | None = None) -> StudentOutput:
        """``tags``: two-hot (N, 66), read only by ``semantic="input"``, where None means no tags (zeros)."""
        visual_feature = self.backbone(images)
        merged, tag_logits = visual_feature, None
        if self.semantic == "input":
            if tags is None:
                tags = visual_feature.new_zeros(len(visual_feature), NUM_TAGS)
            merged = torch.cat([visual_feature, self.encode_tags(tags.to(visual_feature.dtype))], dim=1)
        if self.semantic == "target":
            tag_logits = self.predict_tags(visual_feature).float()
        aesthetic_feature = self.to_feature(merged)
        output = ACTIVATIONS[self.activation](self.output(aesthetic_feature.float()))
        return StudentOutput(output, aesthetic_feature, tag_logits)
