"""``iaakd explain``: LayerCAM overlays and the contact sheet; the maps pass Adebayo et al.'s
model-randomisation check (they depend on the learnt weights, not on the image alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr
from scoring_helpers import one_torch_thread, run_cli, save_tiny_student, write_photos

from iaakd.explain import SHEET_NAME, THUMB_SIDE, layercam
from iaakd.models import create_backbone
from iaakd.scorer import Scorer, prepare


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def test_explain_writes_one_overlay_per_readable_image_and_a_contact_sheet(tmp_path, capsys):
    checkpoint = save_tiny_student(tmp_path / "student.pt")
    photos = write_photos(tmp_path / "photos", 5)
    (tmp_path / "photos" / "page.jpg").write_text("<html></html>\n", encoding="utf-8")
    out = tmp_path / "explained"
    argv = ["explain", str(checkpoint), str(tmp_path / "photos"), "--out", str(out), "--count", "3"]
    status, _, stderr = run_cli(argv, capsys)
    assert status == 2 and "failed: " in stderr and "page.jpg: unreadable" in stderr
    assert sorted(p.name for p in out.glob("*.layercam.png")) == sorted(
        f"{p.stem}.layercam.png" for p in photos
    )
    with Image.open(photos[0]) as original, Image.open(out / f"{photos[0].stem}.layercam.png") as overlay:
        assert overlay.size[0] == 512 and overlay.size[1] == round(512 * original.height / original.width)
        plain = np.asarray(original.convert("RGB").resize(overlay.size), dtype=np.float32)
        assert (
            np.abs(np.asarray(overlay.convert("RGB"), dtype=np.float32) - plain).mean() > 20
        )  # a heat map on it
    with Image.open(out / SHEET_NAME) as sheet:  # 3 best, and the 2 others as the worst
        assert sheet.width > 3 * THUMB_SIDE and sheet.height > 2 * THUMB_SIDE


def test_layercam_maps_change_when_the_backbone_weights_are_randomised(ava_sample, tmp_path):
    """Adebayo et al. (2018), cascading randomisation: the same head on the ImageNet backbone and on a
    randomly initialised one gives different maps, while the pretrained model's maps follow the image
    (a mirrored photo gives the mirrored map)."""
    trained_file = save_tiny_student(
        tmp_path / "trained.pt", backbone="tf_efficientnet_lite0", input_size=128, weights="auto"
    )
    checkpoint = torch.load(trained_file, map_location="cpu", weights_only=True)
    torch.manual_seed(1)
    random_backbone, _ = create_backbone("tf_efficientnet_lite0", "random", num_classes=0)
    for key, value in random_backbone.state_dict().items():
        checkpoint["state_dict"][f"backbone.{key}"] = value
    torch.save(checkpoint, tmp_path / "randomised.pt")
    trained = Scorer.load(trained_file, device="cpu")
    randomised = Scorer.load(tmp_path / "randomised.pt", device="cpu")
    assert torch.equal(trained.model.student.output.weight, randomised.model.student.output.weight)
    photos = sorted((ava_sample / "images").glob("*.jpg"))[:6]
    images = torch.stack([prepare(str(path), trained.preprocess) for path in photos])
    trained_maps, _ = layercam(trained, images)
    randomised_maps, _ = layercam(randomised, images)
    mirrored_maps, _ = layercam(trained, images.flip(-1))
    assert all(heat_map.std() > 0.05 for heat_map in trained_maps)  # not blank
    after_randomising = [
        spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(trained_maps, randomised_maps, strict=True)
    ]
    mirrored = [
        spearmanr(a.ravel(), b[:, ::-1].ravel())[0] for a, b in zip(trained_maps, mirrored_maps, strict=True)
    ]
    # measured: mirrored 0.92 on average (0.63 to 0.99), after randomising 0.48 (0.03 to 0.74); maps of
    # two different photos from the same model correlate about 0.4 (both favour the centre)
    assert np.mean(mirrored) > 0.8, mirrored
    assert np.mean(after_randomising) < min(0.6, np.mean(mirrored) - 0.3), after_randomising
