"""Feature and teacher-knowledge tables: folders of parquet parts, vectors as fixed-size lists.

Every table keys on ``image_id`` (string). Provenance (producing backbone, weights, input mode, precision,
per-level dimensions) goes into the schema metadata as JSON under the key ``iaakd``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

METADATA_KEY = b"iaakd"
EMPTY = "empty"  # the metadata key of a folder without features: why it has none


def vector_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """(rows, dim) array to a fixed-size list column, keeping the dtype (float16 stays float16)."""
    matrix = np.ascontiguousarray(matrix)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def vector_column(table: pa.Table, name: str, dtype: type = np.float32) -> np.ndarray:
    """A fixed-size list column back to a (rows, dim) numpy array."""
    column = table.column(name).combine_chunks()
    width = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, width).astype(dtype, copy=False)


def make_table(columns: dict[str, object], metadata: dict) -> pa.Table:
    arrays = {
        name: vector_array(value) if isinstance(value, np.ndarray) and value.ndim == 2 else pa.array(value)
        for name, value in columns.items()
    }
    table = pa.table(arrays)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


class PartWriter:
    """Writes ``part-00000.parquet``, ``part-00001.parquet`` ... and puts them into place on :meth:`commit`
    (a rename), so a killed run never leaves a folder that looks complete.

    Without ``work_dir`` the parts go into a temporary folder beside ``folder``. With it, each finished
    part is kept there (written under a temporary name, then renamed), :meth:`has_part` tells a rerun
    which parts are done, and :meth:`commit` links them into ``folder`` and removes ``work_dir``: DVC
    deletes a stage's outputs before it reruns, so finished work must live outside them to survive.
    """

    def __init__(self, folder: Path, prefix: str = "part", work_dir: Path | None = None) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.staging = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.work_dir = Path(work_dir) if work_dir is not None else None
        (self.work_dir or self.staging).mkdir(parents=True, exist_ok=True)
        self.count = 0

    def part_path(self, number: int) -> Path:
        return (self.work_dir or self.staging) / f"{self.prefix}-{number:05d}.parquet"

    def has_part(self, number: int) -> bool:
        return self.work_dir is not None and self.part_path(number).is_file()

    def write(self, table: pa.Table, number: int | None = None) -> None:
        """Writes part ``number`` (by default the next one) atomically."""
        number = self.count if number is None else number
        target = self.part_path(number)
        pq.write_table(table, target.with_name(target.name + ".partial"), compression="zstd")
        os.replace(target.with_name(target.name + ".partial"), target)
        self.count = max(self.count, number + 1)

    def commit(self) -> None:
        if self.work_dir is not None:
            self.staging.mkdir(parents=True)
            for part in sorted(self.work_dir.glob(f"{self.prefix}-*.parquet")):
                try:
                    os.link(part, self.staging / part.name)  # no copy: the same file, two names
                except OSError:
                    shutil.copy2(part, self.staging / part.name)
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(self.staging, self.folder)
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def read_table(folder: Path, columns: list[str] | None = None) -> pa.Table:
    return ds.dataset(str(folder), format="parquet").to_table(columns=columns)


def read_metadata(folder: Path) -> dict:
    schema = ds.dataset(str(folder), format="parquet").schema
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """One parquet file, written under a temporary name and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    pq.write_table(table, staging, compression="zstd")
    os.replace(staging, path)


def write_empty_features(folder: Path, backbone: str, reason: str) -> None:
    """``folder`` as a valid feature folder without rows: one part with the columns (a ``feature`` of no
    dimensions: the backbone is not loaded to learn its own) and metadata ``{"backbone", "images": 0, "empty":
    reason}``, put in place whole."""
    writer = PartWriter(folder)
    columns = {"image_id": pa.array([], pa.string()), "feature": pa.array([], pa.list_(pa.float16(), 0))}
    writer.write(make_table(columns, {"backbone": backbone, "images": 0, EMPTY: reason}))
    writer.commit()
