"""Models by name (README "Scoring your own photos"): ``iaakd export MODEL --hub-folder DIR`` writes a folder
the Hub takes as it is; ``iaakd score`` and ``Scorer.load`` read it from disk and as ``hf://ORG/NAME[@REV]``
from a stand-in Hub on the loopback (tests/hub_stand_in.py), with the same scores as the ``.pt``; the Hub
commit and the files' SHA-256 land in the output's record; a folder is read without running code."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_stand_in import COMMIT, HubStandIn, hub_env
from scoring_helpers import one_torch_thread, run_cli, save_tiny_student, write_photos

REPO = "example-org/tiny-aesthetics"
FOLDER_FILES = ("config.json", "model.safetensors", "model.onnx", "README.md")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A tiny student (score output, bicubic, so config.json must carry both), its hub folder, photos."""
    from iaakd.tasks import Task

    root = tmp_path_factory.mktemp("sharing")
    checkpoint = save_tiny_student(root / "student.pt", seed=3, input_size=72, resize_filter="bicubic",
                                   task=Task(output="score", score_range=(0.0, 100.0)), data_source="csv")  # fmt: skip
    metrics = root / "evaluate.json"
    metrics.write_text(
        json.dumps({"n": 99, "student": {"srcc": 0.61234, "srcc_ci95": [0.5, 0.7], "plcc": 0.6}})
    )
    from iaakd.cli import main

    with pytest.raises(SystemExit) as exit_:  # in this process: no interpreter start-up
        main(["export", str(checkpoint), "--hub-folder", str(root / "hub"), "--metrics", str(metrics)])
    assert exit_.value.code == 0
    photos = [str(path) for path in write_photos(root / "photos", 12, seed=5)]
    return checkpoint, root / "hub", photos


def scores(model: str, photos: list[str], backend: str = "torch") -> np.ndarray:
    from iaakd import Scorer

    return (
        Scorer.load(model, device="cpu", warn=False, backend=backend).score(photos)["mean_score"].to_numpy()
    )


