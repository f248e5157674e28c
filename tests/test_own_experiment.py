"""README "Your own experiment" on the tiny repository: `dvc exp run -S student.backbone=<a Hub model>` fetches
its weights from a stand-in Hub on the loopback and records which file; offline it loads them from the cache
without a request, or stops in one line naming `iaakd weights fetch`; `dvc metrics diff` then lists
measurements only; `iaakd compare` gives the same differences with their intervals."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import run, stages_run
from hub_stand_in import COMMIT, REPO, SERVED, HubStandIn, timm_safetensors
from test_weights_hub import hub_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_weights() -> bytes:
    return timm_safetensors()


def test_dvc_exp_run_with_a_hub_backbone_downloads_once_then_runs_offline_and_compares(
    tiny_repo,
    served_weights,
    tmp_path,  # noqa: F811
):
    home = tmp_path / "hf"
    with HubStandIn({(REPO, "model.safetensors"): served_weights}) as hub:
        first = run(tiny_repo, "dvc", "exp", "run", "-n", "hub-student", "-S", f"student.backbone={SERVED}",
                    env=hub_env(hub, home))  # fmt: skip
        assert stages_run(first.stdout) >= {"student", "evaluate"} and hub.downloads() == 1
        student = json.loads((tiny_repo / "metrics" / "student.json").read_text())
        assert (student["weights"], student["weights_hub_id"], student["weights_revision"]) == (
            "hub",
            REPO,
            COMMIT,
        )
        assert student["weights_sha256"] == hashlib.sha256(served_weights).hexdigest()
        requests = len(hub.requests)
        again = run(tiny_repo, "dvc", "exp", "run", "-n", "hub-student-seed-1", "-S", f"student.backbone={SERVED}",
                    "-S", "student.seed=1", env=hub_env(hub, home, offline=True))  # fmt: skip
        assert "student" in stages_run(again.stdout) and len(hub.requests) == requests  # not one request
        assert json.loads((tiny_repo / "metrics" / "student.json").read_text())["weights"] == "hf-cache"

    # measurements only: no provenance, no per-category row (a student-only change)
    diff = json.loads(run(tiny_repo, "dvc", "metrics", "diff", "HEAD", "--json").stdout)
    keys = [f"{file}:{key}" for file, changes in diff.items() for key in changes]
    assert keys and not [key for key in keys if "provenance" in key or "per_category" in key], keys
    assert not any(key.startswith("metrics/evaluate.json:teacher.") for key in keys), keys

    # iaakd compare: the same change as dvc metrics diff, with its interval
    compared = json.loads(
        run(tiny_repo, "python", "-m", "iaakd", "compare", "HEAD", "workspace", "--json").stdout
    )
    for metric in ("srcc", "plcc", "emd"):
        change = diff["metrics/evaluate.json"].get(f"student.{metric}")
        if change is not None:
            assert compared["models"]["student"][metric]["diff"] == pytest.approx(change["diff"], abs=2e-5)
    assert compared["models"]["teacher"]["srcc"]["ci95"] == [0, 0]  # the teacher did not change
    named = json.loads(run(tiny_repo, "python", "-m", "iaakd", "compare", "hub-student", "hub-student-seed-1",
                           "--json").stdout)  # fmt: skip
    assert named["a"] == ["hub-student"] and named["n_images"] == compared["n_images"]

    # offline with an empty cache: one line naming the command that fetches
    result = run(tiny_repo, "dvc", "exp", "run", "-S", f"student.backbone={SERVED}", "-S", "student.seed=2",
                 env=hub_env(None, tmp_path / "empty", offline=True), check=False)  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert f"`iaakd weights fetch {SERVED}`" in errors[0] and "Traceback" not in result.stderr
