"""One training skeleton for every loop of the project (the distiller, the student, and the loops built on them).

A loop is three pieces handed to :func:`fit`: a :class:`TrainingState` (model, optimiser, scheduler,
gradient scaler, the loader's generator, the epoch reached and the curves), a function that trains one epoch,
and a function that validates. ``fit`` then reads like nanoGPT's loop, top to bottom: for each epoch, train,
check the loss, step the schedule, validate, record, keep a checkpoint. A run killed at any point resumes
after its last finished epoch (:func:`resume`) and ends exactly where an uninterrupted run ends.

Randomness is local: :func:`seeded` seeds the global generators for the length of a run and gives them back
as they were, so training a model never changes the random state of the program that called it.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from iaakd.checkpoints import Checkpoint
from iaakd.errors import UserError


@dataclass
class TrainingHistory:
    """Per-epoch curves, one row per epoch, and the epoch whose model was kept (the last, unless a loop
    keeps its best)."""

    rows: list[dict[str, float | None]] = field(default_factory=list)
    kept_epoch: int | None = None


@contextmanager
def seeded(seed: int) -> Iterator[torch.Generator]:
    """Seeds torch (CPU and CUDA), numpy and Python's ``random`` for the block, and restores their states
    after it; yields a generator of its own for the data loader's shuffling."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield torch.Generator().manual_seed(seed)
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a training loop draws from: the loader's generator, torch's (CPU and each
    initialised CUDA device), numpy's and Python's; in types that load with ``weights_only=True``. Under
    torchrun rank 0 keeps the checkpoint, so a resumed rank k gets rank 0's streams: its dropout draws then
    differ from an uninterrupted run's (the CPU student has no dropout in its backbone; say so if it matters)."""
    bit_generator, key, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [
            bit_generator,
            torch.from_numpy(key.astype(np.int64)),
            position,
            has_gauss,
            cached_gaussian,
        ],
        "python": random.getstate(),
    }


def restore_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    bit_generator, key, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((bit_generator, key.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])


@dataclass
class TrainingState:
    """What a run must keep to continue after a kill; ``best`` is the epoch with the lowest validation loss."""

    model: torch.nn.Module
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    scaler: torch.amp.GradScaler | None = None
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"epoch", "val_loss"} and, with keep_best_model, "model": its state dict
    keep_best_model: bool = False

    def record(self, row: dict) -> None:
        """Adds an epoch's row to the curves and remembers the model when its validation loss is the lowest."""
        self.epoch = row["epoch"]
        self.history.append(row)
        if self.best is None or row["val_loss"] < self.best["val_loss"]:
            self.best = {"epoch": row["epoch"], "val_loss": row["val_loss"]}
            if self.keep_best_model:
                self.best["model"] = copy.deepcopy(self.model.state_dict())

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng_state(self.generator),
            "history": self.history,
            "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(self.generator, state["rng"])
        self.epoch, self.history, self.best = state["epoch"], state["history"], state["best"]


def resume(state: TrainingState, checkpoint: Checkpoint, name: str) -> None:
    """Continues from the checkpoint's last finished epoch, when there is one."""
    if (saved := checkpoint.load()) is not None:
        state.load_state_dict(saved)
        print(f"{name}: resuming after epoch {state.epoch} from {checkpoint.path}", flush=True)


def require_finite(
    name: str, what: str, value: float, epoch: int, checkpoint: Checkpoint, lr_key: str
) -> None:
    """Stops a run whose loss is NaN or infinite; the last good epoch's checkpoint stays where it is."""
    if math.isfinite(value):
        return
    kept = (
        f"; the last good epoch is kept in {checkpoint.path}"
        if checkpoint.path and checkpoint.path.is_file()
        else ""
    )
    raise UserError(f"{name}: {what} became {value} in epoch {epoch}{kept}; lower {lr_key}")


def fit(
    state: TrainingState,
    epochs: int,
    train_epoch: Callable[[int], dict],
    validate: Callable[[], dict],
    checkpoint: Checkpoint,
    name: str,
    lr_key: str,
    progress: bool = True,
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> TrainingHistory:
    """Trains from ``state.epoch + 1`` to ``epochs``. ``train_epoch(epoch)`` returns the epoch's training
    metrics (``train_loss`` first of all), ``validate()`` the validation metrics (``val_loss`` first of all).
    Only the main process (``is_main``) validates and keeps the checkpoint; the others wait at ``barrier``."""
    for epoch in tqdm(
        range(state.epoch + 1, epochs + 1), desc=name, initial=state.epoch, total=epochs,
        disable=not (progress and is_main),
    ):  # fmt: skip
        trained = train_epoch(epoch)
        require_finite(name, "loss", trained["train_loss"], epoch, checkpoint, lr_key)
        state.scheduler.step()
        if is_main:
            validated = validate()
            require_finite(name, "validation loss", validated["val_loss"], epoch, checkpoint, lr_key)
            state.record({"epoch": epoch, **trained, **validated})
            checkpoint.save(state.state_dict())
            if progress:
                tqdm.write(f"{name} epoch {epoch}: " + ", ".join(_shown(k, v) for k, v in trained.items())
                           + ", " + ", ".join(_shown(k, v) for k, v in validated.items()))  # fmt: skip
        barrier()
    return TrainingHistory(state.history, kept_epoch=state.epoch)


def _shown(key: str, value: float | None) -> str:
    return f"{key} {'n/a' if value is None else f'{value:.4f}'}"
