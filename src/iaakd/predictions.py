"""Every test image's predictions, as the evaluate stage keeps them (``reports/predictions.json``): the ground
truth and each model's predicted score, high/low call and distribution, keyed by ``image_id``. What a later
change of statistics, or ``iaakd compare`` between two revisions, needs without training anything again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from iaakd.errors import UserError
from iaakd.tasks import Task

FORMAT = 1
MODELS = ("student", "teacher")  # the student first: the model this project makes
DIGITS = 7  # float32 outputs to the precision they have


@dataclass
class ModelPredictions:
    score: np.ndarray  # (images,) the value that ranks images (Task.predicted_score)
    high: np.ndarray  # (images,) bool: called "high" (Task.predicted_high)
    distribution: np.ndarray | None = None  # (images, 10) for the distribution output


@dataclass
class Predictions:
    """One evaluation's test images and each model's outputs on them, in ``image_ids`` order."""

    output: str
    cutoff: float
    image_ids: list[str]
    true_score: np.ndarray
    true_distribution: np.ndarray | None
    models: dict[str, ModelPredictions] = field(default_factory=dict)

    @classmethod
    def of(cls, task: Task, image_ids: list[str], true_score: np.ndarray, true_distribution: np.ndarray | None,
           outputs: dict[str, np.ndarray]) -> Predictions:  # fmt: skip
        """From each model's raw output (``Task`` turns it into scores, calls and distributions)."""
        models = {
            name: ModelPredictions(
                task.predicted_score(output),
                task.predicted_high(output),
                np.asarray(output, dtype=np.float64) if task.output == "distribution" else None,
            )
            for name, output in outputs.items()
        }
        return cls(task.output, task.cutoff, list(map(str, image_ids)), np.asarray(true_score, np.float64),
                   true_distribution, models)  # fmt: skip

    def to_json(self) -> str:
        def numbers(values: np.ndarray | None) -> list | None:
            return None if values is None else np.round(np.asarray(values, np.float64), DIGITS).tolist()

        payload = {
            "format": FORMAT,
            "output": self.output,
            "cutoff": self.cutoff,
            "image_id": self.image_ids,
            "true_score": numbers(self.true_score),
            "true_distribution": numbers(self.true_distribution),
            "models": {
                name: {
                    "score": numbers(model.score),
                    "high": np.asarray(model.high, bool).tolist(),
                    "distribution": numbers(model.distribution),
                }  # fmt: skip
                for name, model in self.models.items()
            },
        }
        return json.dumps(payload, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Predictions:
        """Parsed and checked; a file of another kind is one line naming ``where``."""
        try:
            payload = json.loads(text)
            if payload.get("format") != FORMAT:
                raise ValueError(f"format {payload.get('format')!r}, not {FORMAT}")
            count = len(payload["image_id"])

            def array(values, width: int | None = None) -> np.ndarray | None:
                if values is None:
                    return None
                result = np.asarray(values, dtype=np.float64)
                expected = (count,) if width is None else (count, width)
                if result.shape != expected:
                    raise ValueError(f"shape {result.shape}, not {expected}")
                return result

            models = {
                name: ModelPredictions(
                    array(model["score"]),
                    np.asarray(model["high"], bool),
                    array(model.get("distribution"), 10),
                )  # fmt: skip
                for name, model in payload["models"].items()
            }
            return cls(str(payload["output"]), float(payload["cutoff"]), [str(i) for i in payload["image_id"]],
                       array(payload["true_score"]), array(payload.get("true_distribution"), 10), models)  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{where}: not a predictions file of this version ({error})") from None
