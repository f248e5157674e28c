"""Every crash path a review found in the ``iaakd`` commands ends in one ``error:`` line naming the file, option
or extra, with status 1, and leaves nothing partial: each test is named for the traceback it replaces."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import pytest
from scoring_helpers import run_cli, save_tiny_student, write_photos


@pytest.fixture(scope="module")
def student_and_photos(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("cli-errors")
    return save_tiny_student(root / "student.pt"), write_photos(root / "photos", 3)


def one_error_line(stderr: str, *named: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    for name in named:
        assert name in stderr, stderr


@pytest.fixture
def undecodable_name(student_and_photos, tmp_path) -> Path:
    """A photo whose file name is not valid UTF-8 (bytes 0xff 0xfe), as a Linux file system allows."""
    _, photos = student_and_photos
    folder = tmp_path / "odd"
    folder.mkdir()
    target = os.path.join(os.fsencode(folder), b"caf\xff\xfe.jpg")
    with open(target, "wb") as handle:
        handle.write(photos[0].read_bytes())
    (folder / "plain.jpg").write_bytes(photos[1].read_bytes())
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_name_that_is_not_utf8_is_scored_written_and_resumed_not_a_unicode_encode_error(
    student_and_photos, undecodable_name, tmp_path, capsys, suffix
):
    checkpoint, _ = student_and_photos
    out = tmp_path / f"scores{suffix}"
    argv = ["score", str(checkpoint), str(undecodable_name), "--out", str(out), "--num-workers", "0"]
    status, _, stderr = run_cli(argv, capsys)
    assert status == 0, stderr
    content = out.read_bytes()
    if suffix == ".csv":  # the row holds the file's own bytes, so the name is the file's
        rows = list(csv.reader(io.StringIO(content.decode("utf-8", errors="surrogateescape"))))[1:]
        named = [os.fsencode(row[0]) for row in rows]
        assert os.fsencode(undecodable_name) + b"/caf\xff\xfe.jpg" in named
        assert all(os.path.exists(name) for name in named) and all(row[-1] == "" for row in rows)
    else:
        assert content.count(b"\n") == 2 and b"\\udcff\\udcfe.jpg" in content
    status, _, stderr = run_cli([*argv, "--resume"], capsys)
    assert status == 0 and "scored 0, failed 0; 2 rows already there (0 failed)" in stderr, stderr
    assert out.read_bytes() == content


def test_a_file_name_that_is_not_utf8_goes_to_stdout_as_its_bytes(
    student_and_photos, undecodable_name, capfdbinary
):
    import subprocess

    checkpoint, _ = student_and_photos
    result = subprocess.run(
        [sys.executable, "-m", "iaakd", "score", str(checkpoint), str(undecodable_name)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr
    assert b"caf\xff\xfe.jpg," in result.stdout and result.stdout.count(b"\n") == 3


def test_score_out_naming_a_folder_is_one_line_not_an_is_a_directory_error(
    student_and_photos, tmp_path, capsys
):
    checkpoint, photos = student_and_photos
    folder = tmp_path / "results"
    folder.mkdir()
    status, stdout, stderr = run_cli(["score", str(checkpoint), str(photos[0]), "--out", str(folder)], capsys)
    assert status == 1 and stdout == ""
    one_error_line(stderr, "--out", str(folder), "is a folder")
    assert list(folder.iterdir()) == []


def test_explain_out_naming_a_file_is_one_line_not_a_file_exists_error(student_and_photos, tmp_path, capsys):
    checkpoint, photos = student_and_photos
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n", encoding="utf-8")
    status, _, stderr = run_cli(["explain", str(checkpoint), str(photos[0]), "--out", str(existing)], capsys)
    assert status == 1
    one_error_line(stderr, "--out", str(existing), "is a file")
    assert existing.read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("explain", "--batch-size", "0"),  # was a ValueError from torch's DataLoader
        ("explain", "--count", "0"),
        ("score", "--batch-size", "0"),
        ("score", "--num-workers", "-1"),
        ("score", "--batch-size", "many"),
        ("export", "--opset", "0"),
    ],
)
def test_a_bad_number_is_one_usage_line_naming_the_option(
    student_and_photos, tmp_path, capsys, command, option, value
):
    checkpoint, photos = student_and_photos
    target = ["--onnx", str(tmp_path / "m.onnx")] if command == "export" else [str(photos[0])]
    if command == "explain":
        target += ["--out", str(tmp_path / "maps")]
    status, _, stderr = run_cli([command, str(checkpoint), *target, option, value], capsys)
    assert status == 1
    one_error_line(stderr, f"argument {option}", value)
    assert not (tmp_path / "maps").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("command", "module"), [("export", "onnxscript"), ("explain", "pytorch_grad_cam"), ("export", "onnx")]
)
def test_a_command_without_the_scoring_extra_names_the_extra_not_a_module_not_found_error(
    student_and_photos, tmp_path, capsys, monkeypatch, command, module
):
    checkpoint, photos = student_and_photos
    for name in list(sys.modules):  # as if the module were not installed
        if name == module or name.startswith(f"{module}."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    if command == "export":
        argv = ["export", str(checkpoint), "--onnx", str(tmp_path / "m.onnx")]
    else:
        argv = ["explain", str(checkpoint), str(photos[0]), "--out", str(tmp_path / "maps")]
    status, _, stderr = run_cli(argv, capsys)
    assert status == 1
    one_error_line(stderr, module, "pip install 'iaakd[scoring]'")
    assert not (tmp_path / "m.onnx").exists()


def test_an_output_under_a_file_is_one_line_naming_the_file_not_an_os_error_traceback(
    student_and_photos, tmp_path, capsys
):
    """Any OSError of a file the command writes (here: a parent that is a file; a full disk, a read-only
    folder) names the file."""
    checkpoint, photos = student_and_photos
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder\n", encoding="utf-8")
    status, _, stderr = run_cli(
        ["score", str(checkpoint), str(photos[0]), "--out", str(blocker / "s.csv")], capsys
    )
    assert status == 1
    one_error_line(stderr, str(blocker))
