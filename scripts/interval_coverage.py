"""How often does ``iaakd.paired``'s 95 % interval cover the true difference, in the regime of this project's
tables? Simulated worlds of two arms scored on 450 test images with 3 or 5 seeds, paired or not, each seed of
its own quality, both arms sharing their hard images and most of their errors; the truth is the difference of the arms' expected SRCC
over seeds and images (a large simulation of the same world). Writes results/interval_coverage.json.

    python scripts/interval_coverage.py --sims 500          # about 10 minutes on one core

A world (``World``): truth t ~ N(0, 1) per image; a hard-image error h ~ N(0, hard^2) both arms share; per arm
a persistent error per image and, per seed, a fresh one (its share of the arm's error variance: ``kappa``),
the whole error scaled by exp(tau z) with z a seed's quality (correlated between the arms' seed j when
paired). The per-seed SRCC sd this gives is measured and reported beside each coverage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from iaakd.paired import METHODS, paired_difference

RESULTS = Path("results") / "interval_coverage.json"


@dataclass(frozen=True)
class World:
    seeds: int
    kappa: float  # share of an arm's error variance that changes with the seed
    tau: float  # sd of a seed's log error scale (its quality)
    paired: bool = True
    noise_a: float = 0.72  # arm A's own error sd; with the shared one, SRCC about 0.55 (the demo's student)
    noise_b: float = 0.78
    hard: float = 1.3  # the hard-image error both arms share (two students mostly err on the same images)
    quality_correlation: float = 0.5  # between seed j of A and seed j of B, when paired
    arm_correlation: float = 0.8  # between the arms' persistent errors: two students err on similar images
    images: int = 450

    def draw(self, rng: np.random.Generator, images: int | None = None, seeds: int | None = None):
        """Truth (images,), and each arm's predictions (seeds, images)."""
        n, s = images or self.images, seeds or self.seeds
        truth = rng.normal(size=n)
        shared = truth + self.hard * rng.normal(size=n)
        z_a = rng.normal(size=s)
        rho = self.quality_correlation if self.paired else 0.0
        z_b = rho * z_a + np.sqrt(1 - rho**2) * rng.normal(size=s)
        common, arms = rng.normal(size=n), []
        for noise, z in ((self.noise_a, z_a), (self.noise_b, z_b)):
            r = self.arm_correlation
            persistent = np.sqrt(r) * common + np.sqrt(1 - r) * rng.normal(size=n)
            fresh = rng.normal(size=(s, n))
            error = np.sqrt(1 - self.kappa) * persistent + np.sqrt(self.kappa) * fresh
            arms.append(shared + noise * np.exp(self.tau * z)[:, None] * error)
        return truth, arms[0], arms[1]

    def expected_srcc(self, noise: float) -> float:
        """An arm's SRCC expected over seeds and images: each seed's error is normal, so its population
        SRCC is (6 / pi) asin(rho / 2) with rho = 1 / sqrt(1 + hard^2 + (noise e^(tau z))^2); averaged over
        the seed quality z ~ N(0, 1) by Gauss-Hermite quadrature."""
        nodes, weights = np.polynomial.hermite_e.hermegauss(64)
        rho = 1 / np.sqrt(1 + self.hard**2 + (noise * np.exp(self.tau * nodes)) ** 2)
        return float(np.sum(weights * 6 / np.pi * np.arcsin(rho / 2)) / np.sqrt(2 * np.pi))

    def true_difference(self) -> float:
        return self.expected_srcc(self.noise_a) - self.expected_srcc(self.noise_b)


def coverage(world: World, sims: int, resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    truth_difference = world.true_difference()
    covered = {method: 0 for method in METHODS}
    widths = {method: [] for method in METHODS}
    seed_sds = []
    for sim in range(sims):
        truth, a, b = world.draw(rng)
        per_seed = [stats.spearmanr(truth, row).statistic for row in a]
        seed_sds.append(np.std(per_seed, ddof=1))
        for method in METHODS:
            result = paired_difference(a, b, truth, resamples=resamples, seed=sim, paired_seeds=world.paired,
                                       method=method)  # fmt: skip
            covered[method] += result.ci95_low <= truth_difference <= result.ci95_high
            widths[method].append(result.ci95_high - result.ci95_low)
    return {
        "world": asdict(world),
        "true_difference": round(truth_difference, 4),
        "per_seed_srcc_sd": round(float(np.mean(seed_sds)), 4),
        "sims": sims,
        "coverage": {method: round(covered[method] / sims, 3) for method in METHODS},
        "mean_width": {method: round(float(np.mean(widths[method])), 4) for method in METHODS},
    }


# paired, 3 and 5 seeds, per-seed SRCC sd about 0.01, 0.02, 0.03, 0.04 (tau); then unpaired; then equal arms
WORLDS = (
    [World(seeds=seeds, kappa=0.1, tau=tau) for seeds in (3, 5) for tau in (0.1, 0.2, 0.3, 0.45)]
    + [World(seeds=seeds, kappa=0.1, tau=0.3, paired=False) for seeds in (3, 4)]
    + [World(seeds=3, kappa=0.1, tau=0.3, noise_b=0.72)]
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sims", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=400)
    args = parser.parse_args()
    rows = []
    for index, world in enumerate(WORLDS):
        start = time.perf_counter()
        row = coverage(world, args.sims, args.resamples, seed=index)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.write_text(
        json.dumps({"sims": args.sims, "resamples": args.resamples, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
