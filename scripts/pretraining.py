"""Pfister et al.'s claims on the demo: the student started from a backbone pretrained by distortion ranking
(student.init=pretrain) against ImageNet initialisation (student.init=weights), with and without KD.

Reads the pipeline's outputs (run `dvc repro` first). Every row is params.yaml's student and pretrain
configurations with one change (ROWS); the protocol is fixed before the runs (docs/methods/pretraining.md,
"Pretraining on the demo"; re-registered on 2026-12-06, before any of its runs, when the pretraining took the
authors' settings):

- the pretraining is the authors' where the demo allows (AUTHORS_SETTINGS: per-level batches, summed terms
  through exp(z/50), RMSprop 1e-4 with momentum 0.9 and weight decay 4e-5, lr x 0.9^(epoch+1) after each
  epoch, 5 pool images a step) on params.yaml's backbone, pool, epochs and variants;
- primary comparison, named before running: pretrain_no_kd against weights_no_kd, the paper's own (the
  backbone pretrained or from ImageNet, then fine-tuned on the ground truth alone); every other is
  exploratory, the KD rows among them;
- every row over the seeds of --seeds (by default 0-4). Seed s is the student's seed and, for a pretrained
  row, the pretraining's (its pool of good demo photos, held-out part, variants and training), and, for a
  row with 80 % of the labels, the retrained distiller's;
- the reference rows (weights_kd, weights_no_kd) are the KD comparison's runs, found in its store
  (scripts/kd_comparison.py); weights_kd's are trained again where their curves are missing (the KD
  comparison keeps test outputs only), which on one machine gives the same outputs;
- the controls (control_no_kd, control_kd) are pretrained only on distortions the demo's latent score does
  not use (CONTROL_DISTORTIONS, tint at darktable's strength): a gain they share measures pretraining as such,
  one they lack the overlap of the distortions with the demo's score;
- split.label_fraction 0.8 applies to the distiller (retrained per seed) and the student alike;
- each comparison: the paired difference with its 95 % interval over the test images and the seeds
  (iaakd.paired's seed-t), as in the KD comparison;
- curves: the validation EMD per epoch, averaged over seeds, and the first epoch at which pretrain_kd's
  curve reaches weights_kd's final value (">N" when it never does).

Pretrained backbones are kept in .work/results/pretraining/ by a fingerprint of their configuration, the
students' test outputs and curves in the shared run store; a rerun resumes. `python scripts/report.py`
puts the tables into the docs.

    python scripts/pretraining.py [--seeds 0 1 2 3 4] [--epochs N] [--pretrain-epochs N] [--fresh]
                                  [--out results/pretraining.json]
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from experiment import (
    RAN,
    DistillerRuns,
    History,
    Pipeline,
    RunOutputs,
    RunStore,
    StudentRuns,
    distiller_base,
    kept_json,
    parse_seeded,
    pipeline_inputs,
    require_reference_student,
    seeded_parser,
    write_results,
)
from kd_comparison import FOLDS, ReferenceRow, SeedRuns, took_since
from kd_comparison import STORE as KD_STORE

from iaakd.checkpoints import fingerprint
from iaakd.data.splits import with_label_fraction
from iaakd.pretrained import save_backbone
from iaakd.pretraining.train import PretrainConfig, pretrain_backbone, pretraining_preprocess
from iaakd.stages import common
from iaakd.stages.pretrain import pool_images, pretrain_config
from iaakd.student import KDConfig, StudentConfig

# Distortions the demo's latent score does not use (its factors: exposure, contrast, saturation, sharpness,
# noise, JPEG quality, tilt, placement): colour casts. Crops move the subject (placement), rotation is tilt.
CONTROL_DISTORTIONS = ("temperature", "tint")
PRETRAININGS = {"all": None, "control": list(CONTROL_DISTORTIONS)}  # name -> pretrain.distortions
# The authors' pretraining (presets/pfister.yaml) less what the demo cannot take: its backbone stays the
# student's (lite0, offline), 200 frozen steps would be all of the demo's ~100 steps, its 4 epochs and 8
# sampled variants stay params.yaml's
AUTHORS_SETTINGS = {"level_batches": True, "balance": "authors", "temperature": 50.0, "lr_decay": 0.9,
                    "optimiser": "rmsprop", "lr": 1e-4, "momentum": 0.9, "weight_decay": 4e-5,
                    "batch_size": 5}  # fmt: skip


@dataclass(frozen=True)
class Row(ReferenceRow):
    """One student configuration: params.yaml's student with this init, KD and share of labels."""

    name: str
    kd: bool
    pretraining: str | None = (
        None  # a key of PRETRAININGS (student.init=pretrain); None: student.init=weights
    )
    label_fraction: float = 1.0
    reference: str | None = None  # the KD comparison's arm whose runs this row is

    def own_key(self) -> dict:
        return {"name": self.name, "kd": self.kd, "pretraining": self.pretraining,
                "label_fraction": self.label_fraction}  # fmt: skip


