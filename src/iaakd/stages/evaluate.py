"""Stage `evaluate`: teacher and student on the test split (metrics/evaluate.json, plots/evaluate/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from iaakd.atomic import atomic_write_text
from iaakd.config import param
from iaakd.costs import backbone_costs, gmacs
from iaakd.data.ava import CATEGORY_TAGS
from iaakd.data.tables import ground_truth, has_tags, tags
from iaakd.metrics import bootstrap_srcc_ci, require_finite_predictions, srcc
from iaakd.models import count_parameters
from iaakd.plots import predictions
from iaakd.predictions import Predictions
from iaakd.stages import common
from iaakd.student import checkpoint_task, load_student, predict
from iaakd.tasks import Task
from iaakd.teacher import load_distiller

METRICS = Path("metrics/evaluate.json")
PREDICTIONS = Path("reports/predictions.json")  # every test image's predictions (iaakd compare reads them)
PER_CATEGORY = Path("reports/per_category.json")  # Table IX, the teacher's and the student's


@dataclass(frozen=True)
class EvaluateConfig:
    seed: int = 0
    bootstrap_resamples: int = param(1000, above=0)
    cutoff: float = 5.0


class TeacherCosts(NamedTuple):
    """The teacher's cost: its backbones' (what the paper's Table VIII counts, 1,853.2 M parameters for
    its trio) and, separately, its distiller's."""

    params_m: float
    gmacs: float
    distiller_params_m: float
    distiller_gmacs: float


def teacher_costs(distiller_file: Path, height: int, width: int) -> TeacherCosts:
    _, saved = load_distiller(distiller_file)
    params_m, macs = 0.0, 0.0
    # each feature folder's architecture: the aligned backbone's (align.teacher) too, which is named "align"
    for metadata in saved["feature_metadata"]:
        backbone_params, backbone_macs = backbone_costs(metadata["backbone"], height, width)
        params_m += backbone_params
        macs += backbone_macs
    distiller_params = sum(
        value.numel() for key, value in saved["state_dict"].items() if key.endswith(("weight", "bias"))
    )
    distiller_macs = sum(
        value.numel()
        for key, value in saved["state_dict"].items()
        if key.endswith("weight") and value.dim() == 2
    )
    return TeacherCosts(params_m, macs, distiller_params / 1e6, distiller_macs / 1e9)


NO_TAGS = "no test image has a semantic tag (tag1, tag2): Table IX's categories are AVA's tags"
NO_CATEGORY_TAGS = "no test image has a tag of Table IX's eight categories"


