"""Paired statistics: is configuration A better than configuration B on the same test images?

For two configurations scored on the same test images, the difference A - B in SRCC, PLCC, Acc and EMD
(computed as in :mod:`iaakd.metrics`), with a paired 95 % interval, and the share of seed pairs in which A
beats B. The point estimate is the metric's mean over seeds on all test images, A minus B.

**The interval (``method="seed-t"``, the default)** adds two sources of uncertainty and takes a Student t
quantile for their sum:

- **Test images**: a bootstrap over the test images, with replacement and the *same* image indices for A and
  B (the pairing: the image-to-image variation both share cancels in the difference), every seed kept in
  every replicate; its variance is the images' part (degrees of freedom: images - 1).
- **Seeds**, where a configuration has several (predictions of shape ``(seeds, images)``): with
  ``paired_seeds=True`` (equal seed counts; seed ``j`` fixes the same initialisation and data order in A and
  B) the variance of the per-seed differences over S, with S - 1 degrees of freedom; unpaired, each arm's
  variance over its seeds divided by its seed count, added (Welch).

The two variances are added, the degrees of freedom combined by Welch-Satterthwaite, and the interval is the
difference plus or minus t times the square root of the sum. With one seed a side it is the images' part
alone (a normal-theory bootstrap interval); two identical inputs give exactly [0, 0].

**Why not the bootstrap over seeds too** (``method="percentile"``, the earlier interval, kept for
comparison): resampling 3 to 5 seeds treats them as the whole population of seeds; a bootstrap over s seeds
sees only (s - 1) / s of their variance and none of the uncertainty in that variance. Decided by simulation
(``scripts/interval_coverage.py``, ``results/interval_coverage.json``): worlds in the regime of this
project's tables, 450 test images, 3 and 5 paired seeds, arms that share most of their per-image errors,
per-seed SRCC sd 0.009 to 0.042, 300 simulations each. The percentile interval covered the true difference in
0.86 of simulations at 3 paired seeds with a per-seed sd of 0.025 to 0.041, 0.91 at 5 seeds and sd 0.042,
0.90 for equal arms at 3 seeds (0.93 to 0.96 where seeds hardly differ); seed-t covered 0.950 to 0.977 in
every world (paired 0.950 to 0.977, unpaired 0.970 and 0.977, equal arms 0.963), at the price of wider
intervals where seeds differ (0.113 against 0.073 at 3 seeds, sd 0.025). The tests hold it to [0.93, 0.97]
over 600 simulations (``tests/test_paired.py``). Replicates where a correlation is undefined (a constant resampled prediction)
are left out; ``resamples`` in the result counts those kept.

Sign convention: the difference is always A - B in the metric's own units. SRCC, PLCC and Acc are better
when higher, so a positive difference means A is better; **EMD is better when lower**, so a *negative* EMD
difference means A is better. ``share_a_beats_b`` already takes this into account (for EMD, A beats B when
its EMD is lower).

Randomness comes only from ``np.random.default_rng(seed)`` (or a Generator passed in); global state is
never touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from iaakd.errors import UserError

METRICS = ("srcc", "plcc", "acc", "emd")
# the interval: seed-t (the default), or the earlier hierarchical percentile bootstrap, kept for comparison
METHODS = ("seed-t", "percentile")
HIGHER_IS_BETTER = {"srcc": True, "plcc": True, "acc": True, "emd": False}
LEVEL = 0.95
_BLOCK_ELEMENTS = 2_000_000  # resampled values held at once per configuration, to bound memory


@dataclass(frozen=True)
class PairedDifference:
    """One metric's paired comparison of A against B; ``None`` where the metric is undefined."""

    metric: str
    difference: float | None  # mean over A's seeds minus mean over B's seeds, on all test images
    ci95_low: float | None
    ci95_high: float | None
    mean_a: float | None  # the metric of A (mean over its seeds) on all test images
    mean_b: float | None
    share_a_beats_b: float | None  # share of seed pairs where A is strictly better; ties do not count
    higher_is_better: bool  # False for EMD: a negative EMD difference favours A
    n_images: int
    n_seeds_a: int
    n_seeds_b: int
    paired_seeds: bool
    resamples: int  # bootstrap replicates kept (those where the metric was defined)
    interval: str  # how ci95 was made: METHODS' seed-t or percentile

    def as_dict(self) -> dict:
        """Plain Python values, ready for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class _Config:
    """One configuration's inputs, checked and shaped (seeds, images)."""

    name: str
    score: np.ndarray  # (seeds, images) predicted scores
    correct: np.ndarray  # (seeds, images) 1.0 where the high/low call matches the truth
    emd: np.ndarray | None  # (seeds, images) per-image EMD to the true distribution

    @property
    def seeds(self) -> int:
        return self.score.shape[0]


