"""Stage `teacher`: the teacher feature f_t and output (distribution D_t, or y_t) of every image (data/teacher/):
every labelled image, then every image of CSKD's unlabelled pool that has features (`fold` -1, `labelled`
false), from the full distiller."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from iaakd.data.pool import read_manifest
from iaakd.feature_rows import FeatureMatrix, build_feature_matrix
from iaakd.features import EMPTY, PartWriter, make_table, read_metadata
from iaakd.stages import common
from iaakd.tasks import Task
from iaakd.teacher import FULL, iter_knowledge, iter_out_of_fold_knowledge, load_distiller

PART_ROWS = 16384  # rows of knowledge per parquet part (small: f_t and the output only)
POOL_WORK = (
    common.WORK_DIR / "pool_features"
)  # the pool's row matrix, beside (not replacing) the labelled one


def extraction_stage(backbone: str) -> str:
    """The stage that extracts the pool's features of a distiller ``backbone`` (a feature folder's name)."""
    return "extract_align" if backbone == common.ALIGNED else f"extract_pool@{backbone}"


def pool_input(backbones: list[str], progress: bool = False) -> FeatureMatrix | None:
    """The concatenated features of ``backbones`` for every pool image, as a row matrix on disk; None when
    there is no pool (no manifest, or an empty one) or its features were not extracted (every folder
    empty, and why, as :func:`iaakd.features.write_empty_features` writes them). A pool image without
    features for a distiller backbone is one line naming the folder."""
    if not common.POOL_MANIFEST.is_file():
        return None
    image_ids = read_manifest(common.POOL_MANIFEST)["image_id"].tolist()
    if not image_ids:
        return None
    folders = [common.POOL_FEATURES_DIR / backbone for backbone in backbones]
    for folder in folders:
        common.require(folder.is_dir(), f"{folder} not found: the pool's {len(image_ids)} images have no "
                       f"features of {folder.name} (run {extraction_stage(folder.name)})")  # fmt: skip
    empty = {folder: read_metadata(folder).get(EMPTY) for folder in folders}
    if all(empty.values()):
        print(f"teacher: no knowledge of the pool's {len(image_ids)} images ({next(iter(empty.values()))})")
        return None
    for folder, reason in empty.items():
        common.require(not reason, f"{folder}: no features ({reason}), unlike the other distiller backbones'; "
                       f"rerun {extraction_stage(folder.name)}")  # fmt: skip
    matrix, _ = build_feature_matrix(folders, image_ids, POOL_WORK, progress=progress)
    return matrix


def write_knowledge(
    writer: PartWriter,
    ids: pd.Index,
    knowledge: Iterable[tuple[np.ndarray, np.ndarray]],
    fold_of_row: np.ndarray,
    labelled: np.ndarray,
    metadata: dict,
) -> None:
    """Rows of knowledge (image_id, f_t, output, fold, labelled) in parts of about PART_ROWS rows, from the
    (output, f_t) batches of ``knowledge``, one batch of input rows in memory."""
    start, buffered, outputs, teacher_features = 0, 0, [], []
    for output, teacher_feature in knowledge:
        outputs.append(output)
        teacher_features.append(teacher_feature)
        buffered += len(output)
        metadata["feature_dim"] = int(teacher_feature.shape[1])
        if buffered >= PART_ROWS or start + buffered == len(ids):
            rows = slice(start, start + buffered)
            table = {
                "image_id": ids[rows].tolist(),
                "teacher_feature": np.concatenate(teacher_features),
                "teacher_output": np.concatenate(outputs),
                "fold": fold_of_row[rows],  # -1: the full distiller; k: the one that did not see fold k
                "labelled": labelled[rows],
            }
            writer.write(make_table(table, metadata))
            start, buffered, outputs, teacher_features = start + buffered, 0, [], []


def main(_argv: list[str]) -> None:
    if not common.DISTILLER_MODEL.is_file():
        raise common.UserError(f"{common.DISTILLER_MODEL} not found (run the distill stage)")
    model, saved = load_distiller(common.DISTILLER_MODEL)
    task = Task.from_dict(saved["task"])
    pipeline = common.tables()
    matrix, _ = pipeline.teacher_input(saved["backbones"])
    pool = pool_input(saved["backbones"], progress=common.show_progress())
    ids = pd.Index(matrix.image_ids)
    fold_of_row = np.full(len(ids), FULL)
    for k, (held_out_ids, _) in enumerate(saved["fold_models"]):
        fold_of_row[matrix.row_of(held_out_ids)] = k
    split = pipeline.labels_with_split().set_index("image_id")["split"]
    labelled = ~split.reindex(ids).eq("unlabeled").to_numpy()  # split.label_fraction's withheld: not labelled
    fold_feature = saved["config"].get("out_of_fold_feature", "full") == "fold"
    metadata = {"backbones": saved["backbones"], "distiller": saved["config"], "task": task.as_dict()}
    writer = PartWriter(common.TEACHER_DIR)
    knowledge = iter_out_of_fold_knowledge(
        model, [fold for _, fold in saved["fold_models"]], fold_of_row, matrix, fold_feature
    )
    write_knowledge(writer, ids, ((output, feature) for output, feature, _ in knowledge), fold_of_row,
                    labelled, metadata)  # fmt: skip
    pool_rows = 0
    if pool is not None:  # after the labelled rows: the full distiller's knowledge, never labelled
        pool_rows = len(pool)
        write_knowledge(writer, pd.Index(pool.image_ids), iter_knowledge(model, pool),
                        np.full(pool_rows, FULL), np.zeros(pool_rows, dtype=bool), metadata)  # fmt: skip
    writer.commit()
    of_pool = f" ({pool_rows} of them the unlabelled pool's)" if pool_rows else ""
    print(f"teacher: knowledge of {len(matrix) + pool_rows} images{of_pool}, "
          f"f_t of {metadata['feature_dim']} dimensions")  # fmt: skip


if __name__ == "__main__":
    common.run(main)
