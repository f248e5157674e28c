"""The KD comparison: student with and without KD over seeds, beside its controls.

Reads the pipeline's outputs (run `dvc repro` first): labels, split and teacher knowledge stay fixed;
only the student's seed and its supervision change. The student configuration is params.yaml's, as the
pipeline uses it. Writes results/kd_comparison.json; `python scripts/render_results.py` puts the table
into the README.

    python scripts/kd_comparison.py [--seeds 0 1 2] [--epochs N] [--out results/kd_comparison.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from iaakd.metrics import bootstrap_srcc_ci, round_floats, srcc
from iaakd.stages import common, data_access
from iaakd.stages.student import split_data, student_config
from iaakd.student import KDConfig, predict, train_student

VARIANTS = {
    "student_kd": KDConfig(enabled=True),
    "student_no_kd": KDConfig(enabled=False),
    "student_kd_shuffled": KDConfig(enabled=True, shuffle=True),
}


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for key in ("srcc", "plcc", "acc", "emd"):
        values = [run[key] for run in runs if run[key] is not None]
        if values:
            summary[key] = {
                "mean": float(np.mean(values)),
                "min": float(np.min(values)),
                "max": float(np.max(values)),
                "spread": float(np.max(values) - np.min(values)),
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override student.epochs (smoke tests)")
    parser.add_argument("--out", type=Path, default=Path("results/kd_comparison.json"))
    args = parser.parse_args()

    params = common.load_params()
    device = common.device_from_env()
    base = student_config(params)
    if args.epochs:
        base = dataclasses.replace(base, epochs=args.epochs)
    task = data_access.task_from_params(params)
    frame = data_access.labels_with_split()
    train = split_data(frame, "train", task, with_teacher=True)
    val = split_data(frame, "val", task, with_teacher=False)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    test_truth, test_score = data_access.ground_truth(test), test["mean_score"].to_numpy()

    def test_metrics(output: np.ndarray) -> dict:
        metrics = task.metrics(output, test_score, test_truth)
        metrics["srcc_ci95"] = bootstrap_srcc_ci(task.predicted_score(output), test_score, seed=0)
        return metrics

    teacher_output, _ = data_access.teacher_knowledge(test["image_id"].tolist())
    constant = np.repeat(train.ground_truth.mean(axis=0, keepdims=True), len(test), axis=0)
    latent = test["latent_score"].to_numpy()
    results = {
        "n_test": len(test),
        "n_train": len(train.paths),
        "seeds": args.seeds,
        "student_config": dataclasses.asdict(base),
        "noise_ceiling_srcc": srcc(latent, test_score) if np.isfinite(latent).all() else None,
        "teacher": test_metrics(teacher_output),
        "constant_predictor": test_metrics(constant),
        "runs": {},
        "summary": {},
    }
    for name, kd in VARIANTS.items():
        runs = []
        for seed in args.seeds:
            config = dataclasses.replace(base, seed=seed, kd=kd)
            print(f"--- {name}, seed {seed}", flush=True)
            model, preprocess, _, _ = train_student(
                config,
                train,
                val,
                train.teacher_feature.shape[1],
                task,
                progress=common.show_progress(),
                device=device,
            )
            prediction = predict(
                model, test["path"].tolist(), preprocess, device=device, precision=config.precision
            )
            runs.append({"seed": seed, **test_metrics(prediction)})
        results["runs"][name] = runs
        results["summary"][name] = summarise(runs)
    results["provenance"] = common.provenance()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(round_floats(results), indent=2) + "\n", encoding="utf-8")
    print(json.dumps(round_floats(results["summary"]), indent=2))


if __name__ == "__main__":
    main()
