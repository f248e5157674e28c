"""Stage `teacher`: the teacher feature f_t and output (distribution D_t, or y_t) of every image (data/teacher/)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iaakd.features import PartWriter, make_table
from iaakd.stages import common
from iaakd.tasks import Task
from iaakd.teacher import FULL, iter_out_of_fold_knowledge, load_distiller

PART_ROWS = 16384  # rows of knowledge per parquet part (small: f_t and the output only)


def main(_argv: list[str]) -> None:
    if not common.DISTILLER_MODEL.is_file():
        raise common.UserError(f"{common.DISTILLER_MODEL} not found (run the distill stage)")
    model, saved = load_distiller(common.DISTILLER_MODEL)
    task = Task.from_dict(saved["task"])
    pipeline = common.tables()
    matrix, _ = pipeline.teacher_input(saved["backbones"])
    ids = pd.Index(matrix.image_ids)
    fold_of_row = np.full(len(ids), FULL)
    for k, (held_out_ids, _) in enumerate(saved["fold_models"]):
        fold_of_row[matrix.row_of(held_out_ids)] = k
    split = pipeline.labels_with_split().set_index("image_id")["split"]
    labelled = ~split.reindex(ids).eq("unlabeled").to_numpy()  # split.label_fraction's withheld: not labelled
    fold_feature = saved["config"].get("out_of_fold_feature", "full") == "fold"
    metadata = {"backbones": saved["backbones"], "distiller": saved["config"], "task": task.as_dict()}
    writer, start, buffered = PartWriter(common.TEACHER_DIR), 0, 0
    outputs, teacher_features = [], []
    knowledge = iter_out_of_fold_knowledge(
        model, [fold for _, fold in saved["fold_models"]], fold_of_row, matrix, fold_feature
    )
    for output, teacher_feature, _ in knowledge:  # one batch of input rows in memory
        outputs.append(output)
        teacher_features.append(teacher_feature)
        buffered += len(output)
        metadata["feature_dim"] = int(teacher_feature.shape[1])
        if buffered >= PART_ROWS or start + buffered == len(matrix):
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
    writer.commit()
    print(f"teacher: knowledge of {len(matrix)} images, f_t of {metadata['feature_dim']} dimensions")


if __name__ == "__main__":
    common.run(main)
