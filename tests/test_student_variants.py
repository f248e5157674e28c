"""Table VII's input modes and Table XII's semantic baselines, each in both directions: what the switch
must change changes, and what it must leave alone stays."""

import numpy as np
import pytest
import torch
from PIL import Image

from iaakd.data.images import Preprocess, pad_and_centre_crop
from iaakd.data.labels import two_hot_tags
from iaakd.errors import UserError
from iaakd.losses import tag_loss
from iaakd.models.heads import NUM_TAGS
from iaakd.student import (
    KDConfig,
    StudentConfig,
    StudentData,
    build_student,
    load_student,
    predict,
    save_student,
    train_step,
    train_student,
)

NEUTRAL = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(1, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_pad_crop_keeps_pixels_at_their_scale_in_the_centre():
    image = noise_image(60, 40)
    out = Preprocess(**NEUTRAL, size=80, mode="pad_crop", pad_size=100)(image)
    assert out.shape == (3, 80, 80)
    # centred on a 100 square: left edge at 20, top at 30; the crop starts at 10 -> (10, 20) in the crop
    pasted = out[:, 20:60, 10:70].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pasted, np.asarray(image))  # not resampled: the same pixels
    border = out.clone()
    border[:, 20:60, 10:70] = 0
    assert int(border.abs().sum()) == 0  # the rest is the black padding


def test_pad_crop_cuts_an_image_larger_than_the_crop_and_shrinks_one_larger_than_the_pad():
    large = noise_image(90, 90)  # fits the 100 pad, larger than the 80 crop: the centre 80 remains
    out = Preprocess(**NEUTRAL, size=80, mode="pad_crop", pad_size=100)(large)
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), np.asarray(large)[5:85, 5:85])
    huge = pad_and_centre_crop(noise_image(200, 100), 100, 80, Image.Resampling.BILINEAR)
    rows = np.asarray(huge).any(axis=(1, 2))
    assert huge.size == (80, 80) and rows.sum() == 50  # scaled to 100 x 50 first, aspect ratio kept


def test_resize_mode_stretches_where_pad_crop_does_not():
    image = noise_image(60, 40)
    resized = Preprocess(**NEUTRAL, size=80)(image)
    cropped = Preprocess(**NEUTRAL, size=80, mode="pad_crop", pad_size=100)(image)
    assert resized.shape == cropped.shape and (resized > 0).all()  # no padding: stretched to fill
    assert not torch.equal(resized, cropped)


def test_preprocess_round_trips_and_old_checkpoints_read_as_resize():
    preprocess = Preprocess(**NEUTRAL, size=80, mode="pad_crop", pad_size=100)
    assert Preprocess.from_dict(preprocess.as_dict()) == preprocess
    old = {"mean": [0, 0, 0], "std": [1, 1, 1], "size": 64, "resize_filter": "bilinear"}
    assert Preprocess.from_dict(old).mode == "resize"
    with pytest.raises(ValueError, match="pad_size >= size"):
        Preprocess(**NEUTRAL, size=120, mode="pad_crop", pad_size=100)


def test_two_hot_tags_set_one_column_per_tag_and_refuse_unknown_ids():
    vector = two_hot_tags(np.array([1, 66, 0]), np.array([20, 0, 0]), NUM_TAGS)
    assert vector.shape == (3, 66)
    assert vector[0].nonzero()[0].tolist() == [0, 19] and vector[1].nonzero()[0].tolist() == [65]
    assert vector[2].sum() == 0
    with pytest.raises(UserError, match="ids 0..66"):
        two_hot_tags(np.array([67]), np.array([0]), NUM_TAGS)


@pytest.fixture(scope="module")
def demo_data(tiny_demo):
    from iaakd.data.ava import AvaLayout, load_ava

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    votes = np.stack(labels["votes"].to_numpy()).astype(np.float32)
    truth = votes / votes.sum(1, keepdims=True)
    paths = [str(tiny_demo / p) for p in labels["path"]]
    tags = two_hot_tags(labels["tag1"].to_numpy(), labels["tag2"].to_numpy(), NUM_TAGS)
    assert tags.sum(1).min() >= 1  # every demo image has a first tag
    return paths, truth, tags


