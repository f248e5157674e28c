import csv
import io
import subprocess
import sys

import numpy as np
import pytest
import torch

from iaakd.student import (
    KDConfig,
    StudentConfig,
    StudentData,
    load_student,
    predict,
    save_student,
    train_student,
)


@pytest.fixture(scope="module")
def trained_student(tiny_demo, tmp_path_factory):
    """A student trained for one epoch on ground truth from the tiny demo, and its checkpoint."""
    from iaakd.data.ava import AvaLayout, load_ava

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    votes = np.stack(labels["votes"].to_numpy()).astype(np.float32)
    truth = votes / votes.sum(1, keepdims=True)
    paths = [str(tiny_demo / p) for p in labels["path"]]
    config = StudentConfig(
        backbone="tf_efficientnet_lite0", input_size=64, epochs=1, kd=KDConfig(enabled=False)
    )
    model, preprocess, weights, history = train_student(
        config, StudentData(paths[:40], truth[:40]), StudentData(paths[40:], truth[40:]), 16, progress=False
    )
    checkpoint = tmp_path_factory.mktemp("student") / "student.pt"
    save_student(checkpoint, model, preprocess, config, weights)
    return model, preprocess, checkpoint, paths


def test_checkpoint_describes_itself_and_reloads_identically(trained_student):
    model, preprocess, checkpoint, paths = trained_student
    loaded, loaded_preprocess, saved = load_student(checkpoint)
    assert saved["backbone"] == "tf_efficientnet_lite0.in1k"
    assert saved["preprocess"] == {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "size": 64,
        "resize_filter": "bilinear",
        "mode": "resize",
        "pad_size": None,
        "jpeg_draft": False,
    }
    assert saved["weights_source"]["source"] == "packaged"
    assert saved["head"] == {"to_feature": [1280, 16], "output": [16, 10], "semantic": "none"}
    np.testing.assert_allclose(
        predict(model, paths[:4], preprocess), predict(loaded, paths[:4], loaded_preprocess), atol=1e-6
    )


def test_score_alias_prints_csv_and_gives_an_unreadable_file_its_own_row(trained_student, tmp_path):
    """``python -m iaakd score`` is ``iaakd score``: a bad file no longer stops the run."""
    _, _, checkpoint, paths = trained_student
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = subprocess.run(
        [sys.executable, "-m", "iaakd", "score", str(checkpoint), *paths[:3], str(tmp_path / "broken.jpg")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["path", "mean_score", *[f"p{k}" for k in range(1, 11)], "error"]
    by_path = {row["path"]: row for row in rows}
    assert len(rows) == 4 and all(by_path[path]["error"] == "" for path in paths[:3])
    assert all(1 <= float(by_path[path]["mean_score"]) <= 10 for path in paths[:3])
    broken = by_path[str(tmp_path / "broken.jpg")]
    assert broken["error"].startswith("unreadable: ") and broken["mean_score"] == ""
    assert "scored 3, failed 1" in result.stderr


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_backbone_stays_bit_identical_and_the_head_moves(tiny_demo, freeze):
    from iaakd.data.ava import AvaLayout, load_ava
    from iaakd.student import build_student

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    votes = np.stack(labels["votes"].to_numpy()).astype(np.float32)
    truth = votes / votes.sum(1, keepdims=True)
    paths = [str(tiny_demo / p) for p in labels["path"]][:24]
    config = StudentConfig(
        input_size=48, epochs=1, batch_size=8, lr=1e-3, freeze_backbone=freeze, kd=KDConfig(enabled=False)
    )
    before, _, _ = build_student(config, 8)
    model, *_ = train_student(
        config, StudentData(paths, truth[:24]), StudentData(paths[:8], truth[:8]), 8, progress=False
    )
    backbone_same = all(
        torch.equal(a, b)
        for a, b in zip(
            before.backbone.state_dict().values(), model.backbone.state_dict().values(), strict=True
        )
    )
    head_same = torch.equal(before.output.weight, model.output.weight)
    assert backbone_same is freeze
    assert not head_same


def test_the_iaakd_score_entry_point_is_iaakd_score(trained_student, tmp_path, monkeypatch, capsys):
    """pyproject's `iaakd-score = iaakd.cli:score_main`: the same command, its arguments after the name."""
    from iaakd.cli import score_main

    _, _, checkpoint, paths = trained_student
    monkeypatch.setattr(sys, "argv", ["iaakd-score", str(checkpoint), *paths[:2]])
    with pytest.raises(SystemExit) as exit_:
        score_main()
    assert exit_.value.code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["path"] for row in rows] == sorted(paths[:2]) and all(row["error"] == "" for row in rows)


def test_python_m_iaakd_dot_score_says_which_command_to_run_and_fails():
    """It ran the command before `iaakd.score` stopped importing the CLI; now one line says what to type."""
    result = subprocess.run(
        [sys.executable, "-m", "iaakd.score", "x.pt", "y.jpg"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "python -m iaakd score" in result.stderr and result.stdout == ""
