"""Rows of per-image vectors read a batch (or an item) at a time, so memory does not grow with the number
of images.

The MLSP features of all backbones are concatenated once into a float16 row matrix on disk (one row per
image, 46,848 bytes for the paper's 23,424 dimensions), built part by part from the parquet folders; the
student's teacher knowledge (output and f_t) becomes a float32 one the same way. Training and export then
read rows with positioned reads: no memory map, whose touched pages would count against the process's
resident memory and grow with the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm import tqdm

from iaakd.atomic import TEMPORARY_MARK, atomic_path
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
    """A (rows, dim) float16 (or float32) matrix in a raw file; :meth:`read` returns float32 rows in the
    order asked."""

    def __init__(
        self, path: Path, rows: int, dim: int, image_ids: list[str] | None = None, dtype=np.float16
    ) -> None:
        self.path, self.rows, self.dim, self.dtype = Path(path), rows, dim, np.dtype(dtype)
        self.image_ids = pd.Index(image_ids) if image_ids is not None else None
        self.row_bytes = dim * self.dtype.itemsize
        expected = rows * self.row_bytes
        if not self.path.is_file() or self.path.stat().st_size != expected:
            raise UserError(f"{self.path}: expected a {rows} x {dim} {self.dtype} matrix ({expected} bytes)")

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
        # read whole ranges); one buffer and its float32 copy are all the memory a read takes.
        buffer = np.empty((len(rows), self.dim), dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        try:
            with open(self.path, "rb", buffering=0) as handle:
                start = 0
                for stop in [*breaks.tolist(), len(rows)]:
                    if stop > start:
                        into = memoryview(buffer[start:stop]).cast("B")
                        self._read_run(handle, int(sorted_rows[start]), into)
                    start = stop
        except FileNotFoundError:
            raise UserError(f"{self.path}: gone while in use (removed by a run with other inputs?)") from None
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        out[order] = buffer  # back to the order asked for
        return out

    def _read_run(self, handle, first_row: int, into: memoryview) -> None:
        """Consecutive rows from ``first_row`` into ``into``, all of them: ``readinto`` may return fewer
        bytes than asked (at the end of a file cut short, or over 2 GiB at once on Linux), and rows it
        did not fill would hold whatever the memory held before."""
        handle.seek(first_row * self.row_bytes)
        filled = 0
        while filled < len(into):
            count = handle.readinto(into[filled:])
            if not count:
                raise UserError(
                    f"{self.path}: row {first_row + filled // self.row_bytes} is cut short: the file is "
                    f"{os.fstat(handle.fileno()).st_size} bytes, {self.rows * self.row_bytes} expected "
                    "(truncated after it was built; delete it, and the next run builds it again)"
                )
            filled += count


class RowSubset:
    """Some rows of a matrix (a split), addressed 0..len-1."""

    def __init__(self, source: ArrayRows | FeatureMatrix, rows: np.ndarray) -> None:
        self.source, self.rows, self.dim = source, np.asarray(rows, dtype=np.int64), source.dim

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.source.read(self.rows[np.asarray(rows, dtype=np.int64)])


def _fingerprint(sources: list[tuple[Path, str]], image_ids: list[str]) -> str:
    """Cheap identity of the inputs: part files' names, sizes and mtimes, the columns, and the row order."""
    digest = hashlib.blake2b(digest_size=8)
    for folder, column in sources:
        digest.update(column.encode())
        for part in sorted(Path(folder).glob("*.parquet")):
            status = part.stat()
            digest.update(f"{part}:{status.st_size}:{status.st_mtime_ns}".encode())
    digest.update(json.dumps(image_ids).encode())
    return digest.hexdigest()


READ_ROWS = 512  # rows read from a parquet part at a time: reading whole parts held 7x a part in memory


def _write_rows(
    handle,
    batch: pa.RecordBatch,
    column: str,
    position: pd.Index,
    found: np.ndarray,
    dtype: np.dtype,
    row_bytes: int,
    offset: int,
) -> None:
    """Writes one record batch's vectors into their rows of the matrix file, from column ``offset``."""
    rows = position.get_indexer(pd.Index(batch.column("image_id").to_pylist()))
    vectors = vector_column(pa.Table.from_batches([batch]), column, dtype)
    for row, vector in zip(rows, vectors, strict=True):
        if row < 0:
            continue  # an image without labels now: not needed
        handle.seek(int(row) * row_bytes + offset * dtype.itemsize)
        handle.write(vector.tobytes())
        found[row] = True


