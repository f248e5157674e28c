"""``iaakd export``: ONNX and torch.export files that score real photos as PyTorch does, prepared by the
preprocessing their metadata documents (no iaakd code on the ONNX side)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from scoring_helpers import one_torch_thread, run_cli, save_tiny_student

PHOTOS = 8


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    """One export of a tiny student (bicubic, 96 px, so the metadata must carry both) to ONNX and .pt2."""
    root = tmp_path_factory.mktemp("export")
    checkpoint = save_tiny_student(root / "student.pt", input_size=96, resize_filter="bicubic")
    from iaakd.onnx_export import export_onnx, export_pt2, exported_program
    from iaakd.scorer import Scorer

    scorer = Scorer.load(checkpoint, device="cpu")
    program = exported_program(scorer)
    export_onnx(scorer, root / "student.onnx", program=program)
    export_pt2(scorer, root / "student.pt2", program=program)
    return checkpoint, root / "student.onnx", root / "student.pt2"


def prepare_as_documented(path: Path, description: dict) -> np.ndarray:
    """What a user in another language does, from the metadata alone: upright RGB, resize, uint8 NCHW."""
    resize = description["resize"]
    assert resize["mode"] == "resize" and resize["antialias"] is True
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    image = image.resize(tuple(resize["size"]), getattr(Image.Resampling, resize["filter"].upper()))
    assert description["input"]["layout"] == "NCHW" and description["input"]["dtype"] == "uint8"
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def test_onnxruntime_and_pytorch_agree_on_real_photos_through_the_documented_preprocessing(
    exported, ava_sample
):
    import onnxruntime

    from iaakd import Scorer

    checkpoint, onnx_file, pt2_file = exported
    photos = sorted((ava_sample / "images").glob("*.jpg"))[:PHOTOS]
    assert len(photos) == PHOTOS
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    description = json.loads(metadata["iaakd.preprocessing"])
    assert description == json.loads(Path(f"{onnx_file}.json").read_text())
    assert metadata["input_size"] == "96" and metadata["resize_filter"] == "bicubic"
    assert metadata["output_type"] == "distribution" and metadata["resize_antialias"] == "true"
    assert description["normalisation"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    batch = np.stack([prepare_as_documented(path, description) for path in photos])
    output, score = session.run(["output", "score"], {"image": batch})
    reference = Scorer.load(checkpoint, device="cpu").score(photos)
    assert (reference["error"] == "").all()
    np.testing.assert_allclose(
        output, reference[[f"p{k}" for k in range(1, 11)]].to_numpy(), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(score, reference["mean_score"].to_numpy(), atol=1e-4, rtol=0)
    assert np.ptp(score) > 0  # the photos are told apart: a constant output could not be compared
    extra = {"preprocessing.json": ""}
    program = torch.export.load(pt2_file, extra_files=extra)
    assert json.loads(extra["preprocessing.json"]) == description
    with torch.no_grad():
        pt2_output, pt2_score = program.module()(torch.from_numpy(batch[:3]))
    np.testing.assert_allclose(pt2_output.numpy(), output[:3], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pt2_score.numpy(), score[:3], atol=1e-5, rtol=0)


def test_torchscript_is_refused_with_one_line_pointing_to_pt2(tmp_path, capsys):
    status, _, stderr = run_cli(
        ["export", str(tmp_path / "student.pt"), "--onnx", str(tmp_path / "m.onnx"), "--torchscript", "m.ts"],
        capsys,
    )
    assert status == 1 and stderr.count("\n") == 1 and "use --pt2 FILE (torch.export)" in stderr
    assert not (tmp_path / "m.onnx").exists()


def test_the_export_describes_a_letterboxed_input_as_letterbox_not_as_pad_crop():
    """A model trained on letterboxed inputs (presets/pfister.yaml) tells a user in another language to fit
    the long side and pad with black, never to cut out a centre (the description's other non-resize mode)."""
    from types import SimpleNamespace

    from iaakd.data.images import Preprocess
    from iaakd.onnx_export import preprocessing_description
    from iaakd.tasks import Task

    scorer = SimpleNamespace(
        preprocess=Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, size=224, mode="letterbox"),
        task=Task(), checkpoint={}, data_source="demo", model_sha256="0" * 64,
    )  # fmt: skip
    resize = preprocessing_description(scorer)["resize"]
    assert (resize["mode"], resize["size"], resize["keep_aspect_ratio"]) == ("letterbox", [224, 224], True)
    assert "long side is 224 px" in resize["how"] and "pad_size" not in resize
