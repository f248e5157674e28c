"""Image decoding and the input modes: full resolution (teacher), and for the student a square resize or the
paper's pad-then-centre-crop (Table VII)."""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from iaakd.errors import UserError, first_line

RESIZE_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
INPUT_MODES = ("resize", "pad_crop", "letterbox")


# What PIL raises for a file that is not a decodable image: OSError (UnidentifiedImageError, truncated
# data), the decompression-bomb error (an Exception of its own, not an OSError), and the parsers' errors
# for malformed headers and tags.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    Image.DecompressionBombError,
)
ORIENTATION_TAG = 0x0112  # EXIF orientation
_TRANSPOSED = {value: value for value in range(2, 9)}  # the orientations PIL's exif_transpose applies


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation as :func:`ImageOps.exif_transpose` reads it, 2 to 8 for an image it turns or
    flips, 1 for any other (missing, 0, 9, -6, a text from a malformed tag): what the scan records, the
    device decoder applies and ``load_rgb`` does always agree."""
    try:
        return _TRANSPOSED.get(image.getexif().get(ORIENTATION_TAG, 1), 1)
    except TypeError:  # an unhashable value: no transpose either
        return 1


def decode_problem(error: BaseException) -> str:
    """The first line of a decoding error, short, for one line of output."""
    if isinstance(error, FileNotFoundError):
        return "missing"
    return first_line(error, 100)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's 16-bit greys


def as_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, the networks' input. Pillow's ``convert("RGB")`` clips a 16-bit grey image (PNG, TIFF) at
    255, so nearly every pixel turns white; such an image is first scaled from its 16-bit range
    (0-65535, rounded to 0-255), as is a 32-bit integer grey ("I") whose values exceed 255. 16-bit RGB files
    already decode to 8-bit RGB in Pillow."""
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.getextrema()[1] > 255):
        values = np.asarray(image).astype(np.float64)
        eight_bit = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        image = Image.fromarray(eight_bit, "L")
    return image.convert("RGB")


