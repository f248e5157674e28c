"""``from iaakd import Scorer``: the CLI's columns and numbers, images prepared exactly as in training."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scoring_helpers import one_torch_thread, run_cli, save_tiny_student, write_photos

from iaakd.student import load_student, predict
from iaakd.tasks import Task


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("api")
    return save_tiny_student(root / "student.pt"), write_photos(root / "photos", 6, seed=4)


def test_import_iaakd_stays_cheap_and_scorer_loads_on_first_use():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, iaakd; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "False", result.stderr
    from iaakd import Scorer
    from iaakd.scorer import Scorer as Defined

    assert Scorer is Defined


@pytest.mark.parametrize("output", ["distribution", "score", "binary"])
def test_python_api_returns_the_cli_columns_and_numbers_to_printed_precision(tiny, tmp_path, capsys, output):
    from iaakd import Scorer

    checkpoint = save_tiny_student(tmp_path / "student.pt", task=Task(output, (1.0, 5.0)))
    _, photos = tiny
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    items = sorted([*map(str, photos), str(broken)])
    out = tmp_path / "scores.csv"
    assert run_cli(["score", str(checkpoint), *items, "--out", str(out)], capsys)[0] == 2
    cli = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    scorer = Scorer.load(checkpoint, device="cpu")
    with Image.open(photos[0]) as image:
        frame = scorer.score([*items, image.copy()])
    assert list(frame.columns) == cli[0]
    assert cli[0][1] == {"distribution": "mean_score", "score": "mean_score", "binary": "p_high"}[output]
    assert len(cli[0]) == (13 if output == "distribution" else 3)
    assert frame["path"].tolist() == [*items, None]
    for row, (_, api) in zip(cli[1:], frame.iterrows(), strict=False):
        assert row[0] == api["path"] and row[-1] == api["error"]
        for column, text in zip(cli[0][1:-1], row[1:-1], strict=True):
            if api["error"]:
                assert text == "" and np.isnan(api[column])
            else:
                decimals = len(text.split(".")[1])
                assert abs(float(text) - api[column]) <= 0.5 * 10**-decimals + 1e-12, (
                    column,
                    text,
                    api[column],
                )
    assert frame.loc[frame["path"] == str(broken), "error"].item().startswith("unreadable: ")
    same_file = frame[frame["path"] == str(photos[0])].iloc[0, 1:-1].to_numpy(float)
    np.testing.assert_array_equal(frame.iloc[-1, 1:-1].to_numpy(float), same_file)  # PIL image = its file


def _unusual_files(folder: Path) -> dict[str, Path]:
    """An EXIF-rotated photo and its upright twin (lossless), CMYK, 16-bit greyscale, RGBA and palette files."""
    rng = np.random.default_rng(7)
    upright = Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8))
    files = {
        name: folder / name
        for name in ("upright.png", "rotated.png", "cmyk.jpg", "grey16.png", "rgba.png", "palette.png")
    }
    upright.save(files["upright.png"])
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: stored turned the other way
    upright.transpose(Image.Transpose.ROTATE_90).save(files["rotated.png"], exif=exif)
    upright.convert("CMYK").save(files["cmyk.jpg"], quality=95)
    Image.fromarray((rng.integers(0, 65535, (50, 60))).astype(np.uint16)).save(files["grey16.png"])
    upright.convert("RGBA").save(files["rgba.png"])
    upright.convert("P").save(files["palette.png"])
    return files


def test_unusual_files_are_scored_as_the_training_loader_prepares_them(tiny, tmp_path):
    from iaakd import Scorer

    checkpoint, _ = tiny
    files = _unusual_files(tmp_path)
    paths = [str(path) for path in files.values()]
    frame = Scorer.load(checkpoint, device="cpu").score(paths)
    assert (frame["error"] == "").all(), frame["error"].tolist()
    model, preprocess, _ = load_student(checkpoint)
    training = predict(model, paths, preprocess)  # the training and evaluation loader's path
    np.testing.assert_allclose(frame[[f"p{k}" for k in range(1, 11)]].to_numpy(), training, atol=1e-6)
    rotated, upright = (
        frame.loc[frame["path"] == str(files[name])].iloc[0, 1:-1] for name in ("rotated.png", "upright.png")
    )
    np.testing.assert_array_equal(rotated.to_numpy(float), upright.to_numpy(float))


def test_loading_a_model_trained_on_the_demo_warns_that_its_scores_mean_nothing_for_photos(tmp_path):
    from iaakd import Scorer

    with pytest.warns(UserWarning, match="synthetic demo"):
        Scorer.load(save_tiny_student(tmp_path / "demo.pt", data_source="demo"), device="cpu")
