"""The KD comparison under the demo's seed protocol: the student with and without KD, beside its controls.

Reads the pipeline's outputs (run `dvc repro` first): labels, split, features and the distiller stay fixed;
only the student's seed and its supervision change. Every arm is params.yaml's student with one change
(ARMS). The protocol is fixed before the runs (README, "The demo's protocol"):

- primary comparison, named before running: student_kd (Eq. 7) against student_no_kd; every other
  comparison (COMPARISONS) is exploratory;
- the headline arms (KD, no KD, shuffled knowledge, out-of-fold knowledge) over every seed of --seeds (by
  default 0-4), the other arms over the first three;
- each comparison: the difference A - B with a paired bootstrap 95 % interval over the test images and the
  seeds (iaakd.paired; 2000 resamples, bootstrap seed 0), and the share of seed pairs in which A beats B.
  KD is shown to help when the interval of SRCC(student_kd) - SRCC(student_no_kd) lies above 0.

Out-of-fold knowledge: K = 5 fold distillers (params.yaml's distiller configuration), each trained on the
training images outside its fold; a training image's knowledge comes from the one that did not see it,
validation and test images keep the full distiller's (models/distiller.pt).

Resumes: each finished run's test output rows are kept in .work/results/kd_comparison/<fingerprint>/
(the fingerprint covers the student configuration, the arm, the seed and the pipeline's inputs in
dvc.lock), and a rerun loads them instead of training; --fresh trains every run again. The results file is
rewritten after every run, "complete": false until the last. `python scripts/report.py` puts the tables
into the README.

    python scripts/kd_comparison.py [--seeds 0 1 2 3 4] [--epochs N] [--out results/kd_comparison.json]
                                    [--fresh]
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from experiment import (
    RAN,
    Pipeline,
    RunOutputs,
    RunStore,
    StudentRuns,
    distiller_base,
    knowledge_rows,
    parse_seeded,
    pipeline_inputs,
    seeded_parser,
    write_results,
)

from iaakd import paired
from iaakd.atomic import atomic_path
from iaakd.checkpoints import fingerprint
from iaakd.data.tables import Knowledge, ground_truth, targets
from iaakd.feature_rows import RowSubset
from iaakd.metrics import round_floats, srcc
from iaakd.stages import common
from iaakd.stages.evaluate import category_members, no_categories_because
from iaakd.student import KDConfig
from iaakd.tasks import Task
from iaakd.teacher import (
    DistillerConfig,
    iter_out_of_fold_knowledge,
    load_distiller,
    train_fold_distillers,
)

# Where a student's teacher knowledge comes from
PIPELINE = "pipeline"  # data/teacher/: the pipeline's distiller (in-fold with distiller.out_of_fold 0)
OUT_OF_FOLD = "out_of_fold"  # out-of-fold outputs, f_t of the full distiller
OUT_OF_FOLD_FOLD_FEATURE = "out_of_fold_fold_feature"  # out-of-fold outputs and f_t of the fold distillers


@dataclass(frozen=True)
class Arm:
    """One student configuration of the comparison: params.yaml's student with this KD and knowledge."""

    name: str
    kd: KDConfig
    knowledge: str = PIPELINE
    headline: bool = False  # True: every seed of --seeds; False: the first EXPLORATORY_SEEDS of them

    @property
    def store_key(self) -> dict:
        """What makes a kept run this arm's (RunStore)."""
        return {"name": self.name, "kd": dataclasses.asdict(self.kd), "knowledge": self.knowledge}


