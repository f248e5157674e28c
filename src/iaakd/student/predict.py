"""The student's outputs on images, batch by batch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iaakd.data.images import Preprocess
from iaakd.devices import autocast_context
from iaakd.errors import UserError
from iaakd.models import Student
from iaakd.student.build import CPU
from iaakd.student.data import StudentData, _TargetDataset


def predict(
    model: Student,
    paths: list[str],
    preprocess: Preprocess,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    device: torch.device = CPU,
    precision: str = "fp32",
    tags: np.ndarray | None = None,
) -> np.ndarray:
    """The model's outputs (n, output size) for image files: distributions, scores or probabilities.
    ``tags`` (two-hot, one row per path) are the input of a multi-modal student (``semantic="input"``)."""
    if model.semantic == "input" and tags is None:
        raise UserError(
            "this student takes AVA's two tags per image as input (student.semantic=input); none given"
        )
    output_size = model.output.out_features
    dataset = _TargetDataset(
        StudentData(paths, np.zeros((len(paths), output_size), np.float32), tags=tags), preprocess
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    model.to(device).eval()
    outputs = []
    with torch.no_grad(), autocast_context(device, precision):
        for images, *_, batch_tags in tqdm(loader, desc="predict", disable=not progress):
            images = preprocess.normalise(images.to(device, non_blocking=True))
            batch_tags = batch_tags.to(device) if batch_tags.numel() else None
            outputs.append(model(images, batch_tags).output.float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, output_size), np.float32)