def one_batch(demo_data, preprocess, n: int = 8) -> list[torch.Tensor]:
    paths, truth, tags = demo_data
    from iaakd.student import _TargetDataset

    dataset = _TargetDataset(StudentData(paths[:n], truth[:n], tags=tags[:n]), preprocess)
    return list(torch.utils.data.default_collate([dataset[i] for i in range(n)]))


def test_multimodal_output_depends_on_the_tags_and_the_plain_student_ignores_them(demo_data):
    images = torch.randn(4, 3, 32, 32)
    tags = torch.from_numpy(demo_data[2][:4])
    other_tags = tags.roll(1, dims=0)
    config = StudentConfig(weights="random", input_size=32)
    torch.manual_seed(0)
    multimodal = build_student(StudentConfig(**{**config.__dict__, "semantic": "input"}), 8)[0].eval()
    plain = build_student(config, 8)[0].eval()
    with torch.no_grad():
        assert not torch.allclose(multimodal(images, tags).output, multimodal(images, other_tags).output)
        assert torch.equal(plain(images, tags).output, plain(images, other_tags).output)
        assert torch.equal(plain(images).output, plain(images, tags).output)
    assert multimodal.to_feature[0].in_features == plain.to_feature[0].in_features + 64


def test_multitask_tag_loss_falls_and_the_plain_loss_does_not_see_tags(demo_data):
    base = StudentConfig(weights="random", input_size=32, lr=1e-3, kd=KDConfig(enabled=False))
    multitask_config = StudentConfig(**{**base.__dict__, "semantic": "target"})
    torch.manual_seed(0)
    model, preprocess, _ = build_student(multitask_config, 8)
    batch = one_batch(demo_data, preprocess)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.eval()  # fixed BatchNorm statistics: the tag loss before and after is on the same footing

    def current_tag_loss() -> float:
        with torch.no_grad():
            logits = model(preprocess.normalise(batch[0])).tag_logits
        return float(tag_loss(batch[4], logits))

    before, head_before = current_tag_loss(), model.predict_tags.weight.clone()
    for _ in range(5):
        train_step(model, preprocess, batch, optimiser, scaler, multitask_config, torch.device("cpu"))
    assert current_tag_loss() < before * 0.9
    assert not torch.equal(head_before, model.predict_tags.weight)

    # Without the semantic term, the loss is the same whatever tags come with the batch.
    torch.manual_seed(0)
    plain, preprocess, _ = build_student(base, 8)
    losses = []
    for tags in (batch[4], batch[4].roll(1, dims=0)):
        copy = build_student(base, 8)[0]
        copy.load_state_dict(plain.state_dict())
        optimiser = torch.optim.Adam(copy.parameters(), lr=1e-3)
        loss, _ = train_step(
            copy, preprocess, [*batch[:4], tags], optimiser, scaler, base, torch.device("cpu")
        )
        losses.append(float(loss))
    assert losses[0] == losses[1]


def test_semantic_students_train_save_and_reload(demo_data, tmp_path):
    paths, truth, tags = demo_data
    train = StudentData(paths[:24], truth[:24], tags=tags[:24])
    val = StudentData(paths[24:32], truth[24:32], tags=tags[24:32])
    for semantic, mode in (("input", "pad_crop"), ("target", "resize")):
        config = StudentConfig(
            input_size=48, input_mode=mode, pad_size=64, epochs=1, batch_size=8, semantic=semantic,
            kd=KDConfig(enabled=False),
        )  # fmt: skip
        model, preprocess, weights, history = train_student(config, train, val, 8, progress=False)
        assert np.isfinite(history.rows[-1]["val_loss"])
        save_student(tmp_path / f"{semantic}.pt", model, preprocess, config, weights)
        loaded, loaded_preprocess, checkpoint = load_student(tmp_path / f"{semantic}.pt")
        assert checkpoint["head"]["semantic"] == semantic and loaded_preprocess == preprocess
        assert loaded_preprocess.mode == mode
        np.testing.assert_allclose(
            predict(model, paths[:4], preprocess, tags=tags[:4]),
            predict(loaded, paths[:4], loaded_preprocess, tags=tags[:4]),
            atol=1e-6,
        )
    with pytest.raises(UserError, match="takes AVA's two tags per image as input"):
        predict(load_student(tmp_path / "input.pt")[0], paths[:4], loaded_preprocess)
    with pytest.raises(UserError, match="student.semantic=target needs AVA's tags"):
        train_student(config, StudentData(paths[:24], truth[:24]), val, 8, progress=False)
