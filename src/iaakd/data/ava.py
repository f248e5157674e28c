"""Reader for the AVA layout: ``AVA_dataset/AVA.txt``, ``tags.txt``, ``aesthetics_image_lists/*.jpgl``,
and ``images/<image_id>.jpg``.

Labels are a DataFrame keyed on ``image_id`` (a string): the 10 vote counts, the two tag ids (0 = none)
and the challenge id. Rows whose image cannot be used are not dropped silently: they are returned with a
reason, so the stage can write ``skipped.csv`` and decide whether too many are missing.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from iaakd.errors import UserError

AVA_COLUMNS = 15
ORIENTATION_TAG = 0x0112  # EXIF orientation
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


def inspect_image(path: Path) -> tuple[int, int, str] | str:
    """(width, height, content hash) after a full decode, or the reason the file cannot be used.

    The size is the one after EXIF orientation, as :func:`iaakd.data.images.load_rgb` decodes it.

    The hash goes into the labels table, so a changed image changes it and DVC reruns what depends on it.
    """
    if not path.is_file():
        return "missing"
    try:
        content = path.read_bytes()
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            width, height = image.size
            if image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):  # rotated by 90 degrees when decoded
                width, height = height, width
            return width, height, hashlib.blake2b(content, digest_size=16).hexdigest()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        return f"unreadable: {str(error).splitlines()[0][:100]}"


def load_ava(layout: AvaLayout, path_base: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Usable labelled images and the rows left out, each with a reason.

    Image paths are stored relative to ``path_base`` when below it, so outputs do not depend on where
    the repository is checked out.
    """
    labels = read_ava_txt(layout.ava_txt)
    skipped: list[dict[str, str]] = []
    duplicated = labels["image_id"].duplicated(keep="first")
    for image_id in labels.loc[duplicated, "image_id"]:
        skipped.append({"image_id": image_id, "file": str(layout.ava_txt), "reason": "duplicate id"})
    labels = labels.loc[~duplicated].reset_index(drop=True)

    vote_totals = np.array([row.sum() for row in labels["votes"]])
    for image_id in labels.loc[vote_totals == 0, "image_id"]:
        skipped.append({"image_id": image_id, "file": str(layout.ava_txt), "reason": "zero votes"})
    labels = labels.loc[vote_totals > 0].reset_index(drop=True)

    widths, heights, hashes, paths, usable = [], [], [], [], []
    for image_id in labels["image_id"]:
        path = layout.images / f"{image_id}.jpg"
        found = inspect_image(path)
        if isinstance(found, str):
            skipped.append({"image_id": image_id, "file": _relative(path, path_base), "reason": found})
            usable.append(False)
            continue
        usable.append(True)
        widths.append(found[0])
        heights.append(found[1])
        hashes.append(found[2])
        paths.append(_relative(path, path_base))
    labels = labels.loc[usable].reset_index(drop=True)
    labels["path"] = paths
    labels["width"] = np.array(widths, dtype=np.int64)
    labels["height"] = np.array(heights, dtype=np.int64)
    labels["file_hash"] = hashes
    votes = np.stack(labels["votes"].to_numpy()) if len(labels) else np.zeros((0, 10))
    labels["n_votes"] = votes.sum(axis=1)
    labels["mean_score"] = votes @ np.arange(1, 11) / np.maximum(votes.sum(axis=1), 1)
    return labels, pd.DataFrame(skipped, columns=["image_id", "file", "reason"])


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())
