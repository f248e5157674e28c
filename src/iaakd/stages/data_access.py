"""Reading the pipeline's tables into the shapes the library takes: one place, shared by the stages."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iaakd.features import read_table, vector_column
from iaakd.stages import common


def labels_with_split() -> pd.DataFrame:
    """Labels joined with the split on image_id, with the ground-truth distribution as an (n, 10) column."""
    labels = pd.read_parquet(common.LABELS)
    split = pd.read_parquet(common.SPLIT)
    frame = labels.merge(split, on="image_id", how="inner", validate="one_to_one")
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def ground_truth(frame: pd.DataFrame) -> np.ndarray:
    votes = np.stack(frame["votes"].to_numpy()).astype(np.float32)
    return votes / votes.sum(axis=1, keepdims=True)


def teacher_knowledge(image_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(teacher_distribution, teacher_feature) rows for ``image_ids``, joined on id."""
    table = read_table(common.TEACHER_DIR)
    position = pd.Index(table.column("image_id").to_pylist()).get_indexer(pd.Index(image_ids))
    if (position < 0).any():
        raise common.UserError(
            f"{common.TEACHER_DIR}: no teacher knowledge for {len(position[position < 0])} images (rerun `teacher`)"
        )
    return vector_column(table, "teacher_distribution")[position], vector_column(table, "teacher_feature")[
        position
    ]
