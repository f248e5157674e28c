"""What the result scripts share: the pipeline's outputs read once (labels, split, teacher knowledge,
features), a student or a distiller trained on them with a changed configuration, and its metrics on the
test split. Run `dvc repro` first; params.yaml's configurations are the starting point."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from iaakd.costs import gmacs
from iaakd.feature_rows import RowSubset
from iaakd.metrics import bootstrap_srcc_ci, round_floats
from iaakd.stages import common, data_access
from iaakd.stages.student import split_data, student_config
from iaakd.student import StudentConfig, predict, train_student
from iaakd.tasks import Task
from iaakd.teacher import DistillerConfig, iter_knowledge, train_distiller

Knowledge = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]  # image ids -> (teacher output, feature)


def write_results(path: Path, results: dict) -> None:
    """``results`` with the code's provenance, rounded, as JSON at ``path``."""
    results = {**results, "provenance": common.provenance()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(round_floats(results), indent=2) + "\n", encoding="utf-8")


# The stages whose outputs the scripts read (dvc.lock names, foreach stages by their prefix)
INPUT_STAGES = ("dataset", "split", "extract", "teacher")


def pipeline_inputs(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """The md5 of every data output the scripts read, from dvc.lock: results made from other data differ."""
    if not lock.is_file():
        return {}
    stages = yaml.safe_load(lock.read_text(encoding="utf-8")).get("stages", {})
    return {
        out["path"]: out["md5"]
        for name, stage in sorted(stages.items())
        if name.split("@")[0] in INPUT_STAGES
        for out in stage.get("outs", [])
        if not out["path"].startswith("metrics/")
    }


def earlier_results(path: Path, signature: dict, fresh: bool = False) -> dict:
    """What an earlier, possibly interrupted run wrote to ``path``, when it was made with the same
    ``signature`` (configurations and pipeline inputs); otherwise, or with ``fresh``, nothing."""
    if fresh or not path.is_file():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
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

    @classmethod
    def load(cls) -> Pipeline:
        params = common.load_params()
        return cls(params, data_access.task_from_params(params), data_access.labels_with_split())

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
        return data_access.has_tags(self.frame)

    def test_metrics(self, output: np.ndarray, with_ci: bool = True) -> dict:
        test = self.part("test")
        score = test["mean_score"].to_numpy()
        metrics = self.task.metrics(output, score, data_access.ground_truth(test))
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
        knowledge: Knowledge = data_access.teacher_knowledge_rows,
    ) -> None:
        self.pipeline = pipeline
        self.base = student_base(pipeline.params, epochs)
        frame, task, tags = pipeline.frame, pipeline.task, pipeline.has_tags
        self.train = split_data(frame, "train", task, with_teacher=True, with_tags=tags, knowledge=knowledge)
        self.val = split_data(frame, "val", task, with_teacher=False, with_tags=tags)
        self.test = pipeline.part("test")
        self.device = common.device_from_env()

    def run(self, config: StudentConfig) -> dict:
        """Test metrics of a student trained with ``config``, and its GMACs at its input size."""
        model, preprocess, _, _ = train_student(
            config,
            self.train,
            self.val,
            self.train.teacher_feature.shape[1],
            self.pipeline.task,
            progress=common.show_progress(),
            device=self.device,
        )
        prediction = predict(
            model,
            self.test["path"].tolist(),
            preprocess,
            device=self.device,
            precision=config.precision,
            tags=data_access.tags(self.test) if config.semantic == "input" else None,
        )
        size = preprocess.size
        return {
            **self.pipeline.test_metrics(prediction),
            "input": f"{size}x{size}"
            + (f" (pad {preprocess.pad_size})" if preprocess.mode == "pad_crop" else ""),
            "gmacs": gmacs(model, (1, 3, size, size)),
        }


class DistillerRuns:
    """Trains distillers on the pipeline's features: params.yaml's configuration, other backbones or seeds."""

    def __init__(self, pipeline: Pipeline, epochs: int | None = None) -> None:
        self.pipeline = pipeline
        self.backbones: list[str] = common.section(pipeline.params, "distiller")["backbones"]
        self.base = distiller_base(pipeline.params, epochs)
        self.targets = data_access.targets(pipeline.frame, pipeline.task)
        self.masks = {name: (pipeline.frame["split"] == name).to_numpy() for name in ("train", "val", "test")}

    def run(self, backbones: list[str], seed: int) -> dict:
        """Test metrics of a distiller trained with ``seed`` on the features of ``backbones``."""
        return self.teacher(backbones, seed)[0]

    def teacher(self, backbones: list[str], seed: int) -> tuple[dict, Knowledge]:
        """A distiller trained with ``seed`` on the features of ``backbones``: its test metrics, and its
        knowledge (output, feature) of any labelled image, for training students."""
        matrix, _ = data_access.teacher_input(backbones)
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

        def knowledge(image_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
            index = position.get_indexer(pd.Index(image_ids))
            return every_output[index], every_feature[index]

        metrics = {"gsf_dim": matrix.dim, **self.pipeline.test_metrics(every_output[test], with_ci=False)}
        return metrics, knowledge
