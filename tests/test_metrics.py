import numpy as np
import pytest
from scipy import stats

from iaakd.errors import UserError
from iaakd.metrics import (
    bootstrap_srcc_ci,
    emd_numpy,
    mean_score,
    plcc,
    require_finite_predictions,
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


def test_bootstrap_interval_is_the_percentile_of_paired_resamples():
    """scipy.stats.bootstrap (paired, percentile) gives the interval of resampling (prediction, truth)
    pairs by hand with the same generator: the same numbers, up to the last bit."""
    rng = np.random.default_rng(4)
    truth = np.round(rng.normal(size=120), 1)  # ties, as in mean scores
    predicted = truth + rng.normal(size=120)
    draws = np.random.default_rng(7)
    by_hand = [
        srcc(predicted[index], truth[index]) for index in (draws.integers(0, 120, 120) for _ in range(400))
    ]
    expected = np.percentile(by_hand, [2.5, 97.5])
    np.testing.assert_allclose(
        bootstrap_srcc_ci(predicted, truth, seed=7, resamples=400), expected, rtol=1e-12
    )
    np.testing.assert_allclose(
        bootstrap_srcc_ci(predicted, truth, seed=7, resamples=400, level=0.5),
        np.percentile(by_hand, [25, 75]),
        rtol=1e-12,
    )


def test_bootstrap_interval_is_none_where_srcc_is_undefined():
    assert bootstrap_srcc_ci(np.arange(2.0), np.arange(2.0), seed=0) is None  # fewer than 3 images
    assert bootstrap_srcc_ci(np.arange(3.0), np.arange(3.0), seed=0, resamples=50) is None  # resamples tie


def test_non_finite_predictions_are_one_line_naming_the_model_and_first_image():
    distributions = np.full((4, 10), 0.1)
    distributions[2, 3] = np.nan
    with pytest.raises(
        UserError,
        match=r"^student \(models/student.pt\): 1 of 4 predictions are NaN or infinite \(the first: "
        r"image 'c'\); the model diverged or overflowed",
    ):
        require_finite_predictions("student (models/student.pt)", distributions, ["a", "b", "c", "d"])
    with pytest.raises(UserError, match=r"2 of 3 predictions are NaN or infinite \(the first: row 0\)"):
        require_finite_predictions("teacher", np.array([np.inf, 5.0, -np.inf]))


def test_constant_predictions_are_an_error_unless_allowed():
    with pytest.raises(
        UserError, match=r"^teacher: all 3 predictions are the same \(5.5\); the model has collapsed"
    ):
        require_finite_predictions("teacher", np.array([5.5, 5.5, 5.5]))
    with pytest.raises(UserError, match=r"all 2 predictions are the same \(the same distribution\)"):
        require_finite_predictions("student", np.full((2, 10), 0.1))
    require_finite_predictions("untrained", np.array([5.5, 5.5]), allow_constant=True)
    require_finite_predictions("student", np.array([5.5, 5.6]))
    require_finite_predictions("one image", np.array([[0.1] * 10]))  # a single prediction is not "constant"
