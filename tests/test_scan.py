"""The image scan: every kind of file a real download holds, the policy for unusual ones, the cache."""

import os
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iaakd.data import scan as scan_module
from iaakd.data.images import load_rgb
from iaakd.data.labels import labelled_images
from iaakd.data.scan import ORIENTATION_TAG, scan_image, scan_images, usable_images

RED = (200, 30, 30)


def write_cases(folder):
    """One file per case a real AVA download holds, all named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), RED).save(folder / "plain.jpg", quality=95)
    Image.new("RGBA", (40, 30), (*RED, 255)).save(folder / "png.jpg", format="PNG")
    Image.new("RGB", (40, 30), RED).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.new("L", (40, 30), 128).save(folder / "grey.jpg")
    rotated = Image.new("RGB", (40, 30), RED)
    exif = rotated.getexif()
    exif[ORIENTATION_TAG] = 8
    rotated.save(folder / "rotated.jpg", exif=exif.tobytes())
    content = (folder / "plain.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(content[: len(content) // 2])
    (folder / "html.jpg").write_text("<html>404 Not Found</html>")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


EXPECTED = {
    "plain": None,
    "png": "not JPEG (PNG)",
    "cmyk": "mode CMYK",
    "grey": "mode L",
    "rotated": "EXIF orientation 8",
}


def test_each_case_is_found_with_its_reason(tmp_path):
    folder = write_cases(tmp_path / "images")
    for name, unusual in EXPECTED.items():
        result = scan_image(str(folder / f"{name}.jpg"))
        assert result.problem is None, name
        assert result.unusual() == unusual, name
    rotated = scan_image(str(folder / "rotated.jpg"))
    assert (rotated.width, rotated.height) == (30, 40)  # as decoded: turned by 90 degrees
    assert scan_image(str(folder / "truncated.jpg")).problem.startswith("unreadable: ")
    assert scan_image(str(folder / "html.jpg")).problem == "unreadable: not an image format PIL can decode"
    assert scan_image(str(folder / "empty.jpg")).problem == "unreadable: empty file"
    assert scan_image(str(folder / "absent.jpg")).problem == "missing"


def test_unusual_files_decode_to_upright_rgb(tmp_path):
    folder = write_cases(tmp_path / "images")
    for name in ("png", "cmyk", "rotated"):
        image = load_rgb(folder / f"{name}.jpg")
        assert image.mode == "RGB"
        assert np.abs(np.asarray(image, dtype=int)[15, 15] - np.array(RED)).max() <= 12, name
    assert load_rgb(folder / "rotated.jpg").size == (30, 40)
    grey = np.asarray(load_rgb(folder / "grey.jpg"))
    assert grey.shape == (30, 40, 3) and (grey == 128).all()


def test_policy_decode_keeps_unusual_files_skip_lists_them(tmp_path):
    folder = write_cases(tmp_path / "images")
    names = [*EXPECTED, "truncated", "html", "empty", "absent"]
    scans = scan_images([str(folder / f"{name}.jpg") for name in names], workers=1)
    decoded = usable_images(scans, "decode")
    assert decoded[: len(EXPECTED)].isna().all()
    assert decoded[len(EXPECTED) :].notna().all()
    skipped = usable_images(scans, "skip")
    assert skipped.tolist()[: len(EXPECTED)] == list(EXPECTED.values())

    labels = pd.DataFrame({"image_id": names, "votes": [np.ones(10, np.int64)] * len(names)})
    paths = [folder / f"{name}.jpg" for name in names]
    usable, left_out = labelled_images(labels, paths, tmp_path / "labels.csv", tmp_path, unusual="skip")
    assert usable["image_id"].tolist() == ["plain"]
    assert dict(zip(left_out["image_id"], left_out["reason"].str.split(":").str[0], strict=True)) == {
        "png": "not JPEG (PNG)",
        "cmyk": "mode CMYK",
        "grey": "mode L",
        "rotated": "EXIF orientation 8",
        "truncated": "unreadable",
        "html": "unreadable",
        "empty": "unreadable",
        "absent": "missing",
    }


def test_cache_skips_unchanged_files_and_rescans_changed_ones(tmp_path, monkeypatch):
    folder = write_cases(tmp_path / "images")
    paths = [str(folder / f"{name}.jpg") for name in EXPECTED]
    cache = tmp_path / "work" / "cache.parquet"
    first = scan_images(paths, cache, workers=1)
    assert cache.is_file()

    decoded = []
    original = scan_module.scan_image
    monkeypatch.setattr(scan_module, "scan_image", lambda path: decoded.append(path) or original(path))
    again = scan_images(paths, cache, workers=1)
    assert decoded == []
    pd.testing.assert_frame_equal(first, again)

    Image.new("RGB", (50, 20), (0, 0, 255)).save(folder / "plain.jpg")  # the same path, new content
    os.utime(folder / "plain.jpg", ns=(1, 1))
    changed = scan_images(paths, cache, workers=1)
    assert decoded == [paths[0]]
    assert (changed.loc[0, "width"], changed.loc[0, "height"]) == (50, 20)
    assert changed.loc[0, "file_hash"] != first.loc[0, "file_hash"]


def test_parallel_scan_equals_serial(tmp_path, monkeypatch):
    folders = [write_cases(tmp_path / f"images{copy}") for copy in range(5)]
    paths = [str(path) for folder in folders for path in sorted(folder.iterdir())] * 2
    pools = []
    real_pool = scan_module.ProcessPoolExecutor
    monkeypatch.setattr(
        scan_module, "ProcessPoolExecutor", lambda workers: pools.append(workers) or real_pool(workers)
    )
    parallel = scan_images(paths, workers=2)
    assert pools == [2]  # more than 32 distinct files: the pool did scan them
    serial = scan_images(paths, workers=1)
    pd.testing.assert_frame_equal(parallel, serial)
    assert len(parallel) == len(paths)


@pytest.mark.parametrize("policy", ["decode", "skip"])
def test_policy_values_are_the_known_ones(policy):
    assert policy in scan_module.UNUSUAL_POLICIES


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims ``width`` x ``height`` pixels (a decompression bomb's)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_that_files_problem_not_the_end_of_the_scan(tmp_path):
    """PIL's DecompressionBombError is not an OSError: it used to escape and end the process pool."""
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(png_claiming(100_000, 100_000))
    result = scan_image(str(bomb))
    assert result.problem.startswith("unreadable: Image size (10000000000 pixels) exceeds limit")
    folders = [write_cases(tmp_path / f"images{copy}") for copy in range(5)]
    paths = [str(path) for folder in folders for path in sorted(folder.iterdir())] + [str(bomb)]
    assert len(paths) > 32  # distinct files: enough to scan them in a process pool
    scans = scan_images(paths, workers=2)
    assert scans["problem"].iloc[-1] == result.problem
    assert scans["problem"].isna().sum() == 5 * len(EXPECTED)


