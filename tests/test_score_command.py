"""``iaakd score``: bad files become rows, rows are written as batches finish, resume, shards, safe loading."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shlex
from pathlib import Path

import pytest
import torch
from scoring_helpers import one_torch_thread, run_cli, save_tiny_student, write_photos

COLUMNS = ["path", "mean_score", *[f"p{k}" for k in range(1, 11)], "error"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny student and a folder of 20 photos, a truncated JPEG and an HTML page named .jpg, the two bad
    ones sorting between the good ones."""
    root = tmp_path_factory.mktemp("scoring")
    checkpoint = save_tiny_student(root / "student.pt")
    photos = write_photos(root / "photos" / "holiday", 20)
    content = photos[5].read_bytes()
    (root / "photos" / "photo_05_truncated.jpg").write_bytes(content[: len(content) // 2])
    (root / "photos" / "holiday" / "photo_12_page.jpg").write_text(
        "<!doctype html><html><body>Moved permanently</body></html>\n", encoding="utf-8"
    )
    return checkpoint, root / "photos"


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_folder_with_a_truncated_jpeg_and_an_html_page_gives_20_scores_2_error_rows_and_status_2(
    photo_folder, tmp_path, capsys
):
    checkpoint, folder = photo_folder
    out = tmp_path / "scores.csv"
    argv = [
        "score",
        str(checkpoint),
        str(folder),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--num-workers",
        "1",
    ]
    status, stdout, stderr = run_cli(argv, capsys)
    assert status == 2 and stdout == ""
    assert out.read_text(encoding="utf-8").splitlines()[0] == ",".join(COLUMNS)
    rows = read_rows(out)
    assert [row["path"] for row in rows] == sorted(str(p) for p in folder.rglob("*.jpg"))
    failed = {Path(row["path"]).name: row for row in rows if row["error"]}
    assert set(failed) == {"photo_05_truncated.jpg", "photo_12_page.jpg"}
    assert failed["photo_05_truncated.jpg"]["error"].startswith("unreadable: image file is truncated")
    assert failed["photo_12_page.jpg"]["error"] == "unreadable: not an image format PIL can decode"
    assert all(row["mean_score"] == "" and row["p1"] == "" for row in failed.values())
    scored = [row for row in rows if not row["error"]]
    assert len(scored) == 20
    for row in scored:
        probabilities = [float(row[f"p{k}"]) for k in range(1, 11)]
        assert abs(sum(probabilities) - 1) < 1e-4
        assert float(row["mean_score"]) == pytest.approx(
            sum(k * p for k, p in enumerate(probabilities, 1)), abs=1e-3
        )
    assert "scored 20, failed 2" in stderr and "photo_12_page.jpg: unreadable" in stderr
    assert "warning" not in stderr  # the checkpoint does not say it was trained on the demo
    record = json.loads((tmp_path / "scores.csv.json").read_text())
    assert record["model_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["preprocess"]["size"] == 64 and record["package_version"] == "0.1.0"
    assert record["complete"] is True and record["failed"] == 2
    written = out.read_bytes()
    status, _, stderr = run_cli([*argv, "--resume"], capsys)
    assert status == 2 and out.read_bytes() == written
    assert "scored 0, failed 0; 22 rows already there (2 failed)" in stderr


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_a_kill_drops_the_half_written_line_and_ends_equal_to_an_uninterrupted_run(
    photo_folder, tmp_path, capsys, suffix
):
    checkpoint, folder = photo_folder
    out = tmp_path / f"scores{suffix}"
    argv = ["score", str(checkpoint), str(folder), "--out", str(out), "--num-workers", "0"]
    assert run_cli(argv, capsys)[0] == 2
    complete = out.read_bytes()
    lines = complete.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:8]) + lines[8][:25])  # killed while writing a row
    status, _, stderr = run_cli([*argv, "--resume"], capsys)
    assert status == 2
    assert out.read_bytes() == complete
    assert "rows already there" in stderr


def test_resume_refuses_an_output_written_by_another_model(photo_folder, tmp_path, capsys):
    checkpoint, folder = photo_folder
    out = tmp_path / "scores.csv"
    assert (
        run_cli(["score", str(checkpoint), str(folder), "--out", str(out), "--num-workers", "0"], capsys)[0]
        == 2
    )
    written = out.read_bytes()
    other = save_tiny_student(tmp_path / "other.pt", seed=1)
    status, _, stderr = run_cli(["score", str(other), str(folder), "--out", str(out), "--resume"], capsys)
    assert status == 1
    assert stderr.count("\n") == 1 and stderr.startswith(
        f"error: --resume: {out} was written by another model"
    )
    assert out.read_bytes() == written


@pytest.mark.parametrize("count", [2, 3])
def test_shards_concatenated_in_order_without_their_headers_equal_the_unsharded_output(
    photo_folder, tmp_path, capsys, count
):
    checkpoint, folder = photo_folder
    base = ["score", str(checkpoint), str(folder), "--num-workers", "0", "--batch-size", "5"]
    run_cli([*base, "--out", str(tmp_path / "all.csv")], capsys)
    shards = []
    for index in range(count):
        run_cli([*base, "--shard", f"{index}/{count}", "--out", str(tmp_path / f"shard{index}.csv")], capsys)
        shards.append((tmp_path / f"shard{index}.csv").read_text(encoding="utf-8").splitlines(keepends=True))
    assert all(len(lines) > 1 for lines in shards)  # every shard has rows
    joined = shards[0][0] + "".join(line for lines in shards for line in lines[1:])
    assert joined == (tmp_path / "all.csv").read_text(encoding="utf-8")


