import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT

from iaakd.data.demo import DemoConfig
from iaakd.data.splits import SplitConfig
from iaakd.errors import UserError
from iaakd.stages import common
from iaakd.stages.align import align_config
from iaakd.stages.dataset import data_config
from iaakd.stages.evaluate import evaluate_config
from iaakd.stages.extract import extract_config, extraction_settings
from iaakd.stages.pool import pool_config
from iaakd.stages.pretrain import pretrain_config
from iaakd.stages.student import student_config
from iaakd.student import StudentConfig
from iaakd.tasks import Task
from iaakd.teacher import DistillerConfig


def stage_configs(params: dict) -> dict[str, object]:
    """Every stage's configuration, built from ``params`` as the stage builds it (one key per dvc.yaml
    stage that reads params; extract once per backbone)."""
    data = common.section(params, "data")
    task = common.section(params, "task")
    return {
        "demo": common.build_config(DemoConfig, {"seed": data.get("seed", 0), **data["demo"]}, "data.demo"),
        "dataset": data_config(params),
        "split": common.build_config(SplitConfig, params["split"], "split", ignore=("ilgnet_dir",)),
        **{
            f"extract@{backbone}": extract_config(params, backbone)
            for backbone in params["features"]["backbones"]
        },
        "distill": common.build_config(
            DistillerConfig, params["distiller"], "distiller", ignore=("backbones",)
        ),
        "task": Task(task["output"], cutoff=params["evaluate"]["cutoff"]),
        "pool": pool_config(params),
        **{
            f"extract_pool@{backbone}": extract_config(params, backbone)
            for backbone in params["features"]["backbones"]
        },
        "pretrain": pretrain_config(params),
        "align": align_config(params),
        "extract_align": (  # switched on or off, and the settings it extracts with when on
            common.aligned_teacher(params),
            extraction_settings(params, student_config(params).backbone, str(common.ALIGN_MODEL)),
        ),
        "student": student_config(params),
        "evaluate": evaluate_config(params),
    }


def dvc_stages_with_params() -> set[str]:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    return {name for name, stage in stages.items() if stage.get("params") or "foreach" in stage}


def assert_every_stage_builds(params: dict) -> dict[str, object]:
    configs = stage_configs(params)
    assert {name.split("@")[0] for name in configs} >= dvc_stages_with_params()
    assert set(params["distiller"]["backbones"]) <= set(params["features"]["backbones"])
    return configs


def test_repository_params_build_every_stages_config():
    params = common.load_params(REPO_ROOT / "params.yaml")
    configs = assert_every_stage_builds(params)
    assert len([name for name in configs if name.startswith("extract@")]) == 3
    assert isinstance(configs["student"], StudentConfig) and configs["student"].kd.enabled is True
    extract, rows_per_part = configs["extract@tf_efficientnet_lite0.in1k"]
    assert (extract.input_size, extract.batch_size, rows_per_part) == (None, 16, 4096)


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
    params["data"]["root"] = str(tmp_path)  # where AVA would be (`dvc repro -S data.root=...`)
    configs = assert_every_stage_builds(params)
    assert [configs[f"extract@{name}"][0].input_size for name in params["features"]["backbones"]] == [
        None
    ] * 3
    config = configs["student"]
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
