"""CSKD on the demo (Xu et al.): the student started from a backbone aligned to a frozen encoder
(student.init=align) or from ImageNet (weights), trained by KD on the labelled images alone or with the
unlabelled ones too (semi-supervised KD, student.unlabeled.enabled), beside no KD; with all the training
labels and with split.label_fraction 0.25.

Reads the pipeline's outputs (run `dvc repro` first). Every row is params.yaml's student, align and
unlabeled configurations with one change (ROWS); the protocol is fixed before the runs (README, "CSKD on
the demo"):

- primary comparison, named before running: q_weights_kd_unlabeled against q_weights_kd (25 % of the
  labels; semi-supervised KD against KD on the labelled images alone); every other is exploratory;
- every row over the seeds of --seeds (by default 0-2). Seed s is the student's and, where a row has them,
  the alignment's (held-out part, head, shuffling) and the 25 % distiller's. The withheld labels (split.seed)
  and the pool (unlabeled.seed) stay fixed;
- the unlabelled images: the pool (unlabeled.source=demo: params.yaml's num_images more demo images, no
  votes, copies of labelled images dropped) and, at 25 %, the training images whose labels are withheld;
  their knowledge from the distiller of the row's labels (the pipeline's at 100 %, retrained at 25 %);
- the alignment runs on the pool and the training split's images (the same at both label fractions: it reads
  no labels), one per seed;
- the reference rows (weights_kd, weights_no_kd) are the KD comparison's runs, found in its store;
- each comparison: the paired difference with its bootstrap 95 % interval over the test images and the
  seeds (iaakd.paired), as in the KD comparison.

The pool, its features, aligned backbones and the 25 % distillers' knowledge are kept under
.work/results/cskd/, the students' test outputs in the shared run store; a rerun resumes.

    python scripts/cskd.py [--seeds 0 1 2] [--epochs N] [--align-epochs N] [--fresh] [--out results/cskd.json]
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from experiment import (
    RAN,
    DistillerRuns,
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
    student_base,
    write_results,
)
from kd_comparison import FOLDS, ReferenceRow, SeedRuns, took_since
from kd_comparison import STORE as KD_STORE

from iaakd.align import AlignConfig, align_backbone, student_input
from iaakd.checkpoints import fingerprint
from iaakd.data.copies import embedding_cache_file
from iaakd.data.pool import PoolConfig, demo_pool, read_manifest, write_manifest
from iaakd.data.splits import with_label_fraction
from iaakd.feature_rows import build_feature_matrix
from iaakd.models import Distiller
from iaakd.pretrained import save_backbone
from iaakd.stages import common
from iaakd.stages.align import align_config
from iaakd.stages.extract import extract_pool
from iaakd.stages.pool import labelled_images, pool_config
from iaakd.student import KDConfig, StudentConfig, StudentData
from iaakd.teacher import iter_knowledge, load_distiller

LOW_LABELS = 0.25
DEFAULT_SEEDS = (0, 1, 2)
STORE = common.WORK_DIR / "results" / "cskd"


@dataclass(frozen=True)
class Row(ReferenceRow):
    """One student configuration: params.yaml's student with this init, KD, unlabelled images and labels."""

    name: str
    kd: bool
    init: str = "weights"  # weights (ImageNet) | align
    unlabeled: bool = False  # semi-supervised KD on the unlabelled images
    label_fraction: float = 1.0
    reference: str | None = None  # the KD comparison's arm whose runs this row is

    def own_key(self) -> dict:
        return {"script": "cskd", **dataclasses.asdict(self)}


ROWS = (
    Row("weights_kd", kd=True, reference="student_kd"),
    Row("weights_no_kd", kd=False, reference="student_no_kd"),
    Row("weights_kd_pool", kd=True, unlabeled=True),
    Row("align_kd", kd=True, init="align"),
    Row("align_kd_pool", kd=True, init="align", unlabeled=True),
    Row("q_weights_no_kd", kd=False, label_fraction=LOW_LABELS),
    Row("q_weights_kd", kd=True, label_fraction=LOW_LABELS),
    Row("q_weights_kd_unlabeled", kd=True, unlabeled=True, label_fraction=LOW_LABELS),
    Row("q_align_kd", kd=True, init="align", label_fraction=LOW_LABELS),
    Row("q_align_kd_unlabeled", kd=True, init="align", unlabeled=True, label_fraction=LOW_LABELS),
)
# (A, B, primary): the difference A - B; the first is the one comparison named before running
COMPARISONS = (
    ("q_weights_kd_unlabeled", "q_weights_kd", True),
    ("q_weights_kd", "q_weights_no_kd", False),
    ("q_align_kd", "q_weights_kd", False),
    ("q_align_kd_unlabeled", "q_weights_kd_unlabeled", False),
    ("q_align_kd_unlabeled", "q_weights_no_kd", False),
    ("q_weights_kd_unlabeled", "weights_kd", False),  # how much of 100 % labels' result 25 % recovers
    ("weights_kd_pool", "weights_kd", False),
    ("align_kd", "weights_kd", False),
    ("align_kd_pool", "weights_kd_pool", False),
    ("align_kd_pool", "weights_no_kd", False),
)


