"""scripts/experiment.py, what the result scripts share: teacher knowledge looked up by image id, and
resumable results written so that a kill never leaves a file the next run cannot read."""

import json
import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from conftest import GIT_COMMIT, REPO_ROOT, commit, run

from iaakd import atomic
from iaakd.errors import UserError


@pytest.fixture
def experiment(monkeypatch) -> Iterator:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    import experiment

    before = list(experiment.RAN)  # the scripts hold the same list: emptied in place, restored after
    experiment.RAN.clear()
    yield experiment
    experiment.RAN[:] = before


def test_knowledge_of_an_id_not_in_the_frame_is_an_error_not_the_last_rows(experiment):
    """``get_indexer`` gives -1 for an unknown id: the last image's knowledge, silently."""
    position = pd.Index(["10", "11", "12"])
    outputs, features = np.array([[0.0], [1.0], [2.0]]), np.array([[5.0], [6.0], [7.0]])
    output, feature = experiment.knowledge_rows(position, ["12", "10"], outputs, features)
    assert output.tolist() == [[2.0], [0.0]] and feature.tolist() == [[7.0], [5.0]]
    unknown = [str(i) for i in range(20, 27)]
    with pytest.raises(
        UserError,
        match=r"^no teacher knowledge for 7 of 8 images, for example '20', '21', '22', '23', '24' \(not in",
    ):
        experiment.knowledge_rows(position, ["11", *unknown], outputs, features)


def test_results_killed_mid_write_keep_the_last_complete_file(experiment, tmp_path, monkeypatch):
    out = tmp_path / "results" / "ablations.json"
    experiment.write_results(out, {"signature": {"a": 1}, "tables": {"v": {"rows": []}}})

    def killed(_path):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_fsync_file", killed)
    with pytest.raises(KeyboardInterrupt):
        experiment.write_results(out, {"signature": {"a": 1}, "tables": {"v": {"rows": []}, "vi": {}}})
    assert experiment.earlier_results(out, {"a": 1})["tables"] == {"v": {"rows": []}}
    assert [path.name for path in out.parent.iterdir()] == ["ablations.json"]


def test_a_results_file_cut_short_by_an_older_version_starts_again(experiment, tmp_path, capsys):
    out = tmp_path / "ablations.json"
    out.write_text('{"signature": {"a": 1}, "tables": {"v": ')
    assert experiment.earlier_results(out, {"a": 1}) == {}
    assert "not readable JSON; starting again" in capsys.readouterr().out


def test_results_record_the_devices_and_precisions_their_models_ran_with(experiment, tmp_path):
    out = tmp_path / "kd.json"
    experiment.write_results(out, {})
    assert json.loads(out.read_text())["provenance"]["device"] is None  # nothing trained yet
    experiment.RAN.extend([("cuda:0", "bf16"), ("cpu", "fp32"), ("cpu", "fp32")])
    experiment.write_results(out, {})
    provenance = json.loads(out.read_text())["provenance"]
    assert (provenance["device"], provenance["precision"]) == ("cpu, cuda:0", "bf16, fp32")


def test_results_name_the_commit_the_script_started_at_not_one_made_while_it_ran(tmp_path):
    """results/pretraining.json named the HEAD when it was written, a commit made while the script ran for
    hours, not the code that ran. A script in a repository that gets a commit between its start
    and its results: they name the first."""
    git_repo = tmp_path / "repo"
    git_repo.mkdir()
    run(git_repo, "git", "init", "-q")
    commit(git_repo, "the code that runs")
    started = run(git_repo, "git", "rev-parse", "HEAD").stdout.strip()
    script = (
        "import subprocess, sys, pathlib, experiment\n"
        "subprocess.run(sys.argv[1:], check=True)\n"  # a commit while the script runs
        "experiment.write_results(pathlib.Path('out.json'), {})\n"
    )
    run(git_repo, sys.executable, "-c", script, *GIT_COMMIT, "--allow-empty", "-q", "-m", "later",
        env={"PYTHONPATH": str(REPO_ROOT / "scripts")})  # fmt: skip
    assert run(git_repo, "git", "rev-parse", "HEAD").stdout.strip() != started
    assert json.loads((git_repo / "out.json").read_text())["provenance"]["git_commit"] == started


