"""Image decoding and the two input modes: full resolution (teacher) and resized (student)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

RESIZE_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def load_rgb(path: str | Path) -> Image.Image:
    """Decodes an image as RGB with EXIF orientation applied."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")


@dataclass(frozen=True)
class Preprocess:
    """Everything that turns a file into a network input; stored with every model that uses it."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int | None = None  # None: full resolution, no resize, no crop
    resize_filter: str = "bilinear"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.size is not None:
            image = image.resize((self.size, self.size), RESIZE_FILTERS[self.resize_filter])
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std

    def as_dict(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "size": self.size,
            "resize_filter": self.resize_filter,
        }


class ImageDataset(Dataset):
    """(index, tensor) for a list of image files; the index lets callers join back on image ids."""

    def __init__(self, paths: Sequence[str], preprocess: Preprocess) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.preprocess(load_rgb(self.paths[index]))


def same_size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Groups indices of equal (width, height) into batches, so full-resolution images need no padding."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(index)
    batches = []
    for size in sorted(groups):
        members = groups[size]
        batches += [members[start : start + batch_size] for start in range(0, len(members), batch_size)]
    return batches
