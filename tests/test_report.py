"""The README's result sections and results/REPORT.md are generated from the committed results: they must
say what the result files say."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

GIT_COMMIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q")


def report_check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "report.py"), "--check"],
        cwd=repo,
        capture_output=True,
        text=True,
    )


def test_readme_and_report_match_the_committed_results():
    result = report_check(REPO_ROOT)
    assert result.returncode == 0, (
        f"{result.stderr}README.md or results/REPORT.md is stale: run `python scripts/report.py`"
    )


@pytest.fixture
def results_repo(tmp_path) -> Path:
    """This working tree's README.md, results/ and metrics/evaluate.json, committed in a new git repository."""
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "README.md", repo / "README.md")
    shutil.copy(REPO_ROOT / "metrics" / "evaluate.json", repo / "metrics" / "evaluate.json")
    shutil.copytree(REPO_ROOT / "results", repo / "results")
    for command in (("git", "init", "-q"), ("git", "add", "."), (*GIT_COMMIT, "-m", "results")):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    return repo


def move_teacher_srcc(repo: Path) -> None:
    """What `make repro` on another CPU does to metrics/evaluate.json (there: 0.626 -> 0.633), in bigger."""
    evaluation = repo / "metrics" / "evaluate.json"
    report = json.loads(evaluation.read_text())
    report["teacher"]["srcc"] += 0.1
    evaluation.write_text(json.dumps(report, indent=2))


def test_check_compares_the_committed_readme_with_the_committed_metrics_not_a_rerun(results_repo):
    """A rerun elsewhere moves metrics/evaluate.json in the working tree; the committed README still matches
    the committed metrics, so `make test` after `make repro` stays green. Committing the moved metrics
    without `report.py` makes it stale."""
    assert report_check(results_repo).returncode == 0
    move_teacher_srcc(results_repo)
    rerun = report_check(results_repo)
    assert rerun.returncode == 0, rerun.stderr
    assert "metrics/evaluate.json in the working tree differ" in rerun.stderr
    subprocess.run((*GIT_COMMIT, "-am", "moved metrics"), cwd=results_repo, check=True)
    committed = report_check(results_repo)
    assert committed.returncode == 1
    assert "error: README.md or results/REPORT.md is stale" in committed.stderr


def test_check_without_git_reads_the_working_tree(results_repo):
    shutil.rmtree(results_repo / ".git")
    assert report_check(results_repo).returncode == 0
    move_teacher_srcc(results_repo)
    assert report_check(results_repo).returncode == 1
