"""Losses of the paper: EMD (Eq. 3) and the knowledge-distillation objectives (Eq. 7, 10-13)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def emd(target: torch.Tensor, predicted: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Earth mover's distance between score distributions, Eq. 3 of the paper.

    Per sample: ``(mean_k |CDF_target(k) - CDF_pred(k)|^r)^(1/r)`` over the n bins; then the batch mean
    of the per-sample values (not the distance of batch-averaged CDFs).
    """
    if target.shape != predicted.shape:
        raise ValueError(f"emd: shapes differ, {tuple(target.shape)} vs {tuple(predicted.shape)}")
    cdf_gap = torch.cumsum(target, dim=-1) - torch.cumsum(predicted, dim=-1)
    per_sample = cdf_gap.abs().pow(r).mean(dim=-1).pow(1.0 / r)
    return per_sample.mean()


def kd_loss(
    student_distribution: torch.Tensor,
    student_feature: torch.Tensor,
    teacher_distribution: torch.Tensor,
    teacher_feature: torch.Tensor,
    feature_weight: float = 1.0,
) -> torch.Tensor:
    """Eq. 7: EMD(D_t, D_s) + w * MSE(f_t, f_s)."""
    loss = emd(teacher_distribution, student_distribution)
    if feature_weight:
        loss = loss + feature_weight * F.mse_loss(student_feature, teacher_feature)
    return loss
