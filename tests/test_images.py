import numpy as np
import pytest
import torch
from PIL import Image

from iaakd.data.images import EncodedImageDataset, Preprocess, decode_on_device, load_rgb
from iaakd.errors import UserError


@pytest.mark.parametrize("orientation", range(1, 9))
def test_device_decoding_matches_pil_for_every_exif_orientation(tmp_path, orientation):
    """The nvJPEG path (here its CPU twin in torchvision) gives PIL's pixels, rotated the same way."""
    image = Image.new("RGB", (40, 24))
    image.putdata([(x * 6 % 256, y * 10 % 256, 99) for y in range(24) for x in range(40)])
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    _, payload, read_orientation = EncodedImageDataset([str(path)])[0]
    decoded = decode_on_device([payload], [read_orientation], torch.device("cpu"))[0]
    reference = torch.from_numpy(np.array(load_rgb(path))).permute(2, 0, 1)
    assert torch.equal(decoded, reference)


def test_non_jpeg_under_jpg_name_is_decoded_by_pil(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    Image.new("RGB", (8, 6), (1, 2, 3)).save(path, format="PNG")
    _, payload, _ = EncodedImageDataset([str(path)])[0]
    decoded = decode_on_device([payload], [1], torch.device("cpu"))
    assert decoded.shape == (1, 3, 6, 8) and decoded[0, :, 0, 0].tolist() == [1, 2, 3]


def test_normalise_on_device_matches_the_float_formula():
    preprocess = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    assert preprocess.normalise(batch).flatten().tolist() == pytest.approx(
        [-1.0, 1.0, 128 / 255 * 2 - 1], abs=1e-6
    )


def smooth_jpeg(path, size=(800, 600)) -> None:
    """A photo-like JPEG: a smooth colour field with grain, at quality 90."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (size[1] // 40 + 1, size[0] // 40 + 1, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-12, 13, (size[1], size[0], 1), dtype=np.int16)
    Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(path, quality=90)


def test_draft_decoding_scales_jpegs_down_but_never_below_the_input_size(tmp_path):
    """800 x 600 for a 128 input: 1/4 scale (200 x 150), not 1/8 (100 x 75, smaller than 128); the network
    input is within a few grey levels of a full decode's, not equal to it; other formats decode in full."""
    path = tmp_path / "photo.jpg"
    smooth_jpeg(path)
    assert load_rgb(path).size == (800, 600)
    assert load_rgb(path, (128, 128)).size == (200, 150)
    assert load_rgb(path, (300, 300)).size == (400, 300)

    full = Preprocess((0, 0, 0), (1, 1, 1), size=128).load(path)
    draft = Preprocess((0, 0, 0), (1, 1, 1), size=128, jpeg_draft=True).load(path)
    assert draft.shape == full.shape == (3, 128, 128)
    difference = (draft.float() - full.float()).abs().mean().item()
    assert 0 < difference < 4, difference

    png = tmp_path / "photo.png"
    Image.open(path).save(png)
    assert torch.equal(Preprocess((0, 0, 0), (1, 1, 1), size=128, jpeg_draft=True).load(png),
                       Preprocess((0, 0, 0), (1, 1, 1), size=128).load(png))  # fmt: skip


def test_draft_decoding_is_stored_with_the_preprocessing_and_needs_a_resize():
    preprocess = Preprocess((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), size=300, jpeg_draft=True)
    assert Preprocess.from_dict(preprocess.as_dict()) == preprocess
    earlier = {key: value for key, value in preprocess.as_dict().items() if key != "jpeg_draft"}
    assert not Preprocess.from_dict(earlier).jpeg_draft  # checkpoints from before decoded in full
    with pytest.raises(ValueError, match="jpeg_draft needs mode 'resize'"):
        Preprocess((0, 0, 0), (1, 1, 1), size=256, mode="pad_crop", pad_size=320, jpeg_draft=True)
    with pytest.raises(ValueError, match="jpeg_draft needs mode 'resize'"):
        Preprocess((0, 0, 0), (1, 1, 1), jpeg_draft=True)  # full resolution


def bad_files(folder):
    """A decompression bomb's header, a JPEG cut short and an HTML page, each named .jpg."""
    from test_scan import png_claiming

    good = folder / "good.jpg"
    Image.new("RGB", (40, 30), (9, 9, 9)).save(good)
    files = {
        "bomb": png_claiming(100_000, 100_000),
        "truncated": good.read_bytes()[:300],
        "html": b"<html>404 Not Found</html>",
    }
    for name, content in files.items():
        (folder / f"{name}.jpg").write_bytes(content)
    return {name: folder / f"{name}.jpg" for name in files}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bomb", r"Image size \(10000000000 pixels\) exceeds limit"),
        ("truncated", "[Tt]runcated"),
        ("html", "cannot identify image file"),
    ],
)
def test_a_file_that_no_longer_decodes_is_one_line_naming_it_in_every_loader(tmp_path, name, reason):
    """Changed after the scan (or never scanned): the loaders' error names the file, whatever PIL raised
    (the bomb's error is not an OSError)."""
    path = bad_files(tmp_path)[name]
    message = rf"^{path}: cannot decode it \({reason}.*\); has it changed since it was scanned\?$"
    with pytest.raises(UserError, match=message):
        load_rgb(path)
    with pytest.raises(UserError, match=message):
        Preprocess((0, 0, 0), (1, 1, 1), size=32).load(path)
    if name != "truncated":  # a JPEG goes to the device decoder as bytes
        with pytest.raises(UserError, match=message):
            EncodedImageDataset([str(path)])[0]


def test_a_file_gone_since_the_scan_is_named_by_the_device_loader(tmp_path):
    with pytest.raises(UserError, match=rf"^{tmp_path / 'gone.jpg'}: cannot decode it \(missing\)"):
        EncodedImageDataset([str(tmp_path / "gone.jpg")])[0]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_grey_image_is_scaled_to_8_bits_not_clipped_to_white(tmp_path, suffix):
    """Pillow's convert("RGB") clips 16-bit greys at 255: a full-range gradient came out 99.6 % white."""
    from iaakd.scorer import prepare

    gradient = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / f"grey16{suffix}"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I;16")
    pixels = np.asarray(load_rgb(path))
    assert pixels.shape == (64, 64, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    expected = np.rint(gradient / 257.0)
    assert np.abs(pixels[..., 0].astype(int) - expected).max() == 0
    assert (pixels == 255).mean() < 0.01 and 120 < pixels.mean() < 135
    # an image handed to the scorer already decoded goes the same way
    preprocess = Preprocess(size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with Image.open(path) as image:
        handed = prepare(image, preprocess)
    assert torch.equal(handed, preprocess.load(path)) and 100 < handed.float().mean() < 155
