"""MLSP feature extraction at full resolution (or resized), batching images of equal size together."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iaakd.data.images import ImageDataset, Preprocess, same_size_batches
from iaakd.models import MLSP, WeightsInfo, create_backbone, normalisation

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ExtractConfig:
    backbone: str
    weights: str = "auto"
    input_size: int | None = None  # None: full resolution (the paper); an int: resized to a square
    batch_size: int = 16
    precision: str = "fp32"  # autocast dtype on the device; features are always stored as float16


@dataclass
class Extractor:
    """A backbone wrapped for MLSP with the preprocessing its weights expect."""

    mlsp: MLSP
    preprocess: Preprocess
    weights: WeightsInfo
    full_name: str

    @classmethod
    def create(cls, config: ExtractConfig, device: torch.device) -> Extractor:
        backbone, weights = create_backbone(config.backbone, config.weights)
        mean, std = normalisation(backbone)
        mlsp = MLSP(backbone).eval().to(device)
        full_name = (
            f"{backbone.pretrained_cfg['architecture']}.{backbone.pretrained_cfg.get('tag', '')}".rstrip(".")
        )
        return cls(mlsp, Preprocess(mean=mean, std=std, size=config.input_size), weights, full_name)


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def extract_features(
    extractor: Extractor,
    paths: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    config: ExtractConfig,
    device: torch.device,
    num_workers: int = 0,
    progress: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (row indices, float16 MLSP features) batch by batch; decoding overlaps compute when workers > 0."""
    input_sizes = (
        sizes if config.input_size is None else [(config.input_size, config.input_size)] * len(paths)
    )
    batches = same_size_batches(input_sizes, config.batch_size)
    loader = DataLoader(
        ImageDataset(paths, extractor.preprocess),
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    with (
        torch.inference_mode(),
        tqdm(total=len(paths), desc=f"extract {extractor.full_name}", disable=not progress) as bar,
    ):
        for indices, images in loader:
            images = images.to(device, non_blocking=True)
            with autocast_context(device, config.precision):
                pooled = extractor.mlsp(images)
            yield indices.numpy(), pooled.float().cpu().numpy().astype(np.float16)
            bar.update(len(indices))
