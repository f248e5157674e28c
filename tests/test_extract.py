"""Resumable extraction: parts finished before an interruption are kept outside DVC's outputs and not
computed again; the result equals an uninterrupted run's."""

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from torch.utils.data import default_collate

from iaakd.data.ava import AvaLayout, load_ava
from iaakd.extract import (
    ExtractConfig,
    Extractor,
    extract_features,
    extract_to_parts,
    loader_dataset,
    plan_parts,
)
from iaakd.features import PartWriter, vector_column


def test_plan_groups_whole_batches_into_parts():
    batches = [[0, 1], [2, 3], [4], [5, 6], [7]]
    assert plan_parts(batches, 3) == [[[0, 1], [2, 3]], [[4], [5, 6]], [[7]]]
    assert plan_parts(batches, 100) == [batches]


def features_of(folder):
    table = ds.dataset(str(folder)).to_table()
    order = np.argsort(table.column("image_id").to_pylist())
    return np.array(table.column("image_id").to_pylist())[order], vector_column(table, "feature", np.float16)[
        order
    ]


@pytest.fixture(scope="module")
def extraction(tiny_demo):
    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    config = ExtractConfig("tf_efficientnet_lite0.in1k", weights="random", input_size=64, batch_size=4)
    torch.manual_seed(0)
    extractor = Extractor.create(config, torch.device("cpu"))
    arguments = (
        extractor,
        [str(tiny_demo / path) for path in labels["path"]],
        list(zip(labels["width"], labels["height"], strict=True)),
        labels["image_id"].to_numpy(),
        config,
        torch.device("cpu"),
    )
    return arguments


def test_interrupted_extraction_resumes_from_its_parts_and_equals_an_uninterrupted_run(extraction, tmp_path):
    writer = PartWriter(tmp_path / "reference")
    assert extract_to_parts(*extraction, writer, {"m": 1}, progress=False, rows_per_part=8) == (0, 6)
    writer.commit()

    work = tmp_path / "work"
    writer = PartWriter(tmp_path / "resumed", work_dir=work)
    extract_to_parts(*extraction, writer, {"m": 1}, progress=False, rows_per_part=8)
    for number in (2, 4, 5):  # as if the run had been killed: only parts 0, 1 and 3 finished
        writer.part_path(number).unlink()
    assert not (tmp_path / "resumed").exists()  # nothing that looks complete before commit

    writer = PartWriter(tmp_path / "resumed", work_dir=work)
    assert [writer.has_part(number) for number in range(6)] == [True, True, False, True, False, False]
    assert extract_to_parts(*extraction, writer, {"m": 1}, progress=False, rows_per_part=8) == (
        3,
        6,
    )  # 3 done
    writer.commit()
    assert not work.exists()  # the work folder goes once the output is in place

    reference_ids, reference = features_of(tmp_path / "reference")
    ids, resumed = features_of(tmp_path / "resumed")
    assert len(ids) == 48 and (ids == reference_ids).all()
    np.testing.assert_array_equal(resumed, reference)


def test_streamed_features_are_the_models_own_batch_by_batch(extraction):
    """Batch k is handed over once batch k+1 is queued (its copy to the host overlaps the next batch):
    every batch still comes out once, in order, equal to the model's own output rounded to float16."""
    extractor, paths, sizes, _, config, device = extraction
    batches = [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    streamed = list(
        extract_features(extractor, paths, sizes, config, device, progress=False, batches=batches)
    )
    assert [indices.tolist() for indices, _ in streamed] == batches

    dataset, collate = loader_dataset(paths, extractor.preprocess, config)
    with torch.inference_mode():
        for batch, (_, features) in zip(batches, streamed, strict=True):
            images = (collate or default_collate)([dataset[index] for index in batch])[1]
            expected = extractor.mlsp(extractor.preprocess.normalise(images)).numpy().astype(np.float16)
            assert features.dtype == np.float16
            np.testing.assert_array_equal(features, expected)
