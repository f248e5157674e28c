"""Resumable extraction: parts finished before an interruption are kept outside DVC's outputs and not
computed again; the result equals an uninterrupted run's. Batches are prepared ahead in a thread."""

import threading

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
    prepared_ahead,
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


def _preparing_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "prepare-batches"]


def test_batches_prepared_ahead_come_in_order_and_errors_reach_the_consumer():
    """The thread that decodes and normalises ahead changes neither the order nor the values; an error
    in it (a corrupt image in the loader, say) is raised in the consumer, and no thread is left behind."""
    batches = [(torch.tensor([i]), torch.full((2,), float(i))) for i in range(7)]
    prepared = list(prepared_ahead(batches, lambda images: images * 10, torch.device("cpu")))
    assert [indices.item() for indices, _ in prepared] == list(range(7))
    assert [images.tolist() for _, images in prepared] == [[10.0 * i] * 2 for i in range(7)]

    def loader_that_fails():
        yield torch.tensor([0]), torch.zeros(2)
        raise ValueError("corrupt.jpg: cannot identify image file")

    stream = prepared_ahead(loader_that_fails(), lambda images: images, torch.device("cpu"))
    assert next(stream)[0].item() == 0
    with pytest.raises(ValueError, match="corrupt.jpg"):
        next(stream)
    assert not _preparing_threads()


def test_closing_the_stream_early_stops_the_thread_that_prepares_ahead():
    """A consumer that stops after two batches (a part written, an error in the writer) must not leave
    the thread blocked on a full queue, still holding the loader's workers."""
    pulled = []

    def endless():
        for i in range(10_000):
            pulled.append(i)
            yield torch.tensor([i]), torch.zeros(1)

    stream = prepared_ahead(endless(), lambda images: images, torch.device("cpu"), depth=2)
    assert [next(stream)[0].item() for _ in range(2)] == [0, 1]
    stream.close()
    assert not _preparing_threads()
    assert len(pulled) <= 5  # two consumed, at most two waiting in the queue, one in the thread's hands
