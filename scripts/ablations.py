"""The paper's ablations on the pipeline's outputs, each row over several seeds with paired differences:

- Tables I-III: the teacher from each subset of the distiller's backbones, against the teacher from all;
- Table V: backbone frozen or trainable, with and without KD;
- Table VI: the KD loss's terms (feature term off, output target teacher or ground truth);
- Table VII: student input padded and centre-cropped (the paper's 800 -> 640) vs resized, with and without KD;
- Table XII: semantic guidance from AVA's two tags, as input (multi-modal) and as target (multi-task);
- Table XIV: mixed loss (Eq. 10) and mixed label (Eq. 11).

The protocol is fixed before the runs (README, "Ablations on the demo: the protocol"):

- every student row is params.yaml's student with one change (CONFIGS), over the seeds of --seeds (by
  default 0-2); a configuration that several tables show is trained once;
- the rows that are the KD comparison's arms (KD, no KD, KD without the feature term) are its runs, found in
  its store (scripts/kd_comparison.py), and trained there where missing;
- the teacher rows: the distiller retrained with each seed on each subset of the backbones;
- every difference is exploratory: the one primary comparison (KD against no KD) is the KD comparison's;
- each comparison: the paired difference with its bootstrap 95 % interval over the test images and the
  seeds (iaakd.paired), as in the KD comparison.

Runs are kept in the KD comparison's store (students) and .work/results/ablations/ (teachers), so a rerun
resumes; `--fresh` trains them again. `python scripts/report.py` puts the tables into the README.

    python scripts/ablations.py [--seeds 0 1 2] [--tables i_iii v vi vii xii xiv] [--epochs N]
                                [--crop-size 640 --pad-size 800] [--out results/ablations.json]
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from functools import partial
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
    require_reference_student,
    seeded_parser,
    with_overrides,
    write_results,
)
from kd_comparison import ARMS, FOLDS, PIPELINE, ReferenceRow, SeedRuns, took_since
from kd_comparison import STORE as KD_STORE

from iaakd.costs import gmacs
from iaakd.stages import common
from iaakd.student import KDConfig, StudentConfig, build_student

DEFAULT_SEEDS = (0, 1, 2)
STORE = common.WORK_DIR / "results" / "ablations"
NO_KD = {"kd": {"enabled": False}}


@dataclass(frozen=True)
class Config(ReferenceRow):
    """One student configuration: params.yaml's student with KD (Eq. 7) and ``overrides``; a ``reference``
    names the KD comparison's arm whose runs it is."""

    name: str
    overrides: dict = field(default_factory=dict)
    reference: str | None = None

    def own_key(self) -> dict:
        return {"name": self.name, "overrides": self.overrides}

    def student(self, base: StudentConfig, seed: int) -> StudentConfig:
        if self.reference is not None:  # exactly the KD comparison's configuration
            arm = next(arm for arm in ARMS if arm.name == self.reference)
            # these students learn the pipeline's knowledge: an out-of-fold arm's runs would be other runs
            assert arm.knowledge == PIPELINE, f"{self.name}: {arm.name} learns {arm.knowledge} knowledge"
            return dataclasses.replace(base, seed=seed, kd=arm.kd)
        return with_overrides(dataclasses.replace(base, seed=seed, kd=KDConfig(enabled=True)), self.overrides)


def configs(crop: int, pad: int) -> dict[str, Config]:
    padded = {"input_mode": "pad_crop", "input_size": crop, "pad_size": pad}
    return {
        config.name: config
        for config in (
            Config("kd", reference="student_kd"),
            Config("no_kd", reference="student_no_kd"),
            Config("kd_no_feature", reference="student_kd_no_feature"),
            Config("frozen_no_kd", {"freeze_backbone": True, **NO_KD}),
            Config("frozen_kd", {"freeze_backbone": True}),
            Config("ground_truth_feature", {"kd": {"target": "ground_truth"}}),
            Config("padded_no_kd", {**padded, **NO_KD}),
            Config("padded_kd", padded),
            Config("tags_input", {"semantic": "input", **NO_KD}),
            Config("tags_target", {"semantic": "target", **NO_KD}),
            Config("mixed_loss", {"kd": {"mix": "loss"}}),
            Config("mixed_label", {"kd": {"mix": "label"}}),
        )
    }