def load_rgb(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decodes an image as RGB with EXIF orientation applied. ``draft``: a JPEG is decoded at the smallest
    of 1/1, 1/2, 1/4 or 1/8 scale that is still at least this size (PIL's draft mode, DCT scaling):
    several times faster, with pixels close to, not equal to, a full decode followed by a resize.

    A file that cannot be decoded (missing, truncated, not an image, a decompression bomb) is a
    :class:`UserError` naming it: the scan found it decodable, so it changed since."""
    try:
        with Image.open(path) as image:
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", draft)
            return as_rgb(ImageOps.exif_transpose(image))
    except DECODE_ERRORS as error:
        raise _changed_since_scan(path, error) from None


def _changed_since_scan(path: str | Path, error: BaseException) -> UserError:
    return UserError(
        f"{path}: cannot decode it ({decode_problem(error)}); has it changed since it was scanned?"
    )


@dataclass(frozen=True)
class Preprocess:
    """Everything that turns a file into a network input; stored with every model that uses it.

    ``mode="resize"``: a square ``size`` x ``size`` resize (aspect ratio not kept). ``mode="pad_crop"``
    (Table VII's 640 x 640): the image centred on a black ``pad_size`` square, then the centre
    ``size`` x ``size`` cut out, so the pixels keep their scale and aspect ratio; an image larger than
    ``pad_size`` is first scaled down to fit (AVA's largest side is 800, the paper's pad size).
    ``mode="letterbox"`` (Pfister et al.'s ``pad_square``, their ``train_pre/dataset.py``): the image scaled,
    up or down, until its long side is ``size``, centred on a black ``size`` square: nothing cut, the aspect
    ratio kept.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int | None = None  # None: full resolution, no resize, no crop
    resize_filter: str = "bilinear"
    mode: str = "resize"  # resize | pad_crop | letterbox
    pad_size: int | None = None  # pad_crop: the side of the black square the image is centred on
    jpeg_draft: bool = False  # resize: decode JPEGs at a reduced scale still >= size (see load_rgb)

    def __post_init__(self) -> None:
        if self.mode not in INPUT_MODES:
            raise ValueError(f"Preprocess: mode {self.mode!r} is not one of {INPUT_MODES}")
        if self.mode == "pad_crop" and (
            self.size is None or self.pad_size is None or self.pad_size < self.size
        ):
            raise ValueError(
                f"Preprocess: pad_crop needs pad_size >= size, got {self.pad_size} and {self.size}"
            )
        if self.mode == "letterbox" and self.size is None:
            raise ValueError("Preprocess: letterbox needs a size")
        if self.jpeg_draft and (self.mode != "resize" or self.size is None):
            raise ValueError("Preprocess: jpeg_draft needs mode 'resize' to a size")

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """What :func:`load_rgb` may decode a JPEG down to (``jpeg_draft``), or None: full size."""
        return (self.size, self.size) if self.jpeg_draft and self.size else None

    def load(self, path: str | Path) -> torch.Tensor:
        """The network input of an image file: decoded (in draft mode when asked), then :meth:`__call__`."""
        return self(load_rgb(path, self.draft_size))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """uint8 (3, H, W): decoding and resizing happen in loader workers; normalising on the device,
        so a batch crosses to the GPU as bytes, a quarter of float32's size."""
        if self.mode == "pad_crop":
            image = pad_and_centre_crop(image, self.pad_size, self.size, RESIZE_FILTERS[self.resize_filter])
        elif self.mode == "letterbox":
            image = letterbox(image, self.size, RESIZE_FILTERS[self.resize_filter])
        elif self.size is not None:
            image = image.resize((self.size, self.size), RESIZE_FILTERS[self.resize_filter])
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) on any device to the float input the weights expect."""
        mean, std = channel_statistics(tuple(self.mean), tuple(self.std), batch.device)
        return (batch.float() / 255.0 - mean) / std

    def as_dict(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "size": self.size,
            "resize_filter": self.resize_filter,
            "mode": self.mode,
            "pad_size": self.pad_size,
            "jpeg_draft": self.jpeg_draft,
        }

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        """The inverse of :meth:`as_dict`; checkpoints written before the input modes read as ``resize``,
        and before draft decoding as a full decode."""
        return cls(
            mean=tuple(values["mean"]),
            std=tuple(values["std"]),
            size=values["size"],
            resize_filter=values["resize_filter"],
            mode=values.get("mode", "resize"),
            pad_size=values.get("pad_size"),
            jpeg_draft=values.get("jpeg_draft", False),
        )


@functools.cache
def channel_statistics(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, 3, 1, 1) float32 tensors on ``device``, made once per device: building a tensor
    from Python numbers on a GPU is a synchronous copy, which once per batch would keep the host from
    queueing the next batch's work while the device still runs this one."""
    return (
        torch.tensor(mean, device=device).view(1, 3, 1, 1),
        torch.tensor(std, device=device).view(1, 3, 1, 1),
    )


def pad_and_centre_crop(
    image: Image.Image, pad_size: int, crop_size: int, resample: Image.Resampling
) -> Image.Image:
    """``image`` centred on a black ``pad_size`` square (scaled down first if it does not fit), then the
    centre ``crop_size`` square of that: what the image would give padded to 800 and cropped to 640."""
    if max(image.size) > pad_size:
        scale = pad_size / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample
        )
    canvas = Image.new("RGB", (crop_size, crop_size))
    # where the image's top-left corner falls inside the crop window of the padded square
    offset = (pad_size - crop_size) // 2
    canvas.paste(image, ((pad_size - image.width) // 2 - offset, (pad_size - image.height) // 2 - offset))
    return canvas


def letterbox(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """``image`` scaled until its long side is ``size`` and centred on a black ``size`` square. The authors'
    ``pad_square`` gets there in two resizes (short side to 224, then the padded square to 224); one resize
    here, so the edge pixels of an image differ by the filters' rounding, never by geometry."""
    scale = size / max(image.size)
    fitted = image.resize(
        (max(1, min(size, round(image.width * scale))), max(1, min(size, round(image.height * scale)))),
        resample,
    )
    canvas = Image.new("RGB", (size, size))
    canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return canvas


class ImageDataset(Dataset):
    """(index, tensor) for a list of image files; the index lets callers join back on image ids."""

    def __init__(self, paths: Sequence[str], preprocess: Preprocess) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.preprocess.load(self.paths[index])


def same_size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Groups indices of equal (width, height) into batches, so full-resolution images need no padding."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(index)
    batches = []
    for size in sorted(groups):
        members = groups[size]
        batches += [members[start : start + batch_size] for start in range(0, len(members), batch_size)]
    return batches


JPEG_MAGIC = b"\xff\xd8"


def _orientation(path: str | Path) -> int:
    try:
        with Image.open(path) as image:  # reads the header only
            return exif_orientation(image)
    except DECODE_ERRORS as error:
        raise _changed_since_scan(path, error) from None


class EncodedImageDataset(Dataset):
    """(index, payload, orientation) for decoding on the device: a JPEG file's bytes as a uint8 tensor,
    or, for anything that is not a JPEG, the image already decoded here as uint8 (3, H, W)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, int]:
        try:
            content = Path(self.paths[index]).read_bytes()
        except OSError as error:
            raise _changed_since_scan(self.paths[index], error) from None
        if content[:2] != JPEG_MAGIC:
            return index, Preprocess((0, 0, 0), (1, 1, 1)).load(self.paths[index]), 1
        return index, torch.frombuffer(bytearray(content), dtype=torch.uint8), _orientation(self.paths[index])


def collate_encoded(items: list) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    indices, payloads, orientations = zip(*items, strict=True)
    return torch.tensor(indices), list(payloads), list(orientations)


def _apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """EXIF orientation (2-8) applied to a (3, H, W) tensor, as PIL's exif_transpose does."""
    if orientation in (5, 6, 7, 8):
        image = image.transpose(-1, -2)
    flips = {2: (-1,), 3: (-1, -2), 4: (-2,), 6: (-1,), 7: (-1, -2), 8: (-2,)}.get(orientation, ())
    return image.flip(flips) if flips else image


def decode_on_device(
    payloads: list[torch.Tensor], orientations: list[int], device: torch.device
) -> torch.Tensor:
    """Decodes JPEG payloads with nvJPEG (torchvision) on ``device``; stacks into uint8 (N, 3, H, W)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [i for i, payload in enumerate(payloads) if payload.dim() == 1]
    decoded: list[torch.Tensor | None] = [
        None if payload.dim() == 1 else payload.to(device) for payload in payloads
    ]
    if encoded:
        images = decode_jpeg([payloads[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
        for i, image in zip(encoded, images, strict=True):
            decoded[i] = _apply_orientation(image, orientations[i])
    return torch.stack(decoded)
