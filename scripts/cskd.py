"""CSKD on the demo (Xu et al.): the student started from a backbone aligned to a frozen encoder
(student.init=align) or from ImageNet (weights), trained by KD on the labelled images alone or with the
unlabelled ones too (semi-supervised KD, student.unlabeled.enabled), beside no KD; the teacher with or
without the aligned backbone among its own (align.teacher: the paper's aligned encoder serves "both student
and teacher"); with all the training labels and with split.label_fraction 0.25.

Reads the pipeline's outputs (run `dvc repro` first). Every row is params.yaml's student, align and
unlabeled configurations with one change (ROWS); the protocol is fixed before the runs (docs, "CSKD on
the demo"):

- the teacher: a distiller on the features of params.yaml's distiller backbones less the alignment's encoder
  (on the demo lite0 + lite1; lite2 is the encoder), so that the encoder is none of the teacher's backbones,
  retrained with each seed at each label fraction; with the aligned backbone's features too where a row's
  teacher is aligned;
- primary comparison, named before running: q_weights_kd_unlabeled against q_weights_kd (25 % of the
  labels; semi-supervised KD against KD on the labelled images alone); every other is exploratory;
- the rows at 25 % over every seed of --seeds (by default 0-4), the rows at 100 % over the first three. Seed s
  is the student's, the distiller's and, where a row has one, the alignment's (held-out part, head, shuffling).
  The withheld labels (split.seed) and the pool (unlabeled.seed) stay fixed;
- the unlabelled images: the pool (unlabeled.source=demo: params.yaml's num_images more demo images, no
  votes, copies of labelled images dropped) and, at 25 %, the training images whose labels are withheld;
  their knowledge from the distiller of the row's labels and seed;
- the alignment runs on the pool and the training split's images (the same at both label fractions: it reads
  no labels), one per seed;
- the one reference row (weights_no_kd) is the KD comparison's runs, found in its store: it has no teacher;
- each comparison: the paired difference with its 95 % interval over the test images and the seeds
  (iaakd.paired), as in the KD comparison.

The pool, its features, aligned backbones and their features, and the distillers' test metrics are kept
under .work/results/cskd/, the students' test outputs in the shared run store; a rerun resumes.

    python scripts/cskd.py [--seeds 0 1 2 3 4] [--epochs N] [--align-epochs N] [--fresh] [--out results/cskd.json]
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from kd_comparison import EXPLORATORY_SEEDS, FOLDS, ReferenceRow, SeedRuns, took_since
from kd_comparison import STORE as KD_STORE

from iaakd.align import AlignConfig, align_backbone, student_input
from iaakd.checkpoints import fingerprint
from iaakd.data.copies import embedding_cache_file
from iaakd.data.pool import PoolConfig, demo_pool, read_manifest, write_manifest
from iaakd.data.splits import with_label_fraction
from iaakd.feature_rows import FeatureMatrix, build_feature_matrix
from iaakd.models import Distiller
from iaakd.pretrained import save_backbone
from iaakd.stages import common
from iaakd.stages.align import align_config
from iaakd.stages.extract import extract_pool, extraction_settings
from iaakd.stages.extract_align import extract_aligned
from iaakd.stages.pool import labelled_images, pool_config
from iaakd.student import KDConfig, StudentConfig, StudentData
from iaakd.teacher import iter_knowledge

LOW_LABELS = 0.25
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
STORE = common.WORK_DIR / "results" / "cskd"


@dataclass(frozen=True)
class Row(ReferenceRow):
    """One student configuration: params.yaml's student with this init, KD, unlabelled images, labels and
    teacher."""

    name: str
    kd: bool
    init: str = "weights"  # weights (ImageNet) | align
    unlabeled: bool = False  # semi-supervised KD on the unlabelled images
    label_fraction: float = 1.0
    aligned_teacher: bool = False  # the distiller on the aligned backbone's features too (align.teacher)
    reference: str | None = None  # the KD comparison's arm whose runs this row is

    def own_key(self) -> dict:
        return {"script": "cskd", **dataclasses.asdict(self)}

    @property
    def headline(self) -> bool:
        """A row of the primary's label fraction: every seed of --seeds; else the first EXPLORATORY_SEEDS."""
        return self.label_fraction == LOW_LABELS


