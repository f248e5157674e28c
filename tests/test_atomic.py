"""Atomic writes (iaakd.atomic, and common.write_json on it): a write killed at any point leaves the old
file, complete, and no staging file; two writers never share a staging name; data is on disk (fsync)
before the rename."""

import json
import os

import pytest

from iaakd import atomic
from iaakd.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from iaakd.stages import common


def test_a_write_killed_before_the_rename_leaves_the_old_file_and_no_staging_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    common.write_json(target, {"tables": {"v": 1}})

    def killed(_path):
        raise KeyboardInterrupt  # as a kill between writing the data and renaming it

    monkeypatch.setattr(atomic, "_fsync_file", killed)
    with pytest.raises(KeyboardInterrupt):
        common.write_json(target, {"tables": {"v": 1, "vi": 2}})
    assert json.loads(target.read_text()) == {"tables": {"v": 1}}
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_a_writer_that_fails_half_way_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write_bytes(target, b"old model")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half of a new mod")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old model"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


def test_two_writers_of_one_target_stage_under_names_of_their_own_in_its_folder(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == target.parent
        assert first.suffix == ".json" and first.name.startswith(".metrics.json")
        first.write_text("one")
        second.write_text("two")
    assert target.read_text() == "one"  # the outer block ends last: its file is the one kept
    assert [path.name for path in target.parent.iterdir()] == ["metrics.json"]


def test_data_is_fsynced_before_the_rename_and_permissions_follow_the_umask(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "text")
    finally:
        os.umask(previous)
    assert calls[:2] == ["fsync", "replace"]  # then the folder's fsync
    assert (tmp_path / "a.txt").read_text() == "text"
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600


def test_two_saves_of_the_same_checkpoint_are_the_same_bytes(tmp_path):
    """torch.save given the staging path names its archive after that random name: the same model, saved
    twice, would then differ in its bytes (and in its md5 in dvc.lock) on every rerun."""
    import torch

    from iaakd.checkpoints import safe_load, save_atomically

    payload = {"kind": "student", "state_dict": {"weight": torch.arange(6.0).reshape(2, 3)}}
    save_atomically(payload, tmp_path / "first" / "model.pt")
    save_atomically(payload, tmp_path / "second" / "model.pt")
    first, second = (tmp_path / name / "model.pt" for name in ("first", "second"))
    assert first.read_bytes() == second.read_bytes()
    assert torch.equal(
        safe_load(first, "a test checkpoint")["state_dict"]["weight"], payload["state_dict"]["weight"]
    )
    assert sorted(path.name for path in first.parent.iterdir()) == ["model.pt"]  # no staging file left
