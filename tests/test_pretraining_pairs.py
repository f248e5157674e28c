"""Distortion-ranking pretraining (Pfister et al.): variants sampled per side, the ranking pairs the rule
implies, the held-out pair accuracy, the heads and losses, and the loader dataset that makes the stacks."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from iaakd.data.images import Preprocess
from iaakd.pretraining.dataset import DistortionStackDataset, collate_stacks, stack_metadata
from iaakd.pretraining.distortions import DISTORTIONS, group_members, select_distortions
from iaakd.pretraining.losses import (
    PretrainHeads,
    ScoreHead,
    classification_loss,
    margin_ranking_loss,
    pretraining_loss,
    regression_loss,
)
from iaakd.pretraining.pairs import (
    Variant,
    expected_pair_count,
    pair_accuracy,
    ranking_pairs,
    sample_variants,
    stack_rows,
)

PREPROCESS = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=32)


def variant(name: str, side: str, step: int) -> Variant:
    levels = DISTORTIONS[name].sides[side]
    return Variant(name, side, float(levels[step - 1]), step, len(levels))


HAND_MADE = [
    variant("exposure", "neg", 1),
    variant("exposure", "neg", 3),
    variant("exposure", "pos", 2),
    variant("hcrop", "pos", 1),
    variant("hcrop", "pos", 2),
    variant("hcrop", "pos", 5),
    variant("jpeg_compression", "pos", 4),
    variant("rotate", "neg", 2),
]


def test_pair_list_of_a_hand_made_sample_is_exactly_the_rule():
    rows = stack_rows(HAND_MADE)
    assert [(row.role, row.reference) for row in rows[:3]] == [
        ("original", "original"),
        ("reference", "centre_crop"),
        ("reference", "rotation_crop"),
    ]
    # rows 3.. are the variants in order: exposure neg 1, 3 (rows 3, 4), pos 2 (5), hcrop 1, 2, 5 (6-8),
    # jpeg 4 (9), rotate neg 2 (10)
    expected = {
        (0, 3), (0, 4), (3, 4),  # exposure neg: original above both, step 1 above step 3
        (0, 5),  # exposure pos: one level, against the original only
        (1, 6), (1, 7), (1, 8), (6, 7), (6, 8), (7, 8),  # hcrop: below the centred window, then by step
        (0, 9),  # jpeg
        (2, 10),  # rotation: below the 0-degree turn cut to the same box
    }  # fmt: skip
    pairs = ranking_pairs(rows)
    assert len(pairs) == len(set(pairs)) == 12 and set(pairs) == expected
    assert expected_pair_count(HAND_MADE) == 12


def test_the_authors_full_stack_gives_500_pairs():
    """All 171 variants: a side of k levels gives k (k + 1) / 2 pairs; 230 style + 90 technical + 180
    composition."""
    variants = sample_variants(DISTORTIONS, None, np.random.default_rng(0))
    assert len(variants) == 171
    assert expected_pair_count(variants) == len(ranking_pairs(stack_rows(variants))) == 500


@pytest.mark.parametrize(("variants_per_image", "levels_per_side"), [(1, 2), (7, 2), (12, 3), (40, 5)])
def test_sampled_pair_lists_have_the_count_the_rule_implies(variants_per_image, levels_per_side):
    for seed in range(5):
        variants = sample_variants(
            DISTORTIONS, variants_per_image, np.random.default_rng(seed), levels_per_side
        )
        assert len(variants) == variants_per_image
        assert len(ranking_pairs(stack_rows(variants))) == expected_pair_count(variants)


def test_variants_are_drawn_side_by_side_so_each_side_has_pairs_within_it():
    variants = sample_variants(DISTORTIONS, 12, np.random.default_rng(1), levels_per_side=3)
    sides = [(v.distortion, v.side) for v in variants]
    assert len(set(sides)) == 4 and all(sides.count(side) == 3 for side in set(sides))
    assert len(set(variants)) == 12  # no level twice
    for side in set(sides):
        steps = [v.step for v in variants if (v.distortion, v.side) == side]
        assert steps == sorted(steps)


def test_variant_sampling_is_deterministic_per_seed():
    draw = lambda seed: sample_variants(DISTORTIONS, 10, np.random.default_rng(seed))  # noqa: E731
    assert draw(5) == draw(5) and draw(5) != draw(6)


def test_regress_targets_are_the_authors_signed_steps():
    assert variant("exposure", "neg", 2).signed_step == pytest.approx(-0.4)
    assert variant("shadows", "pos", 1).signed_step == pytest.approx(1 / 3)  # shadows has 3 positive levels
    assert variant("jpeg_compression", "pos", 5).signed_step == 1.0


def test_pair_accuracy_counts_ties_half_and_reports_per_distortion_and_group():
    result = pair_accuracy(
        [0.9, 0.2, 0.5, 0.7], [0.1, 0.3, 0.5, 0.6], ["exposure", "exposure", "hcrop", "jpeg_compression"]
    )
    assert result["overall"]["accuracy"] == 0.625 and result["overall"]["pairs"] == 4
    assert result["overall"]["ci95"] == pytest.approx([0.194120, 0.993691], abs=1e-6)  # 3 of 4
    assert {name: r["accuracy"] for name, r in result["by_distortion"].items()} == {
        "exposure": 0.5,
        "jpeg_compression": 1.0,
        "hcrop": 0.5,
    }
    assert {group: r["accuracy"] for group, r in result["by_group"].items()} == {
        "style": 0.5,
        "technical": 1.0,
        "composition": 0.5,
    }
    assert result["overall"]["chance"] == 0.5


def test_pair_accuracy_interval_excludes_chance_for_90_of_100():
    result = pair_accuracy([1.0] * 90 + [0.0] * 10, [0.5] * 100, ["tint"] * 100)
    assert result["by_group"]["style"]["ci95"] == pytest.approx([0.823777, 0.950995], abs=1e-6)


def test_ranking_loss_is_zero_for_pairs_ordered_by_at_least_the_margin():
    scores = torch.tensor([0.875, 0.5, 0.25], dtype=torch.float64)
    pairs = torch.tensor([[0, 1], [1, 2], [0, 2]])
    assert margin_ranking_loss(scores, pairs, margin=0.25).item() == 0.0  # 0.375, 0.25 (exactly), 0.625
    assert margin_ranking_loss(scores, pairs, margin=0.2).item() == 0.0


def test_ranking_loss_is_the_mean_shortfall_from_the_margin_otherwise():
    scores = torch.tensor([0.5, 0.45, 0.6], dtype=torch.float64, requires_grad=True)
    pairs = torch.tensor([[0, 1], [1, 2], [0, 2]])
    loss = margin_ranking_loss(scores, pairs, margin=0.2)
    # shortfalls: 0.2 - 0.05, 0.2 + 0.15, 0.2 + 0.1
    assert loss.item() == pytest.approx((0.15 + 0.35 + 0.3) / 3, abs=1e-12)
    loss.backward()
    assert scores.grad.tolist() == pytest.approx([-2 / 3, 0.0, 2 / 3])
    assert margin_ranking_loss(scores, torch.zeros((0, 2), dtype=torch.long)).item() == 0.0


def test_score_head_is_dropout_linear_sigmoid_one_score_per_image():
    head = ScoreHead(16, dropout=0.2)
    assert [type(layer).__name__ for layer in head.layers] == ["Dropout", "Linear", "Sigmoid"]
    assert head.layers[0].p == 0.2
    scores = head.eval()(torch.randn(5, 16))
    assert scores.shape == (5,) and bool(((scores > 0) & (scores < 1)).all())


SELECTION = select_distortions(["exposure", "tint", "jpeg_compression", "defocus_blur", "pixelate", "hcrop"])


def _batch(variants):
    return stack_metadata(stack_rows(variants, SELECTION), SELECTION)


def test_classification_loss_is_the_group_balanced_cross_entropy():
    variants = [variant("exposure", "pos", 1), variant("tint", "neg", 2), variant("pixelate", "pos", 3)]
    batch = _batch(variants)
    assert batch["class_in_group"].tolist() == [
        -1,
        0,
        1,
        2,
    ]  # style: exposure, tint; technical: jpeg, defocus, pixelate
    sizes = {group: len(names) for group, names in group_members(SELECTION).items()}
    logits = {group: torch.zeros(len(batch["group"]), size) for group, size in sizes.items()}
    # uniform logits: log(2) for the style group, log(3) for the technical one; composition has no variant
    assert classification_loss(logits, batch).item() == pytest.approx((math.log(2) + math.log(3)) / 2)


def test_regression_loss_puts_the_signed_level_in_the_distortions_column_and_zero_for_its_reference():
    variants = [variant("exposure", "neg", 5), variant("hcrop", "pos", 2)]
    batch = _batch(variants)  # rows: original, centre crop, exposure -3 EV, hcrop +2
    assert batch["target"].tolist() == pytest.approx([0, 0, -1.0, 0.4])
    assert batch["reference_row"].tolist() == [-1, -1, 0, 1]
    predicted = {group: torch.zeros(4, len(names)) for group, names in group_members(SELECTION).items()}
    predicted["style"][0, 0] = 0.5  # the original's exposure column: should be 0
    predicted["style"][0, 1] = 9.0  # its tint column: no tint variant here, so not regressed
    # style: ((-1 - 0)^2 + 0.5^2) / 2; composition: (0.4^2 + 0) / 2; their mean
    assert regression_loss(predicted, batch).item() == pytest.approx(((1 + 0.25) / 2 + 0.16 / 2) / 2)


@pytest.mark.parametrize(
    ("task", "keys"), [("rank", set()), ("rank+classify", {"classify"}), ("rank+regress", {"regress"})]
)
def test_pretraining_loss_adds_the_tasks_auxiliary_term(task, keys):
    torch.manual_seed(0)
    batch = _batch(sample_variants(SELECTION, 8, np.random.default_rng(0)))
    sizes = {group: len(names) for group, names in group_members(SELECTION).items()}
    heads = PretrainHeads(6, task, sizes).eval()
    losses = pretraining_loss(
        heads(torch.randn(len(batch["group"]), 6)), batch, task, margin=0.2, auxiliary_weight=0.5
    )
    assert set(losses) == {"rank", "total", *keys}
    auxiliary = sum(losses[key].item() for key in keys)
    assert losses["total"].item() == pytest.approx(losses["rank"].item() + 0.5 * auxiliary)
    assert len(heads.auxiliary) == (0 if task == "rank" else 3)
    with pytest.raises(ValueError, match=r"'rank\+both' is not one of"):
        pretraining_loss(heads(torch.randn(2, 6)), batch, "rank+both")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    paths = []
    for index, size in enumerate([(64, 48), (48, 64), (60, 60)]):
        path = root / f"photo{index}.{'png' if index == 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_dataset_item_is_the_uint8_stack_with_its_pairs(pool):
    dataset = DistortionStackDataset(
        pool, PREPROCESS, DISTORTIONS, variants_per_image=9, seed=1, levels_per_side=3
    )
    item = dataset[0]
    rows = len(item["images"])
    assert item["images"].dtype == torch.uint8 and item["images"].shape[1:] == (3, 32, 32)
    references = int((item["distortion"] == -1).sum())
    assert rows == references + 9 and 1 <= references <= 3
    # the rule's count, read back from the metadata: per (distortion, side) with k variants, k + k (k-1)/2
    variant_rows = item["distortion"] >= 0
    sides = list(
        zip(item["distortion"][variant_rows].tolist(), item["side"][variant_rows].tolist(), strict=True)
    )
    assert len(item["pairs"]) == sum(sides.count(s) + math.comb(sides.count(s), 2) for s in set(sides))
    assert item["pair_distortion"].tolist() == item["distortion"][item["pairs"][:, 1]].tolist()


def test_dataset_original_row_is_what_the_students_preprocess_gives(pool):
    """Distorting at the file's own resolution (work_scale None), row 0 is Preprocess.load's tensor."""
    dataset = DistortionStackDataset(pool, PREPROCESS, DISTORTIONS, 4, seed=0, work_scale=None)
    for index in range(len(pool)):
        assert torch.equal(dataset[index]["images"][0], PREPROCESS.load(pool[index]))


def _drawn(item: dict) -> list:
    return list(zip(item["distortion"].tolist(), item["side"].tolist(), item["step"].tolist(), strict=True))


def test_dataset_is_deterministic_per_seed_and_draws_anew_each_epoch(pool):
    dataset = DistortionStackDataset(pool, PREPROCESS, DISTORTIONS, 6, seed=3)
    first = dataset[1]
    again = DistortionStackDataset(pool, PREPROCESS, DISTORTIONS, 6, seed=3)[1]
    assert torch.equal(first["images"], again["images"]) and _drawn(first) == _drawn(again)
    dataset.set_epoch(1)
    assert _drawn(dataset[1]) != _drawn(first)
    assert _drawn(DistortionStackDataset(pool, PREPROCESS, DISTORTIONS, 6, seed=4)[1]) != _drawn(first)
    dataset.set_epoch(0)
    assert torch.equal(dataset[1]["images"], first["images"])


def test_loader_workers_make_the_same_stacks_and_collate_keeps_pairs_within_an_image(pool):
    dataset = DistortionStackDataset(pool, PREPROCESS, DISTORTIONS, 5, seed=2)
    loader = DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=collate_stacks)
    batch = next(iter(loader))
    here = collate_stacks([dataset[index] for index in range(3)])
    assert torch.equal(batch["images"], here["images"]) and torch.equal(batch["pairs"], here["pairs"])
    image = batch["image"]
    assert torch.equal(image[batch["pairs"][:, 0]], image[batch["pairs"][:, 1]])
    variants = batch["reference_row"] >= 0
    assert torch.equal(image[batch["reference_row"][variants]], image[variants])
    assert len(batch["pairs"]) == sum(len(dataset[index]["pairs"]) for index in range(3))