def test_strict_stops_at_the_first_unreadable_file_with_status_2(photo_folder, tmp_path, capsys):
    checkpoint, folder = photo_folder
    out = tmp_path / "scores.csv"
    argv = ["score", str(checkpoint), str(folder), "--out", str(out), "--strict", "--batch-size", "4"]
    status, _, stderr = run_cli([*argv, "--num-workers", "0"], capsys)
    assert status == 2
    rows = read_rows(out)
    # sorted: holiday/photo_00 .. holiday/photo_19 (with photo_12_page among them), then photo_05_truncated
    assert [Path(row["path"]).name for row in rows][-2:] == ["photo_12.jpg", "photo_12_page.jpg"]
    assert len(rows) == 14 and all(row["error"] == "" for row in rows[:-1])
    assert "stopped at the first failure (--strict)" in stderr
    assert json.loads((tmp_path / "scores.csv.json").read_text())["complete"] is False


def test_lists_folders_and_files_are_collected_once_in_order_and_a_missing_listed_file_is_a_row(
    photo_folder, tmp_path, capsys, monkeypatch
):
    checkpoint, folder = photo_folder
    monkeypatch.chdir(folder)
    listing = tmp_path / "list.txt"
    listing.write_text("# my picks\nholiday/photo_03.jpg\n\n./holiday/photo_01.jpg\nholiday/gone.jpg\n")
    out = tmp_path / "picks.jsonl"
    argv = ["score", str(checkpoint), f"@{listing}", "holiday/photo_01.jpg", "--out", str(out)]
    status, _, _ = run_cli(argv, capsys)
    assert status == 2
    rows = read_rows(out)
    assert [row["path"] for row in rows] == [
        "holiday/gone.jpg",
        "holiday/photo_01.jpg",
        "holiday/photo_03.jpg",
    ]
    assert rows[0]["error"] == "missing" and rows[0]["mean_score"] is None
    assert rows[1]["error"] == "" and 1 <= rows[1]["mean_score"] <= 10 and len(rows[1]) == len(COLUMNS)


def test_model_trained_on_the_demo_warns_once(photo_folder, tmp_path, capsys):
    _, folder = photo_folder
    demo = save_tiny_student(tmp_path / "demo.pt", data_source="demo")
    status, stdout, stderr = run_cli(["score", str(demo), str(folder / "holiday")], capsys)
    assert status == 2 and stdout.startswith("path,mean_score")
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "synthetic demo" in warnings[0]


def test_bad_options_end_in_one_error_line_and_status_1(photo_folder, capsys):
    checkpoint, folder = photo_folder
    for extra, message in (
        (["--shard", "2/2"], "error: --shard 2/2"),
        (["--resume"], "error: --resume needs --out"),
        (["--format", "xml"], "error: iaakd score: argument --format"),
    ):
        status, _, stderr = run_cli(["score", str(checkpoint), str(folder), *extra], capsys)
        assert status == 1 and stderr.count("\n") == 1 and stderr.startswith(message), stderr
    status, _, stderr = run_cli(["score", str(checkpoint), str(folder / "nothing-here")], capsys)
    assert status == 1 and stderr == f"error: not a file, folder or @list: {folder / 'nothing-here'}\n"


class _Payload:
    """Unpickling this runs a shell command: what a stranger's crafted ``.pt`` file can do under pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_crafted_pickle_checkpoint_is_refused_in_one_line_and_its_payload_never_runs(
    photo_folder, tmp_path, capsys, zip_format
):
    _, folder = photo_folder
    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "student.pt"
    torch.save(
        {"format": 1, "state_dict": _Payload(marker)}, crafted, _use_new_zipfile_serialization=zip_format
    )
    out = tmp_path / "scores.csv"
    status, stdout, stderr = run_cli(["score", str(crafted), str(folder), "--out", str(out)], capsys)
    assert not marker.exists(), "loading the checkpoint ran the code inside it"
    assert status == 1 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and str(crafted) in stderr, stderr
    assert not out.exists()


def test_image_over_the_size_limit_of_the_scan_is_an_error_row_not_the_end_of_the_run(
    photo_folder, tmp_path, capsys, monkeypatch
):
    """Pillow's decompression-bomb limit, as the scan applies it (lowered so that an 80 x 60 photo is over it)."""
    from PIL import Image

    checkpoint, _ = photo_folder
    large = write_photos(tmp_path / "large", 1)[0]  # 80 x 60 = 4,800 pixels
    small = tmp_path / "small.png"
    Image.new("RGB", (30, 30), (200, 120, 40)).save(small)  # 900 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above twice the limit
    out = tmp_path / "scores.csv"
    argv = ["score", str(checkpoint), str(large), str(small), "--out", str(out), "--num-workers", "0"]
    status, _, _ = run_cli(argv, capsys)
    rows = {Path(row["path"]).name: row for row in read_rows(out)}
    assert status == 2 and rows["small.png"]["error"] == ""
    assert rows["photo_00.jpg"]["error"].startswith("unreadable: Image size (4800 pixels) exceeds limit")
