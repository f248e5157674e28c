import numpy as np
import pytest
from scipy import stats

from iaakd.metrics import (
    bootstrap_srcc_ci,
    emd_numpy,
    mean_score,
    plcc,
    round_floats,
    score_metrics,
    srcc,
)


def test_mean_score_of_distributions():
    distribution = np.zeros((2, 10))
    distribution[0, 4] = 1.0  # all votes on score 5
    distribution[1, [0, 9]] = 0.5  # half on 1, half on 10
    assert mean_score(distribution).tolist() == [5.0, 5.5]


def test_correlations_match_scipy_and_are_none_when_undefined():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert srcc(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert plcc(a, b) == pytest.approx(stats.pearsonr(a, b).statistic)
    assert srcc(np.ones(5), b[:5]) is None
    assert plcc(a[:2], b[:2]) is None


def test_accuracy_cutoff_is_strict():
    # A true mean of exactly 5.0 is "low"; predicting 5.0 is "low" too.
    assert score_metrics(np.array([5.0, 5.01, 4.0]), np.array([5.0, 6.0, 5.0]))["acc"] == pytest.approx(1.0)
    assert score_metrics(np.array([5.01]), np.array([5.0]))["acc"] == 0.0


def test_emd_numpy_normalises_vote_counts():
    votes = np.array([[0, 0, 0, 0, 10, 0, 0, 0, 0, 0]], dtype=float)
    assert emd_numpy(votes, votes / 10) == pytest.approx(0.0)
    assert emd_numpy(np.eye(10)[[0]], np.eye(10)[[9]]) == pytest.approx(np.sqrt(0.9))


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=200)
    predicted = truth + rng.normal(scale=1.0, size=200)
    interval = bootstrap_srcc_ci(predicted, truth, seed=0, resamples=300)
    assert interval[0] < srcc(predicted, truth) < interval[1]
    assert interval == bootstrap_srcc_ci(predicted, truth, seed=0, resamples=300)
    assert 0.05 < interval[1] - interval[0] < 0.3


def test_score_metrics_and_json_rounding():
    distribution = np.eye(10)[[4, 6, 7, 2]]
    score = mean_score(distribution)
    metrics = score_metrics(score, score, predicted_distribution=distribution, true_distribution=distribution)
    assert metrics["srcc"] == pytest.approx(1.0) and metrics["emd"] == pytest.approx(0.0)
    assert score_metrics(score, score)["emd"] is None  # no distributions, no EMD
    assert round_floats({"a": [float("nan"), 0.1234567]}) == {"a": [None, 0.12346]}
