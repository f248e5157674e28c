"""Resumable extraction: parts finished before an interruption are kept outside DVC's outputs and not
computed again; the result equals an uninterrupted run's. Batches are prepared ahead in a thread."""

import dataclasses
import threading

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import torch
from torch.utils.data import default_collate

from iaakd.data.ava import AvaLayout, load_ava
from iaakd.data.images import same_size_batches
from iaakd.errors import UserError
from iaakd.extract import (
    ExtractConfig,
    Extractor,
    extract_features,
    extract_to_parts,
    input_sizes,
    loader_dataset,
    plan_parts,
    prepared_ahead,
)
from iaakd.features import PartWriter, vector_column
from iaakd.stages.extract import resume_key


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


class Overflowing(torch.nn.Module):
    """A backbone whose pooled features exceed float16's range (65,504), as a wrong weights file can."""

    def forward(self, images):
        return torch.full((len(images), 3), 1e5)


def test_features_beyond_float16_are_an_error_naming_the_backbone_and_images_not_a_nan_loss(
    extraction, tmp_path
):
    extractor, paths, sizes, image_ids, config, device = extraction
    overflowing = dataclasses.replace(extractor, mlsp=Overflowing(), full_name="fake_backbone.in1k")
    writer = PartWriter(tmp_path / "features", work_dir=tmp_path / "work")
    first = ", ".join(image_ids[index] for index in same_size_batches(input_sizes(sizes, config), 4)[0][:3])
    with pytest.raises(
        UserError,
        match=rf"extract fake_backbone.in1k: features of {first} and 1 more are NaN or infinite in float16; "
        r"the backbone's values exceed float16's range \(\+-65,504\)",
    ):
        extract_to_parts(overflowing, paths, sizes, image_ids, config, device, writer, {}, progress=False)
    assert not writer.has_part(0)  # nothing written that a resumed run would take for finished


def test_resume_key_changes_with_every_setting_that_changes_the_numbers():
    """A run resumed with another memory format or on another device must not reuse the parts."""
    labels = pd.DataFrame(
        {"image_id": ["1", "2"], "file_hash": ["a", "b"], "width": [40, 40], "height": [30, 30]}
    )
    config = ExtractConfig("tf_efficientnet_lite0.in1k")
    cpu = torch.device("cpu")
    key = resume_key({"backbone": config.backbone}, config, 4096, cpu, labels)
    assert key == resume_key({"backbone": config.backbone}, config, 4096, cpu, labels)
    channels_last = dataclasses.replace(config, channels_last=True)
    assert resume_key({"backbone": config.backbone}, channels_last, 4096, cpu, labels) != key


def test_resume_key_names_the_gpu_model_but_not_the_rank(monkeypatch):
    labels = pd.DataFrame({"image_id": ["1"], "file_hash": ["a"], "width": [40], "height": [30]})
    config = ExtractConfig("tf_efficientnet_lite0.in1k")
    gpu = {"name": "NVIDIA H100"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device=None: gpu["name"])

    def key(device: str) -> str:
        return resume_key({}, config, 4096, torch.device(device), labels)

    assert key("cuda:0") == key("cuda:1") != key("cpu")  # every rank of one run shares its parts
    h100 = key("cuda:0")
    gpu["name"] = "NVIDIA A100"
    assert key("cuda:0") != h100


def test_cudnn_benchmark_is_on_only_while_extracting_and_the_process_setting_comes_back():
    from iaakd.extract import cudnn_benchmark

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_benchmark(True):
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is False
        with cudnn_benchmark(False):  # on the CPU nothing is switched on
            assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def test_weights_files_give_each_backbone_its_own_file_and_the_rest_features_weights():
    """One features.weights served every extract stage, so a teacher of several backbones could not be
    given files; an entry of features.weights_files now names one backbone's file."""
    from iaakd.stages.extract import extract_config

    features = {
        "backbones": ["resnet18.tv_in1k", "resnet50.tv_in1k"],
        "weights": "random",
        "weights_files": [{"backbone": "resnet50.tv_in1k", "file": "weights/r50.safetensors"}],
    }
    params = {"features": features}
    assert extract_config(params, "resnet50.tv_in1k")[0].weights == "weights/r50.safetensors"
    assert extract_config(params, "resnet18.tv_in1k")[0].weights == "random"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"backbone": "resnet18.tv_in1k"}, "must be a list"),
        ([{"backbone": "resnet18.tv_in1k"}], r"features.weights_files\[0\] must be \{backbone"),
        ([{"backbone": "resnet34.tv_in1k", "file": "a.pt"}], r"\[0\]: 'resnet34.tv_in1k' is not in features.backbones"),
        ([{"backbone": "resnet18.tv_in1k", "file": "a.pt"}, {"backbone": "resnet18.tv_in1k", "file": "b.pt"}],
         r"\[1\]: 'resnet18.tv_in1k' has a file already"),
    ],
)  # fmt: skip
def test_a_malformed_weights_files_entry_is_one_line_naming_it(entries, message):
    from iaakd.errors import UserError
    from iaakd.stages.extract import extract_config

    params = {"features": {"backbones": ["resnet18.tv_in1k"], "weights_files": entries}}
    with pytest.raises(UserError, match=message):
        extract_config(params, "resnet18.tv_in1k")
