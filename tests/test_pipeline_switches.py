"""The new switches on the real `dvc repro` of the shared tiny demo: what each reruns, and what it writes.

`pretrain` (student.init), out-of-fold teacher knowledge (distiller.out_of_fold), withheld labels
(split.label_fraction), CSKD's pool, alignment and semi-supervised KD (unlabeled.*, align.*,
student.unlabeled.*)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_TRIO, run, set_params, stages_run

from iaakd.data.tables import PipelineTables
from iaakd.extract import ExtractConfig, Extractor
from iaakd.feature_rows import RowSubset
from iaakd.features import read_metadata
from iaakd.models import WeightsInfo, file_sha256
from iaakd.pretrained import load_backbone
from iaakd.teacher import load_distiller, predict_output

pytestmark = pytest.mark.slow

TINY_PRETRAIN = {
    ("student", "init"): "pretrain",
    ("pretrain", "num_images"): 12,
    ("pretrain", "epochs"): 1,
    ("pretrain", "variants_per_image"): 4,
    ("pretrain", "held_out_fraction"): 0.25,
}


def test_pretrain_is_switched_off_by_default_and_writes_its_documented_marker(built_tiny_repo):
    metrics = json.loads((built_tiny_repo / "metrics" / "pretrain.json").read_text())
    assert metrics == {"trained": False, "reason": "student.init=weights"}
    marker = torch.load(built_tiny_repo / "models" / "pretrain.pt", weights_only=True)
    assert marker["trained"] is False and "state_dict" not in marker
    assert json.loads((built_tiny_repo / "metrics" / "student.json").read_text())["init"] == "weights"


def test_student_init_pretrain_trains_the_backbone_and_a_pretrain_key_reruns_only_what_follows(tiny_repo):
    set_params(tiny_repo, TINY_PRETRAIN)
    first = run(tiny_repo, "dvc", "repro")
    # align reads student.init too: it rewrites its marker (student.init=pretrain), in a second, and
    # extract_align, which reads that marker, its empty folders, which stop the rerun there
    assert stages_run(first.stdout) == {"pretrain", "align", "extract_align", "student", "evaluate"}
    metrics = json.loads((tiny_repo / "metrics" / "pretrain.json").read_text())
    assert metrics["trained"] and metrics["pool_images"] == 12
    assert set(metrics["held_out_pair_accuracy"]["by_group"]) == {"style", "technical", "composition"}
    student = json.loads((tiny_repo / "metrics" / "student.json").read_text())
    assert (student["init"], student["weights"]) == ("pretrain", "pretrain")
    set_params(tiny_repo, {("pretrain", "seed"): 1})
    assert stages_run(run(tiny_repo, "dvc", "repro").stdout) == {"pretrain", "student", "evaluate"}
    # and with the student back on its ImageNet weights, a pretrain key trains nothing
    set_params(tiny_repo, {("student", "init"): "weights", ("pretrain", "epochs"): 2})
    result = run(tiny_repo, "dvc", "repro")
    assert "pretrain: nothing to train (student.init=weights)" in result.stdout


def test_out_of_fold_knowledge_never_comes_from_a_distiller_that_saw_the_image(tiny_repo):
    set_params(tiny_repo, {("distiller", "out_of_fold"): 2})
    result = run(tiny_repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"distill", "teacher", "student", "evaluate"}
    teacher = pd.read_parquet(tiny_repo / "data" / "teacher").set_index("image_id")
    split = pd.read_parquet(tiny_repo / "data" / "split.parquet").set_index("image_id")["split"]
    folds = torch.load(tiny_repo / "models" / "distiller.pt", weights_only=True)["folds"]
    held_out = {image_id: k for k, fold in enumerate(folds) for image_id in fold["held_out_ids"]}
    train_ids = split.index[split == "train"]
    assert set(held_out) == set(train_ids)  # every training image is held out by exactly one fold distiller
    for image_id, row in teacher.iterrows():
        expected = held_out.get(image_id, -1)  # validation and test images: the full distiller
        assert row["fold"] == expected, image_id
    # and each training image's output is its fold distiller's, not the full one's, recomputed here
    full, saved = load_distiller(tiny_repo / "models" / "distiller.pt")
    matrix, _ = PipelineTables.at(tiny_repo, progress=False).teacher_input(saved["backbones"])
    for held_out_ids, fold_model in saved["fold_models"]:
        rows = RowSubset(matrix, matrix.row_of(held_out_ids))
        recorded = np.stack(teacher.loc[held_out_ids, "teacher_output"].to_numpy())
        np.testing.assert_allclose(recorded, predict_output(fold_model, rows), rtol=1e-5, atol=1e-6)
        assert not np.allclose(recorded, predict_output(full, rows), rtol=1e-5, atol=1e-6)
    metrics = json.loads((tiny_repo / "metrics" / "distill.json").read_text())
    assert metrics["train_out_of_fold"]["emd"] is not None


def test_withheld_labels_are_marked_unlabeled_in_the_split_and_in_the_teacher_knowledge(tiny_repo):
    set_params(tiny_repo, {("split", "label_fraction"): 0.5})
    result = run(tiny_repo, "dvc", "repro")
    assert {"split", "distill", "teacher", "student", "evaluate"} <= stages_run(result.stdout)
    counts = json.loads((tiny_repo / "metrics" / "split.json").read_text())
    assert counts["unlabeled"] > 0 and abs(counts["train"] - counts["unlabeled"]) <= 1
    teacher = pd.read_parquet(tiny_repo / "data" / "teacher").set_index("image_id")
    split = pd.read_parquet(tiny_repo / "data" / "split.parquet").set_index("image_id")["split"]
    assert (teacher["labelled"] == (split.reindex(teacher.index) != "unlabeled")).all()


TINY_CSKD = {  # issue 15's "done when" run, at the tiny demo's scale
    ("unlabeled", "source"): "demo",
    ("unlabeled", "num_images"): 10,
    ("student", "unlabeled", "enabled"): True,
    ("student", "init"): "align",
    ("align", "encoder"): "tf_efficientnet_lite0.in1k",
    ("align", "encoder_input_size"): 64,
    ("align", "epochs"): 2,
    ("align", "batch_size"): 8,
}


def downstream_closure(repo: Path, stages: set[str], unchanged: frozenset[str] = frozenset()) -> set[str]:
    """``stages`` and every stage that depends on one of them, from `dvc dag --dot`'s edges; a stage of
    ``unchanged`` reruns but rewrites the same outputs, so what follows it does not rerun for it."""
    edges = re.findall(r'"([^"]+)" -> "([^"]+)";', run(repo, "dvc", "dag", "--dot").stdout)
    edges = [(first, after) for first, after in edges if first not in unchanged]
    closure, grown = set(stages), True
    while grown:
        before = len(closure)
        closure |= {after for first, after in edges if first in closure}
        grown = len(closure) > before
    return closure


def changed_by(repo: Path, changes: dict) -> set[str]:
    """The stages whose own inputs ``changes`` (then undone) change: what `dvc repro --dry` lists."""
    params = (repo / "params.yaml").read_text()
    set_params(repo, changes)
    try:
        return stages_run(run(repo, "dvc", "repro", "--dry").stdout)
    finally:
        (repo / "params.yaml").write_text(params)


def rerun_by(repo: Path, changes: dict, unchanged: frozenset[str] = frozenset()) -> set[str]:
    """The stages a `dvc repro` would run after ``changes``: those whose own inputs change and everything
    downstream of them (not through ``unchanged``: downstream_closure)."""
    return downstream_closure(repo, changed_by(repo, changes), unchanged)


# extract_align switched off (align.teacher false) writes the same empty folders whatever its inputs: the
# CSKD test below checks it by running it again, and the distiller does not rerun for it
SWITCHED_OFF = frozenset({"extract_align"})


def test_cskd_switched_on_gives_the_pool_knowledge_reruns_only_what_follows_and_can_align_the_teacher(
    tiny_repo,
):
    """CSKD switched on: the pool, its knowledge, the aligned student; what each new key reruns; then the
    aligned backbone serving the teacher too (aligned_teacher_serves_the_distiller)."""
    set_params(tiny_repo, TINY_CSKD)
    first = run(tiny_repo, "dvc", "repro")
    pool_extraction = {name for name in stages_run(first.stdout) if name.startswith("extract_pool@")}
    assert len(pool_extraction) == 3
    # never the labelled images' stages: the pool has stages of its own
    assert stages_run(first.stdout) == {"pool", *pool_extraction, "teacher", "pretrain", "align",
                                        "extract_align", "student", "evaluate"}  # fmt: skip
    manifest = pd.read_parquet(tiny_repo / "data" / "pool" / "manifest.parquet")
    labels = pd.read_parquet(tiny_repo / "data" / "labels.parquet")
    assert len(manifest) == 10 and manifest["image_id"].str.startswith("pool-").all()
    assert not set(manifest["file_hash"]) & set(labels["file_hash"])
    teacher = pd.read_parquet(tiny_repo / "data" / "teacher").set_index("image_id")
    pool_rows = teacher.loc[manifest["image_id"]]
    assert (~pool_rows["labelled"]).all() and (pool_rows["fold"] == -1).all()
    assert teacher.drop(manifest["image_id"])["labelled"].all() and len(teacher) == len(labels) + 10
    align = json.loads((tiny_repo / "metrics" / "align.json").read_text())
    assert align["trained"] and align["images"]["pool"] == 10 and align["encoder_weights"] == "packaged"
    assert np.isfinite([align["held_out_cosine_before"], align["held_out_cosine_after"]]).all()
    student = json.loads((tiny_repo / "metrics" / "student.json").read_text())
    assert student["init"] == "align" and 0 < student["unlabeled"] <= 10
    assert torch.load(tiny_repo / "models" / "student.pt", weights_only=True)["config"]["init"] == "align"

    # the aligned backbone serves the student only (align.teacher false): extract_align, run again, writes
    # what it wrote before, so nothing downstream of it changes
    forced = run(tiny_repo, "dvc", "repro", "--force", "--single-item", "extract_align")
    assert stages_run(forced.stdout) == {"extract_align"}
    assert "up to date" in run(tiny_repo, "dvc", "status").stdout

    extraction = {f"extract@{name.split('@')[1]}" for name in pool_extraction}
    assert rerun_by(tiny_repo, {("student", "unlabeled", "weight"): 0.5}) == {"student", "evaluate"}
    align_change = rerun_by(tiny_repo, {("align", "lr"): 3e-4}, SWITCHED_OFF)
    assert align_change == {"align", "extract_align", "student", "evaluate"}
    pool_change = rerun_by(tiny_repo, {("unlabeled", "num_images"): 12}, SWITCHED_OFF)
    assert pool_change == {
        "pool",
        *pool_extraction,
        "teacher",
        "align",
        "extract_align",
        "student",
        "evaluate",
    }
    assert not pool_change & ({"demo", "dataset", "split", "distill"} | extraction)
    # the switch itself reaches the distiller (its stage lists it), not only through the graph
    assert changed_by(tiny_repo, {("align", "teacher"): True}) == {"align", "extract_align", "distill"}
    aligned_teacher_serves_the_distiller(tiny_repo)


def aligned_teacher_serves_the_distiller(tiny_repo: Path) -> None:
    """CSKD's aligned encoder serving the teacher too (align.teacher), on the CSKD test's pool: extract_align's
    features are the aligned backbone's MLSP features, not the ImageNet lite0's of the same architecture; the
    distiller trains on them as one more backbone, and the teacher gives the pool its knowledge from all four.
    The student starts from ImageNet weights: the teacher alone asks the align stage to train."""
    set_params(tiny_repo, {("align", "teacher"): True, ("student", "init"): "weights"})
    first = run(tiny_repo, "dvc", "repro")
    assert {"align", "extract_align", "distill", "teacher", "student"} <= stages_run(first.stdout)
    assert not {"pool", "dataset"} & stages_run(first.stdout)
    assert json.loads((tiny_repo / "metrics" / "align.json").read_text())["trained"]
    assert json.loads((tiny_repo / "metrics" / "student.json").read_text())["init"] == "weights"
    saved = torch.load(tiny_repo / "models" / "distiller.pt", weights_only=True)
    assert saved["backbones"] == [*TINY_TRIO, "align"]
    assert [entry["backbone"] for entry in saved["feature_metadata"]] == [*TINY_TRIO, TINY_TRIO[0]]
    widths = [sum(entry["level_dims"]) for entry in saved["feature_metadata"]]
    assert saved["input_dim"] == sum(widths) and widths[-1] == widths[0]  # lite0's width, aligned or not
    assert read_metadata(tiny_repo / "data" / "teacher")["backbones"] == [*TINY_TRIO, "align"]

    align_file = tiny_repo / "models" / "align.pt"
    folder = tiny_repo / "data" / "features" / "align"
    weights = read_metadata(folder)["weights"]
    assert weights["source"] == "align" and weights["sha256"] == file_sha256(align_file)
    labels = pd.read_parquet(tiny_repo / "data" / "labels.parquet")
    aligned = pd.read_parquet(folder).set_index("image_id").loc[labels["image_id"]]
    imagenet = pd.read_parquet(tiny_repo / "data" / "features" / TINY_TRIO[0]).set_index("image_id")
    backbone, _ = load_backbone(align_file, "align", TINY_TRIO[0])
    config = ExtractConfig(backbone=TINY_TRIO[0], input_size=64)
    extractor = Extractor.around(backbone, WeightsInfo("align"), config, torch.device("cpu"))
    for image_id, path in labels[["image_id", "path"]].head(3).itertuples(index=False):
        image = extractor.preprocess.load(tiny_repo / path).unsqueeze(0)
        with torch.inference_mode():
            expected = extractor.mlsp(extractor.preprocess.normalise(image))[0].numpy()
        stored = aligned.loc[image_id, "feature"].astype(np.float32)
        np.testing.assert_allclose(stored, expected, rtol=1e-2, atol=1e-2)
        assert not np.allclose(stored, imagenet.loc[image_id, "feature"].astype(np.float32), atol=1e-2)

    pool_ids = pd.read_parquet(tiny_repo / "data" / "pool" / "manifest.parquet")["image_id"]
    pooled = pd.read_parquet(tiny_repo / "data" / "pool_features" / "align")
    assert set(pooled["image_id"]) == set(pool_ids) and len(pool_ids) > 0
    assert read_metadata(tiny_repo / "data" / "pool_features" / "align")["weights"] == weights
    teacher = pd.read_parquet(tiny_repo / "data" / "teacher").set_index("image_id")
    assert (~teacher.loc[pool_ids, "labelled"]).all()
    assert json.loads((tiny_repo / "metrics" / "distill.json").read_text())["backbones"][-1] == "align"


def test_extract_stage_pools_a_small_vit_asked_for_by_name_with_random_weights_at_full_resolution(tiny_repo):
    vit = {("features", "backbones"): [*TINY_TRIO, "vit_tiny_patch16_224.augreg_in21k_ft_in1k"]}
    set_params(tiny_repo, {**vit, ("features", "weights"): "random", ("features", "input_size"): None})
    result = run(
        tiny_repo, "python", "-m", "iaakd.stages.extract", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    )
    assert "(random weights" in result.stdout
    folder = tiny_repo / "data" / "features" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    features = pd.read_parquet(folder)
    labels = pd.read_parquet(tiny_repo / "data" / "labels.parquet")
    assert sorted(features["image_id"]) == sorted(labels["image_id"])
    vectors = np.stack(features["feature"].to_numpy()).astype(np.float32)
    assert vectors.shape[1] == sum(read_metadata(folder)["level_dims"]) and np.isfinite(vectors).all()
    assert len(np.unique(vectors.round(3), axis=0)) == len(vectors)  # every image its own vector
