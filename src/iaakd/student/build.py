"""The student network from its configuration: backbone with resolved weights, heads, preprocessing."""

from __future__ import annotations

from pathlib import Path

import torch

from iaakd.data.images import Preprocess
from iaakd.errors import UserError
from iaakd.models import Student, create_backbone, normalisation
from iaakd.pretrained import load_backbone
from iaakd.student.config import StudentConfig
from iaakd.tasks import DISTRIBUTION, Task

CPU = torch.device("cpu")


def build_student(
    config: StudentConfig, feature_dim: int, task: Task = DISTRIBUTION, init_file: Path | None = None
) -> tuple[Student, Preprocess, dict]:
    """The student, its preprocessing and its weights source; with ``config.init`` other than ``weights``,
    the backbone comes from ``init_file`` (models/pretrain.pt or models/align.pt), loaded strictly."""
    if config.init == "weights":
        backbone, weights = create_backbone(config.backbone, config.weights, num_classes=0)
        weights_info = weights.as_dict()
    elif init_file is None:
        raise UserError(f"student.init={config.init} needs the {config.init} stage's checkpoint; none given")
    else:
        backbone, weights_info = load_backbone(init_file, config.init, config.backbone)
    mean, std = normalisation(backbone)
    preprocess = Preprocess(
        mean=mean,
        std=std,
        size=config.input_size,
        resize_filter=config.resize_filter,
        mode=config.input_mode,
        pad_size=config.pad_size if config.input_mode == "pad_crop" else None,
        jpeg_draft=config.jpeg_draft,
    )
    return (
        Student(backbone, feature_dim, task.output_size, task.activation, semantic=config.semantic),
        preprocess,
        weights_info,
    )
