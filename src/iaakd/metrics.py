"""Evaluation metrics on predicted mean scores: SRCC, PLCC, binary accuracy, EMD, bootstrap intervals."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from iaakd.errors import UserError

SCORES = np.arange(1, 11, dtype=np.float64)


def mean_score(distribution: np.ndarray) -> np.ndarray:
    """Expected score sum_k k * p_k of each row of a (n, 10) distribution (rows need not sum to 1)."""
    distribution = np.asarray(distribution, dtype=np.float64)
    return distribution @ SCORES / distribution.sum(axis=-1)


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def srcc(predicted: np.ndarray, target: np.ndarray) -> float | None:
    """Spearman rank correlation; None where undefined (fewer than 3 items or a constant input)."""
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(target) == 0:
        return None
    return _finite_or_none(stats.spearmanr(predicted, target).statistic)


def plcc(predicted: np.ndarray, target: np.ndarray) -> float | None:
    """Pearson linear correlation; None where undefined."""
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(target) == 0:
        return None
    return _finite_or_none(stats.pearsonr(predicted, target).statistic)


def emd_numpy(target: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean per-sample EMD (r = 2) of (n, 10) distributions, normalised row-wise."""
    if len(target) == 0:
        return None
    target = target / target.sum(axis=1, keepdims=True)
    predicted = predicted / predicted.sum(axis=1, keepdims=True)
    gap = np.cumsum(target, axis=1) - np.cumsum(predicted, axis=1)
    return float(np.sqrt((gap**2).mean(axis=1)).mean())


BOOTSTRAP_BATCH = 100  # resamples per call: memory is batch x n values, not resamples x n


def bootstrap_srcc_ci(
    predicted: np.ndarray, target: np.ndarray, seed: int, resamples: int = 1000, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of SRCC over test images (pairs of prediction and truth resampled
    together, ``scipy.stats.bootstrap``); None for fewer than 3 images, or where resamples without a
    defined SRCC (every resampled prediction or truth equal, on a tiny split) leave no interval."""
    if len(predicted) < 3:
        return None

    def resampled_srcc(predicted_sample: np.ndarray, target_sample: np.ndarray) -> float:
        value = srcc(predicted_sample, target_sample)
        return np.nan if value is None else value

    with warnings.catch_warnings():  # a NaN interval (said to be BCa's, though percentile) is None here
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (np.asarray(predicted, dtype=np.float64), np.asarray(target, dtype=np.float64)),
            resampled_srcc,
            n_resamples=resamples,
            batch=BOOTSTRAP_BATCH,
            vectorized=False,
            paired=True,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return [float(low), float(high)]


def require_finite_predictions(
    name: str,
    predictions: np.ndarray,
    image_ids: Sequence[str] | None = None,
    allow_constant: bool = False,
) -> None:
    """Raises one clear line (:class:`UserError`) when a model's predictions cannot be scored, instead
    of metrics of null and a crash further on: any NaN or infinite value (always an error: the model
    diverged or overflowed), or every prediction the same (a model collapsed to a constant; a trained
    model never predicts that, so it is an error unless ``allow_constant``). ``predictions`` has one
    row per image (scores, or distributions); ``name`` says which model, ``image_ids`` name the rows."""
    rows = np.asarray(predictions, dtype=np.float64)
    rows = rows.reshape(len(rows), -1) if rows.ndim else rows.reshape(1, 1)
    not_finite = ~np.isfinite(rows).all(axis=1)
    if not_finite.any():
        first = int(np.flatnonzero(not_finite)[0])
        where = f"image '{image_ids[first]}'" if image_ids is not None else f"row {first}"
        raise UserError(
            f"{name}: {int(not_finite.sum())} of {len(rows)} predictions are NaN or infinite (the first: "
            f"{where}); the model diverged or overflowed: retrain it (a lower learning rate, or precision fp32)"
        )
    if not allow_constant and len(rows) > 1 and (rows == rows[0]).all():
        value = f"{rows[0, 0]:.6g}" if rows.shape[1] == 1 else "the same distribution"
        raise UserError(
            f"{name}: all {len(rows)} predictions are the same ({value}); the model has collapsed to a "
            "constant: retrain it (check the learning rate and the training targets)"
        )


def score_metrics(
    predicted_score: np.ndarray,
    true_score: np.ndarray,
    cutoff: float = 5.0,
    predicted_high: np.ndarray | None = None,
    predicted_distribution: np.ndarray | None = None,
    true_distribution: np.ndarray | None = None,
) -> dict[str, float | None]:
    """SRCC, PLCC on predicted scores; Acc on high/low calls (by default: predicted score above the
    cut-off); EMD only where both sides are distributions."""
    if predicted_high is None:
        predicted_high = np.asarray(predicted_score) > cutoff
    true_high = np.asarray(true_score) > cutoff
    has_distributions = predicted_distribution is not None and true_distribution is not None
    return {
        "srcc": srcc(predicted_score, true_score),
        "plcc": plcc(predicted_score, true_score),
        "acc": float(np.mean(predicted_high == true_high)) if len(true_high) else None,
        "emd": emd_numpy(true_distribution, predicted_distribution) if has_distributions else None,
    }


def round_floats(tree: object, digits: int = 5) -> object:
    """Rounds every float in a nested structure of dicts and lists, for stable and readable JSON."""
    if isinstance(tree, float):
        return round(tree, digits) if math.isfinite(tree) else None
    if isinstance(tree, Mapping):
        return {key: round_floats(value, digits) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [round_floats(value, digits) for value in tree]
    return tree
