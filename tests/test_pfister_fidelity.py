"""Pfister et al.'s pretraining as the authors' code has it (janpf/self-supervised-multi-task-aesthetic-pretraining,
audit items 1, 3 and 5 of ../shared/audits/fidelity-pfister-cskd.md): a forward batch holds one distortion
level of every pool image in the step, the rate after epoch k is their ``MultiplicativeLR``'s, and the loss is
their summed terms through exp(z / T). The preset sets all three."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from iaakd.config import build_config
from iaakd.data.images import Preprocess
from iaakd.errors import UserError
from iaakd.pretraining import train as train_module
from iaakd.pretraining.dataset import SharedVariantBatches, collate_stacks, stack_metadata
from iaakd.pretraining.distortions import group_members, select_distortions
from iaakd.pretraining.losses import PretrainHeads, pretraining_loss
from iaakd.pretraining.pairs import Variant, stack_rows
from iaakd.pretraining.train import (
    PretrainConfig,
    PretrainModel,
    _loader,
    forward_by_level,
    lr_factor,
    pretrain_backbone,
    pretraining_preprocess,
    student_preprocess,
)
from iaakd.student.config import StudentConfig

REPO = Path(__file__).resolve().parents[1]
PREPROCESS = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=32)
SELECTION = select_distortions(["exposure", "tint", "jpeg_compression", "pixelate", "hcrop"])


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(6):
        path = root / f"photo{index}.jpg"
        Image.fromarray(rng.integers(0, 256, (40 + index, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _level_key(batch: dict, rows: torch.Tensor) -> set[tuple]:
    return {
        (
            int(batch["distortion"][row]),
            int(batch["side"][row]),
            int(batch["step"][row]),
            int(batch["group"][row]),
        )
        for row in rows
    }


def test_with_level_batches_each_forward_batch_is_one_distortion_level_of_every_pool_image(pool):
    config = PretrainConfig(level_batches=True, batch_size=3, variants_per_image=6)
    loader = _loader(pool, PREPROCESS, SELECTION, config, seed=0, num_workers=0, training=True,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    steps = list(loader)
    assert len(steps) == 2
    for batch in steps:
        images = torch.unique(batch["image"])
        assert len(images) == 3
        for row in torch.unique(batch["row_in_stack"]):
            rows = torch.nonzero(batch["row_in_stack"] == row).squeeze(-1)
            assert sorted(batch["image"][rows].tolist()) == sorted(images.tolist())  # one row per image
            assert len(_level_key(batch, rows)) == 1  # ... all the same level of the same distortion
    # the two steps of the epoch drew their own variants
    assert _level_key(steps[0], torch.arange(len(steps[0]["image"]))) != _level_key(
        steps[1], torch.arange(len(steps[1]["image"]))
    )


@pytest.mark.parametrize(
    ("level_batches", "training"), [(False, True), (True, False)], ids=["default-training", "held-out"]
)
def test_without_level_batches_and_for_the_held_out_pool_a_stack_position_mixes_levels(
    pool, level_batches, training
):
    """The controls of the test above: the per-image draw (the project's default) mixes levels, so that test
    can tell the two apart; and the held-out pool keeps a draw per image even with level_batches (scored in
    eval mode, it needs no level batches, and shared draws would leave distortions without held-out pairs)."""
    config = PretrainConfig(level_batches=level_batches, batch_size=3, variants_per_image=6)
    loader = _loader(pool, PREPROCESS, SELECTION, config, seed=0, num_workers=0, training=training,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    batch = next(iter(loader))
    mixed = [
        len(_level_key(batch, torch.nonzero(batch["row_in_stack"] == row).squeeze(-1)))
        for row in torch.unique(batch["row_in_stack"])
    ]
    assert max(mixed) > 1


def test_level_batches_drop_an_incomplete_last_step_as_the_authors_loader_does(pool):
    """A level of one image alone would give BatchNorm a batch of one; the authors' loader has drop_last."""
    batches = SharedVariantBatches(7, 3, torch.Generator().manual_seed(0))
    steps = list(batches)
    assert [len(batch) for batch in steps] == [3, 3] and len(batches) == 2
    assert [step for batch in steps for _, step in batch] == [0, 0, 0, 1, 1, 1]
    assert len({index for batch in steps for index, _ in batch}) == 6  # six of the seven images, once each
    config = PretrainConfig(level_batches=True, batch_size=5, held_out_fraction=0.34)
    with pytest.raises(
        UserError,
        match=r"batch_size=5 images: it needs at least 2, and as many training images \(the pool leaves 4\)",
    ):
        pretrain_backbone(config, "mobilenetv2_050", "random", PREPROCESS, pool, progress=False)


def test_forward_by_level_normalises_each_level_by_its_own_batch_statistics():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = PretrainModel(backbone, PretrainHeads(4, "rank+classify", {"style": 2}, dropout=0.0)).train()
    images = torch.randn(6, 3, 8, 8)
    images[1::2] += 3.0  # rows 1, 3, 5 (the second level of each of 3 stacks) share a brightness shift
    row_in_stack = torch.tensor([0, 1, 0, 1, 0, 1])
    outputs = forward_by_level(model, images, row_in_stack)
    first, second = model(images[0::2]), model(images[1::2])
    assert torch.allclose(outputs["score"][0::2], first["score"]) and torch.allclose(
        outputs["score"][1::2], second["score"]
    )
    assert torch.allclose(outputs["auxiliary"]["style"][1::2], second["auxiliary"]["style"])
    # one pass over the mixed rows gives other scores: the shift the level shares is not taken out there
    assert not torch.allclose(model(images)["score"], outputs["score"], atol=1e-3)
    outputs["score"].sum().backward()  # the scattered outputs still carry the gradient
    assert backbone[0].weight.grad is not None


@pytest.mark.parametrize("decay", [0.9, 0.5])
def test_the_rate_after_epoch_k_is_the_authors_multiplicative_decay(decay):
    """train_pre/train.py:101 builds MultiplicativeLR(lambda epoch: decay ** (epoch + 1)) and steps it after
    every epoch: run it beside ours."""
    theirs = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-4)
    ours = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-4)
    their_schedule = torch.optim.lr_scheduler.MultiplicativeLR(theirs, lambda epoch: decay ** (epoch + 1))
    config = PretrainConfig(lr_decay=decay)
    our_schedule = torch.optim.lr_scheduler.LambdaLR(ours, partial(lr_factor, config=config))
    for epoch in range(1, 8):
        theirs.step(), ours.step()  # an epoch's steps (no gradient: the rate is all that is read)
        their_schedule.step()
        our_schedule.step()
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-9)
        assert ours.param_groups[0]["lr"] == pytest.approx(
            1e-4 * decay ** (epoch * (epoch + 3) / 2), rel=1e-9
        )
    assert lr_factor(5, PretrainConfig()) == 1.0  # lr_decay 1 (the default): constant


