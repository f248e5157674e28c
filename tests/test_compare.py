"""``iaakd compare``: dvc metrics diff's twin, on revisions of a git repository made here (the predictions
files the evaluate stage writes, and each revision's params.yaml for its seed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from scoring_helpers import run_cli

from iaakd.paired import compare as paired_compare
from iaakd.predictions import Predictions
from iaakd.tasks import DISTRIBUTION

GIT_COMMIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q")
IMAGES = 60


def truth(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    distribution = rng.dirichlet(np.full(10, 3.0), size=IMAGES)
    return distribution, distribution @ np.arange(1, 11)


def predictions(quality: float, seed: int, image_ids: list[str] | None = None) -> Predictions:
    """Predicted distributions that follow the truth more (quality near 1) or less, with noise of ``seed``."""
    true_dist, true_score = truth()
    rng = np.random.default_rng(100 + seed)
    noise = rng.dirichlet(np.full(10, 3.0), size=IMAGES)
    outputs = {name: quality * true_dist + (1 - quality) * noise for name in ("teacher", "student")}
    ids = image_ids or [str(1000 + i) for i in range(IMAGES)]
    return Predictions.of(DISTRIBUTION, ids, true_score, true_dist, outputs)


def commit(repo: Path, kept: Predictions, seed: int = 0, message: str = "run") -> str:
    (repo / "reports").mkdir(exist_ok=True)
    (repo / "reports" / "predictions.json").write_text(kept.to_json())
    (repo / "params.yaml").write_text(yaml.safe_dump({"student": {"seed": seed}}))
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run([*GIT_COMMIT, "-m", message], cwd=repo, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def compared(repo: Path, capsys, *argv: str) -> tuple[int, dict | str, str]:
    status, out, err = run_cli(["compare", *argv, "--repo", str(repo)], capsys)
    try:
        return status, json.loads(out), err
    except json.JSONDecodeError:
        return status, out, err


def test_a_revision_against_itself_differs_by_0_in_0_0(repo, capsys):
    commit(repo, predictions(0.6, 0))
    status, result, _ = compared(repo, capsys, "HEAD", "HEAD", "--json")
    assert status == 0 and result["n_images"] == IMAGES
    for model in ("student", "teacher"):
        for metric in ("srcc", "plcc", "acc", "emd"):
            entry = result["models"][model][metric]
            assert entry["diff"] == 0 and entry["ci95"] == [0, 0] and not entry["resolved"]


def test_the_change_is_the_metrics_difference_and_the_interval_is_iaakd_paired_on_the_stored_predictions(
    repo, capsys
):
    base = commit(repo, predictions(0.3, 0))
    commit(repo, predictions(0.9, 1))
    stored = repo / "reports" / "predictions.json"  # as the files hold them (7 significant digits)
    better = Predictions.from_json(stored.read_text(), "B")
    worse = Predictions.from_json(
        subprocess.run(["git", "show", f"{base}:reports/predictions.json"], cwd=repo, capture_output=True,
                       text=True, check=True).stdout, "A")  # fmt: skip
    status, result, _ = compared(repo, capsys, base, "HEAD", "--json")
    assert status == 0
    true_dist, true_score = worse.true_distribution, worse.true_score
    for name in ("student", "teacher"):
        direct_a = DISTRIBUTION.metrics(worse.models[name].distribution, true_score, true_dist)
        direct_b = DISTRIBUTION.metrics(better.models[name].distribution, true_score, true_dist)
        expected = paired_compare(better.models[name].score, worse.models[name].score, true_score,
                                  true_dist=true_dist, dist_a=better.models[name].distribution,
                                  dist_b=worse.models[name].distribution, high_a=better.models[name].high,
                                  high_b=worse.models[name].high)  # fmt: skip
        for metric in ("srcc", "plcc", "acc", "emd"):
            entry = result["models"][name][metric]
            assert entry["a"] == pytest.approx(direct_a[metric], abs=1e-6)
            assert entry["diff"] == pytest.approx(direct_b[metric] - direct_a[metric], abs=1e-6)
            assert entry["ci95"] == [expected[metric]["ci95_low"], expected[metric]["ci95_high"]]
    assert (
        result["models"]["student"]["srcc"]["resolved"] and result["models"]["student"]["srcc"]["diff"] > 0.2
    )


def test_a_changed_split_is_refused_in_one_line(repo, capsys):
    base = commit(repo, predictions(0.6, 0))
    commit(repo, predictions(0.6, 0, [str(2000 + i) for i in range(IMAGES)]))
    status, _, err = compared(repo, capsys, base, "HEAD")
    assert status == 1 and err.count("\n") == 1 and "different test images (60 and 60, 0 shared)" in err


def test_a_revision_without_predictions_is_refused_in_one_line(repo, capsys):
    (repo / "README").write_text("nothing evaluated\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run([*GIT_COMMIT, "-m", "empty"], cwd=repo, check=True)
    status, _, err = compared(repo, capsys, "HEAD", "HEAD")
    assert status == 1 and err.startswith("error: revision 'HEAD'") and "reports/predictions.json" in err


def test_the_seeds_of_one_arm_are_grouped_and_paired_by_student_seed(repo, capsys):
    a = [commit(repo, predictions(0.5, seed), seed=seed) for seed in (2, 0, 1)]
    b = [commit(repo, predictions(0.55, seed + 10), seed=seed) for seed in (0, 1, 2)]
    status, result, _ = compared(repo, capsys, ",".join(a), ",".join(b), "--json")
    assert status == 0 and result["paired_seeds"] and result["seeds"] == {"a": [0, 1, 2], "b": [0, 1, 2]}
    # unequal seeds: each side resampled on its own
    status, unpaired, _ = compared(repo, capsys, ",".join(a[:2]), ",".join(b), "--json")
    assert status == 0 and not unpaired["paired_seeds"]
    # the point estimate is the mean over seeds
    true_dist, true_score = truth()
    means = [np.mean([DISTRIBUTION.metrics(predictions(q, s).models["student"].distribution, true_score, true_dist)["srcc"]
                      for s in seeds]) for q, seeds in ((0.5, (0, 1, 2)), (0.55, (10, 11, 12)))]  # fmt: skip
    assert result["models"]["student"]["srcc"]["diff"] == pytest.approx(means[1] - means[0], abs=1e-6)


def test_fail_if_worse_gives_status_3_only_when_b_is_resolved_worse(repo, capsys):
    good = commit(repo, predictions(0.9, 0))
    bad = commit(repo, predictions(0.2, 1))
    assert compared(repo, capsys, good, bad, "--fail-if-worse", "srcc")[0] == 3
    assert compared(repo, capsys, bad, good, "--fail-if-worse", "srcc")[0] == 0
    assert compared(repo, capsys, good, bad, "--fail-if-worse", "emd")[0] == 3  # EMD: higher is worse
    assert compared(repo, capsys, good, good, "--fail-if-worse", "srcc")[0] == 0


def test_a_dvc_experiment_is_named_by_its_name_and_the_workspace_by_default(repo, capsys):
    base = commit(repo, predictions(0.4, 0))
    experiment = commit(repo, predictions(0.8, 1))
    subprocess.run(
        ["git", "update-ref", f"refs/exps/ab/{base[2:]}/bright-lamp", experiment], cwd=repo, check=True
    )
    subprocess.run(["git", "reset", "-q", "--hard", base], cwd=repo, check=True)
    status, result, _ = compared(repo, capsys, "HEAD", "bright-lamp", "--json")
    assert (
        status == 0 and result["b"] == ["bright-lamp"] and result["models"]["student"]["srcc"]["diff"] > 0.2
    )
    (repo / "reports" / "predictions.json").write_text(predictions(0.8, 1).to_json())  # an uncommitted rerun
    status, text, _ = compared(repo, capsys, "--md")
    assert status == 0 and text.startswith("| Model | Metric | HEAD | workspace | Change |")
    status, _, err = compared(repo, capsys, "HEAD", "no-such-thing")
    assert status == 1 and "neither a git revision nor a dvc experiment" in err
