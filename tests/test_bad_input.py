"""Rows of the README's bad-input table that no other test file covers: each case, the one line the user
sees, and what is kept. (The README names the test of every row.)"""

import os
import re
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
            {"student": {"input_mode": "stretch"}},
            "student.input_mode='stretch' is not one of resize, pad_crop, letterbox",
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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gpu0", "IAAKD_DEVICE='gpu0' is not a device; use cpu, cuda, cuda:<index> or mps"),
        ("meta", "IAAKD_DEVICE='meta' is not a device; use cpu, cuda, cuda:<index> or mps"),
        ("cpu:3", "IAAKD_DEVICE='cpu:3' is not a device; use cpu, cuda, cuda:<index> or mps"),
        ("cuda", "IAAKD_DEVICE='cuda': CUDA is not available on this machine; use cpu"),
        ("cuda:7", "IAAKD_DEVICE='cuda:7': CUDA is not available on this machine; use cpu"),
    ],
)
def test_a_bad_device_variable_is_one_line_naming_it(monkeypatch, value, message):
    from iaakd.errors import UserError
    from iaakd.stages import common

    monkeypatch.setattr(common.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("IAAKD_DEVICE", value)
    with pytest.raises(UserError, match=f"^{re.escape(message)}"):
        common.device_from_env()


def test_a_cuda_index_the_machine_lacks_is_named_with_those_it_has(monkeypatch):
    from iaakd.errors import UserError
    from iaakd.stages import common

    monkeypatch.setattr(common.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(common.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("IAAKD_DEVICE", "cuda:2")
    with pytest.raises(UserError, match=r"^IAAKD_DEVICE='cuda:2': this machine has cuda:0 to cuda:1$"):
        common.device_from_env()
    monkeypatch.setenv("IAAKD_DEVICE", "cuda:1")
    assert common.device_from_env() == common.torch.device("cuda:1")
    monkeypatch.setenv("IAAKD_DEVICE", " cpu ")
    assert common.device_from_env() == common.torch.device("cpu")


@pytest.mark.parametrize("value", ["two", "-1", "1.5", "+2"])
def test_a_bad_worker_count_is_one_line_naming_the_variable(monkeypatch, value):
    from iaakd.errors import UserError
    from iaakd.stages import common

    monkeypatch.setenv("IAAKD_NUM_WORKERS", value)
    with pytest.raises(
        UserError, match=rf"^IAAKD_NUM_WORKERS='{re.escape(value)}' must be a whole number >= 0"
    ):
        common.num_workers_from_env()


def test_worker_count_from_the_environment(monkeypatch):
    from iaakd.stages import common

    monkeypatch.delenv("IAAKD_NUM_WORKERS", raising=False)
    assert common.num_workers_from_env() == 0
    monkeypatch.setenv("IAAKD_NUM_WORKERS", "6")
    assert common.num_workers_from_env() == 6


def test_a_stage_with_a_bad_device_variable_exits_with_one_line(tmp_path):
    params = base_params()
    env = {**os.environ, "IAAKD_PROGRESS": "0", "IAAKD_DEVICE": "gpu0"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "-m", "iaakd.stages.extract", "tf_efficientnet_lite0.in1k"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: IAAKD_DEVICE='gpu0' is not a device; use cpu, cuda, cuda:<index> or mps "
        "(unset: cuda when available, else cpu)"
    ]


def test_provenance_must_be_told_what_ran():
    """Defaults made every metrics file say cpu / fp32, whatever ran."""
    from iaakd.stages import common

    with pytest.raises(TypeError):
        common.provenance()
    recorded = common.provenance(device="cuda:0", precision="bf16")
    assert (recorded["device"], recorded["precision"]) == ("cuda:0", "bf16")
    assert common.provenance(device=None, precision=None)["device"] is None  # no model ran
