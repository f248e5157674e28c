"""The teacher: a knowledge distiller trained on concatenated MLSP features, and its exported knowledge."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iaakd.checkpoints import Checkpoint, fingerprint, restore_rng_state, rng_state
from iaakd.errors import UserError
from iaakd.feature_rows import FeatureRows, as_rows, identity, iter_chunks
from iaakd.metrics import srcc
from iaakd.models import Distiller
from iaakd.tasks import DISTRIBUTION, Task


@dataclass(frozen=True)
class DistillerConfig:
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    dropout: float = 0.5
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-4
    lr_step_epochs: int = 15  # lr divided by 10 every this many epochs
    weight_decay: float = 1e-4
    keep: str = "best"  # "best" (lowest validation EMD) or "last" (the paper: fixed epochs, last kept)
    seed: int = 0


@dataclass
class TrainingHistory:
    """Per-epoch curves, one row per epoch."""

    rows: list[dict[str, float | None]] = field(default_factory=list)

    def add(self, **values: float | None) -> None:
        self.rows.append(values)


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def iter_knowledge(
    model: torch.nn.Module, features: np.ndarray | FeatureRows, batch_size: int = 1024
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(output, aesthetic feature) batch by batch: memory holds one batch of input features."""
    model.eval()
    with torch.no_grad():
        for _, rows in iter_chunks(as_rows(features), batch_size):
            output, aesthetic_feature = model(torch.from_numpy(rows))
            yield output.numpy(), aesthetic_feature.numpy()


def predict_output(model: torch.nn.Module, features: np.ndarray | FeatureRows) -> np.ndarray:
    """The distiller's outputs only (small), reading the features batch by batch."""
    outputs = [output for output, _ in iter_knowledge(model, features)]
    return np.concatenate(outputs) if outputs else np.zeros((0, model.output.out_features), np.float32)


def _evaluate(
    model: Distiller, features: FeatureRows, targets: torch.Tensor, task: Task
) -> tuple[float, float | None]:
    output = predict_output(model, features)
    loss = float(task.loss(targets, torch.from_numpy(output)))
    return loss, srcc(task.predicted_score(output), task.predicted_score(targets.numpy()))


def train_distiller(
    train_features: np.ndarray | FeatureRows,
    train_targets: np.ndarray,
    val_features: np.ndarray | FeatureRows,
    val_targets: np.ndarray,
    config: DistillerConfig,
    task: Task = DISTRIBUTION,
    progress: bool = True,
    work_root: Path | None = None,
) -> tuple[Distiller, TrainingHistory]:
    """Trains the distiller on ground-truth targets (``task.targets``): EMD, MSE or BCE by ``task.output``.

    Features are arrays or rows read a batch at a time from disk (``iaakd.feature_rows``), so memory does
    not grow with the number of images.

    With ``work_root``, the state after each epoch is kept in ``work_root/<fingerprint>/`` and a rerun of
    the same configuration on the same data continues from it.
    """
    generator = set_seed(config.seed)
    train_x, val_x = as_rows(train_features), as_rows(val_features)
    model = Distiller(train_x.dim, config.hidden, config.dropout, task.output_size, task.activation)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=config.lr_step_epochs, gamma=0.1)
    train_y, val_y = torch.from_numpy(train_targets).float(), torch.from_numpy(val_targets).float()
    batches = DataLoader(  # shuffled row numbers; the rows themselves are read per batch
        range(len(train_x)),
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(train_x) > config.batch_size,
    )
    checkpoint = Checkpoint(
        work_root / fingerprint({**asdict(config), **task.as_dict(), "train": identity(train_x),
                                 "val": identity(val_x)}, train_targets, val_targets)
        if work_root is not None else None
    )  # fmt: skip
    history = TrainingHistory()
    best_state, best_val_loss, first_epoch = None, float("inf"), 1
    if (state := checkpoint.load()) is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(generator, state["rng"])
        history.rows, best_state, best_val_loss = (
            state["history"],
            state["best_state"],
            state["best_val_loss"],
        )
        first_epoch = state["epoch"] + 1
        print(f"distiller: resuming after epoch {state['epoch']} from {checkpoint.path}", flush=True)
    for epoch in tqdm(
        range(first_epoch, config.epochs + 1), desc="distiller", disable=not progress, initial=first_epoch - 1,
        total=config.epochs,
    ):  # fmt: skip
        model.train()
        for batch in batches:
            output, _ = model(torch.from_numpy(train_x.read(batch.numpy())))
            loss = task.loss(train_y[batch], output)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        scheduler.step()
        train_loss, train_srcc = _evaluate(model, train_x, train_y, task)
        val_loss, val_srcc = _evaluate(model, val_x, val_y, task)
        if not np.isfinite(train_loss):
            raise_not_finite("distiller", epoch, train_loss, checkpoint, "distiller.lr")
        history.add(
            epoch=epoch, train_loss=train_loss, val_loss=val_loss, train_srcc=train_srcc, val_srcc=val_srcc
        )
        if val_loss < best_val_loss:
            best_val_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
        checkpoint.save(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(generator),
                "history": history.rows,
                "best_state": best_state,
                "best_val_loss": best_val_loss,
            }
        )
    if config.keep == "best" and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    checkpoint.clear()
    return model, history


def raise_not_finite(name: str, epoch: int, loss: float, checkpoint: Checkpoint, lr_key: str) -> None:
    """Stops a run whose loss is NaN or infinite; the last good epoch's checkpoint stays where it is."""
    kept = (
        f"; the last good epoch is kept in {checkpoint.path}"
        if checkpoint.path and checkpoint.path.is_file()
        else ""
    )
    raise UserError(f"{name}: loss became {loss} in epoch {epoch}{kept}; lower {lr_key}")
