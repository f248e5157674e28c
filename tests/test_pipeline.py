"""The real `dvc repro` on a tiny demo in a temporary git repository: which stages run, and when."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TINY = {
    ("data", "demo", "num_images"): 48,
    ("features", "backbones"): ["tf_efficientnet_lite0.in1k"],
    ("distiller", "backbones"): ["tf_efficientnet_lite0.in1k"],
    ("distiller", "epochs"): 3,
    ("distiller", "hidden"): [32, 16],
    ("student", "epochs"): 1,
    ("student", "input_size"): 64,
    ("evaluate", "bootstrap_resamples"): 50,
}


def set_params(repo: Path, changes: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for keys, value in changes.items():
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "IAAKD_PROGRESS": "0"}
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    shutil.copytree(
        REPO_ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    set_params(repo, TINY)
    run(repo, "git", "init", "-q")
    run(
        repo,
        "git",
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    )
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    first = run(repo, "dvc", "repro")
    assert stages_run(first.stdout) == {
        "demo",
        "dataset",
        "split",
        "extract@tf_efficientnet_lite0.in1k",
        "distill",
        "teacher",
        "student",
        "evaluate",
    }
    return repo


def test_repro_writes_the_evaluate_contract(tiny_repo):
    report = json.loads((tiny_repo / "metrics" / "evaluate.json").read_text())
    assert report["n"] == 12
    for model in ("teacher", "student"):
        for key in ("srcc", "plcc", "acc", "emd", "srcc_ci95", "params_m", "gmacs"):
            assert key in report[model], f"{model}.{key} missing"
        assert 0 <= report[model]["acc"] <= 1
    assert 0 < report["noise_ceiling_srcc"] <= 1
    assert 0 <= report["constant_predictor_acc"] <= 1
    assert "NaN" not in (tiny_repo / "metrics" / "evaluate.json").read_text()
    for png in ("plots/evaluate/scatter.png", "plots/student/curves.png", "plots/distill/curves.png"):
        assert (tiny_repo / png).stat().st_size > 1000


def test_second_repro_runs_nothing(tiny_repo):
    again = run(tiny_repo, "dvc", "repro")
    assert stages_run(again.stdout) == set()


def test_changing_student_epochs_reruns_only_student_and_evaluate(tiny_repo):
    set_params(tiny_repo, {("student", "epochs"): 2})
    result = run(tiny_repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"student", "evaluate"}


def test_changing_a_distiller_param_keeps_features(tiny_repo):
    set_params(tiny_repo, {("distiller", "seed"): 1})
    result = run(tiny_repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"distill", "teacher", "student", "evaluate"}


def test_metrics_diff_shows_teacher_and_student(tiny_repo):
    result = run(tiny_repo, "dvc", "metrics", "show")
    for key in ("teacher.srcc", "teacher.plcc", "teacher.acc", "student.srcc", "student.plcc", "student.acc"):
        assert key in result.stdout


def test_student_without_offline_weights_stops_with_one_clear_line(tiny_repo):
    set_params(tiny_repo, {("student", "backbone"): "resnet18"})
    result = run(tiny_repo, "dvc", "repro", check=False)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert "no pretrained weights for 'resnet18.a1_in1k' found offline" in error_lines[0]
    assert "weights=random" in error_lines[0]
    assert "Traceback" not in result.stderr
    set_params(tiny_repo, {("student", "weights"): "random"})
    result = run(tiny_repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"student", "evaluate"}
    assert json.loads((tiny_repo / "metrics" / "student.json").read_text())["weights"] == "random"


def test_pipeline_on_the_real_ava_sample(ava_sample, tmp_path):
    """Real rows, 86 real photos, most rows without an image, as in real downloads: the run completes,
    lists what it skipped, and evaluates on the official test ids that have an image."""
    repo = tmp_path / "ava"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    shutil.copytree(
        REPO_ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    set_params(
        repo,
        {
            **TINY,
            ("data", "source"): "ava",
            ("data", "root"): str(ava_sample),
            ("data", "max_missing_fraction"): 0.95,
        },
    )
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "repro")
    dataset = json.loads((repo / "metrics" / "dataset.json").read_text())
    assert (dataset["rows"], dataset["images"], dataset["skipped"]) == (1212, 86, 1126)
    skipped = (repo / "data" / "skipped.csv").read_text().splitlines()
    assert skipped[0] == "image_id,file,reason" and len(skipped) == 1 + 1126
    report = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert report["n"] == 9 and report["noise_ceiling_srcc"] is None
    # Too many missing images for the threshold: one clear line, and no labels that look complete.
    set_params(repo, {("data", "max_missing_fraction"): 0.5})
    result = run(repo, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "1126 of 1212 labelled rows (92.9 %) have no usable image" in result.stderr
    assert not (repo / "data" / "labels.parquet").exists()
