"""Resumable training: the last finished epoch, kept outside DVC's outputs.

``dvc repro`` deletes a stage's outputs before running it, so a checkpoint lives in a work folder named
by a fingerprint of everything that determines the run (configuration and data). A rerun with the same
fingerprint continues after the last finished epoch; a changed parameter or input starts afresh, in
another folder. Writes are atomic: a kill during a write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch


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
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name("last.pt.partial")
        torch.save(state, staging)
        os.replace(staging, self.path)

    def clear(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder)


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a training loop draws from: the loader's generator, torch's and numpy's."""
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
    }


def restore_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