def test_the_hub_folder_holds_safetensors_config_onnx_and_a_card_from_the_metrics(shared):
    checkpoint, folder, _ = shared
    assert sorted(path.name for path in folder.iterdir()) == sorted(FOLDER_FILES)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"].startswith("test_efficientnet")
    assert config["preprocess"]["size"] == 72 and config["preprocess"]["resize_filter"] == "bicubic"
    assert config["task"]["output"] == "score" and config["task"]["score_range"] == [0.0, 100.0]
    assert config["head"]["output"] == [16, 1] and config["data_source"] == "csv"
    assert config["source_checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    card = (folder / "README.md").read_text()
    assert "| SRCC | 0.612 (95 % interval 0.500 to 0.700) |" in card and "99 held-out test images" in card
    assert "synthetic demo" not in card  # data_source csv: no demo warning


def test_a_demo_model_card_carries_the_warning(tmp_path):
    checkpoint = save_tiny_student(tmp_path / "demo.pt", data_source="demo")
    from iaakd.hub_folder import write_hub_folder
    from iaakd.scorer import Scorer

    write_hub_folder(Scorer.load(checkpoint, "cpu", warn=False, backend="torch"), tmp_path / "hub")
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "Warning: trained on the synthetic demo" in card and "None were given" in card


def test_a_folder_scores_as_the_checkpoint_does_with_either_backend(shared):
    checkpoint, folder, photos = shared
    reference = scores(str(checkpoint), photos)
    assert np.ptp(reference) > 0  # the photos get different scores: equality below means something
    np.testing.assert_allclose(scores(str(folder), photos), reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores(str(folder), photos, "onnxruntime"), reference, atol=1e-4, rtol=0)


def test_hf_name_downloads_through_the_hub_cache_and_records_commit_and_hashes(shared, tmp_path):
    checkpoint, folder, photos = shared
    served = {(REPO, path.name): path.read_bytes() for path in folder.iterdir()}
    out = tmp_path / "scores.csv"
    with HubStandIn(served) as hub:
        env = hub_env(hub, tmp_path / "hf")
        first = subprocess.run([sys.executable, "-m", "iaakd", "score", f"hf://{REPO}@v1", *photos, "--out",
                                str(out), "--backend", "torch"], env=env, capture_output=True, text=True)  # fmt: skip
        assert first.returncode == 0, first.stderr
        downloads = hub.downloads()
        offline = subprocess.run([sys.executable, "-m", "iaakd", "score", f"hf://{REPO}@v1", *photos],
                                 env=hub_env(hub, tmp_path / "hf", offline=True), capture_output=True, text=True)  # fmt: skip
        assert offline.returncode == 0, offline.stderr
        assert hub.downloads() == downloads  # the cache served the second run
    assert downloads == 2  # config.json and model.safetensors, once each (model.onnx is not run here)
    record = json.loads(out.with_name("scores.csv.json").read_text())
    assert (
        record["hub"]["repo"] == REPO
        and record["hub"]["revision"] == "v1"
        and record["hub"]["commit"] == COMMIT
    )
    assert sorted(record["hub"]["files"]) == ["config.json", "model.safetensors"]
    for name in record["hub"]["files"]:
        assert record["hub"]["files"][name] == hashlib.sha256(served[(REPO, name)]).hexdigest()
    assert record["model_sha256"] == hashlib.sha256(served[(REPO, "model.safetensors")]).hexdigest()
    rows = np.loadtxt(out, delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_allclose(rows, scores(str(checkpoint), photos), atol=1e-4)  # 4 decimals in the CSV


def test_hf_name_offline_with_an_empty_cache_is_one_line(tmp_path):
    with HubStandIn({}) as hub:
        result = subprocess.run([sys.executable, "-m", "iaakd", "score", f"hf://{REPO}", str(tmp_path)],
                                env=hub_env(hub, tmp_path / "hf", offline=True), capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {REPO}: config.json is not in the Hugging Face cache and the Hub is switched off (HF_HUB_OFFLINE=1)"
    ]


@pytest.mark.parametrize("name", ["hf://only-a-name", "hf://a/b/c", "hf://a/b@"])
def test_a_malformed_hf_name_is_one_line(name, tmp_path, capsys):
    status, _, err = run_cli(["score", name, str(tmp_path)], capsys)
    assert status == 1 and err.strip() == f"error: {name}: not hf://ORG/NAME or hf://ORG/NAME@REVISION"


class Exploit:
    """A pickle that, loaded, touches MARKER."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


MARKER = Path("/tmp/iaakd-pickle-ran")


def test_a_folder_with_a_pickle_in_place_of_the_safetensors_is_refused_without_running_it(
    shared, tmp_path, capsys
):
    _, folder, photos = shared
    crafted = tmp_path / "crafted"
    shutil.copytree(folder, crafted)
    MARKER.unlink(missing_ok=True)
    (crafted / "model.safetensors").write_bytes(pickle.dumps({"state": Exploit()}))
    status, _, err = run_cli(["score", str(crafted), *photos], capsys)
    assert status == 1
    assert err.startswith(f"error: {crafted / 'model.safetensors'}: not a safetensors file")
    assert len(err.strip().splitlines()) == 1
    (crafted / "model.safetensors").unlink()
    torch.save({"w": Exploit()}, crafted / "pytorch_model.bin")  # the pickle a torch.load would run
    status, _, err = run_cli(["score", str(crafted), *photos], capsys)
    assert status == 1 and not MARKER.exists()
    assert (
        err.strip()
        == f"error: {crafted}: no model.safetensors (found pytorch_model.bin: pickles are never loaded from a folder)"
    )


def test_a_folder_s_shipped_onnx_is_never_run_for_scoring(shared, tmp_path):
    """model.onnx is for other languages: scoring exports the folder's own weights, so an ONNX file from
    another model in its place changes nothing."""
    from iaakd.tasks import Task

    _, folder, photos = shared
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    stranger = save_tiny_student(tmp_path / "stranger.pt", seed=9, input_size=72, resize_filter="bicubic",
                                 task=Task(output="score", score_range=(0.0, 100.0)))  # fmt: skip
    from iaakd.hub_folder import write_hub_folder
    from iaakd.scorer import Scorer

    write_hub_folder(Scorer.load(stranger, "cpu", warn=False, backend="torch"), tmp_path / "stranger")
    shutil.copy(tmp_path / "stranger" / "model.onnx", other / "model.onnx")
    assert (other / "model.onnx").read_bytes() != (folder / "model.onnx").read_bytes()
    np.testing.assert_allclose(
        scores(str(other), photos, "onnxruntime"), scores(str(folder), photos), atol=1e-4
    )
    assert np.ptp(scores(str(stranger), photos) - scores(str(folder), photos)) > 1e-3  # it would have shown


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(head=[]), "head must be a mapping, not []"),
        (lambda c: c["preprocess"].update(resize_filter="xyz"), "preprocess.resize_filter must be one of"),
        (lambda c: c["preprocess"].update(size="72"), 'preprocess.size must be an integer >= 8, not "72"'),
        (lambda c: c["preprocess"].update(std=[0.2, 0.2]), "preprocess.std must be three numbers"),
        (lambda c: c.update(feature_dim=-1), "feature_dim must be a positive integer, not -1"),
    ],
)
def test_a_malformed_config_is_one_line_naming_the_key(shared, tmp_path, capsys, change, message):
    _, folder, photos = shared
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    change(config)
    (broken / "config.json").write_text(json.dumps(config))
    status, _, err = run_cli(["score", str(broken), *photos], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {broken / 'config.json'}: {message}"), err