def jpeg_with_orientation_entry(path, tag_type: int, value: bytes, extra: bytes = b"") -> None:
    """A JPEG whose EXIF orientation entry has the TIFF ``tag_type`` (2 text, 5 fraction, 8 signed)."""
    entry = struct.pack(">HHI", ORIENTATION_TAG, tag_type, 1 if tag_type != 2 else len(value)) + value
    exif = b"Exif\0\0MM\0\x2a\0\0\0\x08" + struct.pack(">H", 1) + entry + b"\0\0\0\0" + extra
    Image.new("RGB", (40, 30), RED).save(path, exif=exif)


def test_a_malformed_orientation_reads_as_the_decoder_applies_it(tmp_path):
    """The scan's orientation and size must be those load_rgb decodes to (images of one size are batched
    together at full resolution): a text orientation is no turn, not an unreadable file; 13/2 is no turn."""
    cases = {
        "text": (2, b"abc\0", b"", 1),
        "fraction": (5, struct.pack(">I", 26), struct.pack(">II", 13, 2), 1),
        "negative": (8, b"\xff\xfa\0\0", b"", 1),
        "fraction_six": (5, struct.pack(">I", 26), struct.pack(">II", 12, 2), 6),
    }
    for name, (tag_type, value, extra, orientation) in cases.items():
        path = tmp_path / f"{name}.jpg"
        jpeg_with_orientation_entry(path, tag_type, value, extra)
        result = scan_image(str(path))
        assert result.problem is None, name
        assert result.orientation == orientation, name
        assert (result.width, result.height) == load_rgb(path).size, name
