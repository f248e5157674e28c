"""CSKD's unlabelled pool: made (demo) or scanned (folders), never holding a labelled image (validation and
test ones included) nor a copy of one, exact or near; its ids never collide with labelled ones; and the pool
extraction of an empty pool is a valid empty folder made without a backbone."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import torch
import yaml
from PIL import Image

from iaakd.data import pool as pool_lib
from iaakd.data.ava import AvaLayout, load_ava
from iaakd.data.pool import (
    MANIFEST_SCHEMA,
    PoolConfig,
    demo_pool,
    empty_manifest,
    read_manifest,
    require_distinct_ids,
    write_manifest,
)
from iaakd.data.scan import scan_images
from iaakd.errors import UserError
from iaakd.features import PartWriter, make_table, read_metadata, vector_column, write_empty_features
from iaakd.models import Distiller
from iaakd.stages import extract as extract_stage
from iaakd.stages import pool as pool_stage
from iaakd.stages import teacher as teacher_stage
from iaakd.tasks import DISTRIBUTION
from iaakd.teacher import DistillerConfig, save_distiller

BACKBONE = "tf_efficientnet_lite0.in1k"


def photos(ava_sample: Path, count: int) -> list[Path]:
    files = sorted((ava_sample / "images").glob("*.jpg"))
    assert len(files) >= count, f"the AVA sample has {len(files)} photos, the test needs {count}"
    return files[:count]


def jpeg_copy(source: Path, target: Path, quality: int, scale: float = 1.0) -> None:
    with Image.open(source) as image:
        image = image.convert("RGB")
        if scale != 1.0:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        image.save(target, quality=quality)


def write_labels(repo: Path, files: list[Path], splits: list[str]) -> pd.DataFrame:
    """data/labels.parquet with the columns the pool reads, the photos given labelled (in ``splits``)."""
    scans = scan_images([str(file) for file in files])
    labels = pd.DataFrame({"image_id": [file.stem for file in files], "path": [str(f) for f in files],
                           "file_hash": scans["file_hash"], "split": splits})  # fmt: skip
    (repo / "data").mkdir(parents=True, exist_ok=True)
    labels.to_parquet(repo / "data" / "labels.parquet")
    return labels


def write_params(repo: Path, unlabeled: dict) -> None:
    section = {"source": "none", "num_images": 20, "folders": [], "seed": 1,
               "copies": {"shortlist": 8, "min_inliers": 100}}  # fmt: skip
    (repo / "params.yaml").write_text(yaml.safe_dump({"unlabeled": {**section, **unlabeled}}))


@pytest.fixture
def folder_pool_run(ava_sample, tmp_path, monkeypatch):
    """The pool stage on a folder holding copies of labelled photos (one exact, one re-encoded at JPEG
    quality 60, one at half size, of a training, a validation and a test photo), three other photos, an
    exact and a half-size copy of one of those, and a truncated file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IAAKD_PROGRESS", "0")
    files = photos(ava_sample, 8)
    labelled, others = files[:5], files[5:]
    labels = write_labels(tmp_path, labelled, ["train", "val", "test", "train", "unlabeled"])
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    shutil.copy(labelled[0], folder / "exact_copy_of_train.jpg")
    jpeg_copy(labelled[1], folder / "reencoded_copy_of_val.jpg", quality=60)
    jpeg_copy(labelled[2], folder / "half_size_copy_of_test.jpg", quality=90, scale=0.5)
    for number, other in enumerate(others):
        shutil.copy(other, folder / f"different_{number}.jpg")
    shutil.copy(others[0], tmp_path / "photos" / "zz_same_as_different_0.jpg")
    jpeg_copy(others[1], tmp_path / "photos" / "zz_half_size_of_different_1.jpg", quality=90, scale=0.5)
    content = labelled[3].read_bytes()
    (folder / "truncated.jpg").write_bytes(content[: len(content) // 3])
    write_params(tmp_path, {"source": "folders", "folders": ["photos"]})
    pool_stage.main([])
    metrics = json.loads((tmp_path / "metrics" / "pool.json").read_text())
    return labels, read_manifest(tmp_path / "data" / "pool" / "manifest.parquet"), metrics


def test_folder_pool_drops_exact_reencoded_and_resized_copies_of_labelled_photos_validation_and_test_ones_included(
    folder_pool_run,
):
    labels, manifest, metrics = folder_pool_run
    assert sorted(Path(path).name for path in manifest["path"]) == [f"different_{n}.jpg" for n in range(3)]
    assert metrics["exact_copies_dropped"] == {"of_labelled": 1, "within_pool": 1}
    assert metrics["near_copies_dropped"] == {"of_labelled": 2, "within_pool": 1}
    assert (metrics["candidates"], metrics["bad_files"], metrics["kept"]) == (9, 1, 3)
    assert metrics["labelled_images_compared"] == 5
    dropped = pd.read_csv("data/pool/skipped.csv", dtype=str).set_index("file")
    match_of = {Path(file).name: dropped.at[file, "match"] for file in dropped.index}
    assert match_of["exact_copy_of_train.jpg"] == labels["image_id"][0]
    assert match_of["reencoded_copy_of_val.jpg"] == labels["image_id"][1]
    assert match_of["half_size_copy_of_test.jpg"] == labels["image_id"][2]
    assert Path(match_of["zz_same_as_different_0.jpg"]).name == "different_0.jpg"
    assert Path(match_of["zz_half_size_of_different_1.jpg"]).name == "different_1.jpg"
    assert set(manifest["file_hash"]).isdisjoint(labels["file_hash"])


def test_a_truncated_file_in_the_pool_folders_is_listed_with_its_reason_not_fatal(folder_pool_run):
    _, manifest, metrics = folder_pool_run
    dropped = pd.read_csv("data/pool/skipped.csv", dtype=str)
    bad = dropped[dropped["kind"] == "bad_file"]
    assert [Path(file).name for file in bad["file"]] == ["truncated.jpg"]
    assert bad["reason"].iloc[0].startswith("unreadable")
    assert len(manifest) == 3 and metrics["dropped_files"][0]["kind"] in pool_lib.DROP_KINDS


def test_pool_ids_carry_the_prefix_are_stable_by_content_and_never_collide_with_labelled_ids(folder_pool_run):
    labels, manifest, _ = folder_pool_run
    assert manifest["image_id"].str.startswith("pool-").all()
    assert manifest["image_id"].is_unique
    assert set(manifest["image_id"]).isdisjoint(labels["image_id"])
    assert (manifest["image_id"] == "pool-" + manifest["file_hash"]).all()  # the content's, wherever it moves
    assert manifest["source"].eq("folders").all()
    scans = scan_images(manifest["path"].tolist())
    assert scans[["width", "height"]].to_numpy().tolist() == manifest[["width", "height"]].to_numpy().tolist()


def test_a_labelled_id_with_the_pool_prefix_is_refused_in_one_line():
    require_distinct_ids(["100001", "my-photo"])
    with pytest.raises(UserError, match="'pool-7' starts with 'pool-'"):
        require_distinct_ids(["100001", "pool-7"], "data/labels.parquet")


def test_embeddings_are_cached_by_content_so_a_rerun_computes_nothing(ava_sample, tmp_path, monkeypatch):
    from iaakd.data import copies

    files = [str(file) for file in photos(ava_sample, 3)]
    contents = scan_images(files)["file_hash"].tolist()
    cache = tmp_path / "embeddings.parquet"
    first = copies.embeddings(files, contents, cache)
    assert first.shape == (3, copies.ROTATIONS, 1280)
    assert np.allclose(np.linalg.norm(first, axis=2), 1, atol=1e-2)

    class NoEmbedder:
        def __init__(self):
            raise AssertionError("an image embedded again")

    monkeypatch.setattr(copies, "Embedder", NoEmbedder)
    again = copies.embeddings(files[::-1], contents[::-1], cache)
    np.testing.assert_array_equal(again, first[::-1])


def demo_labelled(tiny_demo: Path) -> pd.DataFrame:
    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    return pd.DataFrame({"image_id": labels["image_id"], "file_hash": labels["file_hash"],
                         "path": [str(tiny_demo / path) for path in labels["path"]]})  # fmt: skip


def test_demo_pool_is_deterministic_per_seed_and_none_of_its_independent_images_is_dropped_as_a_copy(
    tiny_demo, tmp_path
):
    labelled = demo_labelled(tiny_demo)  # made with data.seed 3: the pool uses the same seed, another stream
    config = PoolConfig(source="demo", num_images=12, seed=3)
    first = demo_pool(config, labelled, tmp_path / "a", Path("data/pool/images"))
    again = demo_pool(config, labelled, tmp_path / "b", Path("data/pool/images"))
    other = demo_pool(PoolConfig(source="demo", num_images=12, seed=4), labelled, tmp_path / "c")
    pd.testing.assert_frame_equal(first.manifest, again.manifest)
    pd.testing.assert_frame_equal(first.latent_scores, again.latent_scores)
    assert set(first.manifest["file_hash"]).isdisjoint(other.manifest["file_hash"])
    # independently generated photos: none of them is taken for a copy (the perceptual hash dropped 5 of 200)
    assert first.counts["near_copies_dropped"] == {"of_labelled": 0, "within_pool": 0}
    assert first.counts["kept"] == len(first.manifest) == first.counts["candidates"] == 12
    assert first.manifest["image_id"].str.fullmatch(r"pool-demo-\d{6}").all()
    assert first.manifest["path"].tolist() == [
        f"data/pool/images/{i}.jpg" for i in first.manifest["image_id"]
    ]
    assert sorted(p.stem for p in (tmp_path / "a").glob("*.jpg")) == first.manifest["image_id"].tolist()
    # no votes in the manifest; the latent scores beside it, one per kept image, for evaluation only
    assert list(first.manifest.columns) == MANIFEST_SCHEMA.names
    assert first.latent_scores["image_id"].tolist() == first.manifest["image_id"].tolist()
    assert np.isfinite(first.latent_scores["latent_score"]).all()
    assert first.latent_scores["latent_score"].std() > 0.2


def test_source_none_gives_an_empty_manifest_with_the_schema_without_reading_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"source": "none"})
    pool_stage.main([])  # no data/labels.parquet: not needed
    manifest = read_manifest(tmp_path / "data" / "pool" / "manifest.parquet")
    assert manifest.empty and list(manifest.columns) == MANIFEST_SCHEMA.names
    assert ds.dataset("data/pool/manifest.parquet").schema.remove_metadata() == MANIFEST_SCHEMA
    metrics = json.loads((tmp_path / "metrics" / "pool.json").read_text())
    assert (metrics["source"], metrics["candidates"], metrics["kept"]) == ("none", 0, 0)
    assert not (tmp_path / "data" / "pool.partial").exists()