def protocol(seeds: list[int], pool: PoolConfig, align: AlignConfig) -> dict:
    """The protocol as the results file states it, fixed before any run."""
    return {
        "primary": "q_weights_kd_unlabeled vs q_weights_kd",
        "exploratory": "every other comparison",
        "decision_rule": "semi-supervised KD is shown to help with 25 % of the labels when the 95 % interval "
        "of SRCC(q_weights_kd_unlabeled) - SRCC(q_weights_kd) lies above 0",
        "seeds": seeds,
        "seed_means": "the student's seed, and the alignment's and the 25 % distiller's where a row has them",
        "reference_rows": {row.name: row.reference for row in ROWS if row.reference},
        "low_label_fraction": LOW_LABELS,
        "pool": dataclasses.asdict(pool),
        "align": dataclasses.asdict(align),
    }


@dataclass
class DemoPool:
    """The unlabelled pool of the experiment (kept under STORE/pool) and its features as a row matrix."""

    manifest: pd.DataFrame
    counts: dict
    features: object  # FeatureMatrix of the distiller's backbones, in the manifest's order
    key: str  # what made it: a fingerprint of its configuration and the labelled images it excludes

    @classmethod
    def made(cls, config: PoolConfig, params: dict, backbones: list[str], root: Path) -> DemoPool:
        key = {"pool": dataclasses.asdict(config), "inputs": pipeline_inputs()}
        folder = root / "pool" / fingerprint(key)
        manifest_file, counts_file = folder / "manifest.parquet", folder / "counts.json"
        if not manifest_file.is_file():  # made whole, then the manifest written last
            print(f"--- the pool: {config.num_images} demo images", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
            pool = demo_pool(config, labelled_images(), folder / "images", embedding_cache=embedding_cache_file(folder),
                             progress=common.show_progress())  # fmt: skip
            common.write_json(counts_file, pool.counts)
            write_manifest(pool.manifest, manifest_file)
        manifest = read_manifest(manifest_file)
        if manifest.empty:
            raise common.UserError(f"{manifest_file}: the pool kept none of its {config.num_images} images "
                                   f"(see {counts_file})")  # fmt: skip
        enabled = {**params, "student": {**params["student"], "unlabeled": {"enabled": True}}}
        features_dir = folder / "features"
        for backbone in backbones:
            if not (features_dir / backbone).is_dir():
                print(f"--- the pool's features: {backbone}", flush=True)
                extract_pool(backbone, enabled, manifest_file, features_dir)
        matrix, _ = build_feature_matrix([features_dir / b for b in backbones], manifest["image_id"].tolist(),
                                         folder / "rows")  # fmt: skip
        counts = json.loads(counts_file.read_text(encoding="utf-8"))
        return cls(manifest, counts, matrix, folder.name)


def unlabeled_data(paths: list[str], distiller: Distiller, features) -> StudentData:
    """Images without labels for semi-supervised KD: their paths and the distiller's knowledge of them."""
    outputs, teacher_features = zip(*iter_knowledge(distiller, features), strict=True)
    return StudentData(paths, np.zeros((len(paths), 0), np.float32), np.concatenate(outputs),
                       np.concatenate(teacher_features))  # fmt: skip


class Alignments:
    """Backbones aligned to the frozen encoder, one per seed, on the pool and the training split's images;
    kept under ``root``."""

    def __init__(
        self, base: AlignConfig, student: StudentConfig, paths: list[str], root: Path, fresh: bool
    ) -> None:
        self.base, self.student, self.paths, self.root, self.fresh = base, student, paths, root, fresh
        self.preprocess = student_input(student.backbone, base.input_size or student.input_size,
                                        student.resize_filter)  # fmt: skip
        self.cosines: dict[int, dict] = {}  # seed -> held-out cosine (start, before, after)

    def key(self, seed: int) -> str:
        """A fingerprint of everything that makes the alignment of ``seed``: its configuration, the student's
        backbone, weights and input, and the images."""
        config = dataclasses.replace(self.base, seed=seed)
        key = {"align": dataclasses.asdict(config), "backbone": self.student.backbone,
               "weights": self.student.weights, "preprocess": self.preprocess.as_dict()}  # fmt: skip
        return fingerprint(key, self.paths)

    def checkpoint(self, seed: int) -> Path:
        config = dataclasses.replace(self.base, seed=seed)
        folder = self.root / "align" / self.key(seed)
        path, cosine_file = folder / "align.pt", folder / "cosine.json"
        if not (path.is_file() and cosine_file.is_file()) or self.fresh:
            print(f"--- alignment, seed {seed} ({len(self.paths)} images)", flush=True)
            started = time.monotonic()
            result = align_backbone(config, self.student.backbone, self.student.weights, self.preprocess,
                                    self.paths, num_workers=common.num_workers_from_env(),
                                    progress=common.show_progress())  # fmt: skip
            cosine = {**result.metrics["held_out_cosine"], "minutes": (time.monotonic() - started) / 60}
            save_backbone(
                path, "align", result.backbone, result.weights_source, {"config": dataclasses.asdict(config)}
            )
            common.write_json(cosine_file, cosine)
            RAN.add(("cpu", "fp32"))
            print(f"    held-out cosine {cosine['before']:.3f} -> {cosine['after']:.3f} "
                  f"({cosine['minutes']:.1f} min)", flush=True)  # fmt: skip
        self.cosines[seed] = json.loads(cosine_file.read_text(encoding="utf-8"))
        return path


class Students:
    """Student runners per (label fraction, seed): the pipeline's teacher at 100 % of the labels, a distiller
    retrained with the seed at 25 %; each with its unlabelled images (built on first use)."""

    def __init__(self, pipeline: Pipeline, pool: DemoPool, epochs: int | None, root: Path) -> None:
        self.pipeline, self.pool, self.epochs, self.root = pipeline, pool, epochs, root
        seed = common.section(pipeline.params, "split").get("seed", 0)
        split = with_label_fraction(pipeline.frame[["image_id", "split"]], LOW_LABELS, seed)
        self.low = pipeline.with_split(split)
        self.runners: dict[tuple[float, int, bool], StudentRuns] = {}
        self.teachers: dict[int, dict] = {}  # seed -> the 25 % distiller's test metrics

    def runner(self, row: Row, seed: int) -> StudentRuns:
        if row.label_fraction == 1.0:
            key = (1.0, 0, row.unlabeled)
            if key not in self.runners:
                distiller, _ = load_distiller(common.DISTILLER_MODEL)
                pool = unlabeled_data(self.pool.manifest["path"].tolist(), distiller, self.pool.features)
                self.runners[(1.0, 0, False)] = StudentRuns(self.pipeline, self.epochs)
                self.runners[(1.0, 0, True)] = StudentRuns(self.pipeline, self.epochs, unlabeled=pool)
            return self.runners[key]
        key = (LOW_LABELS, seed, row.unlabeled)
        if key not in self.runners:
            distillers = DistillerRuns(self.low)
            metrics, knowledge, distiller = distillers.teacher_and_model(distillers.backbones, seed)
            self.teachers[seed] = metrics
            withheld = self.low.frame[self.low.frame["split"] == "unlabeled"]
            output, feature = knowledge(withheld["image_id"].tolist())
            pool = unlabeled_data(self.pool.manifest["path"].tolist(), distiller, self.pool.features)
            unlabeled = StudentData(
                withheld["path"].tolist() + pool.paths, np.zeros((len(withheld) + len(pool.paths), 0), np.float32),
                np.concatenate([output, pool.teacher_output]), np.concatenate([feature, pool.teacher_feature]),
            )  # fmt: skip
            self.runners[(LOW_LABELS, seed, False)] = StudentRuns(self.low, self.epochs, knowledge)
            self.runners[(LOW_LABELS, seed, True)] = StudentRuns(self.low, self.epochs, knowledge, unlabeled)
        return self.runners[key]

    def trained_teacher_metrics(self, seed: int) -> dict:
        self.runner(Row("teacher", kd=True, label_fraction=LOW_LABELS), seed)  # trains the 25 % distiller
        return self.teachers[seed]

    def teacher_metrics(self, seed: int) -> dict:
        """The 25 % distiller of ``seed``'s test metrics, kept under ``root`` (a resumed run has them untrained)."""
        key = {"inputs": pipeline_inputs(), "distiller": dataclasses.asdict(distiller_base(self.pipeline.params)),
               "label_fraction": LOW_LABELS, "seed": seed}  # fmt: skip
        return kept_json(
            self.root / "teachers" / f"{fingerprint(key)}.json",
            partial(self.trained_teacher_metrics, seed),
        )


def main() -> None:
    parser = seeded_parser(__doc__, DEFAULT_SEEDS, Path("results/cskd.json"))
    parser.add_argument("--align-epochs", type=int, default=None, help="override align.epochs (smoke tests)")
    args = parse_seeded(parser)

    pipeline = Pipeline.load()
    task, params = pipeline.task, pipeline.params
    base = student_base(params, args.epochs)  # the student runners are built where a row needs one
    require_reference_student(base)
    test = pipeline.part("test")
    pool_settings = dataclasses.replace(pool_config(params), source="demo")
    align = align_config(params)
    if args.align_epochs:
        align = dataclasses.replace(
            align, epochs=args.align_epochs, frozen_epochs=min(align.frozen_epochs, 1)
        )
    backbones = common.section(params, "distiller")["backbones"]
    pool = DemoPool.made(pool_settings, params, backbones, STORE)
    training_paths = pipeline.frame.loc[pipeline.frame["split"].isin(["train", "unlabeled"]), "path"].tolist()
    alignments = Alignments(align, base, list(dict.fromkeys(pool.manifest["path"].tolist() + training_paths)),
                            STORE, args.fresh)  # fmt: skip
    students = Students(pipeline, pool, args.epochs, STORE)
    distiller = dataclasses.replace(
        distiller_base(params), out_of_fold=FOLDS
    )  # the KD comparison's signature
    store = RunStore(
        KD_STORE, {"inputs": pipeline_inputs(), "distiller": dataclasses.asdict(distiller)}, args.fresh
    )

    planned = {row.name: list(args.seeds) for row in ROWS}
    archive = RunOutputs(args.out)
    seed_runs = SeedRuns(
        pipeline, COMPARISONS, planned, "semi-supervised KD shown to help with 25 % of the labels", archive
    )
    results = {
        "n_test": len(test),
        "n_train": int((pipeline.frame["split"] == "train").sum()),
        "n_train_labelled_low": int((students.low.frame["split"] == "train").sum()),
        "pool": pool.counts,
        "seeds": args.seeds,
        "student_config": dataclasses.asdict(base),
        "protocol": protocol(args.seeds, pool_settings, align),
        "runs": {},
        "summary": {},
        "paired": [],
        "teacher_low_labels": {},  # the distillers retrained on 25 % of the labels: test metrics by seed
        "complete": False,
    }
    shape = (len(test), task.output_size)
    total, count = sum(map(len, planned.values())), 0
    for row in ROWS:
        for seed in planned[row.name]:
            count += 1
            print(f"--- {row.name}, seed {seed} ({count}/{total})", flush=True)
            started = time.monotonic()
            config = dataclasses.replace(
                base, seed=seed, kd=KDConfig(enabled=row.kd), init=row.init,
                unlabeled=dataclasses.replace(base.unlabeled, enabled=row.unlabeled),
            )  # fmt: skip
            if row.reference is not None:  # the KD comparison's arm: params.yaml's student with its KD
                config = dataclasses.replace(base, seed=seed, kd=KDConfig(enabled=row.kd))
            init_file = alignments.checkpoint(seed) if row.init == "align" else None
            extra = {  # what else made the run (the split is in the store's signature)
                **({"align": alignments.key(seed)} if row.init == "align" else {}),
                **({"pool": pool.key} if row.unlabeled or row.init == "align" else {}),
            }

            def train(row: Row = row, seed: int = seed, config: StudentConfig = config,
                      init_file: Path | None = init_file) -> np.ndarray:  # fmt: skip
                return students.runner(row, seed).test_output_and_curves(config, init_file)[0]

            rows, kept = store.get(
                row, seed, config, shape, train, extra=extra, reference=row.reference is not None
            )
            seed_runs.add(row.name, seed, rows, took_since(started, kept))
            seed_runs.write_into(results)
            results["align_cosine"] = alignments.cosines
            if row.label_fraction < 1:
                results["teacher_low_labels"][seed] = students.teacher_metrics(seed)
            results["complete"] = count == total
            write_results(args.out, results)
            archive.write()
    seed_runs.report()


if __name__ == "__main__":
    main()