ROWS = (
    Row("weights_kd", kd=True, reference="student_kd"),
    Row("weights_no_kd", kd=False, reference="student_no_kd"),
    Row("pretrain_no_kd", kd=False, pretraining="all"),
    Row("pretrain_kd", kd=True, pretraining="all"),
    Row("control_no_kd", kd=False, pretraining="control"),
    Row("control_kd", kd=True, pretraining="control"),
    Row("pretrain_kd_labels80", kd=True, pretraining="all", label_fraction=0.8),
    Row("weights_kd_labels80", kd=True, label_fraction=0.8),
)
# (A, B, primary): the difference A - B; the first is the one comparison named before running
COMPARISONS = (
    ("pretrain_no_kd", "weights_no_kd", True),  # the paper's own: fine-tuned on the ground truth alone
    ("pretrain_kd", "weights_kd", False),
    ("control_no_kd", "weights_no_kd", False),
    ("pretrain_no_kd", "control_no_kd", False),
    ("control_kd", "weights_kd", False),
    ("pretrain_kd", "control_kd", False),
    ("pretrain_kd_labels80", "weights_kd", False),  # the paper: 80 % of the labels match ImageNet's 100 %
    ("pretrain_kd_labels80", "weights_kd_labels80", False),
    ("weights_kd_labels80", "weights_kd", False),  # what withholding 20 % of the labels costs
)
CURVE_ROWS = ("weights_kd", "pretrain_kd")  # (reference, pretrained): the convergence comparison
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
REDUCED_LABELS = 0.8
STORE = common.WORK_DIR / "results" / "pretraining"


def protocol(seeds: list[int], pretrain: PretrainConfig) -> dict:
    """The protocol as the results file states it, fixed before any run."""
    return {
        "registered": "2026-12-06, before its runs",
        "primary": "pretrain_no_kd vs weights_no_kd",
        "exploratory": "every other comparison",
        "decision_rule": "pretraining is shown to help when the 95 % interval of SRCC(pretrain_no_kd) - "
        "SRCC(weights_no_kd) lies above 0, to hurt when it lies below; otherwise not resolved",
        "interval": "iaakd.paired seed-t",
        "seeds": seeds,
        "seed_means": "the student's seed, and the pretraining's and the 80 % distiller's where a row has them",
        "reference_rows": {row.name: row.reference for row in ROWS if row.reference},
        "control_distortions": list(CONTROL_DISTORTIONS),
        "pretrain": dataclasses.asdict(pretrain),
        "reduced_label_fraction": REDUCED_LABELS,
    }


