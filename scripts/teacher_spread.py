"""Fig. 7: the teacher's spread over training runs. The distiller is trained again with other seeds on
the same features and split (params.yaml's distiller configuration); each run is scored on the test split.

Reads the pipeline's outputs (run `dvc repro` first); writes results/teacher_spread.json;
`python scripts/render_results.py` puts the table into the README.

    python scripts/teacher_spread.py [--seeds 0 1 2 3 4] [--epochs N] [--out results/teacher_spread.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from iaakd.feature_rows import RowSubset
from iaakd.metrics import round_floats
from iaakd.stages import common, data_access
from iaakd.teacher import DistillerConfig, predict_output, train_distiller


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=None, help="override distiller.epochs (smoke tests)")
    parser.add_argument("--out", type=Path, default=Path("results/teacher_spread.json"))
    args = parser.parse_args()

    params = common.load_params()
    distiller = common.section(params, "distiller")
    base = common.build_config(DistillerConfig, distiller, "distiller", ignore=("backbones",))
    if args.epochs:
        base = dataclasses.replace(base, epochs=args.epochs)
    task = data_access.task_from_params(params)
    frame = data_access.labels_with_split()
    matrix, _ = data_access.teacher_input(distiller["backbones"])
    rows = matrix.row_of(frame["image_id"])
    targets = data_access.targets(frame, task)
    truth = data_access.ground_truth(frame)
    part = {name: (frame["split"] == name).to_numpy() for name in ("train", "val", "test")}

    runs = []
    for seed in args.seeds:
        print(f"--- distiller, seed {seed}", flush=True)
        model, _ = train_distiller(
            RowSubset(matrix, rows[part["train"]]),
            targets[part["train"]],
            RowSubset(matrix, rows[part["val"]]),
            targets[part["val"]],
            dataclasses.replace(base, seed=seed),
            task,
            progress=False,
        )
        output = predict_output(model, RowSubset(matrix, rows[part["test"]]))
        test_truth = truth[part["test"]] if truth is not None else None
        runs.append(
            {"seed": seed, **task.metrics(output, frame["mean_score"].to_numpy()[part["test"]], test_truth)}
        )
    srcc = np.array([run["srcc"] for run in runs], dtype=float)
    results = {
        "n_test": int(part["test"].sum()),
        "backbones": distiller["backbones"],
        "distiller_config": dataclasses.asdict(base),
        "runs": runs,
        "srcc": {"mean": srcc.mean(), "sd": srcc.std(ddof=1) if len(srcc) > 1 else None,
                 "min": srcc.min(), "max": srcc.max()},
        "provenance": common.provenance(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(round_floats(results), indent=2) + "\n", encoding="utf-8")
    print(json.dumps(round_floats(results["srcc"])))


if __name__ == "__main__":
    main()
