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
    assert result.stderr.strip() == "error: params: data.source='flickr' is not one of demo, ava"
