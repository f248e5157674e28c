"""Every file the project loads is loaded without running code in it: a crafted pickle, a file of another
kind, a random or truncated file end in one line naming the file, and the payload never runs."""

from __future__ import annotations

import os
import pickletools
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from iaakd.checkpoints import Checkpoint
from iaakd.data.tables import ground_truth
from iaakd.errors import UserError
from iaakd.models import Distiller
from iaakd.student import KDConfig, StudentConfig, build_student, load_student, save_student
from iaakd.tasks import DISTRIBUTION
from iaakd.teacher import DistillerConfig, load_distiller, save_distiller, train_distiller
from iaakd.training import rng_state, seeded


class Payload:
    """Unpickling this object runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A student-looking checkpoint whose unpickling would run a command."""
    torch.save({"kind": "student", "format": 2, "backbone": "x", "payload": Payload(marker)}, path)
    return path


def test_the_crafted_file_really_calls_a_shell_command_when_unpickled(tmp_path):
    """The control, read without unpickling (this project never loads a file with code execution): the
    crafted checkpoint's pickle imports os.system and calls it with the command that makes the marker, so
    the tests below that find no marker show a refusal, not a harmless file."""
    marker = tmp_path / "ran"
    with zipfile.ZipFile(crafted_checkpoint(tmp_path / "evil.pt", marker)) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith("data.pkl")]
        operations = list(pickletools.genops(archive.read(name)))
    imported = [argument for op, argument, _ in operations if op.name == "GLOBAL"]
    assert f"{os.system.__module__} system" in imported  # os.system (posix.system on Linux)
    strings = [argument for _, argument, _ in operations if isinstance(argument, str)]
    assert f"touch {marker}" in strings and any(op.name == "REDUCE" for op, _, _ in operations)
    assert not marker.exists()


def load_pretrained_backbone(path: Path):
    """models/pretrain.pt (and models/align.pt) as the student stage loads it."""
    from iaakd.pretrained import load_backbone

    return load_backbone(path, "pretrain", "tf_efficientnet_lite0")


@pytest.mark.parametrize(
    "loader",
    [load_student, load_distiller, lambda path: Checkpoint(path.parent).load(), load_pretrained_backbone],
    ids=["student", "distiller", "training-checkpoint", "pretrain-backbone"],
)
def test_crafted_pickle_is_refused_and_its_payload_never_runs(tmp_path, loader):
    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path / "last.pt", marker)
    with pytest.raises(UserError, match=r"last\.pt: not .* loaded safely") as error:
        loader(path)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def small_distiller(tmp_path: Path) -> Path:
    model = Distiller(6, [4], 0.0)
    path = tmp_path / "distiller.pt"
    save_distiller(path, model, DistillerConfig(hidden=[4]), DISTRIBUTION, ["b"], {})
    return path


def test_a_distiller_given_as_a_student_is_refused(tmp_path):
    path = small_distiller(tmp_path)
    with pytest.raises(UserError, match=r"distiller\.pt: not a student checkpoint \(kind: distiller"):
        load_student(path)
    model, saved = load_distiller(path)  # the same file is a good distiller
    assert saved["backbones"] == ["b"] and model.feature_dim == 4


def test_a_student_given_as_a_distiller_is_refused(tmp_path):
    config = StudentConfig(backbone="tf_efficientnet_lite0", weights="random", input_size=32)
    model, preprocess, weights = build_student(config, feature_dim=4)
    path = tmp_path / "student.pt"
    save_student(path, model, preprocess, config, weights, data_source="demo")
    with pytest.raises(UserError, match=r"student\.pt: not a distiller checkpoint"):
        load_distiller(path)
    loaded, _, checkpoint = load_student(path)
    assert checkpoint["data_source"] == "demo"
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("value", [[], "none", None])
def test_a_student_checkpoint_whose_head_is_not_a_mapping_is_refused_in_one_line(tmp_path, value):
    """A stranger's file that loads safely but holds, for example, ``head: []`` ended in a traceback."""
    config = StudentConfig(backbone="tf_efficientnet_lite0", weights="random", input_size=32)
    model, preprocess, weights = build_student(config, feature_dim=4)
    path = tmp_path / "student.pt"
    save_student(path, model, preprocess, config, weights, data_source="demo")
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "head": value}, path)
    with pytest.raises(
        UserError,
        match=r"student\.pt: a damaged student checkpoint \(TypeError: head is \w+, not a mapping\)$",
    ) as error:
        load_student(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty"])
def test_random_truncated_or_empty_files_are_refused_in_one_line(tmp_path, damage):
    path = small_distiller(tmp_path)
    content = path.read_bytes()
    damaged = {
        "random bytes": np.random.default_rng(0).bytes(len(content)),
        "truncated": content[: len(content) // 2],
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    for loader in (load_student, load_distiller, load_pretrained_backbone):
        with pytest.raises(UserError, match=r"distiller\.pt: not a .* checkpoint") as error:
            loader(path)
        assert "\n" not in str(error.value)


def test_training_leaves_the_global_random_state_as_it_found_it():
    """The library seeds its own runs; the caller's torch, numpy and Python random streams go on unchanged."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6)).astype(np.float32)
    targets = rng.dirichlet(np.ones(10), size=40).astype(np.float32)
    config = DistillerConfig(hidden=[4], epochs=1, batch_size=8, seed=3)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    train_distiller(features[:32], targets[:32], features[32:], targets[32:], config, progress=False)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_training_a_student_leaves_the_global_random_state_as_it_found_it(tiny_demo):
    from iaakd.data.ava import AvaLayout, load_ava
    from iaakd.student import StudentData, train_student

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    truth = ground_truth(labels)
    paths = [str(tiny_demo / path) for path in labels["path"]]
    config = StudentConfig(
        weights="random", input_size=32, epochs=1, batch_size=8, kd=KDConfig(enabled=False)
    )
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    train_student(config, StudentData(paths[:16], truth[:16]), StudentData(paths[16:24], truth[16:24]), 4,
                  progress=False)  # fmt: skip
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_rng_state_holds_every_stream_and_loads_safely(tmp_path):
    """Python's and numpy's streams are in the state too (the loader's workers and user code draw from
    them), and the state round-trips through a weights_only load."""
    with seeded(5) as generator:
        state = rng_state(generator)
        torch.save(state, tmp_path / "rng.pt")
        draws = (torch.rand(2), np.random.rand(2), random.random(), torch.rand(2, generator=generator))
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    assert set(loaded) == {"generator", "torch", "cuda", "numpy", "python"}
    from iaakd.training import restore_rng_state

    with seeded(99) as generator:  # another seed: only the restored state can give the same draws
        restore_rng_state(generator, loaded)
        again = (torch.rand(2), np.random.rand(2), random.random(), torch.rand(2, generator=generator))
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2] == again[2] and torch.equal(draws[3], again[3])