ROWS = (
    Row("weights_kd", kd=True),
    Row("weights_no_kd", kd=False, reference="student_no_kd"),
    Row("weights_kd_pool", kd=True, unlabeled=True),
    Row("align_kd_pool", kd=True, init="align", unlabeled=True),
    Row("both_kd_pool", kd=True, init="align", unlabeled=True, aligned_teacher=True),
    Row("q_weights_no_kd", kd=False, label_fraction=LOW_LABELS),
    Row("q_weights_kd", kd=True, label_fraction=LOW_LABELS),
    Row("q_weights_kd_unlabeled", kd=True, unlabeled=True, label_fraction=LOW_LABELS),
    Row("q_align_kd", kd=True, init="align", label_fraction=LOW_LABELS),
    Row("q_align_kd_unlabeled", kd=True, init="align", unlabeled=True, label_fraction=LOW_LABELS),
    Row("q_both_kd", kd=True, init="align", aligned_teacher=True, label_fraction=LOW_LABELS),
    Row(
        "q_both_kd_unlabeled",
        kd=True,
        init="align",
        unlabeled=True,
        aligned_teacher=True,
        label_fraction=LOW_LABELS,
    ),  # fmt: skip
)
# (A, B, primary): the difference A - B; the first is the one comparison named before running
COMPARISONS = (
    ("q_weights_kd_unlabeled", "q_weights_kd", True),
    ("q_weights_kd", "q_weights_no_kd", False),
    ("q_align_kd", "q_weights_kd", False),  # the student aligned
    ("q_align_kd_unlabeled", "q_weights_kd_unlabeled", False),
    ("q_both_kd", "q_align_kd", False),  # the teacher aligned too, against the student alone aligned
    ("q_both_kd_unlabeled", "q_align_kd_unlabeled", False),
    ("q_both_kd_unlabeled", "q_weights_no_kd", False),  # both phases, teacher and student, against no KD
    ("q_weights_kd_unlabeled", "weights_kd", False),  # how much of 100 % labels' result 25 % recovers
    ("weights_kd", "weights_no_kd", False),
    ("weights_kd_pool", "weights_kd", False),
    ("align_kd_pool", "weights_kd_pool", False),
    ("both_kd_pool", "align_kd_pool", False),
)


def seeds_of(row: Row, seeds: Sequence[int]) -> list[int]:
    return list(seeds) if row.headline else list(seeds[:EXPLORATORY_SEEDS])


def teacher_backbones(params: dict, encoder: str) -> list[str]:
    """The CSKD teacher's backbones: params.yaml's distiller backbones less the alignment's ``encoder``, so
    that an aligned row never measures more distillation from the encoder itself; none left is one line."""
    backbones = [name for name in common.section(params, "distiller")["backbones"] if name != encoder]
    common.require(backbones, f"params: distiller.backbones has no backbone besides align.encoder '{encoder}': "
                   "CSKD's teacher must not be the encoder alone")  # fmt: skip
    return backbones


def protocol(seeds: dict[str, list[int]], pool: PoolConfig, align: AlignConfig, backbones: list[str]) -> dict:
    """The protocol as the results file states it, fixed before any run."""
    return {
        "primary": "q_weights_kd_unlabeled vs q_weights_kd",
        "exploratory": "every other comparison",
        "decision_rule": "semi-supervised KD is shown to help with 25 % of the labels when the 95 % interval "
        "of SRCC(q_weights_kd_unlabeled) - SRCC(q_weights_kd) lies above 0",
        "seeds": seeds,
        "seed_means": "the student's seed, the distiller's, and the alignment's where a row has one",
        "teacher_backbones": backbones,
        "aligned_teacher": "the distiller on the teacher backbones' features and the aligned backbone's",
        "reference_rows": {row.name: row.reference for row in ROWS if row.reference},
        "low_label_fraction": LOW_LABELS,
        "pool": dataclasses.asdict(pool),
        "align": dataclasses.asdict(align),
    }