def paired_difference(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    true_score: np.ndarray,
    *,
    metric: str = "srcc",
    resamples: int = 2000,
    seed: int | np.random.Generator = 0,
    cutoff: float = 5.0,
    true_dist: np.ndarray | None = None,
    dist_a: np.ndarray | None = None,
    dist_b: np.ndarray | None = None,
    high_a: np.ndarray | None = None,
    high_b: np.ndarray | None = None,
    paired_seeds: bool = False,
    names: tuple[str, str] = ("A", "B"),
    method: str = "seed-t",
) -> PairedDifference:
    """Difference A - B in one metric, with its paired interval (``method``: see the module docstring).

    ``pred_a``/``pred_b``: predicted scores, shape ``(images,)`` for one seed or ``(seeds, images)``;
    ``true_score``: ``(images,)``. Acc calls "high" a score strictly above ``cutoff`` (on both sides),
    unless ``high_a``/``high_b`` give the predicted calls (for example a binary head's probability > 0.5).
    EMD needs ``true_dist`` ``(images, bins)`` and ``dist_a``/``dist_b`` ``([seeds,] images, bins)``.
    Test images are resampled (the same indices for A and B); with ``method="percentile"``, seeds too (see
    the module docstring); the same ``seed`` gives the same result. Bad input raises ``UserError``.
    """
    if metric not in METRICS:
        raise UserError(f"unknown metric '{metric}'; known: {', '.join(METRICS)}")
    inputs = _checked_inputs(
        pred_a,
        pred_b,
        true_score,
        cutoff,
        true_dist if metric == "emd" else None,
        dist_a,
        dist_b,
        high_a,
        high_b,
        paired_seeds,
        names,
        needs_emd=metric == "emd",
    )
    return _compare((metric,), inputs, resamples, seed, method)[metric]


def compare(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    true_score: np.ndarray,
    *,
    resamples: int = 2000,
    seed: int | np.random.Generator = 0,
    cutoff: float = 5.0,
    true_dist: np.ndarray | None = None,
    dist_a: np.ndarray | None = None,
    dist_b: np.ndarray | None = None,
    high_a: np.ndarray | None = None,
    high_b: np.ndarray | None = None,
    paired_seeds: bool = False,
    names: tuple[str, str] = ("A", "B"),
    method: str = "seed-t",
) -> dict[str, dict | None]:
    """All four metrics' paired differences A - B as a JSON-ready dict ``{metric: PairedDifference dict}``.

    Arguments as :func:`paired_difference`. Every metric uses the same resampled images and seeds, so the
    ``metric`` entry equals ``paired_difference(..., metric=metric)`` with the same ``seed``. ``"emd"`` is
    ``None`` where no distributions are given.
    """
    needs_emd = true_dist is not None or dist_a is not None or dist_b is not None
    inputs = _checked_inputs(
        pred_a,
        pred_b,
        true_score,
        cutoff,
        true_dist,
        dist_a,
        dist_b,
        high_a,
        high_b,
        paired_seeds,
        names,
        needs_emd=needs_emd,
    )
    results = _compare(METRICS if needs_emd else METRICS[:3], inputs, resamples, seed, method)
    return {metric: results[metric].as_dict() if metric in results else None for metric in METRICS}


@dataclass(frozen=True)
class _Inputs:
    truth: np.ndarray  # (images,)
    config_a: _Config
    config_b: _Config
    paired_seeds: bool


def _checked_inputs(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    true_score: np.ndarray,
    cutoff: float,
    true_dist: np.ndarray | None,
    dist_a: np.ndarray | None,
    dist_b: np.ndarray | None,
    high_a: np.ndarray | None,
    high_b: np.ndarray | None,
    paired_seeds: bool,
    names: tuple[str, str],
    *,
    needs_emd: bool,
) -> _Inputs:
    """Every input checked (UserError, one line, on the first fault) and shaped (seeds, images)."""
    truth = _true_scores(true_score)
    truth_dist = None
    if needs_emd:
        if true_dist is None or dist_a is None or dist_b is None:
            raise UserError("the EMD comparison needs true_dist, dist_a and dist_b together")
        truth_dist = _distributions(true_dist, "true_dist", len(truth), per_seed=False)
    name_a, name_b = names
    config_a = _config(name_a, pred_a, high_a, dist_a if needs_emd else None, truth, truth_dist, cutoff)
    config_b = _config(name_b, pred_b, high_b, dist_b if needs_emd else None, truth, truth_dist, cutoff)
    if paired_seeds and config_a.seeds != config_b.seeds:
        raise UserError(
            f"paired_seeds needs as many seeds in {name_a} ({config_a.seeds}) as in {name_b} ({config_b.seeds})"
        )
    return _Inputs(truth=truth, config_a=config_a, config_b=config_b, paired_seeds=paired_seeds)


