"""The experiments that train the teacher again, on the pipeline's features, with paired differences:

- Table XV: binary classification (Eq. 12) and score regression (Eq. 13): for each output type and seed, the
  distiller trained again with that seed, and students with and without its knowledge (seed s: the
  distiller's and the students'); KD - no KD and teacher - KD, paired over the test images and the seeds;
- Fig. 6: random folds with disjoint test sets (the paper: 12 folds of 20,000 on AVA): on each, the
  distiller trained again and students with and without KD, with --fold-seeds (by default one: seed 0); KD -
  no KD on each fold, and over every fold's test images together (each image scored by its own fold's models).

Every configuration is params.yaml's (distiller, student, split seed and validation share). Run `dvc repro`
first; writes results/folds_and_outputs.json; `python scripts/report.py` makes the tables. For real AVA the
README gives these as DVC experiments; this script is the demo's reduced protocol. Every difference is
exploratory (the demo's primary comparison is the KD comparison's).

    python scripts/folds_and_outputs.py [--seeds 0 1 2] [--folds 3] [--test-size 0.2] [--fold-seeds 0]
                                        [--outputs binary score] [--epochs N]

Runs are kept in .work/results/folds_and_outputs/, so a rerun resumes; `--fresh` trains them again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
from experiment import (
    DistillerRuns,
    Pipeline,
    RunOutputs,
    RunStore,
    StudentRuns,
    distiller_base,
    parse_seeded,
    pipeline_inputs,
    seeded_parser,
    student_base,
    write_results,
)
from kd_comparison import SeedRuns, compare_arms, took_since

from iaakd.data.splits import SplitConfig, make_split
from iaakd.data.tables import ground_truth
from iaakd.stages import common
from iaakd.student import KDConfig

OUTPUTS = ("binary", "score")  # Table XV's other output types; the distribution is the pipeline's own
DEFAULT_SEEDS = (0, 1, 2)
STORE = common.WORK_DIR / "results" / "folds_and_outputs"
MODELS = ("teacher", "student_kd", "student_no_kd")
KD_GAIN = (("student_kd", "student_no_kd", False),)  # Fig. 6's one difference
COMPARISONS = (*KD_GAIN, ("teacher", "student_kd", False))  # Table XV's


@dataclass(frozen=True)
class Model:
    """A teacher or student of one part (an output type or a fold); what makes a kept run its own."""

    name: str
    part: str

    @property
    def store_key(self) -> dict:
        return {"name": self.name, "part": self.part}


def teachers_and_students(
    pipeline: Pipeline,
    part: str,
    seeds: list[int],
    epochs: int | None,
    store: RunStore,
    archive: RunOutputs,
    comparisons: tuple[tuple[str, str, bool], ...] = COMPARISONS,
) -> SeedRuns:
    """The distiller trained with each of ``seeds`` on ``pipeline``'s split and task, and students with and
    without its knowledge: their test outputs (kept in ``store`` under ``part``) and paired differences."""
    distillers = DistillerRuns(pipeline, epochs)
    test_ids = pipeline.part("test")["image_id"].tolist()
    shape = (len(test_ids), pipeline.task.output_size)
    base = student_base(pipeline.params, epochs)
    runs = SeedRuns(pipeline, comparisons, {name: list(seeds) for name in MODELS}, "", archive, f"{part}/")

    @cache  # the distiller of ``seed``, trained only when one of its runs is not kept
    def students_of(seed: int) -> tuple[np.ndarray, StudentRuns]:
        _, knowledge = distillers.teacher(distillers.backbones, seed)
        return knowledge(test_ids)[0], StudentRuns(pipeline, epochs, knowledge)

    def student_output(seed: int, config) -> np.ndarray:
        return students_of(seed)[1].test_output(config)

    for seed in seeds:
        configs = {
            "teacher": dataclasses.replace(distillers.base, seed=seed),
            "student_kd": dataclasses.replace(base, seed=seed, kd=KDConfig(enabled=True)),
            "student_no_kd": dataclasses.replace(base, seed=seed, kd=KDConfig(enabled=False)),
        }
        for name in MODELS:
            print(f"--- {part}: {name}, seed {seed}", flush=True)
            started = time.monotonic()
            train = (
                (lambda seed=seed: students_of(seed)[0])
                if name == "teacher"
                else partial(student_output, seed, configs[name])
            )
            rows, kept = store.get(Model(name, part), seed, configs[name], shape, train)
            runs.add(name, seed, rows, took_since(started, kept))
    return runs


def pooled_over_folds(folds: list[tuple[Pipeline, SeedRuns]]) -> dict:
    """KD - no KD over every fold's test images together (disjoint sets; each image scored by its own fold's
    models, the seeds of --fold-seeds paired in order)."""
    pipeline = folds[0][0]
    tests = [fold.part("test") for fold, _ in folds]
    true_score = np.concatenate([test["mean_score"].to_numpy() for test in tests])
    dists = [ground_truth(test) for test in tests]
    true_dist = None if any(dist is None for dist in dists) else np.concatenate(dists)
    outputs = {}
    for name in ("student_kd", "student_no_kd"):
        per_fold = [runs.outputs[name] for _, runs in folds]
        outputs[name] = {
            index: np.concatenate([by_seed[seed] for by_seed in per_fold])
            for index, seed in enumerate(sorted(per_fold[0]))
        }
    entry = compare_arms("student_kd", "student_no_kd", False, outputs, pipeline.task, true_score, true_dist)
    return {"n_test": len(true_score), "paired": [entry]}


def main() -> None:
    parser = seeded_parser(__doc__, DEFAULT_SEEDS, Path("results/folds_and_outputs.json"))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--test-size", type=float, default=0.2, help="a fraction, or a count when > 1")
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0], help="Fig. 6: seeds on each fold")
    parser.add_argument("--outputs", nargs="*", choices=OUTPUTS, default=list(OUTPUTS))
    args = parse_seeded(parser)

    pipeline = Pipeline.load()
    split = common.section(pipeline.params, "split")
    signature = {
        "inputs": pipeline_inputs(),
        "distiller": dataclasses.asdict(distiller_base(pipeline.params, args.epochs)),
        "split": {"seed": split["seed"], "val_fraction": split["val_fraction"]},
        "folds": args.folds,
        "test_size": args.test_size,
    }
    store = RunStore(STORE, signature, args.fresh)
    archive = RunOutputs(args.out)
    results: dict = {
        "seeds": args.seeds,
        "fold_seeds": args.fold_seeds,
        "student_config": dataclasses.asdict(student_base(pipeline.params, args.epochs)),
        "protocol": {
            "primary": "none here: the KD comparison's (student_kd vs student_no_kd)",
            "exploratory": "every comparison",
            "comparisons": {
                "outputs": [f"{a} - {b}" for a, b, _ in COMPARISONS],
                "folds": [f"{a} - {b}" for a, b, _ in KD_GAIN],
            },  # fmt: skip
            "seed_means": "the distiller's and the students' seed",
        },
        "outputs": {},
        "folds": [],
        "complete": False,
    }

    def part_entry(part_pipeline: Pipeline, runs: SeedRuns) -> dict:
        entry = {"n_train": int((part_pipeline.frame["split"] == "train").sum()),
                 "n_test": len(part_pipeline.part("test"))}  # fmt: skip
        runs.write_into(entry)
        return entry

    for output in args.outputs:
        output_pipeline = pipeline.with_output(output)
        runs = teachers_and_students(output_pipeline, output, args.seeds, args.epochs, store, archive)
        results["outputs"][output] = part_entry(output_pipeline, runs)
        write_results(args.out, results, archive)  # what is done so far survives an interrupted run
    folds = []
    for fold in range(args.folds):
        config = SplitConfig(
            name="random", seed=split["seed"], val_fraction=split["val_fraction"],
            num_folds=args.folds, fold=fold, test_size=args.test_size,
        )  # fmt: skip
        folded = pipeline.with_split(make_split(pipeline.frame["image_id"], config))
        runs = teachers_and_students(
            folded, f"fold{fold}", args.fold_seeds, args.epochs, store, archive, KD_GAIN
        )
        folds.append((folded, runs))
        results["folds"].append({"fold": fold, **part_entry(folded, runs)})
        write_results(args.out, results, archive)
    if folds:
        results["pooled_folds"] = pooled_over_folds(folds)
    results["complete"] = len(results["folds"]) == args.folds and set(OUTPUTS) <= set(results["outputs"])
    write_results(args.out, results, archive)
    print(f"wrote {args.out}" + ("" if results["complete"] else "; not every fold and output type yet"))


if __name__ == "__main__":
    main()