@dataclass
class DemoPool:
    """The unlabelled pool of the experiment (kept under STORE/pool) and its features."""

    manifest_file: Path
    manifest: pd.DataFrame
    counts: dict
    features_dir: Path  # one folder per teacher backbone
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
        features_dir = folder / "features"
        for backbone in backbones:
            if not (features_dir / backbone).is_dir():
                print(f"--- the pool's features: {backbone}", flush=True)
                extract_pool(backbone, with_pool(params), manifest_file, features_dir)
        counts = json.loads(counts_file.read_text(encoding="utf-8"))
        return cls(manifest_file, manifest, counts, features_dir, folder.name)

    def matrix(self, backbones: list[str], extra: Sequence[Path] = ()) -> FeatureMatrix:
        """The features of ``backbones`` (then of the folders ``extra``) for every pool image, as a row matrix."""
        folders = [self.features_dir / backbone for backbone in backbones] + list(extra)
        return build_feature_matrix(folders, self.manifest["image_id"].tolist(), rows_folder(folders))[0]


def rows_folder(folders: Sequence[Path]) -> Path:
    """Where the row matrix of ``folders``' features is kept: a folder of its own, since one matrix is kept
    per folder (feature_rows.build_row_matrix) and the teachers of this script read several."""
    return STORE / "rows" / fingerprint({"folders": [str(folder) for folder in folders]})


def with_pool(params: dict) -> dict:
    """params.yaml with the student on the pool (student.unlabeled.enabled), for the pool's extraction."""
    return {**params, "student": {**params["student"], "unlabeled": {"enabled": True}}}


def unlabeled_data(paths: list[str], distiller: Distiller, features: FeatureMatrix) -> StudentData:
    """Images without labels for semi-supervised KD: their paths and the distiller's knowledge of them."""
    outputs, teacher_features = zip(*iter_knowledge(distiller, features), strict=True)
    return StudentData(paths, np.zeros((len(paths), 0), np.float32), np.concatenate(outputs),
                       np.concatenate(teacher_features))  # fmt: skip


class Alignments:
    """Backbones aligned to the frozen encoder, one per seed, on the pool and the training split's images,
    and their MLSP features of the labelled and the pool images (for an aligned teacher); kept under
    ``root``."""

    def __init__(self, base: AlignConfig, student: StudentConfig, paths: list[str], pool: DemoPool,
                 params: dict, root: Path, fresh: bool) -> None:  # fmt: skip
        self.base, self.student, self.paths, self.pool, self.params = base, student, paths, pool, params
        self.root, self.fresh = root, fresh
        self.preprocess = student_input(student.backbone, base.input_size or student.input_size,
                                        student.resize_filter)  # fmt: skip
        self.cosines: dict[int, dict] = {}  # seed -> held-out cosine (start, before, after)
        self.made: set[int] = set()  # seeds aligned (with --fresh: again) by this process

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
        if not (path.is_file() and cosine_file.is_file()) or (self.fresh and seed not in self.made):
            print(f"--- alignment, seed {seed} ({len(self.paths)} images)", flush=True)
            shutil.rmtree(folder, ignore_errors=True)  # its features too: they were another backbone's
            started = time.monotonic()
            result = align_backbone(config, self.student.backbone, self.student.weights, self.preprocess,
                                    self.paths, num_workers=common.num_workers_from_env(),
                                    progress=common.show_progress())  # fmt: skip
            cosine = {**result.metrics["held_out_cosine"], "minutes": (time.monotonic() - started) / 60}
            save_backbone(
                path, "align", result.backbone, result.weights_source, {"config": dataclasses.asdict(config)}
            )
            common.write_json(cosine_file, cosine)
            RAN.append(("cpu", "fp32"))
            print(f"    held-out cosine {cosine['before']:.3f} -> {cosine['after']:.3f} "
                  f"({cosine['minutes']:.1f} min)", flush=True)  # fmt: skip
        self.made.add(seed)
        self.cosines[seed] = json.loads(cosine_file.read_text(encoding="utf-8"))
        return path

    def features(self, seed: int) -> tuple[Path, Path]:
        """The aligned backbone of ``seed``'s features: (labelled images' folder, pool images' folder), each
        written whole by extract_align's code, under a name that covers params.yaml's ``features`` settings,
        the labelled images (the pipeline's inputs) and the pool."""
        checkpoint = self.checkpoint(seed)
        settings = extraction_settings(self.params, self.student.backbone, str(checkpoint))
        key = {"features": [dataclasses.asdict(settings[0]), settings[1]], "inputs": pipeline_inputs(),
               "pool": self.pool.key}  # fmt: skip
        folder = checkpoint.parent / f"features-{fingerprint(key)}"
        folders = (folder / "labelled", folder / "pool")
        if not all(part.is_dir() for part in folders):
            print(f"--- the aligned backbone's features, seed {seed}", flush=True)
            extract_aligned(with_pool(self.params), checkpoint, folders, self.pool.manifest_file,
                            folder / "extract")  # fmt: skip
        return folders


