"""Table IV, matching: each test image scored by its nearest training image (cosine similarity), in the
space of the concatenated MLSP features (GSF) and in the teacher-feature space (f_t), beside the teacher.

Reads the pipeline's outputs (run `dvc repro` first) and params.yaml's distiller backbones; writes
results/matching.json; `python scripts/report.py` puts the table into the README.

    python scripts/matching.py [--out results/matching.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iaakd.data.tables import PipelineTables, ground_truth, targets
from iaakd.feature_rows import RowSubset
from iaakd.matching import nearest_neighbours
from iaakd.stages import common


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/matching.json"))
    args = parser.parse_args()

    params = common.load_params()
    tables = PipelineTables.at(Path("."), progress=common.show_progress())
    task = common.task_from_params(params, tables)
    backbones = common.section(params, "distiller")["backbones"]
    frame = tables.labels_with_split()
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    train_targets = targets(train, task)
    test_score, test_truth = test["mean_score"].to_numpy(), ground_truth(test)

    matrix, _ = tables.teacher_input(backbones)
    gsf = nearest_neighbours(
        RowSubset(matrix, matrix.row_of(train["image_id"])),
        RowSubset(matrix, matrix.row_of(test["image_id"])),
    )
    _, train_teacher_feature = tables.teacher_knowledge(train["image_id"].tolist())
    teacher_output, test_teacher_feature = tables.teacher_knowledge(test["image_id"].tolist())
    teacher_space = nearest_neighbours(train_teacher_feature, test_teacher_feature)

    results = {
        "n_train": len(train),
        "n_test": len(test),
        "backbones": backbones,
        "gsf_dim": matrix.dim,
        "teacher_feature_dim": int(train_teacher_feature.shape[1]),
        "gsf_matching": task.metrics(train_targets[gsf], test_score, test_truth),
        "teacher_feature_matching": task.metrics(train_targets[teacher_space], test_score, test_truth),
        "teacher": task.metrics(teacher_output, test_score, test_truth),
        "provenance": common.provenance(device="cpu", precision="fp32"),  # numpy's float32 search
    }
    common.write_json(args.out, results)
    for key in ("gsf_matching", "teacher_feature_matching", "teacher"):
        print(f"{key}: SRCC {results[key]['srcc']}, Acc {results[key]['acc']}")


if __name__ == "__main__":
    main()
