"""The pretraining heads and losses (the authors' ``train_pre/IA.py``, ``train_pre/losses.py``).

- ``rank``: margin ranking (margin 0.2 in the paper) on one score per image from :class:`ScoreHead`
  (dropout, linear, sigmoid), over the stack's ranking pairs. ``scores="three"`` (the authors' option,
  ``IA.py:63-81``): one score head per distortion group, each pair ranked by its group's head.
- ``rank+classify``: plus, per group, which of the group's distortions made a variant (cross-entropy).
- ``rank+regress``: plus, per group, the variant's signed level (step / levels on its side, negative on the
  "neg" side) in its distortion's column, and 0 in that column for its reference (MSE).

Batches are what :func:`iaakd.pretraining.dataset.collate_stacks` gives: ``pairs`` (P, 2) row indices and
per-row ``group``, ``class_in_group``, ``target``, ``reference_row`` (-1 where they do not apply) and
``image`` (the pool image of each row).

Two ways to combine the terms (``balance``):

- ``mean``: each term the mean over its pairs or rows (per group, then over groups), added as
  rank + ``auxiliary_weight`` x auxiliary.
- ``authors``: what ``train_pre/IA.py:269-290`` and ``train_pre/losses.py`` compute. Each pair of
  distortion levels (and each variant's class or level) is one term, the mean over the step's pool images;
  a task's terms are **summed** over pairs, distortions and groups, then put through h(z) = exp(z / T),
  T = 50, and the tasks' h values added. With the authors' 171 variants a sum holds 500 ranking pairs;
  with ``variants_per_image`` of them it holds fewer, so h is nearer 1 and its slope 1/T per unit loss.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional

from iaakd.pretraining.distortions import GROUPS

TASKS = ("rank", "rank+classify", "rank+regress")
BALANCES = ("mean", "authors")
SCORES = ("one", "three")  # one score head, or one per distortion group (GROUPS' order)


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


class GroupScores(nn.Module):
    """One :class:`ScoreHead` per distortion group: scores of shape (N, len(GROUPS)), GROUPS' order."""

    def __init__(self, in_features: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({group: ScoreHead(in_features, dropout) for group in GROUPS})

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.heads[group](features) for group in GROUPS], dim=-1)


class PretrainHeads(nn.Module):
    """The score head (``scores="one"``; ``"three"``: one per group), and for ``rank+classify`` /
    ``rank+regress`` one auxiliary head per group (dropout, linear to the group's selected distortions:
    class logits or per-distortion levels)."""

    def __init__(
        self,
        in_features: int,
        task: str,
        group_sizes: Mapping[str, int],
        dropout: float = 0.2,
        scores: str = "one",
    ) -> None:
        super().__init__()
        self.task = check_task(task)
        if scores not in SCORES:
            raise ValueError(f"pretraining scores {scores!r} is not one of {SCORES}")
        self.score = ScoreHead(in_features, dropout) if scores == "one" else GroupScores(in_features, dropout)
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


def pair_scores(scores: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(better, worse) scores of the batch's pairs: from the one score (N,), or from per-group scores
    (N, groups) in the column of the pair's group (its worse row's: always a variant)."""
    pairs = batch["pairs"]
    if scores.dim() == 1:
        return scores[pairs[:, 0]], scores[pairs[:, 1]]
    group = batch["group"][pairs[:, 1]]
    return scores[pairs[:, 0], group], scores[pairs[:, 1], group]


def as_pair_stack(better: torch.Tensor, worse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, pairs) whose pairs are (better i, worse i): for the ranking losses on per-pair scores."""
    pairs = torch.arange(2 * len(better), device=better.device).reshape(2, -1).T
    return torch.cat([better, worse]), pairs


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
        if rows.numel():
            losses.append(functional.mse_loss(*_regressed(predicted, batch, rows)))
    return _mean_over_groups(losses, next(iter(levels.values())))