@dataclass
class Teacher:
    """A distiller of one label fraction and seed: its test metrics, its knowledge of the labelled images, and
    the unlabelled images with its knowledge of them."""

    metrics: dict
    knowledge: Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
    unlabeled: Callable[[], StudentData]


class Students:
    """Student runners per (label fraction, seed, aligned teacher, unlabelled images): each on its own
    distiller (``backbones``' features, and the seed's aligned backbone's for an aligned teacher), trained
    with the seed on the labels of its fraction (built on first use)."""

    def __init__(self, pipeline: Pipeline, pool: DemoPool, alignments: Alignments, backbones: list[str],
                 epochs: int | None, fresh: bool) -> None:  # fmt: skip
        self.pool, self.alignments, self.backbones = pool, alignments, backbones
        self.epochs, self.fresh = epochs, fresh
        seed = common.section(pipeline.params, "split").get("seed", 0)
        low = pipeline.with_split(
            with_label_fraction(pipeline.frame[["image_id", "split"]], LOW_LABELS, seed)
        )
        self.pipelines = {1.0: pipeline, LOW_LABELS: low}
        self.teachers: dict[tuple[float, int, bool], Teacher] = {}
        self.runners: dict[tuple[float, int, bool, bool], StudentRuns] = {}

    def runner(self, row: Row, seed: int) -> StudentRuns:
        key = (row.label_fraction, seed, row.aligned_teacher, row.unlabeled)
        if key not in self.runners:
            pipeline, teacher = self.pipelines[row.label_fraction], self.teacher(*key[:3])
            unlabeled = teacher.unlabeled() if row.unlabeled else None
            self.runners[key] = StudentRuns(pipeline, self.epochs, teacher.knowledge, unlabeled)
        return self.runners[key]

    def teacher(self, fraction: float, seed: int, aligned: bool) -> Teacher:
        key = (fraction, seed, aligned)
        if key not in self.teachers:
            pipeline = self.pipelines[fraction]
            labelled, pooled = self.alignments.features(seed) if aligned else (None, None)
            extra = [labelled] if aligned else []
            folders = [pipeline.tables.features / backbone for backbone in self.backbones] + extra
            metrics, knowledge, distiller = DistillerRuns(pipeline).teacher_and_model(
                self.backbones, seed, extra, rows_folder(folders)
            )

            def unlabeled() -> StudentData:
                """The withheld training images (none at 100 %) and the pool, with this distiller's knowledge."""
                withheld = pipeline.frame[pipeline.frame["split"] == "unlabeled"]
                output, feature = knowledge(withheld["image_id"].tolist())
                matrix = self.pool.matrix(self.backbones, [pooled] if aligned else [])
                pool = unlabeled_data(self.pool.manifest["path"].tolist(), distiller, matrix)
                return StudentData(
                    withheld["path"].tolist() + pool.paths, np.zeros((len(withheld) + len(pool.paths), 0), np.float32),
                    np.concatenate([output, pool.teacher_output]), np.concatenate([feature, pool.teacher_feature]),
                )  # fmt: skip

            self.teachers[key] = Teacher(metrics, knowledge, unlabeled)
        return self.teachers[key]

    def teacher_metrics(self, fraction: float, seed: int, aligned: bool) -> dict:
        """The test metrics of that distiller, kept under STORE (a resumed run has them untrained; with
        --fresh, those of the distiller this process trains, kept in their place)."""
        distiller = dataclasses.asdict(distiller_base(self.pipelines[fraction].params))
        key = {"inputs": pipeline_inputs(), "distiller": distiller, "backbones": self.backbones,
               "label_fraction": fraction, "seed": seed,
               "aligned": self.alignments.key(seed) if aligned else None}  # fmt: skip
        path = STORE / "teachers" / f"{fingerprint(key)}.json"
        if self.fresh:
            common.write_json(path, self.teacher(fraction, seed, aligned).metrics)
        return kept_json(path, lambda: self.teacher(fraction, seed, aligned).metrics)


