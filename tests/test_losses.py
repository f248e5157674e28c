import math

import pytest
import torch

from iaakd.losses import emd, student_loss


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


def _knowledge(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    distribution = lambda: torch.softmax(torch.randn(3, 10, generator=generator), 1)  # noqa: E731
    return (
        distribution(),
        torch.randn(3, 8, generator=generator),
        distribution(),
        distribution(),
        torch.randn(3, 8, generator=generator),
    )


def test_kd_loss_is_emd_to_teacher_plus_weighted_feature_mse():
    student, student_feature, truth, teacher, teacher_feature = _knowledge()
    expected = emd(teacher, student) + 0.5 * ((teacher_feature - student_feature) ** 2).mean()
    got = student_loss(student, student_feature, truth, teacher, teacher_feature, feature_weight=0.5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_without_kd_only_the_ground_truth_counts():
    student, student_feature, truth, teacher, teacher_feature = _knowledge()
    got = student_loss(student, student_feature, truth, teacher, teacher_feature, kd_enabled=False)
    assert got.item() == pytest.approx(emd(truth, student).item())
    assert student_loss(student, student_feature, truth, None, None, kd_enabled=False).item() == got.item()


def test_feature_term_off_does_not_depend_on_features():
    student, _, truth, teacher, _ = _knowledge()
    a = student_loss(student, torch.randn(3, 8), truth, teacher, torch.randn(3, 8), feature_weight=0.0)
    b = student_loss(student, torch.randn(3, 8), truth, teacher, torch.randn(3, 8), feature_weight=0.0)
    assert a.item() == b.item() == pytest.approx(emd(teacher, student).item())
    c = student_loss(student, torch.randn(3, 8), truth, teacher, torch.randn(3, 8), feature_weight=1.0)
    assert c.item() > a.item()


def test_output_target_ground_truth_does_not_depend_on_the_teacher_distribution():
    student, student_feature, truth, _, teacher_feature = _knowledge()
    losses = {
        student_loss(
            student,
            student_feature,
            truth,
            torch.softmax(torch.randn(3, 10), 1),
            teacher_feature,
            target="ground_truth",
        ).item()
        for _ in range(3)
    }
    assert len(losses) == 1
    expected = emd(truth, student) + ((teacher_feature - student_feature) ** 2).mean()
    assert losses.pop() == pytest.approx(expected.item())


def test_mixed_loss_and_mixed_label_follow_eq_10_and_11():
    student, student_feature, truth, teacher, teacher_feature = _knowledge()
    feature_term = ((teacher_feature - student_feature) ** 2).mean()
    mixed_loss = student_loss(student, student_feature, truth, teacher, teacher_feature, mix="loss")
    mixed_label = student_loss(student, student_feature, truth, teacher, teacher_feature, mix="label")
    assert mixed_loss.item() == pytest.approx(
        (0.5 * emd(teacher, student) + 0.5 * emd(truth, student) + feature_term).item()
    )
    assert mixed_label.item() == pytest.approx(
        (emd(0.5 * truth + 0.5 * teacher, student) + feature_term).item()
    )
    assert mixed_loss.item() != pytest.approx(mixed_label.item())