def test_results_made_from_kept_runs_alone_name_the_devices_those_runs_ran_on(
    experiment, tmp_path, monkeypatch
):
    """A fully resumed script trained nothing itself: its provenance said device null, precision null. A kept
    run records what its training ran (a teacher's distiller on the CPU, a student on IAAKD_DEVICE), whatever
    the configuration that keys it (a DistillerConfig has no precision)."""
    from iaakd.student import StudentConfig
    from iaakd.teacher import DistillerConfig

    def student_and_teacher():
        experiment.RAN.extend([("cuda", "bf16"), ("cpu", "fp32")])
        return rows

    rows, store = np.ones((4, 1)), experiment.RunStore(tmp_path, {"inputs": {}})
    arm = type("Arm", (), {"name": "teacher", "store_key": {"name": "teacher"}})()
    experiment.RAN.append(("mps", "fp16"))  # an earlier run of this process: not this run's
    store.get(arm, 0, StudentConfig(epochs=1, precision="bf16"), rows.shape, student_and_teacher)
    store.get(arm, 1, DistillerConfig(epochs=1), rows.shape, student_and_teacher)
    experiment.RAN.clear()  # another process: it trains nothing
    _, loaded = experiment.RunStore(tmp_path, {"inputs": {}}).get(
        arm, 1, DistillerConfig(epochs=1), rows.shape, pytest.fail
    )
    out = tmp_path / "kd.json"
    experiment.write_results(out, {})
    provenance = json.loads(out.read_text())["provenance"]
    assert loaded and (provenance["device"], provenance["precision"]) == ("cpu, cuda", "bf16, fp32")
    made = store.path(arm, 0, StudentConfig(epochs=1, precision="bf16")).with_suffix(".made.json")
    assert json.loads(made.read_text()) == {"ran": [["cpu", "fp32"], ["cuda", "bf16"]]}
    made.write_text("{")  # damaged: the run still loads, its device is not reported
    experiment.RAN.clear()
    _, loaded = store.get(arm, 0, StudentConfig(epochs=1, precision="bf16"), rows.shape, pytest.fail)
    assert loaded and experiment.RAN == []


def test_the_cskd_teacher_never_holds_the_alignment_encoder_among_its_backbones(monkeypatch):
    """CSKD's "aligned" rows measured more distillation from the teacher's own backbone when the encoder was
    one of them (the demo's lite2): the CSKD teacher is the distiller's backbones less the encoder, and an
    encoder that is the only backbone is one line."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    import cskd

    trio = ["tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"]
    params = {"distiller": {"backbones": trio}}
    assert cskd.teacher_backbones(params, "tf_efficientnet_lite2.in1k") == trio[:2]
    assert cskd.teacher_backbones(params, "vit_base_patch16_clip_224.openai") == trio
    with pytest.raises(UserError, match="distiller.backbones has no backbone besides align.encoder"):
        cskd.teacher_backbones({"distiller": {"backbones": trio[2:]}}, trio[2])


def test_pipeline_inputs_are_the_data_not_the_provenance_a_rerun_rewrites(experiment, tmp_path):
    """A stage that reruns on the same data writes a new provenance report (git commit, time): counted as an
    input, it changed every kept run's key, and the KD comparison's runs were no longer found by the scripts
    that reuse them."""
    lock = tmp_path / "dvc.lock"
    outs = [{"path": "reports/provenance/dataset.json", "md5": "a"}, {"path": "metrics/dataset.json", "md5": "b"},
            {"path": "data/labels.parquet", "md5": "c"}]  # fmt: skip
    lock.write_text(
        json.dumps({"schema": "2.0", "stages": {"dataset": {"outs": outs}, "student": {"outs": []}}})
    )
    assert experiment.pipeline_inputs(lock) == {"data/labels.parquet": "c"}