def _compare(
    metrics: tuple[str, ...],
    inputs: _Inputs,
    resamples: int,
    seed: int | np.random.Generator,
    method: str = "seed-t",
) -> dict[str, PairedDifference]:
    """Draws the replicates once (images; for ``percentile`` also A's seeds, then B's) and scores every
    metric on them."""
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise UserError(f"resamples must be a positive whole number, not {resamples!r}")
    if method not in METHODS:
        raise UserError(f"unknown interval method '{method}'; known: {', '.join(METHODS)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    seeds_in_a, seeds_in_b = inputs.config_a.seeds, inputs.config_b.seeds
    image_index = rng.integers(0, len(inputs.truth), size=(resamples, len(inputs.truth)))
    if method == "seed-t":  # every seed in every replicate: the images' part alone
        seeds_a = np.tile(np.arange(seeds_in_a), (resamples, 1))
        seeds_b = np.tile(np.arange(seeds_in_b), (resamples, 1))
    else:
        seeds_a = rng.integers(0, seeds_in_a, size=(resamples, seeds_in_a))
        seeds_b = (
            seeds_a if inputs.paired_seeds else rng.integers(0, seeds_in_b, size=(resamples, seeds_in_b))
        )
    return {metric: _one_metric(metric, inputs, image_index, seeds_a, seeds_b, method) for metric in metrics}


def _one_metric(
    metric: str,
    inputs: _Inputs,
    image_index: np.ndarray,
    seeds_a: np.ndarray,
    seeds_b: np.ndarray,
    method: str = "seed-t",
) -> PairedDifference:
    config_a, config_b, truth = inputs.config_a, inputs.config_b, inputs.truth
    full = np.arange(len(truth))[None, :]
    full_target = _resampled_target(metric, truth, full)
    per_seed_a = _metric_per_resample(metric, config_a, full_target, full)[:, 0]  # (seeds,) on all images
    per_seed_b = _metric_per_resample(metric, config_b, full_target, full)[:, 0]
    differences = _replicated_differences(metric, inputs, image_index, seeds_a, seeds_b)
    kept = differences[np.isfinite(differences)]
    defined = bool(np.isfinite(per_seed_a).all() and np.isfinite(per_seed_b).all() and len(kept))
    if not defined:
        low, high = None, None
    elif method == "seed-t":
        low, high = seed_t_interval(kept, per_seed_a, per_seed_b, inputs.paired_seeds, len(truth))
    else:
        tail = (1 - LEVEL) / 2 * 100
        low, high = np.percentile(kept, [tail, 100 - tail])
    share = share_a_beats_b(per_seed_a, per_seed_b, metric, paired_seeds=inputs.paired_seeds)
    return PairedDifference(
        metric=metric,
        difference=float(per_seed_a.mean() - per_seed_b.mean()) if defined else None,
        ci95_low=_float_or_none(low),
        ci95_high=_float_or_none(high),
        mean_a=float(per_seed_a.mean()) if defined else None,
        mean_b=float(per_seed_b.mean()) if defined else None,
        share_a_beats_b=share if defined else None,
        higher_is_better=HIGHER_IS_BETTER[metric],
        n_images=len(truth),
        n_seeds_a=config_a.seeds,
        n_seeds_b=config_b.seeds,
        paired_seeds=inputs.paired_seeds,
        resamples=len(kept),
        interval=method,
    )


def seed_t_interval(
    image_replicates: np.ndarray,
    per_seed_a: np.ndarray,
    per_seed_b: np.ndarray,
    paired_seeds: bool,
    images: int,
) -> tuple[float, float]:
    """The ``seed-t`` interval: the mean difference plus or minus a Student t quantile times the square root
    of two variances added, the images' (the variance of ``image_replicates``, the bootstrap over test
    images with every seed kept) and the seeds' (paired: the variance of the per-seed differences over S;
    unpaired: each arm's variance over its seeds, added), with Welch-Satterthwaite's degrees of freedom
    (S - 1 for the seeds' part, images - 1 for the images')."""
    difference = float(per_seed_a.mean() - per_seed_b.mean())
    parts = [(float(np.var(image_replicates, ddof=1)) if len(image_replicates) > 1 else 0.0, images - 1)]
    groups = [per_seed_a - per_seed_b] if paired_seeds else [per_seed_a, per_seed_b]
    parts += [
        (float(np.var(group, ddof=1)) / len(group), len(group) - 1) for group in groups if len(group) > 1
    ]
    variance = sum(part for part, _ in parts)
    if variance == 0:
        return difference, difference
    freedom = variance**2 / sum(part**2 / dof for part, dof in parts if part > 0)
    half_width = float(stats.t.ppf((1 + LEVEL) / 2, freedom)) * np.sqrt(variance)
    return difference - half_width, difference + half_width


def _replicated_differences(
    metric: str, inputs: _Inputs, image_index: np.ndarray, seeds_a: np.ndarray, seeds_b: np.ndarray
) -> np.ndarray:
    """The bootstrap replicates of mean-over-seeds(A) - mean-over-seeds(B), in blocks that bound memory."""
    widest = max(inputs.config_a.seeds, inputs.config_b.seeds) * len(inputs.truth)
    block = max(1, _BLOCK_ELEMENTS // widest)
    differences = []
    for start in range(0, len(image_index), block):
        rows = slice(start, start + block)
        images = image_index[rows]
        target = _resampled_target(metric, inputs.truth, images)  # shared by A and B: ranked once
        value_a = _seed_mean(_metric_per_resample(metric, inputs.config_a, target, images), seeds_a[rows])
        value_b = _seed_mean(_metric_per_resample(metric, inputs.config_b, target, images), seeds_b[rows])
        differences.append(value_a - value_b)
    return np.concatenate(differences)


def share_a_beats_b(
    metric_a: np.ndarray, metric_b: np.ndarray, metric: str, *, paired_seeds: bool = False
) -> float:
    """Share of seed pairs in which A is strictly better than B (higher, or lower for EMD); ties don't count.

    ``metric_a``/``metric_b``: each seed's metric on the whole test set. Unpaired, every seed of A meets every
    seed of B (``len(a) * len(b)`` pairs); paired, seed ``j`` of A meets seed ``j`` of B only.
    """
    metric_a, metric_b = np.asarray(metric_a, dtype=np.float64), np.asarray(metric_b, dtype=np.float64)
    if paired_seeds:
        if metric_a.shape != metric_b.shape:
            raise UserError(f"paired seeds need equal seed counts, not {len(metric_a)} and {len(metric_b)}")
        gaps = metric_a - metric_b
    else:
        gaps = metric_a[:, None] - metric_b[None, :]
    wins = gaps > 0 if HIGHER_IS_BETTER[metric] else gaps < 0
    return float(wins.mean())


def _seed_mean(per_seed: np.ndarray, seed_index: np.ndarray) -> np.ndarray:
    """Per-replicate mean over drawn seeds: ``per_seed`` (seeds, R), ``seed_index`` (R, drawn) -> (R,)."""
    replicate = np.arange(per_seed.shape[1])[:, None]
    return per_seed[seed_index, replicate].mean(axis=1)


def _resampled_target(metric: str, truth: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """True scores of each resampled image set (R, n), ranked within each row for SRCC; None for Acc and EMD."""
    if metric == "srcc":
        return stats.rankdata(truth[index], axis=-1)
    return truth[index] if metric == "plcc" else None


def _metric_per_resample(
    metric: str, config: _Config, target: np.ndarray | None, index: np.ndarray
) -> np.ndarray:
    """A configuration's metric for every seed on every resampled image set: ``index`` (R, n) -> (seeds, R).

    SRCC is the Pearson correlation of the ranks within each resampled set (average ranks for ties, as
    ``scipy.stats.spearmanr``); ``target`` is :func:`_resampled_target` for the same ``index``.
    """
    if metric == "acc":
        return config.correct[:, index].mean(axis=-1)
    if metric == "emd":
        return config.emd[:, index].mean(axis=-1)
    predicted = config.score[:, index]  # (seeds, R, n)
    if metric == "srcc":
        predicted = stats.rankdata(predicted, axis=-1)
    return _pearson_last_axis(predicted, target)


def _pearson_last_axis(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (y broadcast against x); NaN where either side is constant."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (x * y).sum(axis=-1) / np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    return np.where(constant, np.nan, np.clip(value, -1.0, 1.0))


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _true_scores(true_score: np.ndarray) -> np.ndarray:
    truth = _numeric(true_score, "true_score")
    if truth.ndim != 1:
        raise UserError(f"true_score must be one score per test image, shape (images,), not {truth.shape}")
    if len(truth) < 3:
        raise UserError(f"a paired comparison needs at least 3 test images, not {len(truth)}")
    _require_finite(truth, "true_score", ("image",))
    return truth


def _config(
    name: str,
    predicted: np.ndarray,
    high: np.ndarray | None,
    dist: np.ndarray | None,
    truth: np.ndarray,
    true_dist: np.ndarray | None,
    cutoff: float,
) -> _Config:
    score = _per_seed(_numeric(predicted, f"predictions of {name}"), f"predictions of {name}", len(truth))
    _require_finite(score, f"predictions of {name}", ("seed", "image"))
    calls = score > cutoff
    if high is not None:
        calls = _per_seed(np.asarray(high, dtype=bool), f"high/low calls of {name}", len(truth))
        if calls.shape != score.shape:
            raise UserError(
                f"high/low calls of {name} have shape {calls.shape}, its predictions {score.shape}"
            )
    correct = (calls == (truth > cutoff)).astype(np.float64)
    per_image_emd = None
    if dist is not None:
        dist_array = _distributions(dist, f"distributions of {name}", len(truth), per_seed=True)
        if dist_array.shape[0] != score.shape[0] or dist_array.shape[-1] != true_dist.shape[-1]:
            raise UserError(
                f"distributions of {name} have shape {dist_array.shape}; expected "
                f"({score.shape[0]}, {len(truth)}, {true_dist.shape[-1]}) to match its predictions and true_dist"
            )
        per_image_emd = emd_per_image(true_dist, dist_array)
    return _Config(name=name, score=score, correct=correct, emd=per_image_emd)


def emd_per_image(true_dist: np.ndarray, predicted_dist: np.ndarray) -> np.ndarray:
    """Per-image EMD (r = 2) of row-normalised distributions, as :func:`iaakd.metrics.emd_numpy` averages it.

    ``true_dist`` (images, bins); ``predicted_dist`` (..., images, bins) -> (..., images).
    """
    true_dist = true_dist / true_dist.sum(axis=-1, keepdims=True)
    predicted_dist = predicted_dist / predicted_dist.sum(axis=-1, keepdims=True)
    gap = np.cumsum(true_dist, axis=-1) - np.cumsum(predicted_dist, axis=-1)
    return np.sqrt((gap**2).mean(axis=-1))


def _numeric(values: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise UserError(f"{what} must be numbers: {error}") from None


def _per_seed(values: np.ndarray, what: str, n_images: int) -> np.ndarray:
    """(images,) -> (1, images); (seeds, images) kept; the image count must match the truth's."""
    values = values[None, :] if values.ndim == 1 else values
    if values.ndim != 2 or values.shape[0] == 0:
        raise UserError(f"{what} must have shape (images,) or (seeds, images), not {values.shape}")
    if values.shape[1] != n_images:
        raise UserError(f"{what} cover {values.shape[1]} images but true_score has {n_images}")
    return values


def _distributions(values: np.ndarray, what: str, n_images: int, *, per_seed: bool) -> np.ndarray:
    dist = _numeric(values, what)
    if per_seed and dist.ndim == 2:
        dist = dist[None]
    expected = 3 if per_seed else 2
    if dist.ndim != expected or dist.shape[-2] != n_images or dist.shape[-1] < 2:
        shape = "([seeds,] images, bins)" if per_seed else "(images, bins)"
        raise UserError(f"{what} must have shape {shape} with {n_images} images, not {dist.shape}")
    _require_finite(dist, what, ("seed", "image", "bin") if per_seed else ("image", "bin"))
    if (dist < 0).any() or (dist.sum(axis=-1) <= 0).any():
        raise UserError(f"{what} must be non-negative with a positive sum in every row")
    return dist


def _require_finite(values: np.ndarray, what: str, axes: tuple[str, ...]) -> None:
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        where = ", ".join(f"{axis} {index}" for axis, index in zip(axes, bad[0], strict=True))
        raise UserError(f"{what} hold {len(bad)} non-finite value(s) (NaN or inf), the first at {where}")