class Pretrainings:
    """Backbones pretrained by distortion ranking, one per (PRETRAININGS key, seed), kept under ``root``."""

    def __init__(self, base: PretrainConfig, student: StudentConfig, root: Path, fresh: bool) -> None:
        self.base, self.student, self.root, self.fresh = base, student, root, fresh
        self.preprocess = pretraining_preprocess(base, student)
        self.accuracy: dict[str, dict[int, dict]] = {}  # name -> seed -> held-out pair accuracy, before/after

    def config(self, name: str, seed: int) -> PretrainConfig:
        return dataclasses.replace(self.base, seed=seed, distortions=PRETRAININGS[name])

    def checkpoint(self, name: str, seed: int) -> Path:
        """models/pretrain.pt's kind of file for pretraining ``name`` with ``seed``, trained when not kept."""
        config = self.config(name, seed)
        key = {"pretrain": dataclasses.asdict(config), "backbone": self.student.backbone,
               "weights": self.student.weights, "preprocess": self.preprocess.as_dict()}  # fmt: skip
        folder = self.root / "backbones" / fingerprint(key)
        path, accuracy_file = folder / "pretrain.pt", folder / "accuracy.json"
        if path.is_file() and accuracy_file.is_file() and not self.fresh:
            self.accuracy.setdefault(name, {})[seed] = json.loads(accuracy_file.read_text(encoding="utf-8"))
            return path
        print(f"--- pretraining '{name}', seed {seed}", flush=True)
        started = time.monotonic()
        pool, _ = pool_images(config)
        result = pretrain_backbone(config, self.student.backbone, self.student.weights, self.preprocess, pool,
                                   num_workers=common.num_workers_from_env(), progress=common.show_progress())  # fmt: skip
        accuracy = {"before": result.accuracy_before, "after": result.accuracy_after,
                    "minutes": (time.monotonic() - started) / 60}  # fmt: skip
        common.write_json(accuracy_file, accuracy)
        save_backbone(
            path, "pretrain", result.backbone, result.weights_source, {"config": dataclasses.asdict(config)}
        )
        RAN.append(("cpu", "fp32"))
        self.accuracy.setdefault(name, {})[seed] = json.loads(accuracy_file.read_text(encoding="utf-8"))
        print(f"    held-out pair accuracy {accuracy['before']['overall']['accuracy']:.3f} -> "
              f"{accuracy['after']['overall']['accuracy']:.3f} ({accuracy['minutes']:.1f} min)", flush=True)  # fmt: skip
        return path


class ReducedLabels:
    """Students on split.label_fraction 0.8 of the training labels: the distiller retrained on them (seed s
    for student seed s), built on first use."""

    def __init__(self, pipeline: Pipeline, epochs: int | None, root: Path) -> None:
        self.pipeline, self.epochs, self.root = pipeline, epochs, root
        seed = common.section(pipeline.params, "split").get("seed", 0)
        split = with_label_fraction(pipeline.frame[["image_id", "split"]], REDUCED_LABELS, seed)
        self.reduced = pipeline.with_split(split)
        self.runs: dict[int, StudentRuns] = {}
        self.teachers: dict[int, dict] = {}

    def for_seed(self, seed: int) -> StudentRuns:
        if seed not in self.runs:
            distillers = DistillerRuns(self.reduced)
            metrics, knowledge = distillers.teacher(distillers.backbones, seed)
            self.teachers[seed] = metrics
            self.runs[seed] = StudentRuns(self.reduced, self.epochs, knowledge)
        return self.runs[seed]

    def trained_teacher_metrics(self, seed: int) -> dict:
        self.for_seed(seed)
        return self.teachers[seed]

    def teacher_metrics(self, seed: int) -> dict:
        """The distiller of ``seed``'s test metrics, kept under ``root`` (a resumed run has them untrained)."""
        key = {"inputs": pipeline_inputs(), "distiller": dataclasses.asdict(distiller_base(self.pipeline.params)),
               "label_fraction": REDUCED_LABELS, "seed": seed}  # fmt: skip
        return kept_json(
            self.root / "teachers" / f"{fingerprint(key)}.json",
            partial(self.trained_teacher_metrics, seed),
        )


def curves(histories: dict[str, dict[int, History]]) -> dict:
    """Each curve row's validation EMD per epoch averaged over its seeds, and the first epoch at which the
    pretrained row's mean curve reaches the reference's final value (">N" when it never does)."""
    mean = {}
    for name in CURVE_ROWS:
        runs = [[row["val_loss"] for row in history] for history in histories.get(name, {}).values()]
        if runs:
            mean[name] = np.mean(np.array(runs, dtype=float), axis=0).tolist()
    reference, pretrained = CURVE_ROWS
    if reference not in mean or pretrained not in mean:
        return {"val_emd_mean": mean, "first_epoch_at_reference_final": None}
    target = mean[reference][-1]

    def first_epoch_at_target(curve: list[float]) -> int | str:
        reached = [epoch for epoch, value in enumerate(curve, start=1) if value <= target]
        return reached[0] if reached else f">{len(curve)}"

    return {
        "val_emd_mean": mean,
        "reference_final": target,
        "first_epoch_at_reference_final": first_epoch_at_target(mean[pretrained]),
        "reference_first_epoch_at_its_final": first_epoch_at_target(mean[reference]),  # for scale
        "seeds": {name: sorted(histories[name]) for name in CURVE_ROWS if name in histories},
    }


