"""The experiments that train the teacher again, on the pipeline's features:

- Fig. 6: random folds with disjoint test sets (the paper: 12 folds of 20,000 on AVA), the teacher and the
  student with and without KD on each;
- Table XV: binary classification (Eq. 12) and score regression (Eq. 13), teacher and students.

Every configuration is params.yaml's (distiller, student, split seed and validation share), one seed. Run
`dvc repro` first; writes results/folds_and_outputs.json; `python scripts/report.py` makes the tables.
For real AVA the README gives these as DVC experiments; this script is the demo's reduced protocol.

    python scripts/folds_and_outputs.py [--folds 3] [--test-size 0.2] [--epochs N]

A fold or output type already in results/folds_and_outputs.json from the same configurations and pipeline
outputs is kept, so an interrupted run goes on where it stopped; `--fresh` trains everything again.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from experiment import (
    DistillerRuns,
    Pipeline,
    StudentRuns,
    distiller_base,
    earlier_results,
    pipeline_inputs,
    student_base,
    write_results,
)

from iaakd.data.splits import SplitConfig, make_split
from iaakd.stages import common

OUTPUTS = ("binary", "score")  # Table XV's other output types; the distribution is the pipeline's own


def teacher_and_students(pipeline: Pipeline, epochs: int | None) -> dict:
    """The distiller trained on ``pipeline``'s split and task, and students with and without its knowledge."""
    distillers = DistillerRuns(pipeline, epochs)
    teacher, knowledge = distillers.teacher(distillers.backbones, distillers.base.seed)
    students = StudentRuns(pipeline, epochs, knowledge=knowledge)
    base = students.base
    without_kd = dataclasses.replace(base, kd=dataclasses.replace(base.kd, enabled=False))
    drop = ("input", "gmacs", "gsf_dim")
    return {
        "n_train": len(students.train.paths),
        "n_test": len(students.test),
        "teacher": {k: v for k, v in teacher.items() if k not in drop},
        "student_kd": {k: v for k, v in students.run(base).items() if k not in drop},
        "student_no_kd": {k: v for k, v in students.run(without_kd).items() if k not in drop},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--test-size", type=float, default=0.2, help="a fraction, or a count when > 1")
    parser.add_argument("--outputs", nargs="*", choices=OUTPUTS, default=list(OUTPUTS))
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs (smoke tests)")
    parser.add_argument("--out", type=Path, default=Path("results/folds_and_outputs.json"))
    parser.add_argument("--fresh", action="store_true", help="train every fold and output type again")
    args = parser.parse_args()

    pipeline = Pipeline.load()
    split = common.section(pipeline.params, "split")
    signature = {
        "inputs": pipeline_inputs(),
        "distiller": dataclasses.asdict(distiller_base(pipeline.params, args.epochs)),
        "student": dataclasses.asdict(student_base(pipeline.params, args.epochs)),
        "split": {"seed": split["seed"], "val_fraction": split["val_fraction"]},
        "folds": args.folds,
        "test_size": args.test_size,
    }
    earlier = earlier_results(args.out, signature, args.fresh)
    results: dict = {
        "signature": signature,
        "folds": earlier.get("folds", []),
        "outputs": earlier.get("outputs", {}),
        "complete": False,
    }
    if results["folds"] or results["outputs"]:
        kept = [f"fold {row['fold'] + 1}" for row in results["folds"]] + list(results["outputs"])
        print(f"--- kept from {args.out}: {', '.join(kept)}", flush=True)
    for fold in range(len(results["folds"]), args.folds):
        print(f"--- fold {fold + 1} of {args.folds}", flush=True)
        config = SplitConfig(
            name="random", seed=split["seed"], val_fraction=split["val_fraction"],
            num_folds=args.folds, fold=fold, test_size=args.test_size,
        )  # fmt: skip
        folded = pipeline.with_split(make_split(pipeline.frame["image_id"], config))
        results["folds"].append({"fold": fold, **teacher_and_students(folded, args.epochs)})
        write_results(args.out, results)  # what is done so far survives an interrupted run
    for output in (output for output in args.outputs if output not in results["outputs"]):
        print(f"--- output {output}", flush=True)
        results["outputs"][output] = teacher_and_students(pipeline.with_output(output), args.epochs)
        write_results(args.out, results)
    results["complete"] = len(results["folds"]) == args.folds and set(OUTPUTS) <= set(results["outputs"])
    write_results(args.out, results)
    print(f"wrote {args.out}" + ("" if results["complete"] else "; not every fold and output type yet"))


if __name__ == "__main__":
    main()
