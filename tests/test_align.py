"""The `align` stage's library (CSKD phase 1): alignment to a frozen encoder raises the held-out cosine, the
student starts from the aligned backbone exactly (student.init=align), and every mistake is one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from iaakd.align import (
    AlignConfig,
    align_backbone,
    alignment_loss,
    build_encoder,
    encoder_embeddings,
    student_input,
)
from iaakd.errors import UserError
from iaakd.models import create_backbone, hub
from iaakd.pretrained import load_backbone, save_backbone, save_switched_off
from iaakd.stages import align as align_stage
from iaakd.student import StudentConfig, build_student

STUDENT = "tf_efficientnet_lite0"
# A real encoder with packaged ImageNet weights, other than the student's start: lite1 at twice the student's
# side. Real weights make the targets structured (a random encoder's embeddings are near-constant).
ENCODER = "tf_efficientnet_lite1.in1k"
SIDE = 32
SCHEDULE = dict(encoder=ENCODER, encoder_input_size=64, epochs=6, frozen_epochs=2, batch_size=8, lr=3e-4,
                held_out_fraction=0.3, seed=0)  # fmt: skip


def demo_images(root: Path) -> list[str]:
    return sorted(str(path) for path in (root / "images").glob("*.jpg"))


def run_alignment(images: list[str], **changes) -> object:
    config = AlignConfig(**{**SCHEDULE, **changes})
    return align_backbone(
        config, STUDENT, "auto", student_input(STUDENT, SIDE, "bilinear"), images, progress=False
    )


@pytest.fixture(scope="module")
def aligned(tiny_demo):
    return run_alignment(demo_images(tiny_demo))


def test_alignment_raises_the_held_out_cosine_above_before_and_above_the_head_only_control(
    aligned, tiny_demo
):
    # the control: the same 6 epochs, the backbone frozen throughout (a linear probe of the starting backbone),
    # so a gain over it is the backbone's training, not merely a longer-trained head
    head_only = run_alignment(demo_images(tiny_demo), frozen_epochs=6)
    cosine, uncentred = aligned.metrics["held_out_cosine"], aligned.metrics["held_out_uncentred_cosine"]
    control = head_only.metrics["held_out_cosine"]
    print(f"held-out cosine (centred): start {cosine['start']:.3f}, before {cosine['before']:.3f}, after "
          f"{cosine['after']:.3f}; head-only control {control['after']:.3f}; uncentred {uncentred['before']:.3f}"
          f" -> {uncentred['after']:.3f} (constant {uncentred['constant']:.3f})")  # fmt: skip
    assert aligned.metrics["images"] == {"total": 48, "training": 34, "held_out": 14}
    assert [row["epoch"] for row in aligned.history.rows] == [1, 2, 3, 4, 5, 6]
    assert cosine["before"] == aligned.history.rows[1]["val_cosine"]  # after the 2 head-only epochs
    assert abs(cosine["start"]) < 0.1  # centred targets: the head as initialised predicts nothing
    assert cosine["after"] > cosine["before"] + 0.15
    assert cosine["after"] > control["after"] + 0.1
    assert control["start"] == cosine["start"] and control["before"] == control["after"]
    assert uncentred["after"] > uncentred["constant"] + 0.02  # beats the mean embedding as a prediction


def test_the_student_starts_from_the_aligned_backbone_exactly(aligned, tmp_path):
    path = tmp_path / "align.pt"
    save_backbone(path, "align", aligned.backbone, aligned.weights_source, {"encoder": ENCODER})
    config = StudentConfig(backbone=STUDENT, init="align", input_size=SIDE)
    student, _, weights = build_student(config, feature_dim=8, init_file=path)
    assert weights["source"] == "align" and weights["started_from"]["source"] == "packaged"
    images = torch.rand(3, 3, SIDE, SIDE)
    student.eval(), aligned.backbone.eval()
    with torch.no_grad():
        assert torch.equal(student.backbone(images), aligned.backbone(images))
        imagenet, _ = create_backbone(STUDENT, "auto", num_classes=0)  # and it is not the ImageNet start
        assert not torch.allclose(imagenet.eval()(images), aligned.backbone(images))
    loaded, _ = load_backbone(path, "align", STUDENT)
    assert loaded.state_dict().keys() == aligned.backbone.state_dict().keys()


def test_a_switched_off_align_checkpoint_refuses_student_init_align_in_one_line(tmp_path):
    path = tmp_path / "align.pt"
    save_switched_off(path, "align", "student.init=weights")
    with pytest.raises(UserError, match=r"holds no trained backbone \(student\.init=weights\)$"):
        build_student(StudentConfig(backbone=STUDENT, init="align"), 8, init_file=path)


def test_an_unknown_encoder_is_one_line_naming_align_encoder():
    with pytest.raises(UserError) as error:
        build_encoder(AlignConfig(encoder="tf_efficientnet_lite9.in1k"))
    assert str(error.value).startswith("params: align.encoder: unknown backbone 'tf_efficientnet_lite9.in1k'")
    assert "\n" not in str(error.value)


def test_an_encoder_without_offline_weights_stops_instead_of_running_with_random_ones(monkeypatch):
    monkeypatch.setattr(hub, "cached", lambda repo_id: None)  # nothing in the HF cache for it
    monkeypatch.setattr(hub, "offline", lambda: True)  # and the Hub switched off (HF_HUB_OFFLINE=1)
    with pytest.raises(UserError, match=r"^params: align\.encoder_weights=auto for resnet18\.a1_in1k: no "
                                        r"pretrained weights .* or ask for weights=random by name$"):  # fmt: skip
        build_encoder(AlignConfig(encoder="resnet18.a1_in1k"))
    encoder = build_encoder(AlignConfig(encoder="resnet18.a1_in1k", encoder_weights="random"))
    assert encoder.weights["source"] == "random"  # by name only
    assert not any(parameter.requires_grad for parameter in encoder.model.parameters())  # frozen


def test_the_head_embedding_of_a_clip_tower_is_its_projection(tiny_demo):
    # timm's CLIP image towers end in the projection into the joint space (here 256 -> 512); random weights,
    # asked for by name: only the shapes are tested
    images = demo_images(tiny_demo)[:2]
    name = "vit_xsmall_patch16_clip_224.tinyclip_yfcc15m"
    dims = {}
    for embedding in ("head", "pre_logits"):
        encoder = build_encoder(AlignConfig(encoder=name, encoder_weights="random", embedding=embedding,
                                            encoder_input_size=32))  # fmt: skip
        dims[embedding] = encoder_embeddings(encoder, images, progress=False).shape
        assert encoder.preprocess.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # CLIP's own
    assert dims == {"head": (2, 512), "pre_logits": (2, 256)}


def test_the_mse_loss_is_the_squared_distance_of_unit_vectors_and_the_cosine_loss_one_minus_cosine():
    predicted, target = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    cosine = torch.tensor([24 / 25, 0.0])
    assert float(alignment_loss(predicted, target, "cosine")) == pytest.approx(float((1 - cosine).mean()))
    assert float(alignment_loss(predicted, target, "mse")) == pytest.approx(
        float(((2 - 2 * cosine) / 2).mean())
    )
    assert float(alignment_loss(predicted, 5 * predicted, "mse")) == pytest.approx(
        0.0, abs=1e-7
    )  # scale-free
    assert float(F.cosine_similarity(predicted, target).mean()) == pytest.approx(float(cosine.mean()))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"loss": "foo"}, r"params: align\.loss='foo' is not one of cosine, mse$"),
        ({"held_out_fraction": 1.5}, r"params: align\.held_out_fraction=1\.5 must be in \(0, 1\)$"),
        ({"embedding": "tokens"}, r"params: align\.embedding='tokens' is not one of pre_logits, head$"),
        ({"frozen_epochs": 5, "epochs": 4}, r"params: align\.frozen_epochs=5 must be <= align\.epochs=4"),
        ({"lr": 0}, r"params: align\.lr=0(\.0)? must be positive$"),
    ],
)
def test_bad_align_params_are_one_line_naming_the_key(changes, message):
    with pytest.raises(UserError, match=message):
        align_stage.align_config({"align": changes})


def write_params(folder: Path, init: str) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump({"student": {"init": init}, "align": {}}))


def test_the_switched_off_stage_writes_its_no_op_outputs_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "weights")
    start = time.perf_counter()
    align_stage.main([])
    seconds = time.perf_counter() - start
    print(f"switched-off align stage: {seconds:.2f} s")
    assert seconds < 5
    assert json.loads(Path("metrics/align.json").read_text()) == {
        "trained": False,
        "reason": "student.init=weights, align.teacher=false",
    }
    assert Path("plots/align/curves.csv").read_text() == (
        "epoch,train_loss,val_loss,val_cosine,val_uncentred_cosine\n"
    )
    assert Path("plots/align/curves.png").stat().st_size > 0
    with pytest.raises(UserError, match="holds no trained backbone"):
        load_backbone(Path("models/align.pt"), "align", STUDENT)


def test_a_missing_pool_manifest_is_one_line_saying_run_the_pool_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "align")
    with pytest.raises(UserError, match=r"^data/pool/manifest\.parquet: not found; run the pool stage first"):
        align_stage.main([])
    assert not Path("models/align.pt").exists()


def test_the_stage_aligns_on_the_pool_and_the_training_split_never_on_val_or_test(
    tiny_demo, tmp_path, monkeypatch
):
    import pandas as pd

    images = demo_images(tiny_demo)
    pool, labelled = images[:10], images[10:30]
    splits = ["train"] * 8 + ["unlabeled"] * 4 + ["val"] * 4 + ["test"] * 4
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IAAKD_PROGRESS", "0")
    monkeypatch.setenv("IAAKD_DEVICE", "cpu")
    Path("data/pool").mkdir(parents=True)
    pd.DataFrame({"image_id": [f"pool-{i}" for i in range(10)], "path": pool}).to_parquet(
        "data/pool/manifest.parquet"
    )
    ids = [str(100 + i) for i in range(20)]
    pd.DataFrame({"image_id": ids, "path": labelled}).to_parquet("data/labels.parquet")
    pd.DataFrame({"image_id": ids, "split": splits}).to_parquet("data/split.parquet")
    align = {**SCHEDULE, "epochs": 2, "frozen_epochs": 1}
    Path("params.yaml").write_text(
        yaml.safe_dump({"student": {"init": "align", "input_size": SIDE}, "align": align})
    )
    aligned_on = []
    real_align = align_stage.align_backbone

    def spy(config, backbone, weights, preprocess, paths, *args, **kwargs):
        aligned_on.extend(paths)
        return real_align(config, backbone, weights, preprocess, paths, *args, **kwargs)

    monkeypatch.setattr(align_stage, "align_backbone", spy)
    align_stage.main([])
    # the very images: the pool and the training split (train, unlabeled), never a validation or test image
    held_back = {str(path) for path, split in zip(labelled, splits, strict=True) if split in ("val", "test")}
    training = [path for path, split in zip(labelled, splits, strict=True) if split in ("train", "unlabeled")]
    assert sorted(map(str, aligned_on)) == sorted(map(str, pool + training))
    assert not held_back & set(map(str, aligned_on))
    metrics = json.loads(Path("metrics/align.json").read_text())
    assert metrics["images"] == {"pool": 10, "training_split": 12, "total": 22, "training": 15, "held_out": 7}
    assert metrics["trained"] and metrics["encoder"] == ENCODER and metrics["embedding_dim"] == 1280
    assert metrics["held_out_cosine_before"] == metrics["held_out_cosine"]["before"]
    curves = pd.read_csv("plots/align/curves.csv")
    assert curves.columns.tolist() == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_cosine",
        "val_uncentred_cosine",
    ]
    assert curves["epoch"].tolist() == [1, 2] and Path("plots/align/curves.png").stat().st_size > 0
    backbone, weights = load_backbone(Path("models/align.pt"), "align", STUDENT)
    saved = torch.load("models/align.pt", weights_only=True)
    assert saved["details"]["images"]["total"] == 22 and weights["started_from"]["source"] == "packaged"
    assert not Path(".work/align").exists() or not any(
        Path(".work/align").iterdir()
    )  # the checkpoint cleared


def test_a_clip_tower_given_as_a_weights_file_is_loaded_with_its_projection(tmp_path, tiny_demo):
    # what the README's CLIP command does with align.encoder_weights=<file>: timm's state dict in safetensors
    from safetensors.torch import save_file

    name = "vit_xsmall_patch16_clip_224.tinyclip_yfcc15m"
    with torch.random.fork_rng():
        torch.manual_seed(7)
        tower, _ = create_backbone(name, "random")  # stands in for the real tower: its head kept
    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in tower.state_dict().items()}, str(path))
    encoder = build_encoder(AlignConfig(encoder=name, encoder_weights=str(path), embedding="head",
                                        encoder_input_size=32))  # fmt: skip
    assert encoder.weights["source"] == "file" and encoder.weights["path"] == str(path)
    images = demo_images(tiny_demo)[:2]
    embeddings = encoder_embeddings(encoder, images, progress=False)
    with torch.no_grad():
        expected = tower.eval()(
            encoder.preprocess.normalise(torch.stack([encoder.preprocess.load(p) for p in images]))
        )
    assert torch.allclose(embeddings, expected, atol=1e-5)
    pre_logits = build_encoder(AlignConfig(encoder=name, encoder_weights=str(path), encoder_input_size=32))
    assert encoder_embeddings(pre_logits, images, progress=False).shape == (2, 256)  # the head left out
