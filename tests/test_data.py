import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iaakd.data.ava import AvaLayout, load_ava, read_ava_txt, read_id_list, read_tags
from iaakd.data.demo import CATEGORIES, DemoConfig, draw_factors, generate_demo, render_image
from iaakd.data.images import same_size_batches
from iaakd.data.splits import SplitConfig, ilgnet_lists, make_split
from iaakd.errors import UserError


def test_demo_is_in_ava_layout_and_read_by_the_ava_reader(tiny_demo, tmp_path):
    labels, skipped = load_ava(AvaLayout(tiny_demo), tiny_demo)
    assert len(labels) == 48 and len(skipped) == 0
    assert labels["image_id"].str.isdigit().all()
    assert set(labels["tag1"]) <= set(CATEGORIES.values())
    assert set(labels["n_votes"]).issubset(range(78, 550))
    tags = read_tags(tiny_demo / "AVA_dataset" / "tags.txt")
    assert tags[18] == "Still Life" and tags[14] == "Landscape" and tags[19] == "Animals"
    test_ids = read_id_list(tiny_demo / "AVA_dataset" / "aesthetics_image_lists" / "generic_test.jpgl")
    assert len(test_ids) == 12
    category_test = set()
    for name in CATEGORIES:
        category_test |= set(
            read_id_list(tiny_demo / "AVA_dataset" / "aesthetics_image_lists" / f"{name}_test.jpgl")
        )
    assert category_test == set(test_ids)
    assert (tiny_demo / "ilgnet_split" / "AVA1_val.txt").read_text().split("\n")[0].endswith((" 0", " 1"))


def test_demo_is_deterministic_from_its_seed(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    generate_demo(first, DemoConfig(num_images=16, seed=5), progress=False)
    generate_demo(second, DemoConfig(num_images=16, seed=5), progress=False)
    assert (first / "AVA_dataset" / "AVA.txt").read_bytes() == (
        second / "AVA_dataset" / "AVA.txt"
    ).read_bytes()
    assert (first / "images" / "100001.jpg").read_bytes() == (second / "images" / "100001.jpg").read_bytes()


@pytest.fixture(scope="module")
def demo_600_labels(tmp_path_factory):
    """A demo of the default size, labels only: images are drawn small to keep the test fast."""
    root = tmp_path_factory.mktemp("demo600")
    summary = generate_demo(root, DemoConfig(num_images=600, seed=0), progress=False)
    return root, summary


def test_demo_vote_statistics_match_ava(demo_600_labels):
    _, summary = demo_600_labels
    assert summary["votes_min"] >= 78 and summary["votes_max"] <= 549
    assert 180 <= summary["votes_median"] <= 220
    assert summary["mean_score_mean"] == pytest.approx(5.38, abs=0.08)
    assert summary["mean_score_sd"] == pytest.approx(0.73, abs=0.06)
    assert summary["share_above_5"] == pytest.approx(0.71, abs=0.04)
    assert summary["vote_sd_mean"] == pytest.approx(1.43, abs=0.1)


def test_noise_ceiling_is_high_but_below_one(demo_600_labels):
    root, _ = demo_600_labels
    latent = pd.read_csv(root / "latent_scores.csv", dtype={"image_id": str})
    labels = read_ava_txt(root / "AVA_dataset" / "AVA.txt")
    votes = np.stack(labels["votes"].to_numpy())
    means = votes @ np.arange(1, 11) / votes.sum(1)
    from scipy.stats import spearmanr

    ceiling = spearmanr(latent["latent_score"], means).statistic
    assert 0.85 < ceiling < 0.99


def _probe_r2(features: np.ndarray, target: np.ndarray, ridge: float = 1.0) -> float:
    """Cross-validated R^2 (5 folds) of a ridge linear probe on standardised features."""
    features = (features - features.mean(0)) / (features.std(0) + 1e-9)
    n = len(target)
    folds = np.arange(n) % 5
    predictions = np.zeros(n)
    for fold in range(5):
        train, test = folds != fold, folds == fold
        x_train = np.c_[features[train], np.ones(train.sum())]
        weights = np.linalg.solve(
            x_train.T @ x_train + ridge * np.eye(x_train.shape[1]), x_train.T @ target[train]
        )
        predictions[test] = np.c_[features[test], np.ones(test.sum())] @ weights
    return 1 - ((predictions - target) ** 2).sum() / ((target - target.mean()) ** 2).sum()


def _detail_features(image: Image.Image) -> np.ndarray:
    """Statistics of pixel differences at a few steps: a generic texture descriptor, not tuned to any factor."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    values = []
    for step in (1, 2, 3, 4, 6):
        for difference in (grey[:, step:] - grey[:, :-step], grey[step:, :] - grey[:-step, :]):
            magnitude = np.abs(difference)
            values += [np.log1p(np.mean(difference**2))] + [
                np.log1p(np.percentile(magnitude, q)) for q in (25, 50, 90)
            ]
    return np.array(values)


def test_fine_detail_factors_are_weakened_not_erased_at_the_student_size():
    """Noise and JPEG quality, read by a generic linear probe from the files as written, are found worse
    at the student's 128 px than at full size, and still found. (Blur is not weakened by this measure.)"""
    rng = np.random.default_rng(0)
    full, small, targets = [], [], []
    for i in range(240):
        factors = draw_factors(rng)
        image = render_image(np.random.default_rng(i), list(CATEGORIES)[i % 8], (320, 240), factors)
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=factors.jpeg)
        image = Image.open(encoded).convert("RGB")
        full.append(_detail_features(image))
        small.append(_detail_features(image.resize((128, 128), Image.Resampling.BILINEAR)))
        targets.append((factors.noise, factors.jpeg))
    full, small, targets = np.array(full), np.array(small), np.array(targets, dtype=float)
    for column, name in enumerate(("noise", "jpeg")):
        r2_full, r2_small = _probe_r2(full, targets[:, column]), _probe_r2(small, targets[:, column])
        assert r2_small > 0.05, f"{name}: erased at 128 px (R^2 {r2_small:.2f})"
        assert r2_full > r2_small + 0.1, f"{name}: not weakened at 128 px ({r2_full:.2f} vs {r2_small:.2f})"


