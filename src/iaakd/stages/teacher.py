"""Stage `teacher`: the teacher feature f_t and output (distribution D_t, or y_t) of every image (data/teacher/)."""

from __future__ import annotations

import numpy as np
import torch

from iaakd.features import PartWriter, make_table
from iaakd.models import Distiller
from iaakd.stages import common, data_access
from iaakd.tasks import Task
from iaakd.teacher import iter_knowledge

PART_ROWS = 16384  # rows of knowledge per parquet part (small: f_t and the output only)


def main(_argv: list[str]) -> None:
    if not common.DISTILLER_MODEL.is_file():
        raise common.UserError(f"{common.DISTILLER_MODEL} not found (run the distill stage)")
    saved = torch.load(common.DISTILLER_MODEL, map_location="cpu", weights_only=False)
    task = Task.from_dict(saved["task"])
    model = Distiller(
        saved["input_dim"],
        saved["config"]["hidden"],
        saved["config"]["dropout"],
        task.output_size,
        task.activation,
    )
    model.load_state_dict(saved["state_dict"])
    model.eval()
    matrix, _ = data_access.teacher_input(saved["backbones"])
    metadata = {"backbones": saved["backbones"], "distiller": saved["config"], "task": task.as_dict()}
    writer, start, buffered = PartWriter(common.TEACHER_DIR), 0, 0
    outputs, teacher_features = [], []
    for output, teacher_feature in iter_knowledge(model, matrix):  # one batch of input rows in memory
        outputs.append(output)
        teacher_features.append(teacher_feature)
        buffered += len(output)
        metadata["feature_dim"] = int(teacher_feature.shape[1])
        if buffered >= PART_ROWS or start + buffered == len(matrix):
            ids = matrix.image_ids[start : start + buffered].tolist()
            table = {
                "image_id": ids,
                "teacher_feature": np.concatenate(teacher_features),
                "teacher_output": np.concatenate(outputs),
            }
            writer.write(make_table(table, metadata))
            start, buffered, outputs, teacher_features = start + buffered, 0, [], []
    writer.commit()
    print(f"teacher: knowledge of {len(matrix)} images, f_t of {metadata['feature_dim']} dimensions")


if __name__ == "__main__":
    common.run(main)