@dataclass(frozen=True)
class Table:
    """One of the paper's student ablations: its rows (label, configuration) and the differences A - B it
    shows (configuration names), all exploratory."""

    title: str
    rows: tuple[tuple[str, str], ...]
    comparisons: tuple[tuple[str, str], ...]
    needs_tags: bool = False


def student_tables(size: int, crop: int, pad: int) -> dict[str, Table]:
    return {
        "v": Table(
            "Table V: backbone frozen or trainable",
            (("trainable, no KD", "no_kd"), ("trainable, KD", "kd"),
             ("frozen, no KD", "frozen_no_kd"), ("frozen, KD", "frozen_kd")),
            (("frozen_no_kd", "no_kd"), ("frozen_kd", "frozen_no_kd"), ("frozen_kd", "kd")),
        ),
        "vi": Table(
            "Table VI: the terms of the KD loss",
            (("no KD: EMD to the ground truth", "no_kd"),
             ("EMD to the ground truth + feature term", "ground_truth_feature"),
             ("EMD to the teacher, no feature term", "kd_no_feature"),
             ("EMD to the teacher + feature term (Eq. 7)", "kd")),
            (("ground_truth_feature", "no_kd"), ("kd_no_feature", "no_kd"), ("kd", "kd_no_feature")),
        ),
        "vii": Table(
            f"Table VII: input padded to {pad} and centre-cropped to {crop}, or resized to {size}",
            ((f"{crop}x{crop} (pad {pad}), no KD", "padded_no_kd"), (f"{size}x{size}, no KD", "no_kd"),
             (f"{crop}x{crop} (pad {pad}), KD", "padded_kd"), (f"{size}x{size}, KD", "kd")),
            (("padded_no_kd", "no_kd"), ("padded_kd", "padded_no_kd"), ("padded_kd", "kd")),
        ),
        "xii": Table(
            "Table XII: semantic guidance from AVA's two tags per image",
            (("baseline: EMD to the ground truth", "no_kd"),
             ("multi-modal: tags as auxiliary input", "tags_input"),
             ("multi-task: tags as auxiliary BCE target (Eq. 9)", "tags_target"),
             ("KD (proposed)", "kd")),
            (("tags_input", "no_kd"), ("tags_target", "no_kd"), ("kd", "tags_target")),
            needs_tags=True,
        ),
        "xiv": Table(
            "Table XIV: mixing the teacher's output with the ground truth",
            (("KD (Eq. 7)", "kd"), ("mixed loss (Eq. 10)", "mixed_loss"), ("mixed label (Eq. 11)", "mixed_label")),
            (("mixed_loss", "kd"), ("mixed_label", "kd")),
        ),
    }  # fmt: skip


@dataclass(frozen=True)
class Teacher(ReferenceRow):
    """A distiller on one subset of the backbones (Tables I-III)."""

    name: str
    backbones: tuple[str, ...]
    reference: str | None = None

    def own_key(self) -> dict:
        return {"name": self.name, "backbones": list(self.backbones)}


def protocol(seeds: list[int], tables: dict[str, Table], chosen: list[str]) -> dict:
    """The protocol as the results file states it, fixed before any run."""
    return {
        "primary": "none here: the KD comparison's (student_kd vs student_no_kd)",
        "exploratory": "every comparison",
        "seeds": seeds,
        "seed_means": "the student's seed; for a teacher row, the distiller's",
        "reference_rows": {"kd": "student_kd", "no_kd": "student_no_kd", "kd_no_feature": "student_kd_no_feature"},
        "comparisons": {key: [f"{a} - {b}" for a, b in tables[key].comparisons] for key in chosen if key in tables},
        "teacher_comparisons": "each subset of the backbones - all of them",
    }  # fmt: skip


