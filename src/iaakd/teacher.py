"""The teacher: a knowledge distiller trained on concatenated MLSP features, and its exported knowledge."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from iaakd.checkpoints import Checkpoint, fingerprint, safe_load, save_atomically
from iaakd.config import Rule, param
from iaakd.errors import UserError, first_line
from iaakd.feature_rows import FeatureRows, RowSubset, as_rows, identity, iter_chunks
from iaakd.metrics import srcc
from iaakd.models import Distiller
from iaakd.models.heads import HEAD_START, start_output_at
from iaakd.tasks import DISTRIBUTION, Task
from iaakd.training import TrainingHistory, TrainingState, fit, resume, seeded

CHECKPOINT_FORMAT = 2  # 2: kind and format recorded, loads with weights_only=True
FULL = -1  # the fold of knowledge from the distiller trained on every training image
# Out-of-fold f_t: "full", the full distiller's (one feature space for every image, the outputs out of fold),
# or "fold", the fold distiller's (K feature spaces: matching them all by MSE asks for something inconsistent)
OUT_OF_FOLD_FEATURES = ("full", "fold")


@dataclass(frozen=True)
class DistillerConfig:
    hidden: list[int] = param(default_factory=lambda: [512, 256], above=0, non_empty=True)
    dropout: float = param(0.5, minimum=0, below=1)
    epochs: int = param(40, above=0)
    batch_size: int = param(32, above=0)
    lr: float = param(1e-4, above=0)
    lr_step_epochs: int = param(15, above=0)  # lr divided by 10 every this many epochs
    weight_decay: float = param(1e-4, minimum=0)
    keep: str = param("best", choices=("best", "last"))  # best: lowest validation loss; last: the paper's
    seed: int = 0
    # K >= 2: each training image's knowledge from a distiller trained on the other K-1 folds (0: the paper)
    out_of_fold: int = param(0, minimum=0)
    out_of_fold_feature: str = param("full", choices=OUT_OF_FOLD_FEATURES)  # whose f_t a training image gets

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            lambda c: c.out_of_fold != 1,
            "{prefix}.out_of_fold=1 leaves no folds to train on: 0, or at least 2",
        ),
    )


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


def _metrics(name: str, model: Distiller, features: FeatureRows, targets: torch.Tensor, task: Task) -> dict:
    """``{name}_loss`` and ``{name}_srcc`` of the model in eval mode."""
    output = predict_output(model, features)
    loss = float(task.loss(targets, torch.from_numpy(output)))
    return {
        f"{name}_loss": loss,
        f"{name}_srcc": srcc(task.predicted_score(output), task.predicted_score(targets.numpy())),
    }


def _train_epoch(
    epoch: int, state: TrainingState, batches: DataLoader, features: FeatureRows, targets: torch.Tensor, task: Task
) -> dict:  # fmt: skip
    """One pass over the shuffled training rows (read from disk a batch at a time); the training metrics are
    then measured in eval mode on every training row, as the validation ones are."""
    state.model.train()
    for batch in batches:
        output, _ = state.model(torch.from_numpy(features.read(batch.numpy())))
        loss = task.loss(targets[batch], output)
        state.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        state.optimiser.step()
    return _metrics("train", state.model, features, targets, task)


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
    """Trains the distiller on ground-truth targets (``task.targets``): EMD, MSE or BCE by ``task.output``;
    returns the model (the best or the last epoch's, by ``config.keep``) and the curves, which name the
    epoch kept.

    Features are arrays or rows read a batch at a time from disk (``iaakd.feature_rows``), so memory does
    not grow with the number of images.

    With ``work_root``, the state after each epoch is kept in ``work_root/<fingerprint>/`` and a rerun of
    the same configuration on the same data continues from it.
    """
    train_x, val_x = as_rows(train_features), as_rows(val_features)
    train_y, val_y = torch.from_numpy(train_targets).float(), torch.from_numpy(val_targets).float()
    checkpoint = Checkpoint(
        work_root / fingerprint(
            {**asdict(config), **task.as_dict(), "train": identity(train_x), "val": identity(val_x),
             "format": CHECKPOINT_FORMAT, "head": HEAD_START}, train_targets, val_targets,
        )
        if work_root is not None
        else None
    )  # fmt: skip
    with seeded(config.seed) as generator:
        model = Distiller(train_x.dim, config.hidden, config.dropout, task.output_size, task.activation)
        start_output_at(model.output, task.output_bias(train_targets))
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        state = TrainingState(
            model, optimiser, torch.optim.lr_scheduler.StepLR(optimiser, config.lr_step_epochs, gamma=0.1),
            generator, keep_best_model=config.keep == "best",
        )  # fmt: skip
        batches = DataLoader(  # shuffled row numbers; the rows themselves are read per batch
            range(len(train_x)), batch_size=config.batch_size, shuffle=True, generator=generator,
            drop_last=len(train_x) > config.batch_size,
        )  # fmt: skip

        resume(state, checkpoint, "distiller")
        history = fit(
            state, config.epochs,
            train_epoch=partial(_train_epoch, state=state, batches=batches, features=train_x, targets=train_y,
                                task=task),
            validate=partial(_metrics, "val", model, val_x, val_y, task),
            checkpoint=checkpoint, name="distiller", lr_key="distiller.lr", progress=progress,
        )  # fmt: skip
    if config.keep == "best":
        model.load_state_dict(state.best["model"])
        history.kept_epoch = state.best["epoch"]
    model.eval()
    checkpoint.clear()
    return model, history


def assign_folds(n: int, num_folds: int, seed: int) -> np.ndarray:
    """The fold (0..num_folds-1) of each of ``n`` training rows: a permutation drawn with ``seed`` (a stream
    of its own) dealt out in turn, so fold sizes differ by one at most."""
    folds = np.empty(n, np.int64)
    folds[np.random.default_rng([seed, 2]).permutation(n)] = np.arange(n) % num_folds
    return folds


def train_fold_distillers(
    train_features: FeatureRows, train_targets: np.ndarray, val_features: FeatureRows, val_targets: np.ndarray,
    config: DistillerConfig, task: Task = DISTRIBUTION, progress: bool = True, work_root: Path | None = None,
) -> tuple[np.ndarray, list[Distiller]]:  # fmt: skip
    """For out-of-fold knowledge (``config.out_of_fold`` = K >= 2): each training row's fold, and K distillers,
    number k trained on every training row outside fold k (validated on the same validation rows)."""
    train_rows = as_rows(train_features)
    folds = assign_folds(len(train_rows), config.out_of_fold, config.seed)
    models = []
    for k in range(config.out_of_fold):
        outside = np.flatnonzero(folds != k)
        model, _ = train_distiller(
            RowSubset(train_rows, outside), train_targets[outside], val_features, val_targets, config, task,
            progress, work_root,
        )  # fmt: skip
        models.append(model)
    return folds, models


def iter_out_of_fold_knowledge(
    full: Distiller, fold_models: list[Distiller], fold_of_row: np.ndarray, features: FeatureRows,
    fold_feature: bool = False, batch_size: int = 1024,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """(output, aesthetic feature, fold) batch by batch: a row of fold k (>= 0) gets fold distiller k's output
    (and, with ``fold_feature``, its f_t), a row of fold ``FULL`` the full distiller's knowledge."""
    for model in (full, *fold_models):
        model.eval()
    with torch.no_grad():
        for rows, values in iter_chunks(as_rows(features), batch_size):
            output, feature = (part.numpy() for part in full(torch.from_numpy(values)))
            fold = fold_of_row[rows]
            for k, model in enumerate(fold_models):
                if (mine := fold == k).any():
                    fold_output, fold_feature_values = model(torch.from_numpy(values[mine]))
                    output[mine] = fold_output.numpy()
                    if fold_feature:
                        feature[mine] = fold_feature_values.numpy()
            yield output, feature, fold


def save_distiller(
    path: Path, model: Distiller, config: DistillerConfig, task: Task, backbones: list[str], feature_metadata: list[dict],
    folds: list[tuple[list[str], Distiller]] = (),
) -> None:  # fmt: skip
    """The distiller with what the teacher stage needs to rebuild it, in a file that loads without pickle code;
    ``folds``: the out-of-fold distillers, each with the ids of the training images it did not see."""
    checkpoint = {
        "kind": "distiller",
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "task": task.as_dict(),
        "backbones": backbones,
        "input_dim": model.body[0].num_features,
        "feature_metadata": feature_metadata,
        "state_dict": model.state_dict(),
        "folds": [{"held_out_ids": list(ids), "state_dict": fold.state_dict()} for ids, fold in folds],
    }
    save_atomically(checkpoint, path)


def load_distiller(path: Path) -> tuple[Distiller, dict]:
    """The model and the checkpoint written by :func:`save_distiller`; any other file is refused in one line.
    The checkpoint's ``fold_models`` are the out-of-fold distillers, each with its held-out ids."""
    saved = safe_load(path, "a distiller checkpoint (models/distiller.pt)")
    if saved.get("kind") != "distiller" or saved.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: not a distiller checkpoint of format {CHECKPOINT_FORMAT} (kind: {saved.get('kind')})"
        )
    saved["fold_models"] = [
        (fold["held_out_ids"], _rebuilt(path, saved, fold["state_dict"])) for fold in saved.get("folds", [])
    ]
    return _rebuilt(path, saved, saved["state_dict"]), saved


def _rebuilt(path: Path, saved: dict, state_dict: dict) -> Distiller:
    """The distiller ``saved`` describes, with ``state_dict``; a damaged description is one line naming the file
    (its random initial weights are drawn without touching the caller's random state)."""
    try:
        task = Task.from_dict(saved["task"])
        with torch.random.fork_rng(devices=[]):
            model = Distiller(saved["input_dim"], saved["config"]["hidden"], saved["config"]["dropout"],
                              task.output_size, task.activation)  # fmt: skip
        model.load_state_dict(state_dict)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = first_line(error)
        raise UserError(
            f"{path}: a damaged distiller checkpoint ({type(error).__name__}: {detail})"
        ) from None
    return model.eval()
