"""The trained student as a scorer of anyone's photos: ``Scorer.load("models/student.pt").score([...])``.

Each file is decoded once, in a loader worker, exactly as in training (:meth:`iaakd.data.images.Preprocess.load`:
EXIF rotation, CMYK, 16-bit and alpha images to 8-bit RGB, the model's resize); a file that cannot be
decoded becomes a row whose ``error`` says why, and the rest are scored. ``iaakd score`` (:mod:`iaakd.score`)
writes these rows as the batches finish.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iaakd.data.images import Preprocess, as_rgb
from iaakd.data.scan import IMAGE_SUFFIXES, scan_image
from iaakd.errors import UserError, first_line
from iaakd.models import Student
from iaakd.models.backbones import file_sha256
from iaakd.student import checkpoint_task, load_student
from iaakd.tasks import Task

NUM_BINS = 10
DEMO_WARNING = "this model was trained on the synthetic demo (data.source=demo): its scores say nothing about real photos"
ImageInput = str | os.PathLike | Image.Image


def default_workers() -> int:
    """Loader workers: one core is left to the forward pass; at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; ``cpu``, ``cuda``, ``cuda:1``, ... as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device auto or cpu")
    return device


def collect_paths(inputs: Sequence[str]) -> list[str]:
    """The sorted, de-duplicated image paths of files, folders (recursive, by image suffix) and list files
    (``@list.txt``: one path a line, relative to the current folder; blank lines and ``#`` comments skipped).
    A path named in a list that does not exist is kept: it becomes an error row (``missing``)."""
    found: set[str] = set()
    for item in inputs:
        if item.startswith("@"):
            found.update(read_path_list(Path(item[1:])))
            continue
        path = Path(item)
        if path.is_dir():
            found.update(
                os.path.normpath(p)
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif path.is_file():
            found.add(os.path.normpath(path))
        else:
            raise UserError(f"not a file, folder or @list: {item}")
    return sorted(found)


def read_path_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()  # any file name
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the list @{path}: {error}") from None
    entries = (line.strip() for line in lines)
    return [os.path.normpath(entry) for entry in entries if entry and not entry.startswith("#")]


def decode_problem(item: ImageInput, error: Exception) -> str:
    """Why a file could not be prepared, in the words of the image scan (``iaakd.data.scan``: ``missing``,
    ``unreadable: ...``, with its limits on image size). The scan decodes the file again: only failed files
    pay for that."""
    if not isinstance(item, Image.Image):
        try:
            problem = scan_image(str(item)).problem
        except Exception:  # a failure the scan does not know either: the error itself, below
            problem = None
        if problem is not None:
            return problem
    reason = first_line(error, 160)
    return f"unreadable: {reason}"


def prepare(item: ImageInput, preprocess: Preprocess) -> torch.Tensor:
    """The network input (uint8, 3 x size x size) of a file, as in training, or of an image already
    decoded (EXIF orientation applied, converted to RGB, then the model's resize)."""
    if isinstance(item, Image.Image):
        return preprocess(as_rgb(ImageOps.exif_transpose(item)))
    return preprocess.load(item)


class ImageInputs(Dataset):
    """(index, uint8 image or None, error): decoding happens here, in the loader's workers, once per file."""

    def __init__(self, items: Sequence[ImageInput], preprocess: Preprocess) -> None:
        self.items, self.preprocess = list(items), preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        item = self.items[index]
        try:
            return index, prepare(item, self.preprocess), ""
        # any decoder's failure on a stranger's file is that file's row, not the end of the run
        except Exception as error:
            return index, None, decode_problem(item, error)


def collate_inputs(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    scored = [(index, image) for index, image, _ in items if image is not None]
    failed = [(index, problem) for index, image, problem in items if image is None]
    images = torch.stack([image for _, image in scored]) if scored else None
    return [index for index, _ in scored], images, failed


class ScoreModel(nn.Module):
    """The student with its normalisation and score: uint8 RGB (N, 3, S, S) to (output, score). The same
    module is scored here, exported (``iaakd export``) and explained (``iaakd explain``)."""

    def __init__(self, student: Student, preprocess: Preprocess, task: Task) -> None:
        super().__init__()
        self.student, self.task = student, task
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("bins", torch.arange(1, NUM_BINS + 1, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.student((image.float() / 255.0 - self.mean) / self.std).output
        if self.task.output == "distribution":
            return output, output @ self.bins
        if self.task.output == "score":
            low, high = self.task.score_range
            return output, low + output[:, 0] * (high - low)
        return output, output[:, 0]


@dataclass(frozen=True)
class ScoredBatch:
    """Rows of one batch, in input order: index, and either the values of ``Scorer.columns`` or an error."""

    indices: list[int]
    values: np.ndarray  # (len(indices), value columns), float64; NaN on error rows
    errors: list[str]  # "" on scored rows


class Scorer:
    """A student checkpoint ready to score images; :meth:`score` returns the CLI's columns as a DataFrame."""

    def __init__(
        self,
        model: Student,
        preprocess: Preprocess,
        checkpoint: dict,
        device: torch.device,
        model_sha256: str = "",
        model_path: str = "",
    ) -> None:
        if model.semantic == "input":
            raise UserError(
                f"{model_path or 'this student'} takes AVA's two tags per image as input "
                "(student.semantic=input): it cannot score photos without them"
            )
        self.preprocess, self.checkpoint, self.device = preprocess, checkpoint, device
        self.task = checkpoint_task(checkpoint)
        self.model_sha256, self.model_path = model_sha256, model_path
        self.model = ScoreModel(model, preprocess, self.task).to(device).eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", warn: bool = True) -> Scorer:
        """From a checkpoint written by the student stage (loaded without code execution). ``warn``: a
        Python warning when the model was trained on the synthetic demo."""
        path = Path(path)
        model, preprocess, checkpoint = load_student(path)
        scorer = cls(model, preprocess, checkpoint, resolve_device(device), file_sha256(path), str(path))
        if warn and scorer.trained_on_demo:
            warnings.warn(DEMO_WARNING, UserWarning, stacklevel=2)
        return scorer

    @property
    def data_source(self) -> str | None:
        """What the model was trained on (``data.source``), None when the checkpoint does not say."""
        return self.checkpoint.get("data_source")

    @property
    def trained_on_demo(self) -> bool:
        return self.data_source == "demo"

    @property
    def score_column(self) -> str:
        return {"distribution": "mean_score", "score": "mean_score", "binary": "p_high"}[self.task.output]

    @property
    def value_columns(self) -> list[str]:
        bins = [f"p{k}" for k in range(1, NUM_BINS + 1)] if self.task.output == "distribution" else []
        return [self.score_column, *bins]

    @property
    def columns(self) -> list[str]:
        """The contract: ``path``, the score column, ``p1``..``p10`` where the model has bins, ``error``."""
        return ["path", *self.value_columns, "error"]

    def describe(self) -> dict:
        """What identifies the scores: model file and SHA-256, preprocessing, output type, training data."""
        from iaakd import __version__

        return {
            "model": self.model_path,
            "model_sha256": self.model_sha256,
            "backbone": self.checkpoint.get("backbone"),
            "preprocess": self.preprocess.as_dict(),
            "task": self.task.as_dict(),
            "data_source": self.data_source,
            "columns": self.columns,
            "package_version": __version__,
        }

    def batches(
        self,
        items: Sequence[ImageInput],
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> Iterator[ScoredBatch]:
        """Scores ``items`` (paths or PIL images) batch by batch, in order; each batch as soon as it is done."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        loader = DataLoader(
            ImageInputs(items, self.preprocess),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_inputs,
            pin_memory=self.device.type == "cuda",
        )
        width = len(self.value_columns)
        with torch.inference_mode():
            for indices, images, failed in loader:
                values = np.full((len(indices) + len(failed), width), np.nan)
                errors = [""] * len(indices) + [problem for _, problem in failed]
                if images is not None:
                    output = self.model(images.to(self.device, non_blocking=True))[0].double().cpu().numpy()
                    values[: len(indices), 0] = self.task.predicted_score(output)  # as the evaluate stage
                    if width > 1:
                        values[: len(indices), 1:] = output
                all_indices = indices + [index for index, _ in failed]
                order = np.argsort(all_indices, kind="stable")
                yield ScoredBatch([all_indices[i] for i in order], values[order], [errors[i] for i in order])

    def score(
        self,
        images: Sequence[ImageInput],
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool = False,
    ) -> pd.DataFrame:
        """One row per image, in order, with :attr:`columns` (unrounded). ``path`` is None for an image given
        as a PIL image; ``error`` is "" for a scored image, else why it could not be read (values NaN)."""
        items = [image if isinstance(image, Image.Image) else str(image) for image in images]
        values = np.full((len(items), len(self.value_columns)), np.nan)
        errors = [""] * len(items)
        with tqdm(total=len(items), desc="score", unit="img", disable=not progress) as bar:
            for batch in self.batches(items, batch_size, num_workers):
                values[batch.indices] = batch.values
                for index, error in zip(batch.indices, batch.errors, strict=True):
                    errors[index] = error
                bar.update(len(batch.indices))
        frame = pd.DataFrame(values, columns=self.value_columns)
        paths = [None if isinstance(item, Image.Image) else item for item in items]
        frame.insert(0, "path", pd.Series(paths, dtype=object))
        frame["error"] = errors
        return frame