def test_folders_without_folders_and_a_missing_folder_are_one_line_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"source": "folders"})
    with pytest.raises(UserError, match="unlabeled.source=folders needs unlabeled.folders"):
        pool_stage.main([])
    write_params(tmp_path, {"source": "folders", "folders": ["nowhere"]})
    with pytest.raises(UserError, match=r"unlabeled.folders\[0\]=nowhere is not a folder"):
        pool_stage.main([])
    assert not (tmp_path / "data" / "pool").exists()


def extract_params(enabled: bool) -> dict:
    return {
        "features": {"backbones": [BACKBONE], "weights": "random", "input_size": 64, "batch_size": 4},
        "student": {"unlabeled": {"enabled": enabled}},
    }


def refuse_backbone(*_args, **_kwargs):
    raise AssertionError("the backbone was loaded")


def test_extract_pool_on_an_empty_manifest_writes_a_valid_empty_folder_without_loading_the_backbone(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(extract_stage.Extractor, "create", refuse_backbone)
    write_manifest(empty_manifest(), tmp_path / "manifest.parquet")
    extract_stage.extract_pool(
        BACKBONE, extract_params(True), tmp_path / "manifest.parquet", tmp_path / "out"
    )
    folder = tmp_path / "out" / BACKBONE
    table = ds.dataset(str(folder), format="parquet").to_table()
    assert table.num_rows == 0 and table.column_names == ["image_id", "feature"]
    assert read_metadata(folder) == {
        "backbone": BACKBONE,
        "images": 0,
        "empty": f"{tmp_path / 'manifest.parquet'} lists no image",
    }
    assert not (tmp_path / "out" / f"{BACKBONE}.partial").exists()


def test_extract_pool_of_a_pool_the_student_does_not_use_is_empty_and_says_why(
    ava_sample, tmp_path, monkeypatch
):
    monkeypatch.setattr(extract_stage.Extractor, "create", refuse_backbone)
    file = photos(ava_sample, 1)[0]
    scan = scan_images([str(file)]).iloc[0]
    manifest = pd.DataFrame({"image_id": ["pool-x"], "path": [str(file)], "width": [scan.width],
                             "height": [scan.height], "file_hash": [scan.file_hash], "source": ["folders"]})  # fmt: skip
    write_manifest(manifest, tmp_path / "manifest.parquet")
    extract_stage.extract_pool(
        BACKBONE, extract_params(False), tmp_path / "manifest.parquet", tmp_path / "out"
    )
    assert read_metadata(tmp_path / "out" / BACKBONE)["empty"] == "student.unlabeled.enabled=false"


def test_read_manifest_of_another_table_is_one_line_naming_it(tmp_path):
    pd.DataFrame({"image_id": ["1"]}).to_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(UserError, match="not a pool manifest"):
        read_manifest(tmp_path / "manifest.parquet")
    with pytest.raises(UserError, match="run the pool stage"):
        read_manifest(tmp_path / "missing.parquet")


# --- the teacher's knowledge of the pool -------------------------------------------------------------


def write_features(folder: Path, image_ids: list[str], features: np.ndarray) -> None:
    writer = PartWriter(folder)
    writer.write(
        make_table({"image_id": image_ids, "feature": features.astype(np.float16)}, {"backbone": "b"})
    )
    writer.commit()


@pytest.fixture
def teacher_repo(tmp_path, monkeypatch):
    """A distiller on 6-dimensional features of 8 labelled images (one withheld by split.label_fraction) of
    two backbones, and a pool of 3 images with features of both: what the teacher stage reads."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IAAKD_PROGRESS", "0")
    rng = np.random.default_rng(0)
    labelled_ids = [str(100001 + i) for i in range(8)]
    splits = ["train", "train", "train", "unlabeled", "val", "val", "test", "test"]
    (tmp_path / "data").mkdir()
    pd.DataFrame({"image_id": labelled_ids}).to_parquet("data/labels.parquet")
    pd.DataFrame({"image_id": labelled_ids, "split": splits}).to_parquet("data/split.parquet")
    pool_ids = ["pool-demo-000000", "pool-demo-000001", "pool-demo-000002"]
    manifest = pd.DataFrame({"image_id": pool_ids, "path": "x.jpg", "width": 8, "height": 8,
                             "file_hash": ["a", "b", "c"], "source": "demo"})  # fmt: skip
    write_manifest(manifest, tmp_path / "data" / "pool" / "manifest.parquet")
    backbones = ["one", "two"]
    for backbone in backbones:
        write_features(tmp_path / "data" / "features" / backbone, labelled_ids, rng.normal(size=(8, 3)))
        write_features(tmp_path / "data" / "pool_features" / backbone, pool_ids, rng.normal(size=(3, 3)))
    config = DistillerConfig(hidden=[5, 4], dropout=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Distiller(6, config.hidden, config.dropout, DISTRIBUTION.output_size, DISTRIBUTION.activation)
    save_distiller(tmp_path / "models" / "distiller.pt", model.eval(), config, DISTRIBUTION, backbones, {})
    return tmp_path, model, pool_ids


def test_teacher_knowledge_covers_the_pool_after_the_labelled_rows_full_distiller_fold_minus_one_not_labelled(
    teacher_repo,
):
    repo, model, pool_ids = teacher_repo
    teacher_stage.main([])
    table = ds.dataset("data/teacher", format="parquet").to_table()
    rows = table.select(["image_id", "fold", "labelled"]).to_pandas()
    assert rows["image_id"].tolist()[8:] == pool_ids
    assert rows["fold"].tolist() == [-1] * 11
    assert rows["labelled"].tolist() == [True, True, True, False, True, True, True, True, False, False, False]
    pool_features = np.concatenate(
        [vector_column(ds.dataset(f"data/pool_features/{b}").to_table(), "feature") for b in ("one", "two")],
        axis=1,
    )
    with torch.no_grad():
        output, feature = model(torch.from_numpy(pool_features))
    np.testing.assert_allclose(
        vector_column(table, "teacher_output")[8:], output.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        vector_column(table, "teacher_feature")[8:], feature.numpy(), rtol=1e-5, atol=1e-6
    )


def test_teacher_with_an_empty_pool_writes_exactly_what_it_wrote_without_a_pool(teacher_repo):
    repo, _, _ = teacher_repo
    shutil.rmtree(repo / "data" / "pool")
    teacher_stage.main([])
    without_pool = {part.name: part.read_bytes() for part in (repo / "data" / "teacher").glob("*")}
    write_manifest(empty_manifest(), repo / "data" / "pool" / "manifest.parquet")
    for backbone in ("one", "two"):
        write_empty_features(repo / "data" / "pool_features" / backbone, backbone, "no image")
    teacher_stage.main([])
    assert {part.name: part.read_bytes() for part in (repo / "data" / "teacher").glob("*")} == without_pool
    assert ds.dataset("data/teacher", format="parquet").count_rows() == 8


def test_teacher_with_pool_images_lacking_features_of_a_distiller_backbone_is_one_line(teacher_repo):
    repo, _, _ = teacher_repo
    shutil.rmtree(repo / "data" / "pool_features" / "two")
    with pytest.raises(
        UserError, match=r"pool_features/two not found: the pool's 3 images .* extract_pool@two"
    ):
        teacher_stage.main([])
    write_empty_features(repo / "data" / "pool_features" / "two", "two", "something")
    with pytest.raises(UserError, match=r"pool_features/two: no features \(something\)"):
        teacher_stage.main([])


def test_teacher_of_a_pool_whose_features_were_not_extracted_has_the_labelled_rows_only(teacher_repo, capsys):
    repo, _, _ = teacher_repo
    for backbone in ("one", "two"):
        write_empty_features(
            repo / "data" / "pool_features" / backbone, backbone, "student.unlabeled.enabled=false"
        )
    teacher_stage.main([])
    assert ds.dataset("data/teacher", format="parquet").count_rows() == 8
    assert "no knowledge of the pool's 3 images (student.unlabeled.enabled=false)" in capsys.readouterr().out
