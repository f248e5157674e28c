"""Resumable training: the last finished epoch, kept outside DVC's outputs.

``dvc repro`` deletes a stage's outputs before running it, so a checkpoint lives in a work folder named
by a fingerprint of everything that determines the run (configuration and data). A rerun with the same
fingerprint continues after the last finished epoch; a changed parameter or input starts afresh, in
another folder. Writes are atomic: a kill during a write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from iaakd.atomic import atomic_path
from iaakd.errors import UserError, first_line


def fingerprint(config: dict, *arrays: np.ndarray | list | None) -> str:
    """A short hash of a configuration and the data a run sees (arrays, rows on disk, or lists such as
    image paths)."""
    digest = hashlib.blake2b(json.dumps(config, sort_keys=True, default=str).encode(), digest_size=8)
    for array in arrays:
        if array is None:
            digest.update(b"none")
        elif hasattr(array, "identity"):  # rows left on disk (iaakd.feature_rows.VectorRows)
            digest.update(array.identity().encode())
        elif isinstance(array, np.ndarray):
            digest.update(str((array.shape, array.dtype)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        else:
            digest.update(json.dumps(list(array)).encode())
    return digest.hexdigest()


class Checkpoint:
    """``folder/last.pt``: the state after the last finished epoch; no folder means no checkpointing."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @property
    def path(self) -> Path | None:
        return self.folder / "last.pt" if self.folder is not None else None

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        return safe_load(self.path, "a training checkpoint", f"delete {self.folder} to start afresh")

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        save_atomically(state, self.path)

    def clear(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder)


def save_atomically(payload: dict, path: Path) -> None:
    """``payload`` written by ``torch.save`` atomically (:func:`iaakd.atomic.atomic_path`), through an open
    file: given a path, torch names the archive's root folder after it, so the staging file's random name
    would land inside the file and two saves of the same payload would differ in their bytes."""
    with atomic_path(path) as staging, open(staging, "wb") as handle:
        torch.save(payload, handle)


def safe_load(path: Path, what: str, advice: str = "") -> dict:
    """A file written by ``torch.save``, loaded without running any code in it (``weights_only=True``):
    a pickle that asks for more than tensors and plain containers, a truncated or foreign file, ends in one
    line naming the file and ``what`` it should have been."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found (expected {what})") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        reason = first_line(error)
        if "Weights only load failed" in reason or "weights_only" in str(error):
            reason = "it holds objects other than tensors and plain containers, and is not loaded"
        raise UserError(
            f"{path}: not {what} that can be loaded safely ({reason}){'; ' + advice if advice else ''}"
        ) from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: not {what} (it holds a {type(loaded).__name__}, not a mapping)")
    return loaded
