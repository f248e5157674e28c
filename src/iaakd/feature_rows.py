"""Teacher input features read a batch at a time, so memory does not grow with the number of images.

The MLSP features of all backbones are concatenated once into a float16 row matrix on disk (one row per
image, 46,848 bytes for the paper's 23,424 dimensions), built part by part from the parquet folders.
Training and export then read rows with positioned reads: no memory map, whose touched pages would
count against the process's resident memory and grow with the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm import tqdm

from iaakd.errors import UserError
from iaakd.features import read_metadata, vector_column


class ArrayRows:
    """Rows of an in-memory array, with the interface of :class:`FeatureMatrix`."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.dim = array.shape[1]

    def __len__(self) -> int:
        return len(self.array)

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self.array[np.asarray(rows)], dtype=np.float32)


class FeatureMatrix:
    """A (rows, dim) float16 matrix in a raw file; :meth:`read` returns float32 rows in the order asked."""

    def __init__(self, path: Path, rows: int, dim: int, image_ids: list[str] | None = None) -> None:
        self.path, self.rows, self.dim = Path(path), rows, dim
        self.image_ids = pd.Index(image_ids) if image_ids is not None else None
        expected = rows * dim * 2
        if not self.path.is_file() or self.path.stat().st_size != expected:
            raise UserError(f"{self.path}: expected a {rows} x {dim} float16 matrix ({expected} bytes)")
        self.row_bytes = dim * 2

    def __len__(self) -> int:
        return self.rows

    def row_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of ``image_ids``; an id without a row is an error."""
        rows = self.image_ids.get_indexer(pd.Index(image_ids))
        if (rows < 0).any():
            raise UserError(f"{self.path}: no features for {int((rows < 0).sum())} images (rerun extract)")
        return rows

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        # Runs of consecutive rows are read with one call, straight into place (evaluation and export
        # read whole ranges); one float16 buffer and its float32 copy are all the memory a read takes.
        buffer = np.empty((len(rows), self.dim), dtype=np.float16)
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        with open(self.path, "rb", buffering=0) as handle:
            start = 0
            for stop in [*breaks.tolist(), len(rows)]:
                if stop > start:
                    handle.seek(int(sorted_rows[start]) * self.row_bytes)
                    handle.readinto(memoryview(buffer[start:stop]).cast("B"))
                start = stop
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        out[order] = buffer  # back to the order asked for
        return out


class RowSubset:
    """Some rows of a matrix (a split), addressed 0..len-1."""

    def __init__(self, source: ArrayRows | FeatureMatrix, rows: np.ndarray) -> None:
        self.source, self.rows, self.dim = source, np.asarray(rows, dtype=np.int64), source.dim

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.source.read(self.rows[np.asarray(rows, dtype=np.int64)])


def _fingerprint(folders: list[Path], image_ids: list[str]) -> str:
    """Cheap identity of the inputs: part files' names, sizes and mtimes, and the row order."""
    digest = hashlib.blake2b(digest_size=8)
    for folder in folders:
        for part in sorted(Path(folder).glob("*.parquet")):
            status = part.stat()
            digest.update(f"{part}:{status.st_size}:{status.st_mtime_ns}".encode())
    digest.update(json.dumps(image_ids).encode())
    return digest.hexdigest()


READ_ROWS = 512  # rows read from a parquet part at a time: reading whole parts held 7x a part in memory


def _write_rows(
    handle, batch: pa.RecordBatch, position: pd.Index, found: np.ndarray, row_bytes: int, offset: int
) -> None:
    """Writes one record batch's vectors into their rows of the matrix file, at column ``offset``."""
    rows = position.get_indexer(pd.Index(batch.column("image_id").to_pylist()))
    vectors = vector_column(pa.Table.from_batches([batch]), "feature", np.float16)
    for row, vector in zip(rows, vectors, strict=True):
        if row < 0:
            continue  # an image without labels now: not needed
        handle.seek(int(row) * row_bytes + offset * 2)
        handle.write(vector.tobytes())
        found[row] = True


def build_feature_matrix(
    folders: list[Path], image_ids: list[str], work_dir: Path, progress: bool = False
) -> tuple[FeatureMatrix, list[dict]]:
    """The concatenated features of ``folders`` (joined on image_id) for ``image_ids``, in that order,
    as a row matrix under ``work_dir``; reused while the feature parts and the ids are unchanged.

    Memory: one parquet part at a time.
    """
    for folder in folders:
        if not Path(folder).is_dir():
            raise UserError(f"feature folder not found: {folder} (run its extract stage)")
    metadata = [read_metadata(folder) for folder in folders]
    dims = [
        ds.dataset(str(folder), format="parquet").schema.field("feature").type.list_size for folder in folders
    ]
    total_dim = sum(dims)
    path = work_dir / f"features-{_fingerprint(folders, image_ids)}.f16"
    if path.is_file() and path.stat().st_size == len(image_ids) * total_dim * 2:
        return FeatureMatrix(path, len(image_ids), total_dim, image_ids), metadata
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.glob("features-*.f16*"):
        stale.unlink()  # another set of features: it can never be read again
    position = pd.Index(image_ids)
    staging = path.with_name(path.name + ".partial")
    row_bytes = total_dim * 2
    found = np.zeros((len(folders), len(image_ids)), dtype=bool)
    with open(staging, "wb") as handle:
        handle.truncate(len(image_ids) * row_bytes)
        offset = 0
        for index, (folder, dim) in enumerate(zip(folders, dims, strict=True)):
            parts = sorted(Path(folder).glob("*.parquet"))
            for part in tqdm(parts, desc=f"feature matrix {Path(folder).name}", disable=not progress):
                for batch in pq.ParquetFile(part).iter_batches(READ_ROWS, columns=["image_id", "feature"]):
                    _write_rows(handle, batch, position, found[index], row_bytes, offset)
            offset += dim
    missing = np.flatnonzero(~found.all(axis=0))
    if len(missing):
        staging.unlink()
        raise UserError(
            f"no features for {len(missing)} images, for example '{image_ids[missing[0]]}' (rerun extract)"
        )
    os.replace(staging, path)
    return FeatureMatrix(path, len(image_ids), total_dim, image_ids), metadata


FeatureRows = ArrayRows | FeatureMatrix | RowSubset


def as_rows(features: np.ndarray | FeatureRows) -> FeatureRows:
    """An in-memory array or rows already readable by batch."""
    return ArrayRows(features) if isinstance(features, np.ndarray) else features


def iter_chunks(source: FeatureRows, chunk_rows: int = 4096):
    """(row range, float32 rows) over the whole source, a chunk at a time."""
    for start in range(0, len(source), chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, len(source)))
        yield rows, source.read(rows)


def identity(source: FeatureRows) -> str:
    """What a checkpoint fingerprint needs to know of the features: the file and rows, or the array's bytes."""
    if isinstance(source, RowSubset):
        return (
            f"{identity(source.source)}[{hashlib.blake2b(source.rows.tobytes(), digest_size=8).hexdigest()}]"
        )
    if isinstance(source, FeatureMatrix):
        return source.path.name  # the name is a fingerprint of the parts and the ids
    return hashlib.blake2b(np.ascontiguousarray(source.array).tobytes(), digest_size=8).hexdigest()
