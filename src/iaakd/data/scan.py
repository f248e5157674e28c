"""A scan of every image before the long stages: full decode, size, mode, format, EXIF orientation and a
content hash, in parallel and cached by (path, size, mtime).

The scan is the early check (a truncated file is found in minutes, not at hour three of extraction), and
its result goes into the labels table, the manifest through which a changed image reruns what depends on
it. The cache lives outside DVC's outputs, so a rerun of the stage only decodes new or changed files.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from iaakd.data.images import DECODE_ERRORS, decode_problem, exif_orientation
from iaakd.data.images import ORIENTATION_TAG as ORIENTATION_TAG  # noqa: F401 - used by the scan's callers
from iaakd.features import write_parquet_atomic

UNUSUAL_POLICIES = ("decode", "skip")  # data.unusual_images
SCAN_COLUMNS = ["path", "size_bytes", "mtime_ns", "width", "height", "mode", "format", "orientation",
                "file_hash", "problem"]  # fmt: skip


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}  # a folder's images, by name


@dataclass(frozen=True)
class ImageScan:
    """What one full decode of a file tells; ``problem`` is None for a usable file, else why it is not."""

    path: str
    size_bytes: int
    mtime_ns: int
    width: int = 0  # after EXIF orientation, as iaakd.data.images.load_rgb decodes it
    height: int = 0
    mode: str = ""
    format: str = ""
    orientation: int = 1
    file_hash: str = ""
    problem: str | None = None

    def unusual(self) -> str | None:
        """Why a decodable file is not a plain upright RGB JPEG, or None. Decoded right by ``load_rgb``;
        skipped instead under ``data.unusual_images=skip``."""
        if self.format != "JPEG":
            return f"not JPEG ({self.format})"
        if self.mode != "RGB":
            return f"mode {self.mode}"
        if self.orientation != 1:
            return f"EXIF orientation {self.orientation}"
        return None


def scan_image(path: str) -> ImageScan:
    """Decodes one file fully; never raises for a bad file, the reason goes into ``problem``."""
    try:
        status = os.stat(path)
    except OSError:
        return ImageScan(path, -1, -1, problem="missing")
    try:
        content = Path(path).read_bytes()
        with Image.open(io.BytesIO(content)) as image:
            image.load()  # a truncated file fails here
            orientation = exif_orientation(image)
            width, height = image.size
            if orientation in (5, 6, 7, 8):  # rotated by 90 degrees when decoded
                width, height = height, width
            return ImageScan(
                path,
                status.st_size,
                status.st_mtime_ns,
                width,
                height,
                image.mode,
                image.format or "",
                orientation,
                hashlib.blake2b(content, digest_size=16).hexdigest(),
            )
    except UnidentifiedImageError:
        reason = "empty file" if status.st_size == 0 else "not an image format PIL can decode"
        return ImageScan(path, status.st_size, status.st_mtime_ns, problem=f"unreadable: {reason}")
    except DECODE_ERRORS as error:  # truncated or corrupt data, a decompression bomb, a malformed header
        return ImageScan(
            path, status.st_size, status.st_mtime_ns, problem=f"unreadable: {decode_problem(error)}"
        )


def _stat_key(path: str) -> tuple[str, int, int]:
    try:
        status = os.stat(path)
        return path, status.st_size, status.st_mtime_ns
    except OSError:
        return path, -1, -1


def scan_images(
    paths: list[str], cache_file: Path | None = None, workers: int | None = None, progress: bool = False
) -> pd.DataFrame:
    """One row per path (in order) with the columns of :class:`ImageScan`.

    Files whose (path, size, mtime) is in ``cache_file`` are not decoded again; the cache is rewritten
    atomically with every file scanned, so an interrupted scan loses nothing it finished before the
    last write.
    """
    keys = [_stat_key(path) for path in paths]
    cached = pd.DataFrame(columns=SCAN_COLUMNS)
    if cache_file is not None and cache_file.is_file():
        cached = pd.read_parquet(cache_file)
    known = {
        (row.path, row.size_bytes, row.mtime_ns): row._asdict()
        for row in cached.itertuples(index=False)
        if row.problem != "missing"
    }
    to_scan = sorted({key[0] for key in keys if key not in known})
    workers = workers or min(os.cpu_count() or 1, 16)
    if to_scan:
        if workers > 1 and len(to_scan) > 32:
            with ProcessPoolExecutor(workers) as pool:
                scanned = list(
                    tqdm(
                        pool.map(scan_image, to_scan, chunksize=64),
                        total=len(to_scan),
                        desc="scan images",
                        disable=not progress,
                    )
                )
        else:
            scanned = [scan_image(path) for path in tqdm(to_scan, desc="scan images", disable=not progress)]
        for result in scanned:
            known[(result.path, result.size_bytes, result.mtime_ns)] = vars(result)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_parquet_atomic(
                _as_table(pd.DataFrame([row for row in known.values()], columns=SCAN_COLUMNS)), cache_file
            )
    rows = [known.get(key) or vars(ImageScan(key[0], -1, -1, problem="missing")) for key in keys]
    return pd.DataFrame(rows, columns=SCAN_COLUMNS)


def _as_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame.astype({"problem": "object"}), preserve_index=False)


def usable_images(scans: pd.DataFrame, unusual: str = "decode") -> pd.Series:
    """Per row, None when the image is used, else the reason it is skipped (``unusual``: decode | skip)."""
    reasons = []
    for row in scans.itertuples(index=False):
        if row.problem is not None and not pd.isna(row.problem):
            reasons.append(row.problem)
            continue
        scan = ImageScan(**row._asdict())
        reasons.append(scan.unusual() if unusual == "skip" else None)
    return pd.Series(reasons, index=scans.index, dtype=object)


def join_scans(
    labels: pd.DataFrame,
    paths: list[Path],
    path_base: Path,
    cache_file: Path | None,
    unusual: str,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labels of the usable images with their scan columns, and the rows left out (image_id, file, reason).

    ``paths[i]`` is the image of ``labels`` row i. Paths are stored relative to ``path_base`` when below
    it, so outputs do not depend on where the repository is checked out.
    """
    scans = scan_images([str(path) for path in paths], cache_file, progress=progress)
    reasons = usable_images(scans, unusual)
    relative = [relative_path(path, path_base) for path in paths]
    skipped = pd.DataFrame(
        {"image_id": labels["image_id"].to_numpy(), "file": relative, "reason": reasons.to_numpy()}
    )[reasons.notna().to_numpy()]
    keep = reasons.isna().to_numpy()
    usable = labels.loc[keep].reset_index(drop=True)
    usable["path"] = [path for path, kept in zip(relative, keep, strict=True) if kept]
    for column in ("width", "height", "orientation"):
        usable[column] = scans.loc[keep, column].to_numpy(dtype="int64")
    for column in ("mode", "format", "file_hash"):
        usable[column] = scans.loc[keep, column].to_numpy(dtype=object)
    return usable, skipped.reset_index(drop=True)


def relative_path(path: str | Path, base: str | Path) -> str:
    """``path`` relative to ``base`` when below it, else absolute (string operations: fast for 255k paths)."""
    absolute, base = os.path.abspath(path), os.path.abspath(base)
    return absolute[len(base) + 1 :] if absolute.startswith(base + os.sep) else absolute
