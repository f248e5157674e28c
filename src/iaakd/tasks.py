"""What the heads predict and how it is scored: the paper's three output types (Table XV).

- ``distribution``: a softmax over 10 score bins, trained with EMD (Eq. 3, 7); needs vote counts.
- ``score``: one number, the score scaled to [0, 1] by the data's score range, trained with MSE (Eq. 13).
  The paper does not give Eq. 13's units; [0, 1] lets one head and one learning rate serve any score range
  (AVA's 1-10, a CSV's 1-5). The price: on AVA the squared error is 9² = 81 times smaller than in the data's
  units, so against the feature term of Eq. 13 the score term weighs 1/81 of what it would in points.
- ``binary``: the probability that the score is above the cut-off, trained with BCE (Eq. 12).

Every output becomes a predicted score (for SRCC/PLCC) and a high/low call (for Acc) here, in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from iaakd.losses import binary_cross_entropy, emd, mse
from iaakd.metrics import mean_score, score_metrics

OUTPUTS = ("distribution", "score", "binary")
_SMALLEST = 1e-6  # a bin or class with no training example: its bias stays finite


@dataclass(frozen=True)
class Task:
    output: str = "distribution"
    score_range: tuple[float, float] = (1.0, 10.0)  # the data's own units (AVA: 1..10)
    cutoff: float = 5.0  # "high" is strictly above, in the data's units

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output '{self.output}'; known: {', '.join(OUTPUTS)}")

    @property
    def output_size(self) -> int:
        return 10 if self.output == "distribution" else 1

    @property
    def activation(self) -> str:
        return {"distribution": "softmax", "score": "identity", "binary": "sigmoid"}[self.output]

    def loss(self, target: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        if self.output == "distribution":
            return emd(target, predicted)
        if self.output == "score":
            return mse(target, predicted)
        return binary_cross_entropy(target, predicted)

    def targets(self, distributions: np.ndarray | None, scores: np.ndarray) -> np.ndarray:
        """Training targets (n, output_size) from ground-truth distributions (or None) and scores."""
        if self.output == "distribution":
            if distributions is None:
                raise ValueError("output 'distribution' needs vote counts; these labels have scores only")
            return distributions.astype(np.float32)
        if self.output == "score":
            low, high = self.score_range
            return ((scores - low) / (high - low)).astype(np.float32).reshape(-1, 1)
        return (scores > self.cutoff).astype(np.float32).reshape(-1, 1)

    def output_bias(self, targets: np.ndarray) -> np.ndarray:
        """The output layer's bias at which a head whose weights are zero predicts the mean of ``targets``
        (n, output_size): the mean target (``score``), the logit of the base rate (``binary``), the log of
        the mean distribution (``distribution``: softmax's input, up to a constant). Starting there, the
        first steps learn what differs between images instead of the mean (Table XV's score head)."""
        mean = np.asarray(targets, dtype=np.float64).reshape(-1, self.output_size).mean(axis=0)
        if self.output == "distribution":
            return np.log(np.clip(mean, _SMALLEST, None))
        if self.output == "binary":
            rate = np.clip(mean, _SMALLEST, 1.0 - _SMALLEST)
            return np.log(rate / (1.0 - rate))
        return mean

    def predicted_score(self, output: np.ndarray) -> np.ndarray:
        """A value that ranks images: the mean score (data units), or the probability of "high"."""
        output = np.asarray(output, dtype=np.float64)
        if self.output == "distribution":
            return mean_score(output)
        if self.output == "score":
            low, high = self.score_range
            return low + output[:, 0] * (high - low)
        return output[:, 0]

    def predicted_high(self, output: np.ndarray) -> np.ndarray:
        if self.output == "binary":
            return np.asarray(output)[:, 0] > 0.5
        return self.predicted_score(output) > self.cutoff

    def metrics(
        self, output: np.ndarray, true_score: np.ndarray, true_distribution: np.ndarray | None = None
    ) -> dict[str, float | None]:
        """SRCC, PLCC, Acc (at the cut-off, in the data's units) and EMD where distributions exist."""
        return score_metrics(
            self.predicted_score(output),
            true_score,
            self.cutoff,
            self.predicted_high(output),
            output if self.output == "distribution" else None,
            true_distribution,
        )

    def as_dict(self) -> dict:
        values = asdict(self)
        values["score_range"] = list(self.score_range)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> Task:
        return cls(values["output"], tuple(values["score_range"]), values["cutoff"])


DISTRIBUTION = Task()  # the paper's main setting