def _variant(name: str, side: str, step: int) -> Variant:
    levels = SELECTION[name].sides[side]
    return Variant(name, side, float(levels[step - 1]), step, len(levels))


def _two_images_batch() -> dict:
    """Two pool images, each: original, exposure +1 step, exposure +2 steps (rows 0-2 and 3-5)."""
    metadata = stack_metadata(stack_rows([_variant("exposure", "pos", 1), _variant("exposure", "pos", 2)],
                                         SELECTION), SELECTION)  # fmt: skip
    item = {"images": torch.zeros(3, 3, 4, 4), **metadata}
    return collate_stacks([{**item, "index": 0}, {**item, "index": 1}])


def test_the_authors_balance_is_exp_of_the_summed_per_pair_means():
    batch = _two_images_batch()
    assert batch["pairs"].tolist() == [[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5]]
    score = torch.tensor([0.9, 0.8, 0.5, 0.6, 0.7, 0.65])
    # by hand, margin 0.2: pair (orig, +1) images 0.1 and 0.3, mean 0.2; (orig, +2) 0 and 0.25, mean 0.125;
    # (+1, +2) 0 and 0.15, mean 0.075; EfficientRankingLoss sums them: 0.4; h = exp(0.4 / 50)
    outputs = {"score": score, "auxiliary": {}}
    losses = pretraining_loss(outputs, batch, "rank", margin=0.2, balance="authors", temperature=50.0)
    assert losses["rank"].item() == pytest.approx(0.4)
    assert losses["total"].item() == pytest.approx(math.exp(0.4 / 50))
    mean = pretraining_loss(outputs, batch, "rank", margin=0.2)  # the project's default: the mean over pairs
    assert mean["total"].item() == pytest.approx((0.1 + 0.3 + 0.25 + 0.15) / 6)


