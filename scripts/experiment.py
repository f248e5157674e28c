"""What the result scripts share: the pipeline's outputs read once (labels, split, teacher knowledge,
features), a student or a distiller trained on them with a changed configuration, and its metrics on the
test split. Run `dvc repro` first; params.yaml's configurations are the starting point."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml

from iaakd.atomic import atomic_path
from iaakd.checkpoints import fingerprint
from iaakd.costs import gmacs
from iaakd.data.tables import Knowledge, PipelineTables, ground_truth, has_tags, tags, targets
from iaakd.feature_rows import RowSubset
from iaakd.metrics import bootstrap_srcc_ci, round_floats
from iaakd.models import Distiller
from iaakd.stages import common
from iaakd.stages.student import student_config
from iaakd.student import StudentConfig, StudentData, predict, train_student
from iaakd.tasks import Task
from iaakd.teacher import DistillerConfig, iter_knowledge, train_distiller

History = list[dict]  # a run's per-epoch curves (TrainingHistory.rows)

# (device, precision) of every model this process trained or whose kept outputs it read, in order: what the
# results' provenance reports, and what a RunStore records beside each run it keeps (the entries its training added)
RAN: list[tuple[str, str]] = []
# the commit of the code that runs, read when a script imports this module, at its start: the results it writes
# hours later name this code, not a commit made while it ran
CODE_COMMIT = common.git_commit()


def seeded_parser(doc: str, seeds: Sequence[int], out: Path) -> argparse.ArgumentParser:
    """The result scripts' common arguments: --seeds (default ``seeds``), --epochs, --out (default ``out``),
    --fresh; the script adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--epochs", type=int, default=None, help="override student.epochs (smoke tests)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--fresh", action="store_true", help="train every run again")
    return parser


