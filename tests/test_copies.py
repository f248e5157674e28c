"""The copy detector (iaakd.data.copies) on real AVA photos: every kind of made copy a review found the
perceptual hash missed is found and named with its original; independent photos are never taken for copies;
and both pools (CSKD's unlabelled pool, the pretraining pool from folders) drop them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

from iaakd.data.copies import CopyConfig, embeddings, find_copies, keypoints, trim_borders
from iaakd.data.images import load_rgb

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from copy_detector import TRANSFORMS, content_keys, made_copies  # noqa: E402

CONFIG = CopyConfig()


@pytest.fixture(scope="module")
def real_photos(request) -> list[str]:
    """24 AVA-sample photos with texture enough for keypoints (the one near-featureless photo of the 86, 33
    keypoints, is the detector's known miss: README)."""
    ava_sample = request.getfixturevalue("ava_sample")
    files = sorted((ava_sample / "images").glob("*.jpg"))
    textured = [str(file) for file in files if len(keypoints(load_rgb(file))[0]) >= 2 * CONFIG.min_inliers]
    assert len(textured) >= 24
    return textured[:24]


@pytest.fixture(scope="module")
def labelled(real_photos) -> tuple[list[str], object]:
    chosen = real_photos[:12]
    return chosen, embeddings(chosen, content_keys(chosen))


@pytest.mark.parametrize("kind", list(TRANSFORMS))
def test_every_made_copy_of_a_real_photo_is_found_and_names_its_original(labelled, tmp_path, kind):
    """Mirrored, cropped to 90 % (corner) and 80 % (centre), rotated by 90° and 270°, half size, re-encoded,
    letterboxed, and all of them at once: the perceptual hash kept 10-12 of 12 of most of these."""
    originals, reference = labelled
    copies = made_copies([Path(path) for path in originals], tmp_path)[kind]
    found = find_copies(copies, embeddings(copies, content_keys(copies)), originals, reference, CONFIG)
    assert found.match.tolist() == list(range(len(originals))), found.inliers.tolist()
    assert (found.inliers >= CONFIG.min_inliers).all()


def test_independent_real_photos_are_never_taken_for_copies(real_photos, labelled):
    originals, reference = labelled
    others = real_photos[12:]
    found = find_copies(others, embeddings(others, content_keys(others)), originals, reference, CONFIG)
    assert (found.match == -1).all(), found.inliers.tolist()


def test_a_copy_within_one_pool_names_the_first_and_the_first_is_kept(real_photos, tmp_path):
    first, other = real_photos[0], real_photos[1]
    rotated = tmp_path / "rotated.jpg"
    TRANSFORMS["rotated 90°"](load_rgb(first)).save(rotated, quality=90)
    pool = [first, other, str(rotated)]
    vectors = embeddings(pool, content_keys(pool))
    found = find_copies(pool, vectors, pool, vectors, CONFIG, earlier_only=True)
    assert found.match.tolist() == [-1, -1, 0]


def test_a_letterbox_is_trimmed_to_the_photo():
    from PIL import Image

    photo = Image.new("RGB", (60, 40), (200, 30, 90))
    framed = Image.new("RGB", (100, 100), (0, 0, 0))
    framed.paste(photo, (20, 30))
    assert trim_borders(framed).size == (60, 40)
    assert trim_borders(Image.new("RGB", (9, 9), (5, 5, 5))).size == (9, 9)  # all one colour: unchanged


def write_labels(repo: Path, files: list[str], splits: list[str]) -> pd.DataFrame:
    from iaakd.data.scan import scan_images

    labels = pd.DataFrame({"image_id": [Path(file).stem for file in files], "path": files,
                           "file_hash": scan_images(files)["file_hash"], "split": splits})  # fmt: skip
    (repo / "data").mkdir(parents=True, exist_ok=True)
    labels.to_parquet(repo / "data" / "labels.parquet")
    return labels


def test_the_pretraining_pool_from_folders_drops_copies_of_test_images(real_photos, tmp_path, monkeypatch):
    """pretrain.source=folders compared nothing with the labelled images: a mirrored test photo and a
    cropped validation photo would have been pretrained on."""
    from iaakd.pretraining.train import PretrainConfig
    from iaakd.stages.pretrain import pool_images

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IAAKD_PROGRESS", "0")
    labels = write_labels(tmp_path, real_photos[:3], ["train", "val", "test"])
    folder = tmp_path / "photos"
    folder.mkdir()
    TRANSFORMS["mirrored"](load_rgb(real_photos[2])).save(folder / "mirrored_test.jpg", quality=92)
    TRANSFORMS["cropped 80 % (centre)"](load_rgb(real_photos[1])).save(folder / "cropped_val.jpg", quality=92)
    for number, photo in enumerate(real_photos[3:6]):
        load_rgb(photo).save(folder / f"other_{number}.jpg", quality=92)
    kept, skipped = pool_images(PretrainConfig(source="folders", folders=[str(folder)]))
    assert sorted(Path(path).name for path in kept) == ["other_0.jpg", "other_1.jpg", "other_2.jpg"]
    reasons = {Path(row["file"]).name: row["reason"] for row in skipped}
    assert reasons.keys() == {"mirrored_test.jpg", "cropped_val.jpg"}
    assert (
        reasons["mirrored_test.jpg"].startswith("near_copy_of_labelled")
        and labels["image_id"][2] in reasons["mirrored_test.jpg"]
    )


def test_the_unlabelled_pool_stage_drops_a_rotated_copy_of_a_test_photo(real_photos, tmp_path, monkeypatch):
    from iaakd.stages import pool as pool_stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IAAKD_PROGRESS", "0")
    labels = write_labels(tmp_path, real_photos[:2], ["train", "test"])
    folder = tmp_path / "photos"
    folder.mkdir()
    TRANSFORMS["rotated 270°"](load_rgb(real_photos[1])).save(folder / "rotated_test.jpg", quality=92)
    load_rgb(real_photos[5]).save(folder / "other.jpg", quality=92)
    section = {"source": "folders", "num_images": 20, "folders": ["photos"], "seed": 1,
               "copies": {"shortlist": 8, "min_inliers": 100}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"unlabeled": section}))
    pool_stage.main([])
    metrics = json.loads((tmp_path / "metrics" / "pool.json").read_text())
    assert metrics["near_copies_dropped"] == {"of_labelled": 1, "within_pool": 0} and metrics["kept"] == 1
    assert metrics["dropped_files"][0]["match"] == labels["image_id"][1]
    assert metrics["copies"] == {"shortlist": 8, "min_inliers": 100}