def teacher_name(row: Row) -> str:
    """The results file's name for a row's kind of distiller: its label fraction, and whether aligned."""
    return f"{row.label_fraction:g}" + (" aligned" if row.aligned_teacher else "")


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
    backbones = teacher_backbones(params, align.encoder)
    pool = DemoPool.made(pool_settings, params, backbones, STORE)
    training_paths = pipeline.frame.loc[pipeline.frame["split"].isin(["train", "unlabeled"]), "path"].tolist()
    alignments = Alignments(align, base, list(dict.fromkeys(pool.manifest["path"].tolist() + training_paths)),
                            pool, params, STORE, args.fresh)  # fmt: skip
    students = Students(pipeline, pool, alignments, backbones, args.epochs, args.fresh)
    distiller = dataclasses.replace(
        distiller_base(params), out_of_fold=FOLDS
    )  # the KD comparison's signature
    store = RunStore(
        KD_STORE, {"inputs": pipeline_inputs(), "distiller": dataclasses.asdict(distiller)}, args.fresh
    )

    planned = {row.name: seeds_of(row, args.seeds) for row in ROWS}
    archive = RunOutputs(args.out)
    seed_runs = SeedRuns(
        pipeline, COMPARISONS, planned, "semi-supervised KD shown to help with 25 % of the labels", archive
    )
    results = {
        "n_test": len(test),
        "n_train": int((pipeline.frame["split"] == "train").sum()),
        "n_train_labelled_low": int((students.pipelines[LOW_LABELS].frame["split"] == "train").sum()),
        "pool": pool.counts,
        "seeds": args.seeds,
        "student_config": dataclasses.asdict(base),
        "protocol": protocol(planned, pool_settings, align, backbones),
        "runs": {},
        "summary": {},
        "paired": [],
        "teachers": {},  # each kind of distiller (label fraction, aligned): test metrics by seed
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
            aligned = row.init == "align" or row.aligned_teacher
            init_file = alignments.checkpoint(seed) if row.init == "align" else None
            extra = None
            if row.reference is None:  # what else made the run (the split is in the store's signature)
                extra = {
                    "teacher": backbones,
                    **({"align": alignments.key(seed)} if aligned else {}),
                    **({"pool": pool.key} if row.unlabeled or aligned else {}),
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
            if row.reference is None:
                metrics = students.teacher_metrics(row.label_fraction, seed, row.aligned_teacher)
                results["teachers"].setdefault(teacher_name(row), {})[seed] = metrics
            results["complete"] = count == total
            write_results(args.out, results, archive)
    seed_runs.report()


if __name__ == "__main__":
    main()