def test_the_authors_regression_and_classification_are_summed_terms_through_their_own_h():
    batch = _two_images_batch()
    sizes = {group: len(names) for group, names in group_members(SELECTION).items()}
    levels = {group: torch.zeros(6, size) for group, size in sizes.items()}
    levels["style"][:, 0] = torch.tensor([0.1, 0.5, 1.0, -0.2, 0.0, 0.6])  # the exposure column
    # targets +1/5 and +2/5 (five levels on exposure's positive side); originals to 0, once per image
    regress = (
        (0.5 - 0.2) ** 2 + (1.0 - 0.4) ** 2 + 0.1**2 + (0.0 - 0.2) ** 2 + (0.6 - 0.4) ** 2 + 0.2**2
    ) / 2
    losses = pretraining_loss({"score": torch.zeros(6), "auxiliary": levels}, batch, "rank+regress",
                              auxiliary_weight=0.5, balance="authors")  # fmt: skip
    assert losses["regress"].item() == pytest.approx(regress)
    assert losses["total"].item() == pytest.approx(
        math.exp(losses["rank"].item() / 50) + 0.5 * math.exp(regress / 50)
    )
    logits = {group: torch.zeros(6, size) for group, size in sizes.items()}
    logits["style"][:, 0] = 2.0  # exposure (class 0 of the style group's two) at logit 2, tint at 0
    classify = (
        4 * math.log(1 + math.exp(-2.0)) / 2
    )  # four variant rows, their cross-entropy summed, / 2 images
    losses = pretraining_loss({"score": torch.zeros(6), "auxiliary": logits}, batch, "rank+classify",
                              balance="authors")  # fmt: skip
    assert losses["classify"].item() == pytest.approx(classify)


def test_the_pfister_preset_is_the_authors_schedule_and_every_key_exists():
    preset = yaml.safe_load((REPO / "presets" / "pfister.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    merged = {**params["pretrain"], **preset["pretrain"]}
    assert set(preset["pretrain"]) <= set(params["pretrain"]) and set(preset["student"]) <= set(
        params["student"]
    )
    config = build_config(PretrainConfig, merged, "pretrain")
    assert (config.level_batches, config.balance, config.temperature) == (True, "authors", 50.0)
    assert (config.optimiser, config.lr, config.momentum, config.weight_decay) == ("rmsprop", 1e-4, 0.9, 4e-5)
    assert (config.lr_decay, config.batch_size, config.frozen_steps, config.input_size) == (0.9, 5, 200, 224)
    assert preset["student"]["backbone"] == "mobilenetv2_100.ra_in1k"
    assert config.input_mode == preset["student"]["input_mode"] == "letterbox"
    assert preset["student"]["input_size"] == 224


def test_a_run_with_the_authors_settings_forwards_by_level_in_train_mode_and_decays_the_rate(
    pool, monkeypatch
):
    """pretrain_backbone end to end with the preset's switches (a small random backbone: the wiring, not the
    result). Its 4 training images at 3 a step make one step an epoch (the incomplete one dropped); every
    training forward is per level, in train mode, 3 images a level; the rate after 2 epochs is lr x 0.9^5; each
    epoch's training loss is an h(z) = exp(z / 50) >= 1 (the mean loss is about 0.2 at the start)."""
    calls, states, real_fit = [], [], train_module.fit

    def spied_forward(model, images, row_in_stack):
        calls.append(
            (model.training, {int((row_in_stack == row).sum()) for row in torch.unique(row_in_stack)})
        )
        return forward_by_level(model, images, row_in_stack)

    def spied_fit(state, *args, **kwargs):
        states.append(state)
        return real_fit(state, *args, **kwargs)

    monkeypatch.setattr(train_module, "forward_by_level", spied_forward)
    monkeypatch.setattr(train_module, "fit", spied_fit)
    config = PretrainConfig(level_batches=True, balance="authors", lr_decay=0.9, epochs=2, batch_size=3,
                            variants_per_image=4, held_out_fraction=0.34, distortions=["technical"],
                            optimiser="rmsprop", lr=1e-4)  # fmt: skip
    preprocess = student_preprocess("mobilenetv2_050", 32, "bilinear")
    result = pretrain_backbone(config, "mobilenetv2_050", "random", preprocess, pool, progress=False)
    assert calls == [(True, {3})] * 2  # one step an epoch, each level a batch of the step's 3 images
    assert states[0].optimiser.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.9**5)
    assert [row["epoch"] for row in result.history.rows] == [1, 2]
    assert all(row["train_loss"] >= 1.0 for row in result.history.rows), result.history.rows


def _authors_pad_square(image: Image.Image) -> Image.Image:
    """train_pre/dataset.py's pad_square, as written there (torchvision's Resize on a PIL image)."""
    from torchvision import transforms

    image = transforms.Resize(224)(image)
    x, y = image.size
    size = max(224, x, y)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(image, (int((size - x) / 2), int((size - y) / 2)))
    return transforms.Resize(224)(canvas)


@pytest.mark.parametrize("width, height", [(600, 400), (300, 450), (150, 100)])
def test_letterbox_is_the_authors_pad_square_long_side_to_224_on_black_bars(width, height):
    """Audit's input row: the authors fit every image, larger or smaller than 224, with its long side to 224
    on a black square (pad_square); a square resize stretches it and pad_crop never scales a small image up.
    Same bars, same picture (the two resizes theirs takes against one here differ by filter rounding)."""
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    image = Image.fromarray((40 + picture * 0.7).astype(np.uint8))  # never black: the bars are the only black
    ours = (
        Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, size=224, mode="letterbox")(image)
        .permute(1, 2, 0)
        .numpy()
    )
    theirs = np.asarray(_authors_pad_square(image))
    assert ours.shape == theirs.shape == (224, 224, 3)
    ours_black, theirs_black = ours.max(-1) < 20, theirs.max(-1) < 20
    assert (ours_black != theirs_black).mean() < 0.01  # the bars agree to a pixel row at their edges
    content = ~(ours_black | theirs_black)
    assert np.abs(ours.astype(int) - theirs.astype(int))[content].mean() < 2.0
    short = min(width, height) * 224 // max(width, height)
    assert abs(int((~ours_black).any(axis=1 if width > height else 0).sum()) - short) <= 1