def main() -> None:
    parser = seeded_parser(__doc__, DEFAULT_SEEDS, Path("results/pretraining.json"))
    parser.add_argument(
        "--pretrain-epochs", type=int, default=None, help="override pretrain.epochs (smoke tests)"
    )
    args = parse_seeded(parser)

    pipeline = Pipeline.load()
    task = pipeline.task
    runs = StudentRuns(pipeline, args.epochs)
    base, test = runs.base, runs.test
    require_reference_student(base)
    pretrain = dataclasses.replace(pretrain_config(pipeline.params), **AUTHORS_SETTINGS)
    if args.pretrain_epochs:
        pretrain = dataclasses.replace(pretrain, epochs=args.pretrain_epochs)
    pretrainings = Pretrainings(pretrain, base, STORE, args.fresh)
    reduced = ReducedLabels(pipeline, args.epochs, STORE)
    # the KD comparison's store and signature: its reference runs are found, and these rows kept beside them
    distiller = dataclasses.replace(distiller_base(pipeline.params), out_of_fold=FOLDS)
    store = RunStore(
        KD_STORE, {"inputs": pipeline_inputs(), "distiller": dataclasses.asdict(distiller)}, args.fresh
    )

    def train_run(
        label_fraction: float, seed: int, config: StudentConfig, init_file: Path | None
    ) -> tuple[np.ndarray, History]:
        runner = (
            runs if label_fraction == 1.0 else reduced.for_seed(seed)
        )  # the 80 % distiller: only if trained
        return runner.test_output_and_curves(config, init_file)

    planned = {row.name: list(args.seeds) for row in ROWS}
    archive = RunOutputs(args.out)
    seed_runs = SeedRuns(pipeline, COMPARISONS, planned, "pretraining shown to help", archive)
    results = {
        "n_test": len(test),
        "n_train": len(runs.train.paths),
        "seeds": args.seeds,
        "student_config": dataclasses.asdict(base),
        "protocol": protocol(args.seeds, pretrain),
        "runs": {},
        "summary": {},
        "paired": [],
        "teacher_labels80": {},  # the distillers retrained on 80 % of the labels: test metrics by seed
        "complete": False,
    }
    histories: dict[str, dict[int, History]] = {}
    shape = (len(test), task.output_size)
    total, count = sum(map(len, planned.values())), 0
    for row in ROWS:
        for seed in planned[row.name]:
            count += 1
            print(f"--- {row.name}, seed {seed} ({count}/{total})", flush=True)
            started = time.monotonic()
            init = "weights" if row.pretraining is None else "pretrain"
            config = dataclasses.replace(
                base, seed=seed, kd=KDConfig(enabled=row.kd), init=init
            )  # as the KD comparison's
            init_file = None if row.pretraining is None else pretrainings.checkpoint(row.pretraining, seed)
            train = partial(train_run, row.label_fraction, seed, config, init_file)
            # what else made the run: its pretraining's configuration (the split is in the store's signature)
            extra = (
                None
                if row.pretraining is None
                else {"pretrain": dataclasses.asdict(pretrainings.config(row.pretraining, seed))}
            )
            stored = {"extra": extra, "reference": row.reference is not None}
            if row.name in CURVE_ROWS:
                rows, history, kept = store.get_with_history(row, seed, config, shape, train, **stored)
                histories.setdefault(row.name, {})[seed] = history
            else:
                rows, kept = store.get(row, seed, config, shape, lambda train=train: train()[0], **stored)
            seed_runs.add(row.name, seed, rows, took_since(started, kept))
            seed_runs.write_into(results)
            results["pretraining_accuracy"] = pretrainings.accuracy
            if row.label_fraction < 1:
                results["teacher_labels80"][seed] = reduced.teacher_metrics(seed)
            results["curves"] = curves(histories)
            results["curves_retrained_difference"] = store.curve_differences  # the kept rows stay the runs'
            results["complete"] = count == total
            write_results(args.out, results, archive)
    seed_runs.report()


if __name__ == "__main__":
    main()
