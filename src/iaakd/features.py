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
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from iaakd.errors import UserError

METADATA_KEY = b"iaakd"


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
    """Writes ``part-00000.parquet``, ``part-00001.parquet`` ... into a temporary folder, then renames it
    into place on :meth:`commit`, so a killed run never leaves a folder that looks complete."""

    def __init__(self, folder: Path, prefix: str = "part") -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.staging = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.count = 0

    def write(self, table: pa.Table) -> None:
        pq.write_table(table, self.staging / f"{self.prefix}-{self.count:05d}.parquet", compression="zstd")
        self.count += 1

    def commit(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(self.staging, self.folder)


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


def load_concatenated(folders: list[Path], image_ids: list[str]) -> tuple[np.ndarray, list[dict]]:
    """The features of ``image_ids`` from each folder, concatenated in folder order ([f_1 | ... | f_K]).

    Rows are joined on ``image_id``, never on row order; an id missing from a folder is an error.
    """
    blocks, metadata = [], []
    wanted = pd.Index(image_ids)
    for folder in folders:
        if not Path(folder).is_dir():
            raise UserError(f"feature folder not found: {folder} (run its extract stage)")
        table = read_table(folder, ["image_id", "feature"])
        position = pd.Index(table.column("image_id").to_pylist()).get_indexer(wanted)
        if (position < 0).any():
            missing = wanted[position < 0][:3].tolist()
            raise UserError(f"{folder}: no features for image ids {missing} (rerun its extract stage)")
        blocks.append(vector_column(table, "feature")[position])
        metadata.append(read_metadata(folder))
    return np.concatenate(blocks, axis=1), metadata