ARMS = (
    Arm("student_kd", KDConfig(enabled=True), headline=True),  # Eq. 7
    Arm("student_no_kd", KDConfig(enabled=False), headline=True),
    Arm("student_kd_shuffled", KDConfig(enabled=True, shuffle=True), headline=True),
    Arm("student_kd_oof", KDConfig(enabled=True), OUT_OF_FOLD, headline=True),
    Arm("student_kd_no_feature", KDConfig(enabled=True, feature_weight=0.0)),
    Arm("student_kd_oof_fold_feature", KDConfig(enabled=True), OUT_OF_FOLD_FOLD_FEATURE),
    Arm("student_kd_oof_output_only", KDConfig(enabled=True, feature_weight=0.0), OUT_OF_FOLD),
)
# (A, B, primary): the difference A - B; the first is the one comparison named before running
COMPARISONS = (
    ("student_kd", "student_no_kd", True),
    ("student_kd", "student_kd_shuffled", False),
    ("student_kd", "student_kd_no_feature", False),
    ("student_kd_oof", "student_kd", False),
    ("student_kd_oof", "student_no_kd", False),
    ("student_kd_oof_fold_feature", "student_kd_oof", False),
    ("student_kd_oof_output_only", "student_kd_oof", False),
)
PRIMARY = next((a, b) for a, b, primary in COMPARISONS if primary)  # (KD, no KD)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
EXPLORATORY_SEEDS = 3  # seeds of the arms that are not headline arms
FOLDS = 5  # K of the out-of-fold distillers
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
STORE = common.WORK_DIR / "results" / "kd_comparison"
METRICS = ("srcc", "plcc", "acc", "emd")
MIN_CATEGORY_IMAGES = 10  # Table IX's gain is left out for a category with fewer test images

Outputs = Mapping[str, Mapping[int, np.ndarray]]  # arm -> seed -> test output rows


def seeds_of(arm: Arm, seeds: list[int]) -> list[int]:
    """The seeds ``arm`` runs with: every one of ``seeds`` for a headline arm, else the first three."""
    return list(seeds) if arm.headline else list(seeds[:EXPLORATORY_SEEDS])


def protocol(seeds: list[int]) -> dict:
    """The protocol as the results file states it, fixed before any run."""
    return {
        "primary": " vs ".join(PRIMARY),
        "exploratory": "every other comparison",
        "decision_rule": "KD is shown to help when the 95 % interval of SRCC(student_kd) - "
        "SRCC(student_no_kd) lies above 0",
        "seeds": {arm.name: seeds_of(arm, seeds) for arm in ARMS},
        "resampled": "test images (the same for both arms) and, within each arm, its seeds; the same seed "
        "indices for both arms where their seed lists are equal (same seed: same initialisation and data "
        "order)",
        "resamples": RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "interval": paired.LEVEL,
        "out_of_fold_folds": FOLDS,
    }