def teacher_rows(
    pipeline: Pipeline, seeds: list[int], epochs: int | None, fresh: bool, results: dict, out: Path,
    archive: RunOutputs,
) -> None:  # fmt: skip
    """Tables I-III: the distiller on every non-empty subset of the backbones, each over ``seeds``, and
    each subset's paired difference from the teacher on all of them."""
    distillers = DistillerRuns(pipeline, epochs)
    store = RunStore(STORE, {"inputs": pipeline_inputs(), "epochs": epochs}, fresh)
    subsets = [
        subset
        for count in range(1, len(distillers.backbones) + 1)
        for subset in itertools.combinations(distillers.backbones, count)
    ]
    teachers = [Teacher(" + ".join(subset), subset) for subset in subsets]
    everything = teachers[-1].name
    comparisons = tuple((teacher.name, everything, False) for teacher in teachers[:-1])
    runs = SeedRuns(pipeline, comparisons, {teacher.name: list(seeds) for teacher in teachers}, "", archive,
                    "teachers/")  # fmt: skip
    test_ids = pipeline.part("test")["image_id"].tolist()
    shape = (len(test_ids), pipeline.task.output_size)
    dims = {}

    def test_output(teacher: Teacher, seed: int) -> np.ndarray:
        metrics, knowledge = distillers.teacher(list(teacher.backbones), seed)
        dims[teacher.name] = metrics["gsf_dim"]
        return knowledge(test_ids)[0]

    for teacher in teachers:
        for seed in seeds:
            print(f"--- teacher from {teacher.name}, seed {seed}", flush=True)
            config = dataclasses.replace(distillers.base, seed=seed)
            started = time.monotonic()
            rows, kept = store.get(teacher, seed, config, shape, partial(test_output, teacher, seed))
            runs.add(teacher.name, seed, rows, took_since(started, kept))
        if teacher.name not in dims:  # every seed kept: the dimension from the features' metadata
            dims[teacher.name] = pipeline.tables.teacher_input(list(teacher.backbones))[0].dim
    section: dict = {"rows": [{"name": t.name, "backbones": list(t.backbones), "gsf_dim": dims[t.name]}
                              for t in teachers]}  # fmt: skip
    runs.write_into(section)
    results["teacher_backbones"] = section
    write_results(out, results, archive)


