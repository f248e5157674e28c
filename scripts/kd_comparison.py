"""The KD comparison: student with and without KD over seeds, beside its controls.

Reads the pipeline's outputs (run `dvc repro` first): labels, split and teacher knowledge stay fixed;
only the student's seed and its supervision change. The student configuration is params.yaml's, as the
pipeline uses it. Writes results/kd_comparison.json; `python scripts/report.py` puts the table
into the README.

    python scripts/kd_comparison.py [--seeds 0 1 2] [--epochs N] [--out results/kd_comparison.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from experiment import Pipeline, StudentRuns, write_results

from iaakd.metrics import round_floats, srcc
from iaakd.student import KDConfig

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

    pipeline = Pipeline.load()
    students = StudentRuns(pipeline, args.epochs)
    test, train = students.test, students.train
    teacher_output, _ = pipeline.tables.teacher_knowledge(test["image_id"].tolist())
    constant = np.repeat(train.ground_truth.mean(axis=0, keepdims=True), len(test), axis=0)
    latent = test["latent_score"].to_numpy()
    results = {
        "n_test": len(test),
        "n_train": len(train.paths),
        "seeds": args.seeds,
        "student_config": dataclasses.asdict(students.base),
        "noise_ceiling_srcc": srcc(latent, test["mean_score"].to_numpy())
        if np.isfinite(latent).all()
        else None,
        "teacher": pipeline.test_metrics(teacher_output),
        "constant_predictor": pipeline.test_metrics(constant),
        "runs": {},
        "summary": {},
    }
    for name, kd in VARIANTS.items():
        runs = []
        for seed in args.seeds:
            print(f"--- {name}, seed {seed}", flush=True)
            metrics = students.run(dataclasses.replace(students.base, seed=seed, kd=kd))
            runs.append({"seed": seed, **{k: v for k, v in metrics.items() if k not in ("input", "gmacs")}})
        results["runs"][name] = runs
        results["summary"][name] = summarise(runs)
    write_results(args.out, results)
    print(json.dumps(round_floats(results["summary"]), indent=2))


if __name__ == "__main__":
    main()
