"""The trained student as a scorer of anyone's photos: ``Scorer.load("models/student.pt").score([...])``.

Each file is decoded once, in a loader worker, exactly as in training (:meth:`iaakd.data.images.Preprocess.load`:
EXIF rotation, CMYK, 16-bit and alpha images to 8-bit RGB, the model's resize); a file that cannot be
decoded becomes a row whose ``error`` says why, and the rest are scored. ``iaakd score`` (:mod:`iaakd.score`)
writes these rows as the batches finish.
"""

from __future__ import annotations

import dataclasses
import io
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

from iaakd.data.images import Preprocess, as_rgb, load_rgb
from iaakd.data.scan import IMAGE_SUFFIXES, scan_image
from iaakd.errors import UserError, first_line
from iaakd.model_ref import load_model
from iaakd.models import Student
from iaakd.runtime import (
    OnnxForward,
    TorchForward,
    choose_backend,
    default_backend,
    forward_threads,
    onnx_model,
)
from iaakd.student import checkpoint_task
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


def decode(item: ImageInput, preprocess: Preprocess) -> Image.Image:
    """8-bit RGB, EXIF orientation applied, as in training (a JPEG in draft mode when the preprocessing
    asks), from a file or an image already decoded."""
    if isinstance(item, Image.Image):
        return as_rgb(ImageOps.exif_transpose(item))
    return load_rgb(item, preprocess.draft_size)


def prepare(item: ImageInput, preprocess: Preprocess) -> torch.Tensor:
    """The network input (uint8, 3 x size x size) of a file or an image already decoded, as in training."""
    return preprocess(decode(item, preprocess))


def thumbnail_jpeg(image: Image.Image, size: int) -> bytes:
    """A JPEG whose long side is at most ``size`` px, for the page (``iaakd score --html``)."""
    small = image.copy()
    small.thumbnail((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


class ImageInputs(Dataset):
    """(index, uint8 image or None, error, thumbnail JPEG or None): decoding happens here, in the loader's
    workers, once per file; the thumbnail (``thumbnail``: its long side in px) from the same decoded image."""

    def __init__(
        self, items: Sequence[ImageInput], preprocess: Preprocess, thumbnail: int | None = None
    ) -> None:
        self.items, self.preprocess, self.thumbnail = list(items), preprocess, thumbnail

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str, bytes | None]:
        item = self.items[index]
        try:
            image = decode(item, self.preprocess)
            thumbnail = thumbnail_jpeg(image, self.thumbnail) if self.thumbnail else None
            return index, self.preprocess(image), "", thumbnail
        # any decoder's failure on a stranger's file is that file's row, not the end of the run
        except Exception as error:
            return index, None, decode_problem(item, error), None


def collate_inputs(
    items: list,
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]], dict[int, bytes]]:
    scored = [(index, image) for index, image, _, _ in items if image is not None]
    failed = [(index, problem) for index, image, problem, _ in items if image is None]
    thumbnails = {index: thumbnail for index, _, _, thumbnail in items if thumbnail is not None}
    images = torch.stack([image for _, image in scored]) if scored else None
    return [index for index, _ in scored], images, failed, thumbnails


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
    thumbnails: dict[int, bytes] = dataclasses.field(default_factory=dict)  # by index, when asked for


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
        backend: str = "torch",
        hub: dict | None = None,
    ) -> None:
        if model.semantic == "input":
            raise UserError(
                f"{model_path or 'this student'} takes AVA's two tags per image as input "
                "(student.semantic=input): it cannot score photos without them"
            )
        self.preprocess, self.checkpoint, self.device = preprocess, checkpoint, device
        self.task = checkpoint_task(checkpoint)
        self.model_sha256, self.model_path, self.hub = model_sha256, model_path, hub
        self.model = ScoreModel(model, preprocess, self.task).to(device).eval()
        self.backend = choose_backend(backend, device)
        self.forward: TorchForward | OnnxForward = TorchForward(self.model, device)
        if self.backend == "onnxruntime":
            try:
                self.forward = OnnxForward(onnx_model(self))
            except UserError as error:
                if backend != "auto":
                    raise
                warnings.warn(f"{error}; scoring with torch instead", UserWarning, stacklevel=2)
                self.backend = "torch"

    @classmethod
    def load(
        cls,
        model: str | os.PathLike,
        device: str = "auto",
        warn: bool = True,
        backend: str | None = None,
        jpeg_draft: bool | None = None,
    ) -> Scorer:
        """From a checkpoint of the student stage, a folder written by ``iaakd export --hub-folder``, or
        ``hf://ORG/NAME[@REVISION]`` (:mod:`iaakd.model_ref`; no code in any file runs). ``backend``:
        ``auto`` (ONNX Runtime on a CPU when installed), ``torch`` or ``onnxruntime`` (:mod:`iaakd.runtime`);
        None: ``$IAAKD_BACKEND``, else auto.
        ``jpeg_draft``: decode JPEGs at a reduced scale (None: as the model was trained). ``warn``: a Python
        warning when the model was trained on the synthetic demo."""
        loaded = load_model(model)
        preprocess = loaded.preprocess
        if jpeg_draft is not None and jpeg_draft != preprocess.jpeg_draft:
            if preprocess.mode != "resize":
                raise UserError(
                    f"{loaded.name}: JPEG draft decoding needs a resized input, not {preprocess.mode}"
                )
            preprocess = dataclasses.replace(preprocess, jpeg_draft=jpeg_draft)
        scorer = cls(loaded.model, preprocess, loaded.checkpoint, resolve_device(device), loaded.sha256,
                     loaded.name, backend or default_backend(), loaded.hub)  # fmt: skip
        if warn and scorer.trained_on_demo:
            warnings.warn(DEMO_WARNING, UserWarning, stacklevel=2)
        return scorer

    def share_cores(self, workers: int) -> None:
        """On the CPU the forward pass gets the cores the decoding workers leave: its threads wait for a
        busy core otherwise, which slows it many times over. ``OMP_NUM_THREADS``, when set, wins
        (:func:`iaakd.runtime.forward_threads`)."""
        if self.device.type == "cpu":
            self.forward.set_threads(forward_threads(workers))

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
            "hub": self.hub,
            "backend": self.backend,
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
        thumbnail: int | None = None,
    ) -> Iterator[ScoredBatch]:
        """Scores ``items`` (paths or PIL images) batch by batch, in order; each batch as soon as it is done.
        ``thumbnail``: also a JPEG of each image, its long side this many px, made in the loader's workers."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        loader = DataLoader(
            ImageInputs(items, self.preprocess, thumbnail),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_inputs,
            pin_memory=self.device.type == "cuda",
        )
        width = len(self.value_columns)
        for indices, images, failed, thumbnails in loader:
            values = np.full((len(indices) + len(failed), width), np.nan)
            errors = [""] * len(indices) + [problem for _, problem in failed]
            if images is not None:
                output = self.forward(images)
                values[: len(indices), 0] = self.task.predicted_score(output)  # as the evaluate stage
                if width > 1:
                    values[: len(indices), 1:] = output
            all_indices = indices + [index for index, _ in failed]
            order = np.argsort(all_indices, kind="stable")
            yield ScoredBatch(
                [all_indices[i] for i in order], values[order], [errors[i] for i in order], thumbnails
            )

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