def summarise(runs: list[dict]) -> dict:
    """Each metric's mean, min, max, spread (max - min) and sd (ddof 1; None for one run) over ``runs``."""
    summary = {}
    for key in METRICS:
        values = [run[key] for run in runs if run[key] is not None]
        if values:
            summary[key] = {
                "mean": float(np.mean(values)),
                "min": float(np.min(values)),
                "max": float(np.max(values)),
                "spread": float(np.max(values) - np.min(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            }
    return summary


def compare_arms(
    a: str,
    b: str,
    primary: bool,
    outputs: Outputs,
    task: Task,
    true_score: np.ndarray,
    true_dist: np.ndarray | None,
) -> dict:
    """The paired comparison of arm ``a`` against arm ``b`` from their test output rows (seed -> rows):
    predictions (seeds, images) by ``task``; EMD where the outputs are distributions and the truth has them.
    Seeds are paired where both arms ran the same seed list."""
    seeds_a, seeds_b = list(outputs[a]), list(outputs[b])
    rows_a = np.stack([outputs[a][seed] for seed in seeds_a])  # (seeds, images, outputs)
    rows_b = np.stack([outputs[b][seed] for seed in seeds_b])
    score_a = np.stack([task.predicted_score(rows) for rows in rows_a])
    score_b = np.stack([task.predicted_score(rows) for rows in rows_b])
    high_a = np.stack([task.predicted_high(rows) for rows in rows_a])
    high_b = np.stack([task.predicted_high(rows) for rows in rows_b])
    distributions = task.output == "distribution" and true_dist is not None
    metrics = paired.compare(
        score_a,
        score_b,
        true_score,
        resamples=RESAMPLES,
        seed=BOOTSTRAP_SEED,
        cutoff=task.cutoff,
        true_dist=true_dist if distributions else None,
        dist_a=rows_a if distributions else None,
        dist_b=rows_b if distributions else None,
        high_a=high_a,
        high_b=high_b,
        paired_seeds=seeds_a == seeds_b,
        names=(a, b),
    )
    return {"a": a, "b": b, "primary": primary, "seeds_a": seeds_a, "seeds_b": seeds_b, "metrics": metrics}


def finished(outputs: Outputs, planned: Mapping[str, list[int]], *arms: str) -> bool:
    """Whether each of ``arms`` has run every one of its ``planned`` seeds."""
    return all(arm in planned and arm in outputs and set(outputs[arm]) == set(planned[arm]) for arm in arms)


def paired_section(
    outputs: Outputs,
    planned: Mapping[str, list[int]],
    task: Task,
    true_score: np.ndarray,
    true_dist: np.ndarray | None,
    done: dict[tuple[str, str], dict] | None = None,
) -> list[dict]:
    """Every comparison of COMPARISONS whose two arms have finished all their ``planned`` seeds, in that
    order; ``done`` keeps those already computed (each is computed once)."""
    done = {} if done is None else done
    section = []
    for a, b, primary in COMPARISONS:
        if not finished(outputs, planned, a, b):
            continue
        if (a, b) not in done:
            done[(a, b)] = compare_arms(a, b, primary, outputs, task, true_score, true_dist)
        section.append(done[(a, b)])
    return section


def per_category_gain(
    outputs: Outputs,
    planned: Mapping[str, list[int]],
    test: pd.DataFrame,
    task: Task,
    true_score: np.ndarray,
    true_dist: np.ndarray | None,
) -> dict | None:
    """Table IX's gain of KD over no KD in each category (exploratory): the primary comparison on the test
    images of that category alone; None until both arms have all their seeds. A category with fewer than
    MIN_CATEGORY_IMAGES test images gets its count only; without tags, the reason instead of categories."""
    if not finished(outputs, planned, *PRIMARY):
        return None
    members = category_members(test)
    if not members:
        return {"empty_because": no_categories_because(test)}
    gains = {}
    for name, member in members.items():
        if member.sum() < MIN_CATEGORY_IMAGES:
            gains[name] = {
                "n": int(member.sum()),
                "left_out": f"fewer than {MIN_CATEGORY_IMAGES} test images",
            }
            continue
        subset = {arm: {seed: rows[member] for seed, rows in outputs[arm].items()} for arm in PRIMARY}
        dist = None if true_dist is None else true_dist[member]
        entry = compare_arms(*PRIMARY, False, subset, task, true_score[member], dist)
        gains[name] = {"n": int(member.sum()), "metrics": entry["metrics"]}
    return gains


class ReferenceRow:
    """Mixin for a result script's row (a dataclass with ``reference``, and ``own_key()``): a row whose
    ``reference`` names one of ARMS is that arm's runs, found under its key; any other row has its own."""

    reference: str | None

    def own_key(self) -> dict:
        raise NotImplementedError

    @property
    def store_key(self) -> dict:
        """What makes a kept run this row's (RunStore)."""
        if self.reference is not None:
            return next(arm for arm in ARMS if arm.name == self.reference).store_key
        return self.own_key()


class SeedRuns:
    """A result script's runs as they come in, seed by seed: each row's test metrics and their summary over
    seeds, and each of ``comparisons`` ((A, B, primary) triples) once both rows have all their ``planned``
    seeds (computed once), ready to write into the results file; ``claim`` names what the primary
    comparison would show."""

    def __init__(
        self,
        pipeline: Pipeline,
        comparisons: tuple[tuple[str, str, bool], ...],
        planned: Mapping[str, list[int]],
        claim: str,
        archive: RunOutputs | None = None,
        part: str = "",
    ) -> None:
        self.pipeline, self.comparisons, self.planned, self.claim = pipeline, comparisons, planned, claim
        self.archive, self.part = archive, part  # where each run's test outputs are kept for the results file
        test = pipeline.part("test")
        self.test_ids = test["image_id"].tolist()
        self.true_score, self.true_dist = test["mean_score"].to_numpy(), ground_truth(test)
        self.outputs: dict[str, dict[int, np.ndarray]] = {}
        self.runs: dict[str, list[dict]] = {}
        self.paired: dict[tuple[str, str], dict] = {}

    def add(self, name: str, seed: int, rows: np.ndarray, took: str) -> None:
        """Row ``name``'s run with ``seed`` (its test output rows), printed with how long it ``took``."""
        self.outputs.setdefault(name, {})[seed] = rows
        if self.archive is not None:
            self.archive.add(name, seed, rows, self.test_ids, self.part)
        self.runs.setdefault(name, []).append({"seed": seed, **self.pipeline.test_metrics(rows)})
        print(f"    SRCC {_number(self.runs[name][-1]['srcc'])} ({took})", flush=True)
        for a, b, primary in self.comparisons:
            if (a, b) not in self.paired and finished(self.outputs, self.planned, a, b):
                self.paired[(a, b)] = compare_arms(
                    a, b, primary, self.outputs, self.pipeline.task, self.true_score, self.true_dist
                )

    def write_into(self, results: dict) -> None:
        """``runs``, ``summary`` and ``paired`` of the results file, as far as the runs go."""
        results["runs"] = self.runs
        results["summary"] = {name: summarise(runs) for name, runs in self.runs.items()}
        results["paired"] = [self.paired[(a, b)] for a, b, _ in self.comparisons if (a, b) in self.paired]

    def report(self) -> None:
        """Each row's mean SRCC, and the primary comparison (where there is one) with what its decision rule
        makes of it."""
        means = {name: summarise(runs)["srcc"]["mean"] for name, runs in self.runs.items()}
        print(json.dumps(round_floats(means), indent=2))
        if any(primary for _, _, primary in self.comparisons):  # ablations: every comparison exploratory
            primary = next((entry for entry in self.paired.values() if entry["primary"]), None)
            print(describe_primary(primary, self.claim))


def took_since(started: float, kept: bool) -> str:
    return "kept from an earlier run" if kept else f"{(time.monotonic() - started) / 60:.1f} min"


@dataclass(frozen=True)
class OutOfFold:
    """The teacher's knowledge of the training images (rows in ``train_ids``' order) from the fold
    distillers: each row's fold, the fold distiller's output and f_t, and the full distiller's f_t."""

    train_ids: list[str]
    folds: np.ndarray
    output: np.ndarray
    full_feature: np.ndarray
    fold_feature: np.ndarray


def out_of_fold(pipeline: Pipeline, config: DistillerConfig, store: Path, fresh: bool = False) -> OutOfFold:
    """K fold distillers trained on the training images (config.out_of_fold = K), their knowledge beside
    the full distiller's (models/distiller.pt); kept under ``store`` by a fingerprint of the configuration
    and the pipeline's inputs, and loaded from there on a rerun (unless ``fresh``)."""
    frame, task = pipeline.frame, pipeline.task
    backbones = common.section(pipeline.params, "distiller")["backbones"]
    parts = {name: (frame["split"] == name).to_numpy() for name in ("train", "val")}
    train_ids = frame["image_id"][parts["train"]].tolist()
    key = {"distiller": dataclasses.asdict(config), "backbones": backbones, "inputs": pipeline_inputs()}
    path = store / fingerprint(key, train_ids) / "out_of_fold_knowledge.npz"
    if path.is_file() and not fresh:
        with np.load(path, allow_pickle=False) as kept:
            return OutOfFold(train_ids, *(kept[name] for name in ("folds", "output", "full", "fold")))
    print(f"--- {config.out_of_fold} fold distillers for out-of-fold knowledge", flush=True)
    full, saved = load_distiller(common.DISTILLER_MODEL)
    if saved["backbones"] != backbones:
        raise common.UserError(
            f"{common.DISTILLER_MODEL} was trained on the features of {saved['backbones']}, params.yaml's "
            f"distiller.backbones are {backbones}: run `dvc repro` first"
        )
    if saved["config"].get("out_of_fold", 0):
        print(f"note: {common.DISTILLER_MODEL} is itself out of fold: student_kd's knowledge is not in-fold")
    matrix, _ = pipeline.tables.teacher_input(backbones)
    rows = matrix.row_of(frame["image_id"])
    training_targets = targets(frame, task)
    train_rows = RowSubset(matrix, rows[parts["train"]])
    folds, fold_models = train_fold_distillers(
        train_rows,
        training_targets[parts["train"]],
        RowSubset(matrix, rows[parts["val"]]),
        training_targets[parts["val"]],
        config,
        task,
        progress=common.show_progress(),
    )

    def knowledge(fold_feature: bool) -> tuple[np.ndarray, np.ndarray]:
        batches = list(iter_out_of_fold_knowledge(full, fold_models, folds, train_rows, fold_feature))
        return np.concatenate([o for o, _, _ in batches]), np.concatenate([f for _, f, _ in batches])

    RAN.append(("cpu", "fp32"))  # the distiller trains on the CPU in float32
    output, full_feature = knowledge(False)
    _, fold_feature = knowledge(True)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, folds=folds, output=output, full=full_feature, fold=fold_feature)
    return OutOfFold(train_ids, folds, output, full_feature, fold_feature)


def out_of_fold_knowledge(pipeline: Pipeline, oof: OutOfFold, fold_feature: bool) -> Knowledge:
    """Knowledge by image id: the out-of-fold outputs (and, with ``fold_feature``, f_t) on training images,
    the pipeline's (full distiller's) knowledge on every other labelled image."""
    image_ids = pipeline.frame["image_id"].tolist()
    outputs, features = pipeline.tables.teacher_knowledge(image_ids)
    outputs, features = outputs.copy(), features.copy()
    position = pd.Index(image_ids)
    train = position.get_indexer(pd.Index(oof.train_ids))
    outputs[train] = oof.output
    features[train] = oof.fold_feature if fold_feature else oof.full_feature

    def knowledge(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return knowledge_rows(position, ids, outputs, features)

    return knowledge


def teacher_fit(pipeline: Pipeline, oof: OutOfFold) -> dict:
    """How close the teacher's knowledge is to the ground truth on its own training images, in-fold (the
    pipeline's knowledge) and out-of-fold (the fold distillers' outputs), beside the validation images."""
    frame, task = pipeline.frame, pipeline.task
    truth = ground_truth(frame)
    masks = {part: (frame["split"] == part).to_numpy() for part in ("train", "val")}

    def pipeline_output(part: str) -> np.ndarray:
        return pipeline.tables.teacher_knowledge(frame["image_id"][masks[part]].tolist())[0]

    outputs = {  # name -> (images, the teacher's output rows for them)
        "train_in_fold": ("train", pipeline_output("train")),
        "train_out_of_fold": ("train", oof.output),
        "val": ("val", pipeline_output("val")),
    }
    fit = {}
    for name, (part, output) in outputs.items():
        mask = masks[part]
        true_dist = truth[mask] if truth is not None else None
        metrics = task.metrics(output, frame["mean_score"].to_numpy()[mask], true_dist)
        fit[name] = {"n": int(mask.sum()), **metrics}

    def gap(name: str) -> float | None:
        train, val = fit[name]["srcc"], fit["val"]["srcc"]
        return None if train is None or val is None else train - val

    return {
        **fit,
        "train_val_srcc_gap": gap("train_in_fold"),  # train (in-fold) - val
        "train_out_of_fold_val_srcc_gap": gap("train_out_of_fold"),
        "folds": int(oof.folds.max()) + 1,
    }


def describe_primary(entry: dict | None, claim: str = "KD shown to help") -> str:
    """The primary comparison's SRCC result in a line, with what the decision rule makes of it (``claim``:
    yes when the interval of SRCC(A) - SRCC(B) lies above 0)."""
    if entry is None:
        return "primary comparison: not all of its runs are there"
    result = entry["metrics"]["srcc"]
    if result["difference"] is None:
        return f"primary comparison {entry['a']} - {entry['b']}: SRCC undefined"
    above = result["ci95_low"] > 0
    return (
        f"primary comparison, SRCC({entry['a']}) - SRCC({entry['b']}) = {result['difference']:+.3f}, 95 % "
        f"interval [{result['ci95_low']:+.3f}, {result['ci95_high']:+.3f}] over {result['n_images']} test "
        f"images and {result['n_seeds_a']} + {result['n_seeds_b']} seeds; A beats B in "
        f"{result['share_a_beats_b']:.0%} of seed pairs. {claim}: {'yes' if above else 'no'} "
        f"(the interval {'lies above' if above else 'does not lie above'} 0)"
    )


def main() -> None:
    args = parse_seeded(seeded_parser(__doc__, DEFAULT_SEEDS, Path("results/kd_comparison.json")))

    pipeline = Pipeline.load()
    task = pipeline.task
    runners = {PIPELINE: StudentRuns(pipeline, args.epochs)}
    base = runners[PIPELINE].base
    test, train = runners[PIPELINE].test, runners[PIPELINE].train
    distiller = dataclasses.replace(distiller_base(pipeline.params), out_of_fold=FOLDS)
    inputs = pipeline_inputs()
    store = RunStore(STORE, {"inputs": inputs, "distiller": dataclasses.asdict(distiller)}, args.fresh)
    oof = out_of_fold(pipeline, distiller, STORE, args.fresh)
    runners[OUT_OF_FOLD] = StudentRuns(pipeline, args.epochs, out_of_fold_knowledge(pipeline, oof, False))
    runners[OUT_OF_FOLD_FOLD_FEATURE] = StudentRuns(
        pipeline, args.epochs, out_of_fold_knowledge(pipeline, oof, True)
    )

    teacher_output, _ = pipeline.tables.teacher_knowledge(test["image_id"].tolist())
    constant = np.repeat(train.ground_truth.mean(axis=0, keepdims=True), len(test), axis=0)
    latent = test["latent_score"].to_numpy()
    true_score, true_dist = test["mean_score"].to_numpy(), ground_truth(test)
    planned = {arm.name: seeds_of(arm, args.seeds) for arm in ARMS}
    results = {
        "n_test": len(test),
        "n_train": len(train.paths),
        "seeds": args.seeds,
        "student_config": dataclasses.asdict(base),
        "noise_ceiling_srcc": srcc(latent, true_score) if np.isfinite(latent).all() else None,
        "teacher": pipeline.test_metrics(teacher_output),
        "constant_predictor": pipeline.test_metrics(constant),
        "teacher_fit": teacher_fit(pipeline, oof),
        "protocol": protocol(args.seeds),
        "runs": {},
        "summary": {},
        "paired": [],
        "complete": False,  # true once every run is there
    }
    outputs: dict[str, dict[int, np.ndarray]] = {}
    archive = RunOutputs(args.out)
    done: dict[tuple[str, str], dict] = {}
    shape = (len(test), task.output_size)
    total, count = sum(len(seeds) for seeds in planned.values()), 0
    for arm in ARMS:
        runs = results["runs"].setdefault(arm.name, [])
        for seed in planned[arm.name]:
            count += 1
            config = dataclasses.replace(base, seed=seed, kd=arm.kd)
            print(f"--- {arm.name}, seed {seed} ({count}/{total})", flush=True)
            started = time.monotonic()
            train_run = partial(runners[arm.knowledge].test_output, config)
            rows, kept = store.get(arm, seed, config, shape, train_run)
            outputs.setdefault(arm.name, {})[seed] = rows
            archive.add(arm.name, seed, rows, test["image_id"].tolist())
            runs.append({"seed": seed, **pipeline.test_metrics(rows)})
            took = "kept from an earlier run" if kept else f"{(time.monotonic() - started) / 60:.1f} min"
            print(f"    SRCC {_number(runs[-1]['srcc'])} ({took})", flush=True)
            results["summary"][arm.name] = summarise(runs)
            results["paired"] = paired_section(outputs, planned, task, true_score, true_dist, done)
            if results.get("per_category") is None:
                results["per_category"] = per_category_gain(
                    outputs, planned, test, task, true_score, true_dist
                )
            results["complete"] = count == total
            write_results(args.out, results, archive)
    print(json.dumps(round_floats(results["summary"]), indent=2))
    print(describe_primary(next((entry for entry in results["paired"] if entry["primary"]), None)))


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
