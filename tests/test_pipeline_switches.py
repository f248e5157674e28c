"""The new switches on the real `dvc repro` of the shared tiny demo: what each reruns, and what it writes.

`pretrain` (student.init), out-of-fold teacher knowledge (distiller.out_of_fold), withheld labels
(split.label_fraction)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run, set_params, stages_run

from iaakd.data.tables import PipelineTables
from iaakd.feature_rows import RowSubset
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
    assert stages_run(first.stdout) == {"pretrain", "student", "evaluate"}
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
