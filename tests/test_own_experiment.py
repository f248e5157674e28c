"""README "Your own experiment" on the tiny repository: `dvc exp run -S student.backbone=<a Hub model>` fetches
its weights from a stand-in Hub on the loopback and records which file; offline it loads them from the cache
without a request, or stops in one line naming `iaakd weights fetch`; `dvc metrics diff` then lists
measurements only; `iaakd compare` gives the same differences with their intervals."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from conftest import run, stages_run
from hub_stand_in import COMMIT, REPO, SERVED, HubStandIn, hub_vars, timm_safetensors

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
                    env=hub_vars(hub, home))  # fmt: skip
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
                    "-S", "student.seed=1", env=hub_vars(hub, home, offline=True))  # fmt: skip
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
                 env=hub_vars(None, tmp_path / "empty", offline=True), check=False)  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert f"`iaakd weights fetch {SERVED}`" in errors[0] and "Traceback" not in result.stderr


def test_the_readme_own_experiment_blocks_ran_on_the_tiny_demo(reproduction_run):
    """README "Your own experiment", both blocks as written (the grid at two seeds), at the end of the
    reproduction script (conftest.py): `dvc metrics diff` printed measurements only, `iaakd compare` its
    table, and the queued grid's runs are named grid-1..4 in the product's order and compare with paired seeds."""
    repo, finished = reproduction_run
    own = finished.stdout.split("--- own experiment", 1)[1]
    diff_lines = [line for line in own.splitlines() if line.startswith("metrics/")]
    assert any(line.startswith("metrics/evaluate.json") and "student.srcc" in line for line in diff_lines), (
        own
    )
    assert not [line for line in diff_lines if "provenance" in line or "per_category" in line]
    assert "Model    Metric  HEAD" in own and "95% interval" in own
    start = own.index('{\n  "a": [')
    arms = json.loads(own[start : own.index("\n}\n", start) + 2])
    assert arms["a"] == ["grid-1", "grid-2"] and arms["b"] == ["grid-3", "grid-4"]
    assert arms["paired_seeds"] and arms["seeds"] == {"a": [0, 1], "b": [0, 1]}
    for name, (kd, seed) in {"grid-1": (True, 0), "grid-2": (True, 1), "grid-3": (False, 0),
                             "grid-4": (False, 1)}.items():  # fmt: skip
        listed = run(repo, "git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout
        refs = [line.split()[1] for line in listed.splitlines() if line.split()[0].endswith(f"/{name}")]
        assert len(refs) == 1, (name, listed)
        student = yaml.safe_load(run(repo, "git", "show", f"{refs[0]}:params.yaml").stdout)["student"]
        assert (student["kd"]["enabled"], student["seed"]) == (kd, seed), name
    # the other experiments: ran, the last one's student on random weights asked for by name
    workspace = json.loads((repo / "metrics" / "student.json").read_text())
    assert workspace["backbone"].startswith("resnet18") and (workspace["weights"], workspace["epochs"]) == (
        "random",
        20,
    )
