"""Where ``iaakd score``'s forward pass runs (``--backend``) and how it decodes (``--jpeg-draft``): ONNX Runtime
scores real photos as PyTorch does, its export is made once per model and cached by the weights' SHA-256, a
damaged cached export is made again; draft decoding follows the checkpoint unless asked otherwise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scoring_helpers import one_torch_thread, run_cli, save_tiny_student

PHOTOS = 16


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("IAAKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def score_column(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8") as handle:
        return np.array([float(row["mean_score"]) for row in csv.DictReader(handle)])


def test_onnxruntime_and_torch_give_the_same_scores_on_real_photos(ava_sample, tmp_path, cache, capsys):
    checkpoint = save_tiny_student(tmp_path / "student.pt", seed=4, input_size=96)
    photos = [str(path) for path in sorted((ava_sample / "images").glob("*.jpg"))[:PHOTOS]]
    from iaakd import Scorer

    by_torch = Scorer.load(checkpoint, "cpu", warn=False, backend="torch").score(photos)
    by_onnx = Scorer.load(checkpoint, "cpu", warn=False, backend="onnxruntime").score(photos)
    assert (by_onnx["error"] == "").all() and np.ptp(by_torch["mean_score"]) > 0
    values = [f"p{k}" for k in range(1, 11)] + ["mean_score"]
    np.testing.assert_allclose(by_onnx[values].to_numpy(), by_torch[values].to_numpy(), atol=1e-4, rtol=0)
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.csv"
        status, _, err = run_cli(
            ["score", str(checkpoint), *photos, "--out", str(out), "--backend", backend], capsys
        )
        assert status == 0, err
        assert json.loads(out.with_name(out.name + ".json").read_text())["backend"] == backend
    np.testing.assert_allclose(
        score_column(tmp_path / "onnxruntime.csv"), score_column(tmp_path / "torch.csv"), atol=2e-4
    )


def test_auto_takes_onnxruntime_on_the_cpu_and_exports_once_per_model(tmp_path, cache, monkeypatch):
    from iaakd import Scorer

    monkeypatch.delenv("IAAKD_BACKEND", raising=False)  # the default, as a user has it
    from iaakd.runtime import cache_key

    checkpoint = save_tiny_student(tmp_path / "student.pt")
    first = Scorer.load(checkpoint, "cpu", warn=False)
    assert first.backend == "onnxruntime"
    cached = cache / f"{cache_key(first)}.onnx"
    assert [path.name for path in cache.glob("*.onnx")] == [cached.name]
    written = cached.stat().st_mtime_ns
    Scorer.load(checkpoint, "cpu", warn=False)
    assert cached.stat().st_mtime_ns == written  # the second load used the export
    save_tiny_student(tmp_path / "other.pt", seed=1)
    Scorer.load(tmp_path / "other.pt", "cpu", warn=False)
    assert len(list(cache.glob("*.onnx"))) == 2  # another model, another export


def test_a_damaged_cached_export_is_made_again(tmp_path, cache):
    from iaakd import Scorer

    checkpoint = save_tiny_student(tmp_path / "student.pt")
    reference = Scorer.load(checkpoint, "cpu", warn=False, backend="torch")
    Scorer.load(checkpoint, "cpu", warn=False, backend="onnxruntime")
    (cached,) = cache.glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short, as by a full disk
    again = Scorer.load(checkpoint, "cpu", warn=False, backend="onnxruntime")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    from PIL import Image

    np.testing.assert_allclose(again.score([Image.fromarray(image)])["mean_score"],
                               reference.score([Image.fromarray(image)])["mean_score"], atol=1e-4)  # fmt: skip


def test_jpeg_draft_follows_the_checkpoint_and_can_be_switched(tmp_path, cache, capsys):
    from PIL import Image

    big = tmp_path / "big.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(big, quality=90)
    checkpoint = save_tiny_student(tmp_path / "draft.pt", jpeg_draft=True)
    outputs = {}
    for flag in ([], ["--no-jpeg-draft"]):
        out = tmp_path / f"scores{len(flag)}.csv"
        status, _, err = run_cli(["score", str(checkpoint), str(big), "--out", str(out), *flag], capsys)
        assert status == 0, err
        outputs[bool(flag)] = (
            score_column(out)[0],
            json.loads(out.with_name(out.name + ".json").read_text()),
        )
    assert outputs[False][1]["preprocess"]["jpeg_draft"] is True  # as trained
    assert outputs[True][1]["preprocess"]["jpeg_draft"] is False
    from iaakd import Scorer
    from iaakd.scorer import prepare

    drafted, full = (Scorer.load(checkpoint, "cpu", warn=False, jpeg_draft=draft) for draft in (None, False))
    assert drafted.preprocess.jpeg_draft and not full.preprocess.jpeg_draft
    difference = prepare(str(big), drafted.preprocess).float() - prepare(str(big), full.preprocess).float()
    assert difference.abs().mean() > 1  # a 1/8-scale decode is another input than a full one, resized
    assert drafted.score([str(big)])["p1"][0] != full.score([str(big)])["p1"][0]
    status, _, err = run_cli(["score", str(checkpoint), str(big), "--out", str(tmp_path / "scores0.csv"),
                              "--resume", "--no-jpeg-draft"], capsys)  # fmt: skip
    assert status == 1 and "was written with preprocess" in err  # one file never mixes the two decodings


def test_onnxruntime_on_a_gpu_is_refused_in_one_line(tmp_path, capsys):
    import torch

    from iaakd.errors import UserError
    from iaakd.runtime import choose_backend

    with pytest.raises(UserError, match="backend onnxruntime runs on the CPU here"):
        choose_backend("onnxruntime", torch.device("cuda"))
    assert choose_backend("auto", torch.device("cuda")) == "torch"


def test_the_forward_pass_takes_omp_num_threads_else_the_cores_the_workers_leave(monkeypatch):
    from iaakd.runtime import forward_threads, usable_cores

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert forward_threads(1) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert forward_threads(1) == max(1, usable_cores() - 1) and forward_threads(0) == usable_cores()


def test_same_weights_with_another_normalisation_get_their_own_export(tmp_path, cache):
    """Two models with the same weights but a different mean/std compute different graphs: two cache entries."""
    import dataclasses

    from iaakd import Scorer
    from iaakd.runtime import cache_key

    checkpoint = save_tiny_student(tmp_path / "student.pt")
    first = Scorer.load(checkpoint, "cpu", warn=False, backend="torch")
    other = Scorer(first.model.student, dataclasses.replace(first.preprocess, mean=(0.5, 0.5, 0.5)),
                   first.checkpoint, first.device, first.model_sha256, "other", backend="torch")  # fmt: skip
    assert cache_key(first) != cache_key(other)
