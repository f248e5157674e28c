"""PNG plots (matplotlib, offline) beside the CSV data files that dvc.yaml declares under `plots:`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def training_curves(rows: list[dict], folder: Path, title: str) -> None:
    """curves.csv and curves.png: loss and SRCC per epoch, train and validation."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "curves.csv", index=False, float_format="%.6g")
    figure, (loss_axis, srcc_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for column in frame.columns:
        if column == "epoch":
            continue
        axis = srcc_axis if "srcc" in column else loss_axis
        axis.plot(frame["epoch"], frame[column], marker="o", markersize=3, label=column)
    loss_axis.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    srcc_axis.set(xlabel="epoch", ylabel="SRCC", title=f"{title}: SRCC")
    for axis in (loss_axis, srcc_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "curves.png", dpi=100, metadata={"Software": None})
    plt.close(figure)


def note_figure(path: Path, text: str) -> None:
    """A small PNG that says ``text``: the plot of a stage that was switched off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = plt.figure(figsize=(5, 1.2))
    figure.text(0.5, 0.5, text, ha="center", va="center")
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def predictions(
    scores: dict[str, np.ndarray],
    true_score: np.ndarray,
    cutoff: float,
    folder: Path,
    predicted_high: dict[str, np.ndarray] | None = None,
) -> None:
    """scatter.csv/png (predicted vs true mean score), histogram.png, confusion.csv/png at the cut-off
    (``predicted_high`` gives the high/low calls where they are not "score above the cut-off")."""
    predicted_high = predicted_high or {name: value > cutoff for name, value in scores.items()}
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"true_score": true_score, **{name: value for name, value in scores.items()}})
    frame.to_csv(folder / "scatter.csv", index=False, float_format="%.5f")
    names = list(scores)
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    low, high = (
        float(min(true_score.min(), *(s.min() for s in scores.values()))),
        float(max(true_score.max(), *(s.max() for s in scores.values()))),
    )
    for axis, name in zip(axes[0], names, strict=True):
        axis.scatter(true_score, scores[name], s=8, alpha=0.6)
        axis.plot([low, high], [low, high], color="grey", linewidth=1)
        axis.axvline(cutoff, color="red", linewidth=0.8, alpha=0.5)
        axis.axhline(cutoff, color="red", linewidth=0.8, alpha=0.5)
        axis.set(xlabel="true mean score", ylabel="predicted mean score", title=name)
    figure.tight_layout()
    figure.savefig(folder / "scatter.png", dpi=100, metadata={"Software": None})
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    bins = np.linspace(low, high, 30)
    axis.hist(true_score, bins=bins, alpha=0.5, label="true")
    for name in names:
        axis.hist(scores[name], bins=bins, alpha=0.5, label=name)
    axis.set(xlabel="mean score", ylabel="images", title="score histograms")
    axis.legend()
    figure.tight_layout()
    figure.savefig(folder / "histogram.png", dpi=100, metadata={"Software": None})
    plt.close(figure)

    rows = []
    figure, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        matrix = np.zeros((2, 2), dtype=int)
        for actual, predicted in zip(true_score > cutoff, predicted_high[name], strict=True):
            matrix[int(actual), int(predicted)] += 1
            rows.append(
                {
                    "model": name,
                    "actual": "high" if actual else "low",
                    "predicted": "high" if predicted else "low",
                }
            )
        axis.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            axis.text(j, i, str(count), ha="center", va="center")
        axis.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["low", "high"],
            yticklabels=["low", "high"],
            xlabel="predicted",
            ylabel="actual",
            title=f"{name} (cut-off {cutoff:g})",
        )
    figure.tight_layout()
    figure.savefig(folder / "confusion.png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    pd.DataFrame(rows).to_csv(folder / "confusion.csv", index=False)
