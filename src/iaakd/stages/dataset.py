"""Stage `dataset`: the manifest of every usable labelled image (data/labels.parquet: labels, size, mode,
orientation, content hash) and the rows left out with their reasons (data/skipped.csv)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from iaakd.config import Rule, param
from iaakd.data.ava import AvaLayout, load_ava
from iaakd.data.csv_source import load_csv, read_csv_labels
from iaakd.data.scan import UNUSUAL_POLICIES
from iaakd.features import METADATA_KEY, write_parquet_atomic
from iaakd.stages import common

SOURCES = ("demo", "ava", "csv")
SCAN_CACHE = common.WORK_DIR / "scan" / "cache.parquet"


@dataclass(frozen=True)
class ColumnsConfig:
    """Column names of a `csv` source; null: found by name (see iaakd.data.csv_source)."""

    image: str | None = None
    score: str | None = None
    votes: list[str] | None = None


@dataclass(frozen=True)
class DataConfig:
    source: str = param("demo", choices=SOURCES)
    root: str = "data/demo"
    labels_file: str | None = None
    images_dir: str | None = None
    max_missing_fraction: float = param(0.0, minimum=0, maximum=1)
    unusual_images: str = param(
        "decode", choices=UNUSUAL_POLICIES
    )  # PNG, CMYK, grey, EXIF-rotated: decode | skip
    score_range: list[float] | None = None  # csv with scores: [low, high] in the data's units
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            lambda c: (
                c.score_range is None or (len(c.score_range) == 2 and c.score_range[0] < c.score_range[1])
            ),
            "{prefix}.score_range={score_range} must be [low, high] with low < high",
        ),
        Rule(lambda c: c.source == "demo" or Path(c.root).is_dir(), "{prefix}.root={root} is not a folder"),
        Rule(
            lambda c: c.source != "csv" or c.labels_file is not None,
            "{prefix}.source=csv needs {prefix}.labels_file (the CSV)",
        ),
    )


def data_config(params: dict) -> DataConfig:
    return common.build_config(DataConfig, common.section(params, "data"), "data", ignore=("seed", "demo"))


def layout_from_params(config: DataConfig) -> AvaLayout:
    """Where the AVA-layout data are, for the `demo` and `ava` sources."""
    if config.source == "demo":
        return AvaLayout(common.DEMO_ROOT)
    optional = {key: Path(value) for key in ("labels_file", "images_dir") if (value := getattr(config, key))}
    return AvaLayout(Path(config.root), **optional)


def load_source(config: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(usable labelled images, skipped rows, label metadata) for any source."""
    progress = common.show_progress()
    if config.source == "csv":
        labels_file = Path(config.labels_file)
        rows = read_csv_labels(
            labels_file,
            Path(config.images_dir or config.root),
            config.columns.image,
            config.columns.score,
            config.columns.votes,
            tuple(config.score_range) if config.score_range else None,
        )
        labels, skipped = load_csv(rows, labels_file, Path.cwd(), SCAN_CACHE, config.unusual_images, progress)
        return labels, skipped, {"score_range": list(rows.score_range), "has_votes": rows.has_votes}
    layout = layout_from_params(config)
    labels, skipped = load_ava(layout, Path.cwd(), SCAN_CACHE, config.unusual_images, progress)
    return labels, skipped, {"score_range": [1.0, 10.0], "has_votes": True}


def labels_table(labels: pd.DataFrame, metadata: dict) -> pa.Table:
    columns = {
        "image_id": pa.array(labels["image_id"].astype(str)),
        "path": pa.array(labels["path"]),
        "width": pa.array(labels["width"], pa.int32()),
        "height": pa.array(labels["height"], pa.int32()),
        "mode": pa.array(labels["mode"]),
        "format": pa.array(labels["format"]),
        "orientation": pa.array(labels["orientation"], pa.int8()),
        "file_hash": pa.array(labels["file_hash"]),
    }
    if metadata["has_votes"]:
        votes = np.stack(labels["votes"].to_numpy()).astype(np.int32) if len(labels) else np.zeros((0, 10))
        columns["votes"] = pa.FixedSizeListArray.from_arrays(pa.array(votes.reshape(-1), pa.int32()), 10)
    columns.update(
        {
            "n_votes": pa.array(labels["n_votes"], pa.int32()),
            "mean_score": pa.array(labels["mean_score"], pa.float64()),
            "tag1": pa.array(labels["tag1"], pa.int32()),
            "tag2": pa.array(labels["tag2"], pa.int32()),
            "challenge": pa.array(labels["challenge"], pa.int32()),
            "latent_score": pa.array(labels["latent_score"], pa.float64()),
        }
    )
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


def main(_argv: list[str]) -> None:
    config = data_config(common.load_params())
    labels, skipped, metadata = load_source(config)
    total = len(labels) + len(skipped)
    missing_share = len(skipped) / max(total, 1)
    staging = common.SKIPPED.with_suffix(".csv.partial")
    if missing_share > config.max_missing_fraction or len(labels) == 0:
        common.SKIPPED.parent.mkdir(parents=True, exist_ok=True)
        skipped.to_csv(staging, index=False)
        raise common.UserError(
            f"{len(skipped)} of {total} labelled rows ({100 * missing_share:.1f} %) have no usable image, "
            f"more than data.max_missing_fraction={config.max_missing_fraction}; reasons listed in {staging}"
        )
    latent_file = Path(config.root if config.source != "demo" else common.DEMO_ROOT) / "latent_scores.csv"
    if latent_file.is_file():  # the demo keeps its known latent score beside the labels
        latent = pd.read_csv(latent_file, dtype={"image_id": str})[["image_id", "latent_score"]]
        labels = labels.merge(latent, on="image_id", how="left")
    else:
        labels["latent_score"] = np.nan
    write_parquet_atomic(labels_table(labels, metadata), common.LABELS)
    skipped.to_csv(staging, index=False)
    staging.replace(common.SKIPPED)
    reasons = skipped["reason"].str.split(":").str[0].value_counts().to_dict()
    scores = labels["mean_score"].to_numpy()
    low, high = metadata["score_range"]
    common.write_metrics(
        Path("metrics/dataset.json"),
        {
            "rows": total,
            "images": len(labels),
            "skipped": len(skipped),
            "skipped_by_reason": reasons,
            "unusual_decoded": int(
                (
                    (labels["format"] != "JPEG") | (labels["mode"] != "RGB") | (labels["orientation"] != 1)
                ).sum()
            ),
            "has_votes": metadata["has_votes"],
            "score_range": [low, high],
            "mean_score_mean": float(scores.mean()),
            "mean_score_sd": float(scores.std()),
            "share_above_5": float((scores > 5).mean())
            if (low, high) == (1.0, 10.0)
            else None,  # AVA's units
            "votes_median": float(np.median(labels["n_votes"])) if metadata["has_votes"] else None,
        },
        provenance=common.provenance(device=None, precision=None),  # no model ran
    )
    print(f"dataset: {len(labels)} usable images, {len(skipped)} rows skipped (listed in {common.SKIPPED})")


if __name__ == "__main__":
    common.run(main)
