"""Losses of the paper: EMD (Eq. 3) and the student's objectives (Eq. 7, 10, 11), and CSKD's KD terms on
unlabelled images."""

from __future__ import annotations

from collections.abc import Callable

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


def mse(target: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Mean squared error, the regression variant's output term (Eq. 13)."""
    return F.mse_loss(predicted, target)


def binary_cross_entropy(target: torch.Tensor, predicted: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """BCE of a predicted probability against a (soft) target, the binary variant's output term (Eq. 12).

    Written out rather than ``F.binary_cross_entropy``, which autocast refuses."""
    predicted = predicted.clamp(eps, 1 - eps)
    return -(target * predicted.log() + (1 - target) * (1 - predicted).log()).mean()


OutputLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OUTPUT_TARGETS = ("teacher", "ground_truth")
MIXES = ("none", "loss", "label")


def student_loss(
    student_output: torch.Tensor,
    student_feature: torch.Tensor,
    ground_truth: torch.Tensor,
    teacher_output: torch.Tensor | None,
    teacher_feature: torch.Tensor | None,
    kd_enabled: bool = True,
    feature_weight: float = 1.0,
    target: str = "teacher",
    mix: str = "none",
    output_loss: OutputLoss = emd,
) -> torch.Tensor:
    """The student's objective, every variant of the paper as a switch.

    - KD off: EMD(D_GT, D_s), the baseline.
    - KD on, ``mix="none"``: EMD(D_target, D_s) + w * MSE(f_t, f_s), the target being the teacher's
      distribution (Eq. 7) or the ground truth (Table VI).
    - ``mix="loss"`` (Eq. 10): 1/2 EMD(D_t, D_s) + 1/2 EMD(D_GT, D_s) + w * MSE(f_t, f_s).
    - ``mix="label"`` (Eq. 11): EMD(1/2 D_GT + 1/2 D_t, D_s) + w * MSE(f_t, f_s).
    ``feature_weight=0`` removes the feature term (Table VI). ``output_loss`` is EMD for distributions;
    MSE (Eq. 13) and BCE (Eq. 12) give the regression and binary variants (``iaakd.tasks``).
    """
    if not kd_enabled:
        return output_loss(ground_truth, student_output)
    if mix == "loss":
        loss = 0.5 * output_loss(teacher_output, student_output) + 0.5 * output_loss(
            ground_truth, student_output
        )
    elif mix == "label":
        loss = output_loss(0.5 * ground_truth + 0.5 * teacher_output, student_output)
    elif target == "ground_truth":
        loss = output_loss(ground_truth, student_output)
    else:
        loss = output_loss(teacher_output, student_output)
    if feature_weight:
        loss = loss + feature_weight * F.mse_loss(student_feature, teacher_feature)
    return loss


def unlabeled_loss(
    student_output: torch.Tensor,
    student_feature: torch.Tensor,
    teacher_output: torch.Tensor,
    teacher_feature: torch.Tensor,
    feature_weight: float = 1.0,
    output_loss: OutputLoss = emd,
) -> torch.Tensor:
    """The KD terms alone, on images without labels (CSKD's semi-supervised distillation): the output term
    against the teacher's output plus w * MSE(f_t, f_s), i.e. :func:`student_loss` with the teacher as the
    target and no ground truth to mix in."""
    return student_loss(student_output, student_feature, None, teacher_output, teacher_feature,
                        feature_weight=feature_weight, target="teacher", mix="none", output_loss=output_loss)  # fmt: skip


def tag_loss(tags: torch.Tensor, tag_logits: torch.Tensor) -> torch.Tensor:
    """BCE of the predicted tags against the two-hot vector, the multi-task baseline's extra term (Eq. 9).
    From logits: numerically stable, and allowed under autocast."""
    return F.binary_cross_entropy_with_logits(tag_logits.float(), tags.float())