def _regressed(
    predicted: torch.Tensor, batch: Mapping[str, torch.Tensor], rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, targets) of a group's ``rows``: each variant's level in its distortion's column against its
    signed step, and its reference's value there against 0 (each reference row and column once)."""
    columns = batch["class_in_group"][rows]
    references = torch.unique(torch.stack([batch["reference_row"][rows], columns], dim=1), dim=0)
    values = torch.cat([predicted[rows, columns], predicted[references[:, 0], references[:, 1]]])
    targets = torch.cat([batch["target"][rows].to(values.dtype), values.new_zeros(len(references))])
    return values, targets


def _pool_images(batch: Mapping[str, torch.Tensor]) -> int:
    return int(torch.unique(batch["image"]).numel()) if "image" in batch else 1


def summed_ranking_loss(
    scores: torch.Tensor, pairs: torch.Tensor, images: int, margin: float = 0.2
) -> torch.Tensor:
    """The authors' ranking sum: over every pair, max(0, margin - (better - worse)), divided by the pool
    images (each pair of levels is one term, its mean over the images; ``EfficientRankingLoss`` sums them)."""
    better, worse = scores[pairs[:, 0]], scores[pairs[:, 1]]
    return torch.clamp(margin - (better - worse), min=0).sum() / images


def summed_auxiliary_loss(
    task: str, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], images: int
) -> torch.Tensor:
    """The authors' auxiliary sum over groups, divided by the pool images: ``rank+classify`` each variant's
    cross-entropy; ``rank+regress`` each variant's squared error in its distortion's column, and each
    reference's in the columns its variants use (the authors regress an original once per distortion)."""
    total = next(iter(outputs.values())).sum() * 0.0
    for group, predicted in outputs.items():
        rows = _group_rows(batch, group)
        if not rows.numel():
            continue
        if task == "rank+classify":
            total = total + functional.cross_entropy(
                predicted[rows], batch["class_in_group"][rows], reduction="sum"
            )
        else:
            total = total + functional.mse_loss(*_regressed(predicted, batch, rows), reduction="sum")
    return total / images


def balanced(loss: torch.Tensor, temperature: float) -> torch.Tensor:
    """h(z) = exp(z / T), the authors' balancing of a task's summed loss (``train_pre/losses.py``)."""
    return torch.exp(loss / temperature)


def pretraining_loss(
    outputs: Mapping,
    batch: Mapping[str, torch.Tensor],
    task: str,
    margin: float = 0.2,
    auxiliary_weight: float = 1.0,
    balance: str = "mean",
    temperature: float = 50.0,
) -> dict[str, torch.Tensor]:
    """``rank`` (and ``classify`` or ``regress`` by ``task``), each as ``balance`` makes it, and ``total``:
    rank + ``auxiliary_weight`` x auxiliary (``mean``), or h(rank) + ``auxiliary_weight`` x h(auxiliary)
    with h(z) = exp(z / ``temperature``) (``authors``). ``outputs``: :class:`PretrainHeads`' output."""
    check_task(task)
    if balance not in BALANCES:
        raise ValueError(f"pretraining balance {balance!r} is not one of {BALANCES}")
    auxiliary_name = {"rank+classify": "classify", "rank+regress": "regress"}.get(task)
    scores, pairs = as_pair_stack(*pair_scores(outputs["score"], batch))
    if balance == "authors":  # sums over pairs, each task's put through h
        images = _pool_images(batch)
        losses = {"rank": summed_ranking_loss(scores, pairs, images, margin)}
        if auxiliary_name:
            losses[auxiliary_name] = summed_auxiliary_loss(task, outputs["auxiliary"], batch, images)
        terms = {name: balanced(loss, temperature) for name, loss in losses.items()}
    else:  # means, added as they are
        losses = {"rank": margin_ranking_loss(scores, pairs, margin)}
        if auxiliary_name:
            mean_loss = classification_loss if auxiliary_name == "classify" else regression_loss
            losses[auxiliary_name] = mean_loss(outputs["auxiliary"], batch)
        terms = losses
    total = terms["rank"] + (auxiliary_weight * terms[auxiliary_name] if auxiliary_name else 0.0)
    return {**losses, "total": total}
