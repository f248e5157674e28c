"""Stage `dataset`: labels of every usable image (data/labels.parquet) and the rows left out (data/skipped.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from iaakd.data.ava import AvaLayout, load_ava
from iaakd.features import write_parquet_atomic
from iaakd.stages import common

SOURCES = ("demo", "ava")


def layout_from_params(data: dict) -> AvaLayout:
    """Where the AVA-layout data are, for the `demo` and `ava` sources."""
    source = data.get("source")
    common.require(source in SOURCES, f"params: data.source='{source}' is not one of {', '.join(SOURCES)}")
    if source == "demo":
        return AvaLayout(common.DEMO_ROOT)
    root = Path(str(data.get("root")))
    common.require(root.is_dir(), f"params: data.root={root} is not a folder")
    optional = {key: Path(data[key]) for key in ("labels_file", "images_dir") if data.get(key)}
    return AvaLayout(root, **optional)


def labels_table(labels: pd.DataFrame) -> pa.Table:
    votes = np.stack(labels["votes"].to_numpy()).astype(np.int32)
    columns = {
        "image_id": pa.array(labels["image_id"].astype(str)),
        "path": pa.array(labels["path"]),
        "width": pa.array(labels["width"], pa.int32()),
        "height": pa.array(labels["height"], pa.int32()),
        "file_hash": pa.array(labels["file_hash"]),
        "votes": pa.FixedSizeListArray.from_arrays(pa.array(votes.reshape(-1)), 10),
        "n_votes": pa.array(labels["n_votes"], pa.int32()),
        "mean_score": pa.array(labels["mean_score"], pa.float64()),
        "tag1": pa.array(labels["tag1"], pa.int32()),
        "tag2": pa.array(labels["tag2"], pa.int32()),
        "challenge": pa.array(labels["challenge"], pa.int32()),
        "latent_score": pa.array(labels["latent_score"], pa.float64()),
    }
    return pa.table(columns)


def main(_argv: list[str]) -> None:
    data = common.section(common.load_params(), "data")
    layout = layout_from_params(data)
    max_missing = data.get("max_missing_fraction", 0.0)
    common.require(
        isinstance(max_missing, int | float) and 0 <= max_missing <= 1,
        f"params: data.max_missing_fraction={max_missing!r} must be a number in [0, 1]",
    )
    labels, skipped = load_ava(layout, Path.cwd())
    total = len(labels) + len(skipped)
    missing_share = len(skipped) / max(total, 1)
    if missing_share > max_missing or len(labels) == 0:
        common.SKIPPED.parent.mkdir(parents=True, exist_ok=True)
        skipped.to_csv(common.SKIPPED.with_suffix(".csv.partial"), index=False)
        raise common.UserError(
            f"{len(skipped)} of {total} labelled rows ({100 * missing_share:.1f} %) have no usable image under "
            f"{layout.images}, more than data.max_missing_fraction={max_missing}; reasons listed in "
            f"{common.SKIPPED.with_suffix('.csv.partial')}"
        )
    latent_file = layout.root / "latent_scores.csv"
    if latent_file.is_file():  # the demo keeps its known latent score beside the labels
        latent = pd.read_csv(latent_file, dtype={"image_id": str})[["image_id", "latent_score"]]
        labels = labels.merge(latent, on="image_id", how="left")
    else:
        labels["latent_score"] = np.nan
    write_parquet_atomic(labels_table(labels), common.LABELS)
    staging = common.SKIPPED.with_suffix(".csv.partial")
    skipped.to_csv(staging, index=False)
    staging.replace(common.SKIPPED)
    reasons = skipped["reason"].str.split(":").str[0].value_counts().to_dict()
    scores = labels["mean_score"].to_numpy()
    common.write_json(
        Path("metrics/dataset.json"),
        {
            "rows": total,
            "images": len(labels),
            "skipped": len(skipped),
            "skipped_by_reason": reasons,
            "mean_score_mean": float(scores.mean()),
            "mean_score_sd": float(scores.std()),
            "share_above_5": float((scores > 5).mean()),
            "votes_median": float(np.median(labels["n_votes"])),
            "provenance": common.provenance(),
        },
    )
    print(f"dataset: {len(labels)} usable images, {len(skipped)} rows skipped (listed in {common.SKIPPED})")


if __name__ == "__main__":
    common.run(main)
