"""Stage `teacher`: the teacher feature f_t and output (distribution D_t, or y_t) of every image (data/teacher/)."""

from __future__ import annotations

import pandas as pd
import torch

from iaakd.features import PartWriter, load_concatenated, make_table
from iaakd.models import Distiller
from iaakd.stages import common
from iaakd.tasks import Task
from iaakd.teacher import export_knowledge


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
    image_ids = pd.read_parquet(common.LABELS, columns=["image_id"])["image_id"].tolist()
    features, _ = load_concatenated([common.FEATURES_DIR / b for b in saved["backbones"]], image_ids)
    teacher_feature, teacher_output = export_knowledge(model, features)
    writer = PartWriter(common.TEACHER_DIR)
    writer.write(
        make_table(
            {
                "image_id": image_ids,
                "teacher_feature": teacher_feature,
                "teacher_output": teacher_output,
            },
            {
                "backbones": saved["backbones"],
                "distiller": saved["config"],
                "feature_dim": int(teacher_feature.shape[1]),
                "task": task.as_dict(),
            },
        )
    )
    writer.commit()
    print(f"teacher: knowledge of {len(image_ids)} images, f_t of {teacher_feature.shape[1]} dimensions")


if __name__ == "__main__":
    common.run(main)
