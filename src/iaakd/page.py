"""``iaakd score ... --html DIR``: a static page of the scored photos, to look at a culled folder.

    DIR/index.html   the page (:file:`page.html`): best or worst first, the score histogram, search by path,
                     the files that could not be scored and why; opens from the file system, no server
    DIR/data.js      the rows, as a script (a page opened from the file system may not fetch JSON)
    DIR/thumbs/      one small JPEG per photo, made in the scoring pass's loader workers

Thumbnails are named by a hash of the photo's path, so ``--resume`` keeps the ones already made. The grid
adds photos as it scrolls and the thumbnails load lazily, so the page opens fast with 10,000 photos.
``index.html`` is written last: a run that stops early leaves no page that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib.resources import files
from pathlib import Path

from iaakd.atomic import atomic_path

THUMBNAIL_SIZE = 192  # px, the long side
PAGE, DATA, THUMBS = "index.html", "data.js", "thumbs"


def thumbnail_name(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ".jpg"


class Page:
    """Rows collected while scoring, written as the page at the end."""

    def __init__(self, folder: Path, model: str, score_column: str, decimals: int, warning: str = "") -> None:
        self.folder, self.thumbs = folder, folder / THUMBS
        self.decimals = decimals  # the scores as the CSV has them, so page and file agree on ties
        self.header = {"model": model, "score_column": score_column, "decimals": decimals, "warning": warning}
        self.rows: list[list] = []
        self.missing_thumbnails = 0  # scored rows of an earlier run (--resume) whose thumbnail is not in DIR
        self.thumbs.mkdir(parents=True, exist_ok=True)
        (folder / PAGE).unlink(missing_ok=True)  # an earlier page is not this run's until it ends

    def add(self, path: str, score: float | None, error: str, thumbnail: bytes | None = None) -> None:
        """One row; ``thumbnail``: its JPEG, else the one an earlier run left is used, when there is one."""
        name = thumbnail_name(path)
        if thumbnail is not None:
            (self.thumbs / name).write_bytes(thumbnail)
        has_thumbnail = thumbnail is not None or (self.thumbs / name).is_file()
        value = None if error or score is None or math.isnan(score) else round(float(score), self.decimals)
        if value is None and not error:
            error = "no score: the model's output was not a number"
        self.missing_thumbnails += not error and not has_thumbnail
        self.rows.append([path, value, error, f"{THUMBS}/{name}" if has_thumbnail else None, file_url(path)])

    def write(self) -> Path:
        """data.js, then index.html; returns the page's path."""
        data = {**self.header, "rows": sorted(self.rows, key=lambda row: row[0])}
        text = "window.IAAKD_PAGE = " + json.dumps(data, ensure_ascii=True) + ";\n"
        with atomic_path(self.folder / DATA) as staging:
            staging.write_text(text, encoding="utf-8")
        template = files("iaakd").joinpath("page.html").read_text(encoding="utf-8")
        with atomic_path(self.folder / PAGE) as staging:
            staging.write_text(template, encoding="utf-8")
        return self.folder / PAGE


def file_url(path: str) -> str:
    try:
        return Path(path).resolve().as_uri()
    except ValueError:
        return ""
