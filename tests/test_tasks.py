"""The three output types (Table XV): targets, losses, predicted scores and metrics, each in data units."""

import numpy as np
import pytest
import torch

from iaakd.losses import emd, student_loss
from iaakd.tasks import Task


def test_distribution_task_is_the_paper_setting():
    task = Task()
    votes = np.eye(10, dtype=np.float32)[[2, 7]]
    assert task.output_size == 10 and task.activation == "softmax"
    assert task.targets(votes, np.array([3.0, 8.0])) is not None
    assert task.predicted_score(votes).tolist() == [3.0, 8.0]
    assert task.loss(torch.from_numpy(votes), torch.from_numpy(votes)).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="vote counts"):
        task.targets(None, np.array([3.0]))


def test_score_task_scales_by_the_data_range_and_back():
    task = Task("score", (0.0, 100.0), cutoff=50.0)  # SPAQ's range
    scores = np.array([10.0, 50.0, 90.0])
    targets = task.targets(None, scores)
    assert targets.shape == (3, 1) and targets[:, 0].tolist() == pytest.approx([0.1, 0.5, 0.9])
    assert task.predicted_score(targets) == pytest.approx(scores)
    metrics = task.metrics(targets, scores)
    assert metrics["srcc"] == pytest.approx(1.0) and metrics["acc"] == 1.0
    assert metrics["emd"] is None  # no distributions: EMD is not reported
    # Eq. 13: MSE(y_t, y_s) + MSE(f_t, f_s)
    y_s, y_t = torch.tensor([[0.2], [0.4]]), torch.tensor([[0.3], [0.1]])
    f_s, f_t = torch.zeros(2, 4), torch.ones(2, 4)
    loss = student_loss(y_s, f_s, y_t, y_t, f_t, output_loss=task.loss)
    assert loss.item() == pytest.approx(((y_s - y_t) ** 2).mean().item() + 1.0)


def test_binary_task_uses_the_cutoff_and_bce():
    task = Task("binary", (1.0, 10.0), cutoff=5.0)
    targets = task.targets(None, np.array([5.0, 5.2, 3.0]))  # "high" is strictly above the cut-off
    assert targets[:, 0].tolist() == [0.0, 1.0, 0.0]
    probability = np.array([[0.2], [0.9], [0.6]])
    assert task.predicted_high(probability).tolist() == [False, True, True]
    assert task.metrics(probability, np.array([5.0, 5.2, 3.0]))["acc"] == pytest.approx(2 / 3)
    # Eq. 12: BCE(y_t, y_s)
    y_s, y_t = torch.tensor([[0.8]]), torch.tensor([[1.0]])
    assert task.loss(y_t, y_s).item() == pytest.approx(-np.log(0.8), rel=1e-5)
    assert task.loss(y_t, torch.tensor([[0.99]])).item() < task.loss(y_t, y_s).item()


def test_unknown_output_is_refused():
    with pytest.raises(ValueError, match="unknown output"):
        Task("ranking")


def test_emd_stays_the_default_output_loss():
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.softmax(torch.randn(4, 10, generator=generator), 1) for _ in range(2))
    features = torch.zeros(4, 3)
    assert student_loss(a, features, b, b, features).item() == pytest.approx(emd(b, a).item())
