"""The teacher: a knowledge distiller trained on concatenated MLSP features, and its exported knowledge."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from iaakd.losses import emd
from iaakd.metrics import mean_score, srcc
from iaakd.models import Distiller


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


def _predict(
    model: torch.nn.Module, features: torch.Tensor, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    distributions, aesthetic_features = [], []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            distribution, aesthetic_feature = model(features[start : start + batch_size])
            distributions.append(distribution)
            aesthetic_features.append(aesthetic_feature)
    return torch.cat(distributions).numpy(), torch.cat(aesthetic_features).numpy()


def _evaluate(model: Distiller, features: torch.Tensor, targets: torch.Tensor) -> tuple[float, float | None]:
    distribution, _ = _predict(model, features)
    loss = float(emd(targets, torch.from_numpy(distribution)))
    return loss, srcc(mean_score(distribution), mean_score(targets.numpy()))


def train_distiller(
    train_features: np.ndarray,
    train_targets: np.ndarray,
    val_features: np.ndarray,
    val_targets: np.ndarray,
    config: DistillerConfig,
    progress: bool = True,
) -> tuple[Distiller, TrainingHistory]:
    """Trains the distiller with EMD against ground-truth distributions (rows of ``*_targets`` sum to 1)."""
    generator = set_seed(config.seed)
    model = Distiller(train_features.shape[1], config.hidden, config.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=config.lr_step_epochs, gamma=0.1)
    train_x, train_y = torch.from_numpy(train_features).float(), torch.from_numpy(train_targets).float()
    val_x, val_y = torch.from_numpy(val_features).float(), torch.from_numpy(val_targets).float()
    loader = DataLoader(
        TensorDataset(train_x, train_y),
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(train_x) > config.batch_size,
    )
    history = TrainingHistory()
    best_state, best_val_loss = None, float("inf")
    for epoch in tqdm(range(1, config.epochs + 1), desc="distiller", disable=not progress):
        model.train()
        for batch_features, batch_targets in loader:
            distribution, _ = model(batch_features)
            loss = emd(batch_targets, distribution)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        scheduler.step()
        train_loss, train_srcc = _evaluate(model, train_x, train_y)
        val_loss, val_srcc = _evaluate(model, val_x, val_y)
        history.add(
            epoch=epoch, train_loss=train_loss, val_loss=val_loss, train_srcc=train_srcc, val_srcc=val_srcc
        )
        if val_loss < best_val_loss:
            best_val_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
    if config.keep == "best" and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def export_knowledge(model: Distiller, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Teacher knowledge for every row: (teacher_feature f_t, teacher_distribution D_t)."""
    distribution, aesthetic_feature = _predict(model, torch.from_numpy(features).float())
    return aesthetic_feature, distribution
