"""The `pretrain` stage's library: distortion ranking lifts held-out pair accuracy, and the student starts
from the pretrained backbone exactly (student.init=pretrain), or stops in one line when it cannot."""

from __future__ import annotations

import pytest
import torch

from iaakd.data.demo import generate_good_pool
from iaakd.errors import UserError
from iaakd.models import create_backbone
from iaakd.pretrained import load_backbone, save_backbone, save_switched_off
from iaakd.pretraining.train import PretrainConfig, pretrain_backbone, student_preprocess
from iaakd.student import StudentConfig, build_student

BACKBONE = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    pool = [str(path) for path in generate_good_pool(folder, 20, seed=0, progress=False)]
    # the tone edits and the technical group: what three epochs on 20 photos learn at any seed (+0.22 to +0.33
    # at seeds 0-2). With the whole style group (darktable's tint at full strength, vibrance's lower side that
    # ranks the photo above a copy of itself) six held-out photos move by chance: -0.10 to +0.22 at seeds 0-3
    config = PretrainConfig(epochs=3, batch_size=4, variants_per_image=6, lr=1e-3, held_out_fraction=0.3,
                            distortions=["technical", "exposure", "brightness", "contrast"])  # fmt: skip
    preprocess = student_preprocess(BACKBONE, 48, "bilinear")
    return pretrain_backbone(config, BACKBONE, "auto", preprocess, pool, progress=False)


def test_a_short_run_lifts_held_out_pair_accuracy_above_its_value_before_training(pretrained):
    before, after = pretrained.accuracy_before["overall"], pretrained.accuracy_after["overall"]
    assert before["pairs"] == after["pairs"] > 40  # the same held-out pairs before and after
    print(f"held-out pair accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}")
    assert after["accuracy"] > before["accuracy"] + 0.05
    assert [row["epoch"] for row in pretrained.history.rows] == [1, 2, 3]


def test_the_student_starts_from_the_pretrained_backbone_exactly(pretrained, tmp_path):
    path = tmp_path / "pretrain.pt"
    save_backbone(path, "pretrain", pretrained.backbone, pretrained.weights_source, {})
    config = StudentConfig(backbone=BACKBONE, init="pretrain", input_size=48)
    student, preprocess, weights = build_student(config, feature_dim=8, init_file=path)
    assert weights["source"] == "pretrain" and weights["started_from"]["source"] == "packaged"
    images = torch.rand(3, 3, 48, 48)
    student.eval(), pretrained.backbone.eval()
    with torch.no_grad():
        assert torch.equal(student.backbone(images), pretrained.backbone(images))
    imagenet, _ = create_backbone(BACKBONE, "auto", num_classes=0)  # and it is not the ImageNet start
    assert not torch.equal(imagenet.eval()(images), pretrained.backbone(images))


def test_a_pretrained_backbone_of_another_architecture_stops_in_one_line(pretrained, tmp_path):
    path = tmp_path / "pretrain.pt"
    save_backbone(path, "pretrain", pretrained.backbone, pretrained.weights_source, {})
    with pytest.raises(UserError, match=r"a tf_efficientnet_lite0\.in1k backbone, but student\.backbone is "
                                         r"tf_efficientnet_lite1\.in1k; rerun `pretrain`"):  # fmt: skip
        build_student(StudentConfig(backbone="tf_efficientnet_lite1", init="pretrain"), 8, init_file=path)


def test_the_switched_off_stage_output_cannot_start_a_student(tmp_path):
    path = tmp_path / "pretrain.pt"
    save_switched_off(path, "pretrain", "student.init=weights")
    with pytest.raises(UserError, match=r"holds no trained backbone \(student\.init=weights\)"):
        load_backbone(path, "pretrain", BACKBONE)