# The pool images (unlabeled.seed 1) the perceptual hash within 6 bits took for copies of labelled images of the
# default demo, with the labelled image each was taken for: independent images, generated apart
PHASH_CONFUSED = [("pool-demo-000052", "100435"), ("pool-demo-000073", "100593"), ("pool-demo-000140", "100686"),
                  ("pool-demo-000156", "100579"), ("pool-demo-000189", "100607")]  # fmt: skip


def test_the_demo_images_the_perceptual_hash_took_for_copies_are_kept(tmp_path):
    from iaakd.data.demo import generate_demo
    from iaakd.data.pool import make_demo_images
    from iaakd.stages.demo import demo_config
    from iaakd.stages.params_file import with_overrides

    params = yaml.safe_load(subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO_ROOT, capture_output=True,
                                           text=True, check=True).stdout)  # fmt: skip
    generate_demo(tmp_path / "demo", demo_config(with_overrides(params, [])), progress=False)
    made = make_demo_images(tmp_path / "pool", 200, seed=params["unlabeled"]["seed"]).set_index("image_id")
    pool = [str(made.at[pool_id, "file"]) for pool_id, _ in PHASH_CONFUSED]
    labelled = [str(tmp_path / "demo" / "images" / f"{image_id}.jpg") for _, image_id in PHASH_CONFUSED]
    found = find_copies(pool, embeddings(pool, content_keys(pool)), labelled, embeddings(labelled, content_keys(labelled)),
                        CONFIG)  # fmt: skip
    assert (found.match == -1).all(), found.inliers.tolist()


def test_a_copy_of_a_dropped_copy_names_the_kept_original(real_photos, tmp_path):
    original = real_photos[0]
    once, twice = tmp_path / "once.jpg", tmp_path / "twice.jpg"
    crop = TRANSFORMS["cropped 90 % (corner)"]
    crop(load_rgb(original)).save(once, quality=92)
    crop(load_rgb(once)).save(twice, quality=92)
    pool = [original, str(once), str(twice)]
    vectors = embeddings(pool, content_keys(pool))
    assert find_copies(pool, vectors, pool, vectors, CONFIG, earlier_only=True).match.tolist() == [-1, 0, 0]