def test_ava_reader_on_the_real_sample(ava_sample, tmp_path):
    labels = read_ava_txt(ava_sample / "AVA_dataset" / "AVA.txt")
    assert len(labels) == 1212 and labels["image_id"].iloc[0] == "953619"
    assert labels["votes"].iloc[0].tolist() == [0, 1, 5, 17, 38, 36, 15, 6, 5, 1]
    assert (labels["tag1"].iloc[0], labels["tag2"].iloc[0], labels["challenge"].iloc[0]) == (1, 22, 1396)
    usable, skipped = load_ava(AvaLayout(ava_sample), tmp_path)
    assert len(usable) == 86
    assert len(skipped) == 1212 - 86 and set(skipped["reason"]) == {"missing"}
    assert usable["path"].map(lambda p: p.endswith(".jpg")).all()
    assert usable["width"].max() <= 800 and usable["height"].max() <= 800
    test_ids = read_id_list(ava_sample / "AVA_dataset" / "aesthetics_image_lists" / "generic_test.jpgl")
    assert len(test_ids) == 20000


def test_malformed_ava_line_names_file_and_line(tmp_path):
    path = tmp_path / "AVA.txt"
    path.write_text("1 100 0 0 0 0 1 0 0 0 0 0 0 0 1\n2 101 0 0 zero 0 1 0 0 0 0 0 0 0 1\n")
    with pytest.raises(UserError, match=r"AVA.txt:2: expected 15 non-negative integers"):
        read_ava_txt(path)


