"""The pretraining heads and losses (the authors' ``train_pre/IA.py``, ``train_pre/losses.py``).

- ``rank``: margin ranking (margin 0.2 in the paper) on one score per image from :class:`ScoreHead`
  (dropout, linear, sigmoid), over the stack's ranking pairs.
- ``rank+classify``: plus, per group, which of the group's distortions made a variant (cross-entropy).
- ``rank+regress``: plus, per group, the variant's signed level (step / levels on its side, negative on the
  "neg" side) in its distortion's column, and 0 in that column for its reference (MSE).

Batches are what :func:`iaakd.pretraining.dataset.collate_stacks` gives: ``pairs`` (P, 2) row indices and
per-row ``group``, ``class_in_group``, ``target`` and ``reference_row`` (-1 where they do not apply).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional

from iaakd.pretraining.distortions import GROUPS

TASKS = ("rank", "rank+classify", "rank+regress")


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"pretraining task {task!r} is not one of {TASKS}")
    return task


class ScoreHead(nn.Module):
    """Dropout, a linear layer to one unit and a sigmoid: one score in (0, 1) per image, shape (N,)."""

    def __init__(self, in_features: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1), nn.Sigmoid())
        nn.init.xavier_uniform_(self.layers[1].weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1)


class PretrainHeads(nn.Module):
    """The score head, and for ``rank+classify`` / ``rank+regress`` one auxiliary head per group (dropout,
    linear to the group's selected distortions: class logits or per-distortion levels)."""

    def __init__(
        self, in_features: int, task: str, group_sizes: Mapping[str, int], dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.task = check_task(task)
        self.score = ScoreHead(in_features, dropout)
        self.auxiliary = nn.ModuleDict()
        if task != "rank":
            for group, size in group_sizes.items():
                self.auxiliary[group] = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, size))
                nn.init.xavier_uniform_(self.auxiliary[group][1].weight)

    def forward(self, features: torch.Tensor) -> dict:
        return {
            "score": self.score(features),
            "auxiliary": {group: head(features) for group, head in self.auxiliary.items()},
        }


def margin_ranking_loss(scores: torch.Tensor, pairs: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Mean over pairs of max(0, margin - (better - worse)): 0 for a pair ordered by at least the margin."""
    if pairs.shape[0] == 0:
        return scores.sum() * 0.0
    better, worse = scores[pairs[:, 0]], scores[pairs[:, 1]]
    return functional.margin_ranking_loss(better, worse, torch.ones_like(better), margin=margin)


def _group_rows(batch: Mapping[str, torch.Tensor], group: str) -> torch.Tensor:
    return torch.nonzero(batch["group"] == GROUPS.index(group)).squeeze(-1)


def _mean_over_groups(losses: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Each group present weighs the same, however many of its variants the batch holds."""
    return torch.stack(losses).mean() if losses else like.sum() * 0.0


def classification_loss(
    logits: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Cross-entropy of each variant's distortion among its group's, averaged per group, then over groups."""
    losses = []
    for group, group_logits in logits.items():
        rows = _group_rows(batch, group)
        if rows.numel():
            losses.append(functional.cross_entropy(group_logits[rows], batch["class_in_group"][rows]))
    return _mean_over_groups(losses, next(iter(logits.values())))


def regression_loss(levels: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """MSE of each variant's signed level in its distortion's column, and of 0 there for its reference
    (each reference row and column once), averaged per group, then over groups."""
    losses = []
    for group, predicted in levels.items():
        rows = _group_rows(batch, group)
        if not rows.numel():
            continue
        columns = batch["class_in_group"][rows]
        references = torch.unique(torch.stack([batch["reference_row"][rows], columns], dim=1), dim=0)
        values = torch.cat([predicted[rows, columns], predicted[references[:, 0], references[:, 1]]])
        targets = torch.cat([batch["target"][rows].to(values.dtype), values.new_zeros(len(references))])
        losses.append(functional.mse_loss(values, targets))
    return _mean_over_groups(losses, next(iter(levels.values())))


def pretraining_loss(
    outputs: Mapping,
    batch: Mapping[str, torch.Tensor],
    task: str,
    margin: float = 0.2,
    auxiliary_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """``rank`` (and ``classify`` or ``regress`` by ``task``) and their sum ``total`` = rank +
    ``auxiliary_weight`` x the auxiliary loss. ``outputs``: :class:`PretrainHeads`' output for the batch."""
    check_task(task)
    losses = {"rank": margin_ranking_loss(outputs["score"], batch["pairs"], margin)}
    if task == "rank+classify":
        losses["classify"] = classification_loss(outputs["auxiliary"], batch)
    elif task == "rank+regress":
        losses["regress"] = regression_loss(outputs["auxiliary"], batch)
    auxiliary = [loss for name, loss in losses.items() if name != "rank"]
    losses["total"] = losses["rank"] + auxiliary_weight * sum(auxiliary) if auxiliary else losses["rank"]
    return losses