def build_row_matrix(
    sources: list[tuple[Path, str]],
    image_ids: list[str],
    work_dir: Path,
    dtype=np.float16,
    name: str = "features",
    progress: bool = False,
    rerun: str = "extract",
) -> FeatureMatrix:
    """The vectors of each (parquet folder, column) of ``sources``, side by side and joined on image_id,
    for ``image_ids`` in that order, as a row matrix ``work_dir/<name>-<fingerprint>``; reused while the
    parts and the ids are unchanged, and the only one of its name kept there. An id without a vector is
    an error naming the stage to ``rerun``.

    Memory: 512 rows of one parquet part at a time.
    """
    dtype = np.dtype(dtype)
    dims = [
        ds.dataset(str(folder), format="parquet").schema.field(column).type.list_size
        for folder, column in sources
    ]
    total_dim = sum(dims)
    path = work_dir / f"{name}-{_fingerprint(sources, image_ids)}.{dtype.str[1:]}"
    if path.is_file() and path.stat().st_size == len(image_ids) * total_dim * dtype.itemsize:
        return FeatureMatrix(path, len(image_ids), total_dim, image_ids, dtype)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in stale_matrices(work_dir, name, keep=path):
        stale.unlink(missing_ok=True)  # made from other inputs: it can never be read again
    position = pd.Index(image_ids)
    row_bytes = total_dim * dtype.itemsize
    found = np.zeros((len(sources), len(image_ids)), dtype=bool)
    # A staging name of this process's own (another process may build the same matrix at the same time)
    with atomic_path(path) as staging:
        with open(staging, "r+b") as handle:
            handle.truncate(len(image_ids) * row_bytes)
            offset = 0
            for index, ((folder, column), dim) in enumerate(zip(sources, dims, strict=True)):
                parts = sorted(Path(folder).glob("*.parquet"))
                for part in tqdm(parts, desc=f"{name} {Path(folder).name}", disable=not progress):
                    for batch in pq.ParquetFile(part).iter_batches(READ_ROWS, columns=["image_id", column]):
                        _write_rows(handle, batch, column, position, found[index], dtype, row_bytes, offset)
                offset += dim
        missing = np.flatnonzero(~found.all(axis=0))
        if len(missing):  # raised inside the block: the staging file goes, nothing is renamed
            raise UserError(
                f"no {name} for {len(missing)} images, for example '{image_ids[missing[0]]}' (rerun {rerun})"
            )
    return FeatureMatrix(path, len(image_ids), total_dim, image_ids, dtype)


ABANDONED_AFTER_S = 24 * 3600  # a staging file unchanged this long belongs to a build that was killed


def stale_matrices(work_dir: Path, name: str, keep: Path) -> list[Path]:
    """What a build of ``keep`` removes from ``work_dir``: the finished matrices of this ``name``
    (``<name>-<fingerprint>.<dtype>``) made from other inputs, and staging files of this name unchanged
    for a day (left by a killed build). Never a staging file in use: another process may be building
    a matrix of this name right now."""
    matrix = rf"{re.escape(name)}-[0-9a-f]{{16}}\.[fiu][0-9]+"
    finished = re.compile(matrix)
    staging = re.compile(rf"\.{matrix}{re.escape(TEMPORARY_MARK)}[0-9a-f]+\.[fiu][0-9]+|{matrix}\.partial")
    abandoned_before = time.time() - ABANDONED_AFTER_S
    stale = []
    for path in sorted(work_dir.iterdir()):
        if path == keep:
            continue
        if finished.fullmatch(path.name):
            stale.append(path)
        elif staging.fullmatch(path.name):
            with contextlib.suppress(FileNotFoundError):  # its build may just have finished
                if path.stat().st_mtime < abandoned_before:
                    stale.append(path)
    return stale


def build_feature_matrix(
    folders: list[Path], image_ids: list[str], work_dir: Path, progress: bool = False
) -> tuple[FeatureMatrix, list[dict]]:
    """The concatenated MLSP features of ``folders`` for ``image_ids``, in that order, as a float16 row
    matrix under ``work_dir`` (see :func:`build_row_matrix`), and each folder's metadata."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise UserError(f"feature folder not found: {folder} (run its extract stage)")
    metadata = [read_metadata(folder) for folder in folders]
    sources = [(Path(folder), "feature") for folder in folders]
    return build_row_matrix(sources, image_ids, work_dir, np.float16, "features", progress), metadata


class VectorRows:
    """Columns ``start:stop`` of some rows of a :class:`FeatureMatrix`, indexed like an array: an int
    reads that one row from disk; an index array gives the rows in that order, still on disk. The student's
    data loader reads its teacher knowledge through this, one item at a time."""

    def __init__(self, matrix: FeatureMatrix, start: int, stop: int, rows: np.ndarray | None = None) -> None:
        self.matrix, self.start, self.stop = matrix, start, stop
        self.rows = np.arange(len(matrix)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), stop - start)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int | np.ndarray):
        if isinstance(index, int | np.integer):
            return self.matrix.read([self.rows[index]])[0, self.start : self.stop]
        return VectorRows(self.matrix, self.start, self.stop, self.rows[np.asarray(index)])

    def to_numpy(self) -> np.ndarray:
        """Every row in memory (for small data and tests)."""
        return self.matrix.read(self.rows)[:, self.start : self.stop]

    def identity(self, chunk_rows: int = 4096) -> str:
        """What a checkpoint fingerprint needs: a hash of the values, in row order, read a chunk at a time
        (the matrix's name would change with its parts' mtimes, which a `dvc checkout` changes)."""
        digest = hashlib.blake2b(str(self.shape).encode(), digest_size=8)
        for start in range(0, len(self.rows), chunk_rows):
            digest.update(
                self.matrix.read(self.rows[start : start + chunk_rows])[:, self.start : self.stop].tobytes()
            )
        return digest.hexdigest()


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
