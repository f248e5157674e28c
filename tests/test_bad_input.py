"""Rows of the README's bad-input table that no other test file covers: each case, the one line the user
sees, and what is kept. (The README names the test of every row.)"""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT
from PIL import Image

from iaakd.data.ava import AvaLayout, load_ava


def ava_layout(root, lines: list[str], images: list[str]):
    (root / "AVA_dataset").mkdir(parents=True)
    (root / "AVA_dataset" / "AVA.txt").write_text("".join(line + "\n" for line in lines))
    (root / "images").mkdir()
    for image_id in images:
        Image.new("RGB", (20, 20), (90, 90, 90)).save(root / "images" / f"{image_id}.jpg")
    return AvaLayout(root)


def test_zero_vote_rows_and_repeated_ids_are_listed_and_the_first_row_kept(tmp_path):
    layout = ava_layout(
        tmp_path,
        [
            "1 100 0 0 0 0 5 5 0 0 0 0 0 0 1",
            "2 101 0 0 0 0 0 0 0 0 0 0 0 0 1",  # zero votes
            "3 100 9 0 0 0 0 0 0 0 0 0 0 0 1",  # 100 again
        ],
        ["100", "101"],
    )
    usable, skipped = load_ava(layout, tmp_path)
    assert usable["image_id"].tolist() == ["100"] and usable["mean_score"].tolist() == [5.5]
    assert sorted(zip(skipped["image_id"], skipped["reason"], strict=True)) == [
        ("100", "duplicate id"),
        ("101", "zero votes"),
    ]


def run_stage(folder, stage: str, params: dict) -> subprocess.CompletedProcess:
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    arguments = ["tf_efficientnet_lite0.in1k"] if stage == "extract" else []
    return subprocess.run(
        [sys.executable, "-m", f"iaakd.stages.{stage}", *arguments],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "IAAKD_PROGRESS": "0"},
    )


def base_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(
    ("stage", "change", "message"),
    [
        (
            "dataset",
            {"data": {"source": "ava", "root": "/nonexistent/ava"}},
            "data.root=/nonexistent/ava is not a folder",
        ),
        (
            "dataset",
            {"data": {"source": "csv", "root": "."}},
            "data.source=csv needs data.labels_file (the CSV)",
        ),
        (
            "dataset",
            {"data": {"unusual_images": "keep"}},
            "data.unusual_images='keep' is not one of decode, skip",
        ),
        (
            "dataset",
            {"data": {"score_range": [5, 1]}},
            "data.score_range=[5.0, 1.0] must be [low, high] with low < high",
        ),
        ("split", {"split": {"val_fraction": 1.5}}, "split.val_fraction=1.5 must be in [0, 1)"),
        ("distill", {"distiller": {"dropout": 1.5}}, "distiller.dropout=1.5 must be in [0, 1)"),
        ("distill", {"distiller": {"lr": -0.1}}, "distiller.lr=-0.1 must be positive"),
        ("distill", {"distiller": {"hidden": [64, 0]}}, "distiller.hidden=0 must be positive"),
        (
            "distill",
            {"task": {"output": "ranking"}},
            "task.output='ranking' is not one of distribution, score, binary",
        ),
        ("student", {"student": {"lr_step_epochs": 0}}, "student.lr_step_epochs=0 must be positive"),
        (
            "student",
            {"student": {"kd": {"mix": "both"}}},
            "student.kd.mix='both' is not one of none, loss, label",
        ),
        (
            "student",
            {"student": {"input_mode": "letterbox"}},
            "student.input_mode='letterbox' is not one of resize, pad_crop",
        ),
        (
            "student",
            {"student": {"input_mode": "pad_crop", "pad_size": 100}},
            "student.pad_size=100 must be >= student.input_size=128 (pad_crop cuts input_size out of the padded square)",
        ),
        (
            "student",
            {"student": {"input_mode": "pad_crop", "jpeg_draft": True}},
            "student.jpeg_draft=true works with student.input_mode=resize only (pad_crop keeps the pixels' scale)",
        ),
        (
            "student",
            {"student": {"semantic": "both"}},
            "student.semantic='both' is not one of none, input, target",
        ),
        ("extract", {"features": {"batch_size": 0}}, "features.batch_size=0 must be positive"),
    ],
)
def test_bad_params_stop_before_any_work_with_one_line_naming_the_key(tmp_path, stage, change, message):
    params = base_params()
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    result = run_stage(tmp_path, stage, params)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: params: {message}"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]  # no work, nothing written
