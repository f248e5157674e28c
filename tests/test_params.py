import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from iaakd.errors import UserError
from iaakd.stages import common
from iaakd.stages.student import student_config
from iaakd.student import StudentConfig


def test_repository_params_build_every_config():
    params = common.load_params(REPO_ROOT / "params.yaml")
    config = student_config(params)
    assert isinstance(config, StudentConfig) and config.kd.enabled is True


def test_unknown_key_is_named():
    with pytest.raises(UserError, match=r"unknown key 'student.epoch'"):
        common.build_config(StudentConfig, {"epoch": 3}, "student")


def test_wrong_type_is_named():
    with pytest.raises(UserError, match=r"'student.epochs' must be an integer, got 'three'"):
        common.build_config(StudentConfig, {"epochs": "three"}, "student")
    with pytest.raises(UserError, match=r"'student.kd.enabled' must be true or false"):
        common.build_config(StudentConfig, {"kd": {"enabled": "yes"}}, "student")


def test_bad_range_is_named():
    with pytest.raises(UserError, match=r"student.input_size=8 is too small"):
        student_config({"student": {"input_size": 8}})


def test_stage_with_bad_params_exits_non_zero_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: flickr\n")
    result = subprocess.run(
        [sys.executable, "-m", "iaakd.stages.dataset"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "IAAKD_PROGRESS": "0"},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params: data.source='flickr' is not one of demo, ava, csv"


def test_paper_preset_applies_onto_params_and_builds_valid_configs(tmp_path):
    import shutil

    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "apply_preset.py"),
            str(REPO_ROOT / "presets" / "paper.yaml"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    params = common.load_params(tmp_path / "params.yaml")
    config = student_config(params)
    assert (config.input_size, config.batch_size, config.lr, config.lr_step_epochs, config.epochs) == (
        300,
        16,
        3e-5,
        3,
        12,
    )
    assert params["distiller"]["batch_size"] == 512 and params["distiller"]["keep"] == "last"
    assert len(params["features"]["backbones"]) == 3


def test_preset_with_an_unknown_key_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("student:\n  epochs: 3\n")
    (tmp_path / "bad.yaml").write_text("student:\n  epoch: 12\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "apply_preset.py"), "bad.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "key student.epoch is not in params.yaml" in result.stderr
