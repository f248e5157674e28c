"""Which variants of a pool image are made, in what order they are stacked, and the ranking pairs the rule
implies (the authors' ``train_pre/IA.py`` and ``train_pre/losses.py``):

- the original, or for crop shifts and rotations their reference (the centred window, the 0-degree turn cut
  to the same box), above each of its variants;
- within one distortion and side, the level nearer the identity above the farther one.

Nothing else is compared: not two sides, not two distortions, not the original with a reference.

The authors forward all 171 variants of an image in one step; here ``variants_per_image`` of them are
sampled, side by side: a (distortion, side) is drawn, then ``levels_per_side`` of its levels, so every
sampled side gives pairs within itself as well as against its reference.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

from iaakd.pretraining.distortions import DISTORTIONS, GROUPS, REFERENCE_KINDS, Distortion

CHANCE = 0.5


@dataclass(frozen=True)
class Variant:
    """One distorted version: ``step`` is the level's place on its side (1 nearest the identity) among the
    ``side_levels`` levels that side has in the selection."""

    distortion: str
    side: str
    level: float
    step: int
    side_levels: int

    @property
    def signed_step(self) -> float:
        """The ``rank+regress`` target, as the authors': step / levels on the side, negative on "neg"."""
        return (-1.0 if self.side == "neg" else 1.0) * self.step / self.side_levels


@dataclass(frozen=True)
class StackRow:
    """One image of a pool image's stack: the original, a reference, or a variant. ``reference`` is the
    kind the row is (original, reference) or is ranked below (variant)."""

    role: str  # original | reference | variant
    reference: str
    variant: Variant | None = None


def sample_variants(
    selection: Mapping[str, Distortion],
    variants_per_image: int | None,
    rng: np.random.Generator,
    levels_per_side: int = 2,
) -> list[Variant]:
    """``variants_per_image`` variants (None: every level of every selected distortion, the authors' full
    stack), drawn side by side: a random (distortion, side) not drawn before, then ``levels_per_side`` of its
    levels without replacement (fewer where the side has fewer, or where the count runs out; fewer in all
    where the selection has fewer than that many sides x ``levels_per_side``). ``levels_per_side`` >= 2
    gives every drawn side pairs within itself. Ordered by side as drawn, then from the identity outward."""
    if levels_per_side < 1:
        raise ValueError(f"levels_per_side must be at least 1, got {levels_per_side}")
    sides = [(name, side) for name, distortion in selection.items() for side in distortion.sides]
    if variants_per_image is None:
        return [
            _variant(selection, name, side, step)
            for name, side in sides
            for step in _steps(selection, name, side)
        ]
    if variants_per_image < 0:
        raise ValueError(f"variants_per_image must not be negative, got {variants_per_image}")
    variants: list[Variant] = []
    for choice in rng.permutation(len(sides)):
        remaining = variants_per_image - len(variants)
        if remaining == 0:
            break
        name, side = sides[choice]
        available = len(selection[name].sides[side])
        count = min(levels_per_side, available, remaining)
        steps = sorted(int(step) + 1 for step in rng.choice(available, size=count, replace=False))
        variants += [_variant(selection, name, side, step) for step in steps]
    return variants


def _steps(selection: Mapping[str, Distortion], name: str, side: str) -> range:
    return range(1, len(selection[name].sides[side]) + 1)


def _variant(selection: Mapping[str, Distortion], name: str, side: str, step: int) -> Variant:
    levels = selection[name].sides[side]
    return Variant(name, side, float(levels[step - 1]), step, len(levels))


def stack_rows(
    variants: Sequence[Variant], selection: Mapping[str, Distortion] = DISTORTIONS
) -> list[StackRow]:
    """Row 0 the original, then each reference the variants need (in :data:`REFERENCE_KINDS` order), then
    the variants in their order."""
    needed = {selection[variant.distortion].reference for variant in variants}
    rows = [StackRow("original", "original")]
    rows += [StackRow("reference", kind) for kind in REFERENCE_KINDS[1:] if kind in needed]
    rows += [StackRow("variant", selection[v.distortion].reference, v) for v in variants]
    return rows


def ranking_pairs(rows: Sequence[StackRow]) -> list[tuple[int, int]]:
    """(better, worse) row indices: each variant below its reference, and within one distortion and side
    the smaller step above the larger."""
    reference_row = {row.reference: index for index, row in enumerate(rows) if row.role != "variant"}
    by_side: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    pairs = []
    for index, row in enumerate(rows):
        if row.variant is None:
            continue
        pairs.append((reference_row[row.reference], index))
        by_side[(row.variant.distortion, row.variant.side)].append((row.variant.step, index))
    for members in by_side.values():
        pairs += [(weaker, stronger) for (_, weaker), (_, stronger) in combinations(sorted(members), 2)]
    return pairs


def expected_pair_count(variants: Sequence[Variant]) -> int:
    """What the rule implies for a sample: a side with k variants gives k pairs against its reference and
    k (k - 1) / 2 within itself."""
    per_side = Counter((variant.distortion, variant.side) for variant in variants)
    return sum(k + math.comb(k, 2) for k in per_side.values())


# ---------------------------------------------------------------- held-out pair accuracy
def pair_accuracy(
    better_scores: Sequence[float] | np.ndarray,
    worse_scores: Sequence[float] | np.ndarray,
    distortions: Sequence[str],
    selection: Mapping[str, Distortion] = DISTORTIONS,
) -> dict:
    """Share of pairs the scores order correctly (the better one scored higher; a tie counts half), overall,
    per distortion and per group, each with the pair count and a 95 % Clopper-Pearson interval
    (``scipy.stats.binomtest``; ties rounded into the success count) beside chance (0.5)."""
    better = np.asarray(better_scores, dtype=np.float64)
    worse = np.asarray(worse_scores, dtype=np.float64)
    names = np.asarray(distortions, dtype=object)
    if not better.shape == worse.shape == names.shape or better.ndim != 1:
        raise ValueError(
            f"pair_accuracy: {better.shape}, {worse.shape} and {names.shape} must be one equal length"
        )
    credit = (better > worse) + 0.5 * (better == worse)
    groups = np.asarray([selection[name].group for name in names], dtype=object)
    return {
        "overall": _accuracy(credit),
        "by_distortion": {
            name: _accuracy(credit[names == name]) for name in selection if (names == name).any()
        },
        "by_group": {
            group: _accuracy(credit[groups == group]) for group in GROUPS if (groups == group).any()
        },
    }


def _accuracy(credit: np.ndarray) -> dict:
    pairs = int(credit.size)
    if pairs == 0:
        return {"pairs": 0, "accuracy": None, "ci95": [None, None], "chance": CHANCE}
    correct = float(credit.sum())
    interval = stats.binomtest(math.floor(correct + 0.5), pairs).proportion_ci(confidence_level=0.95)
    return {
        "pairs": pairs,
        "accuracy": correct / pairs,
        "ci95": [float(interval.low), float(interval.high)],
        "chance": CHANCE,
    }
