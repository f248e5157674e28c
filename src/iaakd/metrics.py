"""Evaluation metrics on predicted mean scores: SRCC, PLCC, binary accuracy, EMD, bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import stats

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


def bootstrap_srcc_ci(
    predicted: np.ndarray, target: np.ndarray, seed: int, resamples: int = 1000, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of SRCC over test images."""
    n = len(predicted)
    if n < 3:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        value = srcc(predicted[index], target[index])
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


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
