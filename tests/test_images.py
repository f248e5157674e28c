import numpy as np
import pytest
import torch
from PIL import Image

from iaakd.data.images import EncodedImageDataset, Preprocess, decode_on_device, load_rgb


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