def main() -> None:
    parser = seeded_parser(__doc__, DEFAULT_SEEDS, Path("results/ablations.json"))
    parser.add_argument("--tables", nargs="+", default=["i_iii", "v", "vi", "vii", "xii", "xiv"])
    parser.add_argument(
        "--pad-size", type=int, default=None, help="Table VII; default: the largest image side"
    )
    parser.add_argument("--crop-size", type=int, default=None, help="Table VII; default: 0.8 x the pad size")
    args = parse_seeded(parser)

    pipeline = Pipeline.load()
    students = StudentRuns(pipeline, args.epochs)
    base = students.base
    require_reference_student(base)
    pad = args.pad_size or int(pipeline.frame[["width", "height"]].max(axis=None))
    crop = args.crop_size or round(0.8 * pad)  # the paper: 800 -> 640
    tables = student_tables(base.input_size, crop, pad)
    unknown = set(args.tables) - set(tables) - {"i_iii"}
    if unknown:
        parser.error(f"unknown tables {sorted(unknown)}; known: i_iii {' '.join(tables)}")
    chosen = [key for key in tables if key in args.tables]
    skipped = [key for key in chosen if tables[key].needs_tags and not pipeline.has_tags]
    if skipped:
        print("--- Table XII skipped: the labels have no semantic tags", flush=True)
    chosen = [key for key in chosen if key not in skipped]
    archive = RunOutputs(args.out)
    results: dict = {
        "n_test": len(students.test),
        "n_train": len(students.train.paths),
        "seeds": args.seeds,
        "student_config": dataclasses.asdict(base),
        "pad_size": pad,
        "crop_size": crop,
        "protocol": protocol(args.seeds, tables, chosen),
        "tables": {},
        "complete": False,
    }
    if "i_iii" in args.tables:
        teacher_rows(pipeline, args.seeds, args.epochs, args.fresh, results, args.out, archive)

    by_name = configs(crop, pad)
    # the KD comparison's store and signature: its reference runs are found, and these rows kept beside them
    distiller = dataclasses.replace(distiller_base(pipeline.params), out_of_fold=FOLDS)
    store = RunStore(
        KD_STORE, {"inputs": pipeline_inputs(), "distiller": dataclasses.asdict(distiller)}, args.fresh
    )
    needed = list(dict.fromkeys(name for key in chosen for _, name in tables[key].rows))
    needed.sort(key=lambda name: "input_size" in by_name[name].overrides)  # Table VII's costly rows last
    comparisons = tuple((a, b, False) for key in chosen for a, b in tables[key].comparisons)
    planned = {name: list(args.seeds) for name in needed}
    seed_runs = SeedRuns(pipeline, comparisons, planned, "", archive)
    shape = (len(students.test), pipeline.task.output_size)
    costs = StudentCosts(base, students.train.teacher_feature.shape[1], pipeline)
    total, count = len(needed) * len(args.seeds), 0
    for name in needed:
        config = by_name[name]
        for seed in args.seeds:
            count += 1
            print(f"--- {name}, seed {seed} ({count}/{total})", flush=True)
            started = time.monotonic()
            student = config.student(base, seed)
            rows, kept = store.get(
                config, seed, student, shape, partial(students.test_output, student),
                reference=config.reference is not None,
            )  # fmt: skip
            seed_runs.add(name, seed, rows, took_since(started, kept))
            seed_runs.write_into(results)
            results["tables"] = {
                key: table_entry(tables[key], by_name, costs)
                for key in chosen
                if all(len(seed_runs.runs.get(row, [])) == len(args.seeds) for _, row in tables[key].rows)
            }
            write_results(args.out, results, archive)
    # complete: every table there is (a --tables subset is not), the teacher rows included
    every_table = {"i_iii", *(key for key in tables if not tables[key].needs_tags or pipeline.has_tags)}
    results["complete"] = {
        *results["tables"],
        *(["i_iii"] if "teacher_backbones" in results else []),
    } == every_table
    write_results(args.out, results, archive)
    seed_runs.report()


class StudentCosts:
    """Each configuration's GMACs at its input size (the model built untrained, once per configuration)."""

    def __init__(self, base: StudentConfig, feature_dim: int, pipeline: Pipeline) -> None:
        self.base, self.feature_dim, self.task = base, feature_dim, pipeline.task
        self.gmacs: dict[str, float] = {}

    def of(self, config: Config) -> float:
        if config.name not in self.gmacs:
            model, preprocess, _ = build_student(
                config.student(self.base, self.base.seed), self.feature_dim, self.task
            )
            self.gmacs[config.name] = gmacs(model, (1, 3, preprocess.size, preprocess.size))
        return self.gmacs[config.name]


def table_entry(table: Table, by_name: dict[str, Config], costs: StudentCosts) -> dict:
    """A table as the results file holds it: title, rows (label, configuration, overrides, GMACs at its input
    size) and its comparisons; the rows' runs and the differences are in the file's runs and paired."""
    rows = [{"name": label, "config": name, "overrides": by_name[name].overrides, "gmacs": costs.of(by_name[name])}
            for label, name in table.rows]  # fmt: skip
    return {"title": table.title, "rows": rows, "comparisons": [list(pair) for pair in table.comparisons]}


if __name__ == "__main__":
    main()
