"""Sharing results DVC's way (README "Sharing results"): push to a remote, pull into a fresh clone, and
nothing is rerun there."""

from __future__ import annotations

import pytest
from conftest import commit, run, stages_run

pytestmark = pytest.mark.slow


def test_results_pushed_to_a_remote_and_pulled_into_a_fresh_clone_are_up_to_date(tiny_repo, tmp_path):
    """A local-folder remote, as a shared disk: `dvc push` from the built repository, `git clone`, `dvc
    pull`; the clone's `dvc status` is clean and `dvc repro` runs no stage (nothing recomputed)."""
    remote = tmp_path / "remote"
    run(tiny_repo, "dvc", "remote", "add", "-d", "shared", str(remote))
    commit(tiny_repo, "the group's remote")
    run(tiny_repo, "dvc", "push")
    assert any(path.is_file() for path in remote.rglob("*"))

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(tiny_repo), str(clone))
    assert not (clone / "models" / "student.pt").exists()  # DVC's outputs are not in git
    assert not (clone / ".dvc" / "cache").exists()
    run(clone, "dvc", "pull")
    assert (clone / "models" / "student.pt").read_bytes() == (
        tiny_repo / "models" / "student.pt"
    ).read_bytes()
    status = run(clone, "dvc", "status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    again = run(clone, "dvc", "repro")
    assert stages_run(again.stdout) == set(), again.stdout
