import math

import pytest
import torch

from iaakd.losses import emd, kd_loss


def one_hot(bin_index: int) -> torch.Tensor:
    distribution = torch.zeros(1, 10)
    distribution[0, bin_index] = 1.0
    return distribution


def test_emd_all_mass_at_opposite_ends_is_sqrt_0_9():
    assert emd(one_hot(0), one_hot(9)).item() == pytest.approx(math.sqrt(0.9), abs=1e-6)
    assert emd(one_hot(0), one_hot(9)).item() == pytest.approx(0.9487, abs=1e-4)


def test_emd_of_identical_distributions_is_zero():
    distribution = torch.softmax(torch.randn(4, 10), dim=1)
    assert emd(distribution, distribution).item() == pytest.approx(0.0, abs=1e-7)


def test_emd_one_bin_apart():
    # CDFs differ by 1 in exactly one of 10 positions: sqrt(1/10).
    assert emd(one_hot(4), one_hot(5)).item() == pytest.approx(math.sqrt(0.1), abs=1e-6)


def test_emd_is_mean_of_per_sample_values_not_distance_of_mean_cdfs():
    target = torch.cat([one_hot(0), one_hot(9)])
    predicted = torch.cat([one_hot(9), one_hot(0)])
    per_sample_mean = emd(target, predicted).item()
    # The batch-averaged CDFs are identical, so that (wrong) reading would give 0.
    averaged = torch.cumsum(target, 1).mean(0) - torch.cumsum(predicted, 1).mean(0)
    assert averaged.abs().max().item() == 0.0
    assert per_sample_mean == pytest.approx(math.sqrt(0.9), abs=1e-6)


def test_emd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        emd(torch.zeros(2, 10), torch.zeros(2, 9))


def test_kd_loss_is_emd_plus_weighted_feature_mse():
    teacher_distribution, student_distribution = (
        torch.softmax(torch.randn(3, 10), 1),
        torch.softmax(torch.randn(3, 10), 1),
    )
    teacher_feature, student_feature = torch.randn(3, 8), torch.randn(3, 8)
    expected = (
        emd(teacher_distribution, student_distribution)
        + 0.5 * ((teacher_feature - student_feature) ** 2).mean()
    )
    got = kd_loss(
        student_distribution, student_feature, teacher_distribution, teacher_feature, feature_weight=0.5
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_kd_loss_without_feature_term_ignores_features():
    distribution = torch.softmax(torch.randn(3, 10), 1)
    target = torch.softmax(torch.randn(3, 10), 1)
    a = kd_loss(distribution, torch.randn(3, 8), target, torch.randn(3, 8), feature_weight=0.0)
    b = kd_loss(distribution, torch.randn(3, 8), target, torch.randn(3, 8), feature_weight=0.0)
    assert a.item() == b.item()
