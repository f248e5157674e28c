"""Tiny student checkpoints and photo folders for the scorer's tests (``iaakd score / export / explain``).

The checkpoints are built directly with the library (random weights by name, a small input), not by the
pipeline: a test of the scorer needs a valid student file, not a trained one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaakd.student import StudentConfig, build_student, save_student
from iaakd.tasks import Task

TINY_BACKBONE = "test_efficientnet"  # timm's own test model: exported in seconds, not a minute


def save_tiny_student(
    path: Path,
    seed: int = 0,
    backbone: str = TINY_BACKBONE,
    input_size: int = 64,
    weights: str = "random",
    task: Task | None = None,
    data_source: str | None = None,
    **config: object,
) -> Path:
    """A valid student checkpoint with weights drawn from ``seed``; ``data_source``: what the student
    stage records (``data.source``), None for unknown; ``config``: other ``StudentConfig`` fields."""
    torch.manual_seed(seed)
    student_config = StudentConfig(backbone=backbone, input_size=input_size, weights=weights, **config)
    model, preprocess, weights_source = build_student(student_config, 16, task or Task())
    save_student(
        path, model, preprocess, student_config, weights_source, task or Task(), data_source=data_source
    )
    return path


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` small JPEGs of different sizes and contents (smooth colour fields with grain)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height = 80 + 4 * (index % 5), 60 + 6 * (index % 3)
        coarse = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
        smooth = np.asarray(
            Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16
        )
        pixels = np.clip(smooth + rng.integers(-10, 11, (height, width, 1)), 0, 255).astype(np.uint8)
        path = folder / f"photo_{index:02d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def write_bad_files(folder: Path, good_jpeg: Path) -> tuple[Path, Path]:
    """A JPEG cut in half and an HTML page named ``.jpg``."""
    truncated, html = folder / "truncated.jpg", folder / "page.jpg"
    content = good_jpeg.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    html.write_text("<!doctype html><html><body>Moved permanently</body></html>\n", encoding="utf-8")
    return truncated, html


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``iaakd ARGV`` in this process (no interpreter start-up): exit status, stdout, stderr."""
    from iaakd.cli import main

    capsys.readouterr()
    try:
        main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster than two that
    wait for a busy core (20 images at 64 px: 0.07 s against 1.4 s measured)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