def category_members(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each category of Table IX that has images in ``frame``, with its rows as a mask: an image is in a
    category when either of its two tags names it (membership by AVA's tags, not the category lists)."""
    members: dict[str, np.ndarray] = {}
    if not {"tag1", "tag2"} <= set(frame.columns):
        return members
    for name, tag in CATEGORY_TAGS.items():
        member = ((frame["tag1"] == tag) | (frame["tag2"] == tag)).to_numpy()
        if member.any():
            members[name] = member
    return members


def no_categories_because(frame: pd.DataFrame) -> str:
    """Why ``frame`` has no image in any of Table IX's categories (``category_members`` is empty)."""
    tagged = {"tag1", "tag2"} <= set(frame.columns) and has_tags(frame)
    return NO_CATEGORY_TAGS if tagged else NO_TAGS


def per_category(frame: pd.DataFrame, output: np.ndarray, task: Task) -> dict:
    """The metrics of ``output`` on each category's images (the paper's Table IX)."""
    results = {}
    for name, member in category_members(frame).items():
        metrics = task.metrics(output[member], frame["mean_score"].to_numpy()[member])
        results[name] = {"n": int(member.sum()), **{k: metrics[k] for k in ("srcc", "plcc", "acc")}}
    return results


def format_metric(value: float | None) -> str:
    """Three decimals, or "n/a" where the metric is undefined (a test split of fewer than 3 images, or
    with every true score equal, has no SRCC)."""
    return "n/a" if value is None else f"{value:.3f}"


def evaluate_config(params: dict) -> EvaluateConfig:
    return common.build_config(EvaluateConfig, common.section(params, "evaluate"), "evaluate")


def main(_argv: list[str]) -> None:
    config = evaluate_config(common.load_params())
    pipeline = common.tables()
    frame = pipeline.labels_with_split()
    train_above = (frame.loc[frame["split"] == "train", "mean_score"] > config.cutoff).mean()
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    true_distribution, true_score = ground_truth(test), test["mean_score"].to_numpy()
    teacher_output, _ = pipeline.teacher_knowledge(test["image_id"].tolist())
    student, preprocess, checkpoint = load_student(common.STUDENT_MODEL)
    trained = checkpoint_task(checkpoint)
    task = Task(trained.output, trained.score_range, config.cutoff)  # the cut-off is evaluate's
    device, precision = common.device_from_env(), checkpoint["config"].get("precision", "fp32")
    student_output = predict(
        student,
        test["path"].tolist(),
        preprocess,
        num_workers=common.num_workers_from_env(),
        progress=common.show_progress(),
        device=device,
        precision=precision,
        tags=tags(test, common.LABELS) if student.semantic == "input" else None,
    )
    # Before anything is written: a collapsed or diverged model is an error, not a metrics file of nulls
    image_ids = test["image_id"].tolist()
    require_finite_predictions(f"teacher ({common.TEACHER_DIR})", teacher_output, image_ids)
    require_finite_predictions(f"student ({common.STUDENT_MODEL})", student_output, image_ids)

    height, width = test.groupby(["height", "width"]).size().idxmax()  # the most common test image size
    teacher_cost = teacher_costs(common.DISTILLER_MODEL, int(height), int(width))
    size = preprocess.size
    report = {"n": len(test), "output": task.output}
    latent = test["latent_score"].to_numpy()
    report["noise_ceiling_srcc"] = srcc(latent, true_score) if np.isfinite(latent).all() else None
    for name, output, params_m, macs, input_size in (
        ("teacher", teacher_output, teacher_cost.params_m, teacher_cost.gmacs, f"{width}x{height}"),
        (
            "student",
            student_output,
            count_parameters(student) / 1e6,
            gmacs(student, (1, 3, size, size)),
            f"{size}x{size}",
        ),
    ):
        metrics = task.metrics(output, true_score, true_distribution)
        metrics["srcc_ci95"] = bootstrap_srcc_ci(
            task.predicted_score(output), true_score, config.seed, config.bootstrap_resamples
        )
        report[name] = {**metrics, "params_m": params_m, "gmacs": macs, "gmacs_input": input_size}
    report["teacher"]["distiller_params_m"] = teacher_cost.distiller_params_m
    report["teacher"]["distiller_gmacs"] = teacher_cost.distiller_gmacs
    # The constant predictor says "high" for everything when most training images are high (about 71 % on AVA).
    constant_high = train_above >= 0.5
    report["constant_predictor_acc"] = float(((true_score > config.cutoff) == constant_high).mean())
    categories = {"n": len(test), "per_category": per_category(test, student_output, task),
                  "per_category_teacher": per_category(test, teacher_output, task)}  # fmt: skip
    if not categories["per_category"]:
        categories["per_category_empty_because"] = no_categories_because(test)
    report["student_backbone"] = checkpoint["backbone"]
    provenance = common.provenance(device=str(device), precision=precision)
    common.write_metrics(METRICS, report, provenance)
    common.write_json(PER_CATEGORY, {**categories, "provenance": provenance})  # a table, not metrics to diff
    outputs = {"teacher": teacher_output, "student": student_output}
    kept = Predictions.of(task, image_ids, true_score, true_distribution, outputs)
    atomic_write_text(PREDICTIONS, kept.to_json())
    predictions(  # the plots from the kept scores and calls, not computed again
        {name: model.score for name, model in kept.models.items()},
        true_score,
        config.cutoff,
        Path("plots/evaluate"),
        {name: model.high for name, model in kept.models.items()},
    )
    print(
        f"evaluate: teacher SRCC {format_metric(report['teacher']['srcc'])}, "
        f"student SRCC {format_metric(report['student']['srcc'])}, "
        f"noise ceiling {format_metric(report['noise_ceiling_srcc'])}"
    )


if __name__ == "__main__":
    common.run(main)