def test_pretraining_takes_the_students_input_mode_unless_its_own_is_set():
    """pretrain.input_mode null: the student's (as pretrain.input_size); the preset's letterbox otherwise."""
    student = StudentConfig(backbone="mobilenetv2_050", input_mode="pad_crop", input_size=64, pad_size=80)
    followed = pretraining_preprocess(PretrainConfig(), student)
    assert (followed.mode, followed.size, followed.pad_size) == ("pad_crop", 64, 80)
    own = pretraining_preprocess(PretrainConfig(input_mode="letterbox", input_size=96), student)
    assert (own.mode, own.size, own.pad_size) == ("letterbox", 96, None)
    with pytest.raises(UserError, match=r"student.pad_size=80: it must be >= 96"):
        pretraining_preprocess(
            PretrainConfig(input_size=96), student
        )  # the student's pad_crop, a larger size


def test_three_scores_rank_each_pair_by_its_own_groups_head():
    """The authors' scores="three" (IA.py:63-81, 185-200): a score head per group, a pair of a group's
    distortion ranked by that group's score only. Hand-made: a technical pair ordered by the technical
    column and reversed in the others costs nothing; the one-score loss on the style column would."""
    from iaakd.pretraining.distortions import GROUPS
    from iaakd.pretraining.losses import pair_scores

    technical, style = GROUPS.index("technical"), GROUPS.index("style")
    scores = torch.full((3, len(GROUPS)), 0.5)
    scores[:, technical] = torch.tensor([0.9, 0.6, 0.2])  # reference > step 1 > step 2, by 0.3 or more
    scores[:, style] = torch.tensor([0.1, 0.5, 0.9])  # the wrong order in another group's head
    batch = {
        "pairs": torch.tensor([[0, 1], [0, 2], [1, 2]]),
        "group": torch.tensor([-1, technical, technical]),
    }
    better, worse = pair_scores(scores, batch)
    assert torch.equal(better, torch.tensor([0.9, 0.9, 0.6])) and torch.equal(
        worse, torch.tensor([0.6, 0.2, 0.2])
    )
    three = pretraining_loss({"score": scores, "auxiliary": {}}, batch, "rank", margin=0.2)
    assert float(three["rank"]) == 0.0
    one = pretraining_loss({"score": scores[:, style], "auxiliary": {}}, batch, "rank", margin=0.2)
    assert float(one["rank"]) == pytest.approx((0.6 + 1.0 + 0.6) / 3)  # max(0, 0.2 - (b - w)) per pair


def test_a_run_with_three_scores_trains_a_head_per_group_and_measures_pairs_by_them(pool):
    """pretrain_backbone with scores="three" end to end (a small random backbone): three score heads, and the
    held-out accuracy counts every pair of the selected groups."""
    config = PretrainConfig(scores="three", epochs=1, batch_size=3, variants_per_image=4, held_out_fraction=0.34,
                            distortions=["technical", "style"])  # fmt: skip
    heads = PretrainHeads(8, "rank", {"technical": 2, "style": 2}, scores="three")
    assert heads(torch.zeros(5, 8))["score"].shape == (5, 3)
    preprocess = student_preprocess("mobilenetv2_050", 32, "bilinear")
    result = pretrain_backbone(config, "mobilenetv2_050", "random", preprocess, pool, progress=False)
    after = result.accuracy_after
    assert after["overall"]["pairs"] > 0 and set(after["by_group"]) == {"technical", "style"}
    assert 0.0 <= after["overall"]["accuracy"] <= 1.0