def test_official_split_takes_the_test_list_and_carves_validation(tmp_path):
    ids = pd.Series([str(i) for i in range(100)])
    (tmp_path / "test.jpgl").write_text("".join(f"{i}\n" for i in range(0, 100, 4)) + "999999\n")
    split = make_split(ids, SplitConfig(name="official", val_fraction=0.2, seed=1), tmp_path / "test.jpgl")
    counts = split["split"].value_counts()
    assert counts["test"] == 25 and counts["val"] == 15 and counts["train"] == 60
    assert set(split.loc[split["split"] == "test", "image_id"]) == {str(i) for i in range(0, 100, 4)}
    again = make_split(ids, SplitConfig(name="official", val_fraction=0.2, seed=1), tmp_path / "test.jpgl")
    pd.testing.assert_frame_equal(split, again)


def test_random_folds_are_disjoint_and_reproducible():
    ids = pd.Series([str(i) for i in range(90)])
    tests = []
    for fold in range(3):
        split = make_split(
            ids, SplitConfig(name="random", num_folds=3, fold=fold, test_size=30, seed=7, val_fraction=0.1)
        )
        tests.append(set(split.loc[split["split"] == "test", "image_id"]))
        assert len(tests[-1]) == 30 and len(split) == 90
    assert tests[0].isdisjoint(tests[1]) and tests[1].isdisjoint(tests[2])
    assert set().union(*tests) == set(ids)
    with pytest.raises(UserError, match="disjoint test sets"):
        make_split(ids, SplitConfig(name="random", num_folds=4, test_size=30))
    with pytest.raises(UserError, match="not one of"):
        make_split(ids, SplitConfig(name="nonsense"))


def test_same_size_batches_never_mix_sizes():
    sizes = [(320, 240), (240, 320), (320, 240), (320, 240), (240, 320)]
    batches = same_size_batches(sizes, batch_size=2)
    assert sorted(i for batch in batches for i in batch) == list(range(5))
    for batch in batches:
        assert len({sizes[i] for i in batch}) == 1 and len(batch) <= 2


def test_exif_rotated_image_reports_its_decoded_size(tmp_path):
    from iaakd.data.images import load_rgb
    from iaakd.data.scan import ORIENTATION_TAG, scan_image

    image = Image.new("RGB", (64, 32), (200, 10, 10))
    exif = image.getexif()
    exif[ORIENTATION_TAG] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    scan = scan_image(str(tmp_path / "rotated.jpg"))
    assert (scan.width, scan.height) == load_rgb(tmp_path / "rotated.jpg").size == (32, 64)
    assert scan.orientation == 6 and scan.unusual() == "EXIF orientation 6"


def test_ilgnet_split_reads_a_clone_of_the_ilgnet_repository_as_well_as_the_demo_layout(tmp_path):
    """split.ilgnet_dir may name a clone of github.com/BestiVictory/ILGnet (data/AVA1/train.txt, val.txt,
    "<id>.jpg <label>" lines); the demo writes AVA1_train.txt and AVA1_val.txt. Either gives the same split."""
    ids = pd.Series([str(1000 + i) for i in range(20)])
    train_lines = "".join(f"{i}.jpg {int(i) % 2}\n" for i in ids[:14])
    test_lines = "".join(f"{i}.jpg {int(i) % 2}\n" for i in ids[14:])
    clone, demo_layout = tmp_path / "ILGnet", tmp_path / "ilgnet_split"
    (clone / "data" / "AVA1").mkdir(parents=True)
    (clone / "data" / "AVA1" / "train.txt").write_text(train_lines)
    (clone / "data" / "AVA1" / "val.txt").write_text(test_lines)
    demo_layout.mkdir()
    (demo_layout / "AVA1_train.txt").write_text(train_lines)
    (demo_layout / "AVA1_val.txt").write_text(test_lines)
    config = SplitConfig(name="ilgnet", val_fraction=0.2)
    splits = []
    for folder in (clone, demo_layout):
        train_list, test_list = ilgnet_lists(folder)
        splits.append(make_split(ids, config, test_list, train_list))
    assert splits[0].equals(splits[1])
    assert set(splits[0].loc[splits[0]["split"] == "test", "image_id"]) == set(ids[14:])
    with pytest.raises(UserError, match=r"neither AVA1_train\.txt and AVA1_val\.txt or data/AVA1/train\.txt"):
        ilgnet_lists(tmp_path / "empty")