def parse_seeded(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, a repeated seed refused."""
    args = parser.parse_args()
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {args.seeds} repeats a seed")
    return args


def kept_json(path: Path, make: Callable[[], dict]) -> dict:
    """The JSON kept at ``path``; where there is none, what ``make`` returns, written there first."""
    if not path.is_file():
        common.write_json(path, make())
    return json.loads(path.read_text(encoding="utf-8"))


def write_results(path: Path, results: dict, archive: RunOutputs | None = None) -> None:
    """``results`` with the code's provenance and the devices and precisions its models were trained
    with (comma-separated when several; null before any), rounded, as JSON at ``path``, after the runs'
    test outputs of ``archive`` beside it (so the results never list a run whose outputs are not kept).
    Written atomically: a run killed mid-write leaves the last complete files, which the next run resumes
    from."""
    if archive is not None:
        archive.write()
    devices = ", ".join(sorted({device for device, _ in RAN})) or None
    precisions = ", ".join(sorted({precision for _, precision in RAN})) or None
    provenance = common.provenance(device=devices, precision=precisions, commit=CODE_COMMIT)
    common.write_json(path, {**results, "provenance": provenance})


class RunOutputs:
    """Every run a results script reads, as its per-image test output rows, kept beside the results file
    (``results/NAME.outputs.npz``: float32, compressed; one ``<part><row>/seed<seed>`` array per run, of shape
    (test images, outputs), and ``<part>image_id`` naming the test images its rows follow). A later change of
    statistics reads them (:func:`read_run_outputs`) instead of training again. ``part`` tells apart runs
    on other test sets (folds) or of another kind (teachers)."""

    def __init__(self, results_path: Path) -> None:
        self.path = outputs_path(results_path)
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, name: str, seed: int, rows: np.ndarray, image_ids: Sequence[str], part: str = "") -> None:
        self.arrays[f"{part}image_id"] = np.asarray(image_ids, dtype=str)
        self.arrays[f"{part}{name}/seed{seed}"] = np.asarray(rows, dtype=np.float32)

    def write(self) -> None:
        with atomic_path(self.path) as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, **self.arrays)


def outputs_path(results_path: Path) -> Path:
    return results_path.with_name(f"{results_path.stem}.outputs.npz")


def read_run_outputs(results_path: Path) -> dict[str, np.ndarray]:
    """The arrays :class:`RunOutputs` kept for the results file at ``results_path`` (no pickle)."""
    with np.load(outputs_path(results_path), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# The stages whose outputs the scripts read (dvc.lock names, foreach stages by their prefix)
INPUT_STAGES = ("dataset", "split", "extract", "teacher")


def pipeline_inputs(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """The md5 of every data output the scripts read, from dvc.lock: results made from other data differ.
    Metrics and provenance reports are left out: a stage that reruns on the same data writes another commit
    and time there, and the runs kept for that data must still be found."""
    if not lock.is_file():
        return {}
    stages = yaml.safe_load(lock.read_text(encoding="utf-8")).get("stages", {})
    return {
        out["path"]: out["md5"]
        for name, stage in sorted(stages.items())
        if name.split("@")[0] in INPUT_STAGES
        for out in stage.get("outs", [])
        if not out["path"].startswith(("metrics/", "reports/"))
    }


def earlier_results(path: Path, signature: dict, fresh: bool = False) -> dict:
    """What an earlier, possibly interrupted run wrote to ``path``, when it was made with the same
    ``signature`` (configurations and pipeline inputs); otherwise, or with ``fresh``, nothing."""
    if fresh or not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:  # cut short by a kill, before these files were written atomically
        print(f"{path}: not readable JSON; starting again", flush=True)
        return {}
    if earlier.get("signature") != json.loads(json.dumps(round_floats(signature))):
        print(
            f"{path}: made with another configuration or other pipeline outputs; starting again", flush=True
        )
        return {}
    return earlier


def with_overrides(config, overrides: dict):
    """A copy of a (nested) config dataclass with ``overrides`` applied, for example
    ``{"freeze_backbone": True, "kd": {"enabled": False}}``."""
    changes = {}
    for key, value in overrides.items():
        current = getattr(config, key)
        changes[key] = with_overrides(current, value) if isinstance(value, dict) else value
    return dataclasses.replace(config, **changes)


@dataclasses.dataclass
class Pipeline:
    """The pipeline's outputs and params as the scripts need them."""

    params: dict
    task: Task
    frame: pd.DataFrame  # labels joined with the split
    tables: PipelineTables

    @classmethod
    def load(cls) -> Pipeline:
        params, tables = common.load_params(), PipelineTables.at(Path("."), progress=common.show_progress())
        return cls(params, common.task_from_params(params, tables), tables.labels_with_split(), tables)

    def with_split(self, split: pd.DataFrame) -> Pipeline:
        """The same labels under another split (image_id, split)."""
        frame = self.frame.drop(columns="split").merge(split, on="image_id", validate="one_to_one")
        return dataclasses.replace(self, frame=frame.sort_values("image_id").reset_index(drop=True))

    def with_output(self, output: str) -> Pipeline:
        """The same data with another output type (Table XV)."""
        return dataclasses.replace(self, task=dataclasses.replace(self.task, output=output))

    def part(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    @property
    def has_tags(self) -> bool:
        return has_tags(self.frame)

    def test_metrics(self, output: np.ndarray, with_ci: bool = True) -> dict:
        test = self.part("test")
        score = test["mean_score"].to_numpy()
        metrics = self.task.metrics(output, score, ground_truth(test))
        if with_ci:
            metrics["srcc_ci95"] = bootstrap_srcc_ci(self.task.predicted_score(output), score, seed=0)
        return metrics


def student_base(params: dict, epochs: int | None = None) -> StudentConfig:
    """params.yaml's student configuration, with ``epochs`` when given (smoke tests)."""
    config = student_config(params)
    return dataclasses.replace(config, epochs=epochs) if epochs else config


def distiller_base(params: dict, epochs: int | None = None) -> DistillerConfig:
    """params.yaml's distiller configuration, with ``epochs`` when given (smoke tests)."""
    section = common.section(params, "distiller")
    config = common.build_config(DistillerConfig, section, "distiller", ignore=("backbones",))
    return dataclasses.replace(config, epochs=epochs) if epochs else config


class StudentRuns:
    """Trains students that differ from params.yaml's only where asked, on the pipeline's teacher knowledge."""

    def __init__(
        self,
        pipeline: Pipeline,
        epochs: int | None = None,
        knowledge: Knowledge | None = None,  # None: the pipeline's teacher, read from disk
        unlabeled: StudentData | None = None,  # CSKD's unlabelled images, for student.unlabeled.enabled
    ) -> None:
        self.pipeline, self.unlabeled = pipeline, unlabeled
        self.base = student_base(pipeline.params, epochs)
        frame, task, tags = pipeline.frame, pipeline.task, pipeline.has_tags
        self.train = pipeline.tables.student_data(frame, "train", task, True, tags, knowledge)
        self.val = pipeline.tables.student_data(frame, "val", task, with_teacher=False, with_tags=tags)
        self.test = pipeline.part("test")
        self.device = common.device_from_env()

    def run(self, config: StudentConfig) -> dict:
        """Test metrics of a student trained with ``config``, and its GMACs at its input size."""
        model, preprocess, prediction, _ = self._trained(config)
        size = preprocess.size
        return {
            **self.pipeline.test_metrics(prediction),
            "input": f"{size}x{size}"
            + (f" (pad {preprocess.pad_size})" if preprocess.mode == "pad_crop" else ""),
            "gmacs": gmacs(model, (1, 3, size, size)),
        }

    def test_output(self, config: StudentConfig) -> np.ndarray:
        """The raw output rows (one per test image, in ``self.test``'s order) of a student trained with
        ``config``: what a result script keeps to compare runs image by image (iaakd.paired)."""
        return self._trained(config)[2]

    def test_output_and_curves(
        self, config: StudentConfig, init_file: Path | None = None
    ) -> tuple[np.ndarray, History]:
        """:meth:`test_output` and the run's per-epoch curves; with ``config.init`` other than ``weights``,
        the backbone starts from ``init_file`` (a pretrain or align checkpoint)."""
        _, _, prediction, history = self._trained(config, init_file)
        return prediction, history.rows

    def _trained(self, config: StudentConfig, init_file: Path | None = None) -> tuple:
        """A student trained with ``config``, its preprocessing, its output rows on the test images, and its
        curves."""
        model, preprocess, _, history = train_student(
            config,
            self.train,
            self.val,
            self.train.teacher_feature.shape[1],
            self.pipeline.task,
            progress=common.show_progress(),
            device=self.device,
            init_file=init_file,
            unlabeled=self.unlabeled,
        )
        prediction = predict(
            model,
            self.test["path"].tolist(),
            preprocess,
            device=self.device,
            precision=config.precision,
            tags=tags(self.test) if config.semantic == "input" else None,
        )
        RAN.append((str(self.device), config.precision))
        return model, preprocess, prediction, history


def require_reference_student(config: StudentConfig) -> None:
    """The pretraining and CSKD scripts' reference rows are the KD comparison's runs of params.yaml's student,
    which starts from ImageNet weights and uses no unlabelled images: with another params.yaml they would be
    other runs than their rows say."""
    if config.init != "weights" or config.unlabeled.enabled:
        raise common.UserError(
            f"params.yaml: student.init={config.init}, student.unlabeled.enabled={config.unlabeled.enabled}; the "
            "result scripts compare against ImageNet initialisation without unlabelled images (init weights, "
            "unlabeled.enabled false): set those, or run the stages by `dvc exp run` instead"
        )


def knowledge_rows(
    position: pd.Index, image_ids: list[str], outputs: np.ndarray, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``outputs`` and ``features`` (one per id of ``position``) for ``image_ids``; an id
    that ``position`` lacks is an error naming the first few (``get_indexer`` would give -1, the last
    row, silently)."""
    index = position.get_indexer(pd.Index(image_ids))
    missing = [image_id for image_id, row in zip(image_ids, index, strict=True) if row < 0]
    if missing:
        raise common.UserError(
            f"no teacher knowledge for {len(missing)} of {len(image_ids)} images, for example "
            f"{', '.join(map(repr, missing[:5]))} (not in this pipeline's labels and split)"
        )
    return outputs[index], features[index]


class DistillerRuns:
    """Trains distillers on the pipeline's features: params.yaml's configuration, other backbones or seeds."""

    def __init__(self, pipeline: Pipeline, epochs: int | None = None) -> None:
        self.pipeline = pipeline
        self.backbones: list[str] = common.section(pipeline.params, "distiller")["backbones"]
        self.base = distiller_base(pipeline.params, epochs)
        self.targets = targets(pipeline.frame, pipeline.task)
        self.masks = {name: (pipeline.frame["split"] == name).to_numpy() for name in ("train", "val", "test")}

    def run(self, backbones: list[str], seed: int) -> dict:
        """Test metrics of a distiller trained with ``seed`` on the features of ``backbones``."""
        return self.teacher(backbones, seed)[0]

    def teacher(self, backbones: list[str], seed: int) -> tuple[dict, Knowledge]:
        """A distiller trained with ``seed`` on the features of ``backbones``: its test metrics, and its
        knowledge (output, feature) of any labelled image, for training students."""
        metrics, knowledge, _ = self.teacher_and_model(backbones, seed)
        return metrics, knowledge

    def teacher_and_model(
        self, backbones: list[str], seed: int, extra: Sequence[Path] = (), work: Path | None = None
    ) -> tuple[dict, Knowledge, Distiller]:
        """:meth:`teacher`, and the distiller itself (for the knowledge of images without labels); ``extra``:
        feature folders after ``backbones``' (CSKD's aligned backbone); ``work``: where their row matrix is
        kept (PipelineTables.teacher_input)."""
        matrix, _ = self.pipeline.tables.teacher_input(backbones, extra, work)
        frame = self.pipeline.frame
        rows = matrix.row_of(frame["image_id"])
        train, val, test = (self.masks[name] for name in ("train", "val", "test"))
        model, _ = train_distiller(
            RowSubset(matrix, rows[train]),
            self.targets[train],
            RowSubset(matrix, rows[val]),
            self.targets[val],
            dataclasses.replace(self.base, seed=seed),
            self.pipeline.task,
            progress=False,
        )
        outputs, features = zip(*iter_knowledge(model, RowSubset(matrix, rows)), strict=True)
        every_output, every_feature = np.concatenate(outputs), np.concatenate(features)
        position = pd.Index(frame["image_id"])
        RAN.append(("cpu", "fp32"))  # the distiller trains on the CPU in float32

        def knowledge(image_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
            return knowledge_rows(position, image_ids, every_output, every_feature)

        metrics = {"gsf_dim": matrix.dim, **self.pipeline.test_metrics(every_output[test], with_ci=False)}
        return metrics, knowledge, model


class StoredArm(Protocol):
    """A configuration whose runs a RunStore keeps: its name and what makes a kept run its own (a mapping
    with the name its files carry)."""

    name: str

    @property
    def store_key(self) -> dict: ...


class RunStore:
    """Each finished run's test output rows, at ``root/<fingerprint>/<arm>-seed<seed>.npy`` (and its curves
    beside them, ``.history.json``, where the script keeps them, and the device and precision it ran with,
    ``.made.json``); the fingerprint covers ``signature`` (the
    pipeline's inputs, the distiller configuration), the arm's ``store_key``, the seed, the run's student
    configuration and ``extra`` (what else made the run: a pretraining or alignment configuration, a pool),
    so a run made from anything else is not found. Result scripts share a store: the pretraining and CSKD
    scripts find the KD comparison's reference runs in it, and read them without ever writing them
    (``reference=True``: not trained again with ``fresh``, never replaced)."""

    def __init__(self, root: Path, signature: dict, fresh: bool = False) -> None:
        self.root, self.signature, self.fresh = root, signature, fresh
        self.curve_differences: dict[str, float] = {}  # file -> largest |kept - trained again for curves|

    def path(self, arm: StoredArm, seed: int, config: StudentConfig, extra: dict | None = None) -> Path:
        stored = arm.store_key  # a reference row's is its own arm's: the same file
        key = {**self.signature, "arm": stored, "seed": seed, "student": dataclasses.asdict(config)}
        if extra:
            key["extra"] = extra
        return self.root / fingerprint(key) / f"{stored['name']}-seed{seed}.npy"

    def load(self, path: Path, shape: tuple[int, ...], fresh: bool | None = None) -> np.ndarray | None:
        """The rows kept at ``path`` when they are there, of ``shape`` and finite; else None."""
        if (self.fresh if fresh is None else fresh) or not path.is_file():
            return None
        try:
            rows = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            print(f"{path}: not readable ({type(error).__name__}); training again", flush=True)
            return None
        if rows.shape != shape or not np.isfinite(rows).all():
            print(f"{path}: shape {rows.shape} or values unlike a run's {shape}; training again", flush=True)
            return None
        return rows

    def save(
        self, path: Path, rows: np.ndarray, ran: Sequence[tuple[str, str]], history: History | None = None
    ) -> None:
        """The run's rows, the (device, precision) of each model ``ran`` to make them, and its curves where
        given; curves of an earlier run at ``path`` go with it. The record is written after the rows (a kill
        between them leaves a run of unknown device, never another run's)."""
        if history is not None:
            common.write_json(_history_path(path), {"rows": history})
        else:
            _history_path(path).unlink(missing_ok=True)
        _made_path(path).unlink(missing_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.save(handle, np.asarray(rows), allow_pickle=False)
        common.write_json(_made_path(path), {"ran": sorted({tuple(entry) for entry in ran})})

    @staticmethod
    def count_as_ran(path: Path) -> None:
        """A kept run read instead of trained: the devices and precisions it ran with go into the results'
        provenance (RAN), as a trained one's do; a run kept before they were recorded adds nothing."""
        made = _made_path(path)
        if not made.is_file():
            return
        try:
            RAN.extend(
                (str(device), str(precision))
                for device, precision in json.loads(made.read_text(encoding="utf-8"))["ran"]
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(
                f"{made}: not readable ({type(error).__name__}); the run's device is not reported", flush=True
            )

    def _trained(self, train: Callable[[], Any]) -> tuple[Any, list[tuple[str, str]]]:
        """What ``train`` returns, and the (device, precision) entries its training added to RAN."""
        start = len(RAN)
        result = train()
        return result, RAN[start:]

    def get(
        self,
        arm: StoredArm,
        seed: int,
        config: StudentConfig,
        shape: tuple[int, ...],
        train: Callable[[], np.ndarray],
        extra: dict | None = None,
        reference: bool = False,
    ) -> tuple[np.ndarray, bool]:
        """The run's test output rows, loaded, or made by ``train`` and kept; and whether they were loaded."""
        path = self.path(arm, seed, config, extra)
        rows = self.load(path, shape, fresh=False if reference else None)
        if rows is not None:
            self.count_as_ran(path)
            return rows, True
        rows, ran = self._trained(train)
        rows = np.asarray(rows)
        self.save(path, rows, ran)
        return rows, False

    def get_with_history(
        self,
        arm: StoredArm,
        seed: int,
        config: StudentConfig,
        shape: tuple[int, ...],
        train: Callable[[], tuple[np.ndarray, History]],
        extra: dict | None = None,
        reference: bool = False,
    ) -> tuple[np.ndarray, History, bool]:
        """As :meth:`get`, with the run's curves. A kept run without them (the KD comparison keeps none) is
        trained again for its curves only: the kept rows stay the run's (never replaced), and the largest
        difference of the retrained ones from them is recorded in ``curve_differences`` (0 on one machine)."""
        path = self.path(arm, seed, config, extra)
        rows, history_path = self.load(path, shape, fresh=False if reference else None), _history_path(path)
        if rows is not None and history_path.is_file():
            self.count_as_ran(path)
            return rows, json.loads(history_path.read_text(encoding="utf-8"))["rows"], True
        (trained, history), ran = self._trained(train)
        trained = np.asarray(trained)
        if rows is None:
            self.save(path, trained, ran, history)
            return trained, history, False
        self.count_as_ran(path)  # the kept rows stay the run's, and so does their device
        self.curve_differences[path.name] = float(np.abs(rows - trained).max())
        if self.curve_differences[path.name]:
            print(f"{path}: trained again for its curves; its test outputs differ from the kept ones by up to "
                  f"{self.curve_differences[path.name]:.2e} (another machine or library); the kept ones stay",
                  flush=True)  # fmt: skip
        common.write_json(history_path, {"rows": history})
        return rows, history, False


def _history_path(rows_path: Path) -> Path:
    return rows_path.with_suffix(".history.json")


def _made_path(rows_path: Path) -> Path:
    return rows_path.with_suffix(".made.json")
