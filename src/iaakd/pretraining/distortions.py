"""The distortions of Pfister, Kobs, Hotho (NTIRE 2021), declared as data.

Three groups, as in the authors' code (janpf/self-supervised-multi-task-aesthetic-pretraining,
``edit_image.py`` and ``train_pre/utils.py`` for the levels, ``train_pre/dataset.py`` for the technical and
composition edits): style (darktable edits there, numpy/PIL tone and colour operations here), technical
(ImageNet-C's corruptions at its five severities, plus a down-and-up pixelation) and composition (rotation
with the largest inner crop, shifted crop windows, an aspect-ratio stretch).

Every distortion is a :class:`Distortion` in :data:`DISTORTIONS`: its group, the library that implements it,
the unit of its level, its neutral level, its levels per side (ordered from the identity outward, the
authors' number of levels per side) and a function ``(image, level, rng) -> image``. Only the random ones
(motion blur's direction, the two noises) draw from ``rng``; all are deterministic given it, and each is
the identity at its neutral level (crops and rotations: equal to :func:`reference`).

Pixel sizes defined by ImageNet-C for 224-px images (blur radii and sigmas) are given at a 224-px short
side and scaled with the image's short side, so a level means the same share of the frame at any size.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageEnhance
from scipy import signal

from iaakd.errors import UserError

GROUPS = ("style", "technical", "composition")
SIDES = ("neg", "pos")
# What a variant is ranked below: the image itself, the centred crop window of the crop shifts, or the
# 0-degree rotation cut to the rotations' crop (the authors' "original", "crop_original", "rotate_original").
REFERENCE_KINDS = ("original", "centre_crop", "rotation_crop")

REFERENCE_SHORT_SIDE = 224  # ImageNet-C's pixel sizes are for 224-px images
CROP_WINDOW = 2 / 3  # the authors cut a 224-px window out of the image at 336 px
CROP_STEPS = 5  # crop-shift levels: fifths of the way from the centre to the frame's edge
# every rotation, and its reference, keeps the largest inner box of a 10-degree turn
ROTATION_CROP_DEGREES = 10.0
NEUTRAL_KELVIN = 6500.0
LUMA_709 = np.array([0.2126, 0.7152, 0.0722])
_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = _SRGB_TO_XYZ.sum(axis=1)  # D65
_LAB_EPSILON = 6 / 29
# darktable's white-balance coefficients (red, green, blue) for the authors' tint levels, the floats of
# edit_image.py's "rangemapping" hex strings (the authors' code; the project keeps the decoded numbers)
DARKTABLE_TINT = {
    0.75: (3.3342, 1.0, 1.7440), 0.8: (2.3864, 1.0, 1.5480), 0.85: (1.8269, 1.0, 1.3808),
    0.9: (1.4576, 1.0, 1.2365), 0.95: (1.1957, 1.0, 1.1107), 1.0: (1.0, 1.0, 1.0),
    1.05: (0.8487, 1.0, 0.9020), 1.1: (0.7279, 1.0, 0.8144), 1.15: (0.6293, 1.0, 0.7358),
    1.2: (0.5472, 1.0, 0.6648), 1.25: (0.4780, 1.0, 0.6003),
}  # fmt: skip

DistortionFunction = Callable[[Image.Image, float, np.random.Generator], Image.Image]


@dataclass(frozen=True)
class Distortion:
    """One distortion: ``sides`` maps "neg"/"pos" to its levels, each side ordered from the identity
    outward (a level's distance from ``neutral`` grows along it); ``domain`` bounds any level."""

    name: str
    group: str
    implementation: str
    unit: str
    neutral: float
    sides: Mapping[str, tuple[float, ...]]
    domain: tuple[float, float]
    function: DistortionFunction
    reference: str = "original"
    random: bool = False

    def __call__(self, image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
        low, high = self.domain
        if not low <= level <= high:
            raise ValueError(f"{self.name}: level {level} is outside [{low}, {high}] ({self.unit})")
        return self.function(image.convert("RGB"), float(level), rng)

    @property
    def num_variants(self) -> int:
        return sum(len(levels) for levels in self.sides.values())


# ---------------------------------------------------------------- colour helpers
_CODES = np.arange(256) / 255.0


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * np.power(values, 1 / 2.4) - 0.055)


def _from_unit(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


def _apply_curves(image: Image.Image, curves: np.ndarray) -> Image.Image:
    """``curves``: (3, 256) output codes in [0, 1] per channel, applied as PIL lookup tables."""
    table = np.rint(np.clip(curves, 0.0, 1.0) * 255.0).astype(int).ravel().tolist()
    return image.point(table)


def _linear_gains(image: Image.Image, gains: Sequence[float]) -> Image.Image:
    """Each channel multiplied in linear light (sRGB decoded), clipped, encoded again."""
    linear = srgb_to_linear(_CODES)
    return _apply_curves(image, np.stack([linear_to_srgb(linear * gain) for gain in gains]))


def _luminance_kept(gains: np.ndarray) -> np.ndarray:
    """Gains scaled so that white keeps its Rec. 709 luminance: the edit moves colour, not exposure."""
    return gains / float(LUMA_709 @ gains)


def _linear_image(image: Image.Image) -> np.ndarray:
    return srgb_to_linear(_CODES).astype(np.float32)[np.asarray(image)]


# ---------------------------------------------------------------- style
def srgb_to_lab(image: Image.Image) -> np.ndarray:
    """CIE L*a*b* (D65 white) of an RGB image, (H, W, 3) float."""
    xyz = _linear_image(image) @ _SRGB_TO_XYZ.T.astype(np.float32) / _WHITE.astype(np.float32)
    f = np.where(xyz > _LAB_EPSILON**3, np.cbrt(xyz), xyz / (3 * _LAB_EPSILON**2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def lab_to_image(lab: np.ndarray) -> Image.Image:
    """The RGB image of L*a*b* values (D65 white), out-of-gamut colours clipped."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > _LAB_EPSILON, f**3, 3 * _LAB_EPSILON**2 * (f - 4 / 29)) * _WHITE
    return _from_unit(linear_to_srgb(xyz @ np.linalg.inv(_SRGB_TO_XYZ).T))


def brightness(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """darktable colisa's brightness (``src/iop/colisa.c``): the slider doubled, b = 2 ``level``, and Lab
    lightness through L' = 100 (L / 100)^gamma, gamma = 1 / (1 + b) for b >= 0, 1 - b below; a, b kept."""
    b = 2.0 * level
    gamma = 1.0 / (1.0 + b) if b >= 0 else 1.0 - b
    lab = srgb_to_lab(image)
    lab[..., 0] = 100.0 * np.clip(lab[..., 0] / 100.0, 0.0, None) ** gamma
    return lab_to_image(lab)


def contrast(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Deviations from the mean grey scaled by 1 + c (PIL's ImageEnhance.Contrast); -1 is flat grey."""
    return ImageEnhance.Contrast(image).enhance(1.0 + level)


def saturation(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Deviations from the pixel's grey scaled by 1 + s (PIL's ImageEnhance.Color); -1 is greyscale."""
    return ImageEnhance.Color(image).enhance(1.0 + level)


def exposure(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Linear light multiplied by 2^EV."""
    return _linear_gains(image, [2.0**level] * 3)


def _tone_weighted_gain(image: Image.Image, level: float, weight: Callable[[np.ndarray], np.ndarray]):
    linear = _linear_image(image)
    lightness = linear_to_srgb(linear @ LUMA_709.astype(np.float32))
    return _from_unit(linear_to_srgb(linear * (2.0 ** (level * weight(lightness)))[..., None]))


def shadows(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """A global tone curve: linear light times 2^(s (1 - L)^2), L the pixel's sRGB lightness; s EV at black."""
    return _tone_weighted_gain(image, level, lambda lightness: (1.0 - lightness) ** 2)


def highlights(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """A global tone curve: linear light times 2^(h L^2); h EV at white (its brightest pixels clip)."""
    return _tone_weighted_gain(image, level, lambda lightness: lightness**2)


def vibrance(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """darktable's vibrance (``src/iop/vibrance.c``) at the authors' slider 25 + 100 ``level``: amount = slider
    / 100, sw = |(a, b)| / 256, then L x (1 - amount sw / 4) and a, b x (1 + amount sw), so the most saturated
    colours move most. Level 0, the slider's default (25), is the unedited photo, as ``edit_image.py``
    returns the file at a default; the lower side (sliders 20 and 0) is then a weaker boost and, at 0,
    darktable's identity: the authors' data rank the photo above a copy of itself there, and so do these."""
    amount = level + 0.25
    if level == 0.0 or amount == 0.0:
        return image.copy()
    lab = srgb_to_lab(image)
    weight = amount * np.hypot(lab[..., 1], lab[..., 2]) / 256.0
    lab[..., 0] *= 1.0 - weight / 4.0
    lab[..., 1:] *= (1.0 + weight)[..., None]
    return lab_to_image(lab)


def planckian_white(kelvin: float) -> np.ndarray:
    """Linear sRGB of a black body at ``kelvin`` (Kim et al. 2002's cubic fit of the Planckian locus in CIE
    xy, 1667-25000 K), luminance 1."""
    t = kelvin
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    xyz = np.array([x / y, 1.0, (1.0 - x - y) / y])
    xyz_to_srgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    return xyz_to_srgb @ xyz


def temperature_gains(kelvin: float) -> np.ndarray:
    """White balance set to ``kelvin`` for a scene shot at 6500 K: the gains that would turn a black body
    at ``kelvin`` white. Above 6500 K the image warms (red up, blue down), below it cools; luminance kept."""
    return _luminance_kept(planckian_white(NEUTRAL_KELVIN) / planckian_white(kelvin))


def temperature(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    return _linear_gains(image, temperature_gains(level))


def tint_gains(level: float) -> np.ndarray:
    """darktable's (red, green, blue) white-balance coefficients for the authors' tint ``level``, decoded from
    ``edit_image.py``'s ``rangemapping`` (green 1: at 0.75 red x 3.33, blue x 1.74; at 1.25 red x 0.48, blue
    x 0.60); between its levels interpolated in log gain; luminance kept."""
    levels = np.array(sorted(DARKTABLE_TINT))
    logs = np.log(np.array([DARKTABLE_TINT[key] for key in levels]))
    return _luminance_kept(np.exp([np.interp(level, levels, logs[:, channel]) for channel in range(3)]))


def tint(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """darktable's tint gains (:func:`tint_gains`) in linear light: < 1 magenta, > 1 green."""
    return _linear_gains(image, tint_gains(level))


# ---------------------------------------------------------------- technical
def _scaled_to_image(image: Image.Image, pixels_at_224: float) -> float:
    return pixels_at_224 * min(image.size) / REFERENCE_SHORT_SIDE


def _convolve(image: Image.Image, kernel: np.ndarray, origin: tuple[int, int] | None = None) -> Image.Image:
    """Each channel convolved (FFT) with ``kernel``, whose tap ``origin`` (row, column; default its centre)
    weighs the pixel itself; edges mirrored without repeating the edge pixel (OpenCV's default, which
    ImageNet-C's filter2D uses)."""
    values = np.asarray(image, dtype=np.float32) / 255.0
    rows, columns = kernel.shape
    origin_row, origin_column = origin if origin is not None else (rows // 2, columns // 2)
    padding = ((rows - 1 - origin_row, origin_row), (columns - 1 - origin_column, origin_column), (0, 0))
    padded = np.pad(values, padding, mode="reflect")
    kernel = kernel.astype(np.float32)[..., None]
    return _from_unit(signal.fftconvolve(padded, kernel, mode="valid", axes=(0, 1)))


def disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """A flat disk of ``radius`` px, each kernel pixel weighted by the share of it the disk covers
    (``supersample`` x ``supersample`` samples), summing to 1; radius 0 is the identity."""
    half = math.ceil(radius)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    samples = (np.arange(-half, half + 1)[:, None] + offsets[None, :]).ravel()
    inside = samples[:, None] ** 2 + samples[None, :] ** 2 <= radius**2
    coverage = inside.reshape(2 * half + 1, supersample, 2 * half + 1, supersample).mean(axis=(1, 3))
    if coverage.sum() == 0:
        return np.ones((1, 1))
    return coverage / coverage.sum()


def motion_kernel(sigma: float, degrees: float) -> tuple[np.ndarray, tuple[int, int]]:
    """ImageMagick's motion blur (ImageNet-C's): a one-sided line of Gaussian weights exp(-t^2 / 2 sigma^2),
    t = 0, 1, ... 3 sigma px along ``degrees``, each sample spread bilinearly over the pixel grid. Returns
    the kernel cut to its non-zero box and the (row, column) of its origin tap (t = 0)."""
    if sigma <= 0:
        return np.ones((1, 1)), (0, 0)
    length = max(1, math.ceil(3 * sigma))
    steps = np.arange(length + 1, dtype=np.float64)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    half = length + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    xs = half + steps * math.cos(math.radians(degrees))
    ys = half - steps * math.sin(math.radians(degrees))
    for x, y, weight in zip(xs, ys, weights, strict=True):
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += weight * (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += weight * fx * (1 - fy)
        kernel[y0 + 1, x0] += weight * (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += weight * fx * fy
    used_rows, used_columns = np.nonzero(kernel.any(axis=1))[0], np.nonzero(kernel.any(axis=0))[0]
    top, left = int(used_rows[0]), int(used_columns[0])
    box = kernel[top : used_rows[-1] + 1, left : used_columns[-1] + 1]
    return box / box.sum(), (half - top, half - left)


def jpeg_compression(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Encoded and decoded by PIL at JPEG quality ``level`` (4:2:0); 100, the neutral level, means not encoded."""
    if level >= 100:
        return image.copy()
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=round(level))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def defocus_blur(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    return _convolve(image, disk_kernel(_scaled_to_image(image, level)))


def motion_blur(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Direction drawn uniformly in [-45, 45] degrees, as ImageNet-C."""
    degrees = float(rng.uniform(-45.0, 45.0))
    return _convolve(image, *motion_kernel(_scaled_to_image(image, level), degrees))


def gaussian_noise(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    values = np.asarray(image, dtype=np.float32) / 255.0
    return _from_unit(values + rng.standard_normal(values.shape, dtype=np.float32) * level)


def impulse_noise(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Salt and pepper per channel value (scikit-image's ``s&p``, which ImageNet-C uses): a share ``level``
    of them set to 0 or 255, half each."""
    values = np.asarray(image).copy()
    hit = rng.random(values.shape) < level
    salt = rng.random(values.shape) < 0.5
    values[hit & salt] = 255
    values[hit & ~salt] = 0
    return Image.fromarray(values, "RGB")


def pixelate(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Down to ``level`` times the size and up again, box filter both ways (the authors' code)."""
    small = (max(1, int(image.width * level)), max(1, int(image.height * level)))
    return image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.BOX)


# ---------------------------------------------------------------- composition
def largest_inner_rectangle(width: float, height: float, degrees: float) -> tuple[float, float]:
    """Width and height of the largest axis-aligned rectangle inside a ``width`` x ``height`` rectangle
    turned by ``degrees`` (the closed form the authors use)."""
    angle = math.radians(degrees)
    sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
    long_side, short_side = max(width, height), min(width, height)
    if short_side <= 2.0 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        # two corners touch the long sides, the other two lie on the mid-line
        half = 0.5 * short_side
        if width >= height:
            return half / sin_a, half / cos_a
        return half / cos_a, half / sin_a
    cos_2a = cos_a * cos_a - sin_a * sin_a
    return (width * cos_a - height * sin_a) / cos_2a, (height * cos_a - width * sin_a) / cos_2a


def rotation_crop_size(size: tuple[int, int]) -> tuple[int, int]:
    """The box every rotation keeps: the largest inner box of a 10-degree turn, less a pixel of margin
    where bicubic interpolation blends in the black outside."""
    width, height = largest_inner_rectangle(size[0], size[1], ROTATION_CROP_DEGREES)
    return max(1, math.floor(width) - 1), max(1, math.floor(height) - 1)


def _centre_box(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int, int, int]:
    left, top = (size[0] - box[0]) // 2, (size[1] - box[1]) // 2
    return left, top, left + box[0], top + box[1]


def rotate(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Turned ``level`` degrees counter-clockwise (bicubic), then the centred 10-degree inner box."""
    turned = image.rotate(level, resample=Image.Resampling.BICUBIC, expand=True)
    return turned.crop(_centre_box(turned.size, rotation_crop_size(image.size)))


def crop_window(size: tuple[int, int], shift_x: float, shift_y: float) -> tuple[int, int, int, int]:
    """A 2/3-size window moved ``shift_x`` (+ right) and ``shift_y`` (+ down), each in [-1, 1] of the way from
    the centre to the frame's edge."""
    window = (round(size[0] * CROP_WINDOW), round(size[1] * CROP_WINDOW))
    left = round((size[0] - window[0]) / 2 * (1 + shift_x))
    top = round((size[1] - window[1]) / 2 * (1 + shift_y))
    return left, top, left + window[0], top + window[1]


def _shifted_crop(shift: Callable[[float], tuple[float, float]]) -> DistortionFunction:
    def crop(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
        shift_x, shift_y = shift(level / CROP_STEPS)
        return image.crop(crop_window(image.size, shift_x, shift_y))

    return crop


# the authors' moves: + right for hcrop; + up for vcrop and both corner crops
hcrop = _shifted_crop(lambda step: (step, 0.0))
vcrop = _shifted_crop(lambda step: (0.0, -step))
leftcornerscrop = _shifted_crop(lambda step: (-abs(step), -step))
rightcornerscrop = _shifted_crop(lambda step: (abs(step), -step))


def ratio(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Stretched by 1 + |level|/5, the height for level > 0 and the width below, then the centre cut back to
    the original size (bilinear)."""
    stretch = 1 + abs(level) / CROP_STEPS
    width, height = image.size
    stretched = (width, round(height * stretch)) if level > 0 else (round(width * stretch), height)
    resized = image.resize(stretched, Image.Resampling.BILINEAR)
    return resized.crop(_centre_box(resized.size, image.size))


# ---------------------------------------------------------------- the registry
def _sides(neg: Sequence[float] = (), pos: Sequence[float] = ()) -> dict[str, tuple[float, ...]]:
    return {side: tuple(levels) for side, levels in (("neg", neg), ("pos", pos)) if levels}


_UNIT_STEPS = (0.2, 0.4, 0.6, 0.8, 1.0)
_CROP_LEVELS = _sides((-1, -2, -3, -4, -5), (1, 2, 3, 4, 5))
_CROP_UNIT = "fifths of the way from the centre to the edge for a 2/3-size window"


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion(
            "brightness", "style", "numpy", "darktable colisa slider s: Lab L^gamma, b = 2s, gamma 1/(1+b) | 1-b",
            0.0, _sides([-s for s in _UNIT_STEPS], _UNIT_STEPS), (-1.0, 1.0), brightness,
        ),
        Distortion(
            "contrast", "style", "PIL", "factor - 1 on deviations from the mean grey (ImageEnhance.Contrast)",
            0.0, _sides([-s for s in _UNIT_STEPS], _UNIT_STEPS), (-1.0, 1.0), contrast,
        ),
        Distortion(
            "saturation", "style", "PIL", "factor - 1 on deviations from the pixel's grey (ImageEnhance.Color)",
            0.0, _sides([-s for s in _UNIT_STEPS], _UNIT_STEPS), (-1.0, 1.0), saturation,
        ),
        Distortion(
            "shadows", "style", "numpy", "EV at black of the gain 2^(s (1-L)^2); authors' slider - 50, / 100",
            0.0, _sides((-0.1, -0.3, -0.7, -1.1, -1.5), (0.1, 0.3, 0.5)), (-3.0, 3.0), shadows,
        ),
        Distortion(
            "highlights", "style", "numpy", "EV at white of the gain 2^(h L^2); authors' slider + 50, / 100",
            0.0, _sides((-0.1, -0.3, -0.5), (0.1, 0.3, 0.7, 1.1, 1.5)), (-3.0, 3.0), highlights,
        ),
        Distortion(
            "exposure", "style", "numpy", "EV (stops) in linear light",
            0.0, _sides((-0.6, -1.2, -1.8, -2.4, -3.0), (0.6, 1.2, 1.8, 2.4, 3.0)), (-6.0, 6.0), exposure,
        ),
        Distortion(
            "vibrance", "style", "numpy", "darktable vibrance at the authors' slider 25 + 100 v (0: unedited)",
            0.0, _sides((-0.05, -0.25), (0.15, 0.35, 0.55, 0.75)), (-1.0, 1.0), vibrance,
        ),
        Distortion(
            "temperature", "style", "numpy", "white-balance setting in K for a 6500 K scene (luminance kept)",
            NEUTRAL_KELVIN, _sides((6000, 5000, 3000, 2000), (7000, 8000, 10000, 14000, 18000)),
            (1667.0, 25000.0), temperature,
        ),
        Distortion(
            "tint", "style", "numpy", "darktable tint: its decoded RGB gains in linear light (luminance kept)",
            1.0, _sides((0.95, 0.9, 0.85, 0.8, 0.75), (1.05, 1.1, 1.15, 1.2, 1.25)), (0.75, 1.25), tint,
        ),
        Distortion(
            "jpeg_compression", "technical", "PIL", "JPEG quality (100: not encoded)",
            100.0, _sides(pos=(25, 18, 15, 10, 7)), (1.0, 100.0), jpeg_compression,
        ),
        Distortion(
            "defocus_blur", "technical", "scipy", "disk radius in px at a 224-px short side",
            0.0, _sides(pos=(3, 4, 6, 8, 10)), (0.0, 50.0), defocus_blur,
        ),
        Distortion(
            "motion_blur", "technical", "scipy", "Gaussian sigma along the path, px at a 224-px short side",
            0.0, _sides(pos=(3, 5, 8, 12, 15)), (0.0, 50.0), motion_blur, random=True,
        ),
        Distortion(
            "gaussian_noise", "technical", "numpy", "noise sd as a share of full scale (255)",
            0.0, _sides(pos=(0.08, 0.12, 0.18, 0.26, 0.38)), (0.0, 1.0), gaussian_noise, random=True,
        ),
        Distortion(
            "impulse_noise", "technical", "numpy", "share of channel values set to 0 or 255",
            0.0, _sides(pos=(0.03, 0.06, 0.09, 0.17, 0.27)), (0.0, 1.0), impulse_noise, random=True,
        ),
        Distortion(
            "pixelate", "technical", "PIL", "scale of the down-and-up box resize (1: unchanged)",
            1.0, _sides(pos=(0.6, 0.5, 0.4, 0.3, 0.25)), (0.01, 1.0), pixelate,
        ),
        Distortion(
            "rotate", "composition", "PIL", "degrees counter-clockwise, cut to the 10-degree inner box",
            0.0, _sides((-2, -4, -6, -8, -10), (2, 4, 6, 8, 10)), (-ROTATION_CROP_DEGREES, ROTATION_CROP_DEGREES),
            rotate, reference="rotation_crop",
        ),
        Distortion(
            "hcrop", "composition", "PIL", f"{_CROP_UNIT}; + right",
            0.0, _CROP_LEVELS, (-5.0, 5.0), hcrop, reference="centre_crop",
        ),
        Distortion(
            "vcrop", "composition", "PIL", f"{_CROP_UNIT}; + up",
            0.0, _CROP_LEVELS, (-5.0, 5.0), vcrop, reference="centre_crop",
        ),
        Distortion(
            "leftcornerscrop", "composition", "PIL", f"{_CROP_UNIT}; to the left, + up, - down",
            0.0, _CROP_LEVELS, (-5.0, 5.0), leftcornerscrop, reference="centre_crop",
        ),
        Distortion(
            "rightcornerscrop", "composition", "PIL", f"{_CROP_UNIT}; to the right, + up, - down",
            0.0, _CROP_LEVELS, (-5.0, 5.0), rightcornerscrop, reference="centre_crop",
        ),
        Distortion(
            "ratio", "composition", "PIL", "stretch 1 + |level|/5 (+ height, - width), centre cut to size",
            0.0, _CROP_LEVELS, (-5.0, 5.0), ratio,
        ),
    )
}  # fmt: skip


def reference(image: Image.Image, distortion: str | Distortion, level: float = 0.0) -> Image.Image:
    """What a variant of ``distortion`` is ranked below: the image itself, the centred crop window (crop
    shifts) or the 0-degree turn cut to the rotations' box; the same for every level of it."""
    kind = (DISTORTIONS[distortion] if isinstance(distortion, str) else distortion).reference
    return reference_of_kind(image, kind)


def reference_of_kind(image: Image.Image, kind: str) -> Image.Image:
    image = image.convert("RGB")
    if kind == "centre_crop":
        return image.crop(crop_window(image.size, 0.0, 0.0))
    if kind == "rotation_crop":
        return image.crop(_centre_box(image.size, rotation_crop_size(image.size)))
    if kind == "original":
        return image.copy()
    raise ValueError(f"reference kind {kind!r} is not one of {REFERENCE_KINDS}")


# ---------------------------------------------------------------- selection
def select_distortions(
    names: Sequence[str] | None = None,
    levels: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, Distortion]:
    """The distortions to pretrain on, in registry order. ``names``: distortion or group names (None: all).
    ``levels``: per distortion, per side, the levels to use instead of the authors'. A name, side or level
    that does not fit is a :class:`UserError` naming it."""
    wanted = list(DISTORTIONS) if names is None else [_expand(name) for name in names]
    chosen = {name for group in wanted for name in ([group] if isinstance(group, str) else group)}
    if not chosen:
        raise UserError("distortions: the selection is empty; name at least one distortion or group")
    selection = {name: distortion for name, distortion in DISTORTIONS.items() if name in chosen}
    for name, sides in (levels or {}).items():
        if name not in selection:
            raise UserError(f"distortion levels: {name!r} is not among the selected distortions")
        selection[name] = _with_levels(selection[name], sides)
    return selection


def _expand(name: str) -> str | list[str]:
    if name in DISTORTIONS:
        return name
    if name in GROUPS:
        return [key for key, distortion in DISTORTIONS.items() if distortion.group == name]
    raise UserError(f"distortion {name!r} is not one of {sorted(DISTORTIONS)} or a group of {GROUPS}")


def _with_levels(distortion: Distortion, sides: Mapping[str, Sequence[float]]) -> Distortion:
    new_sides = dict(distortion.sides)
    for side, levels in sides.items():
        if side not in distortion.sides:
            raise UserError(
                f"distortion {distortion.name!r}: side {side!r} is not one of {list(distortion.sides)}"
            )
        new_sides[side] = _checked_side(distortion, side, levels)
    new_sides = {side: levels for side, levels in new_sides.items() if levels}
    if not new_sides:
        raise UserError(f"distortion {distortion.name!r}: no levels left on any side")
    return replace(distortion, sides=new_sides)


def _checked_side(distortion: Distortion, side: str, levels: Sequence[float]) -> tuple[float, ...]:
    """The levels ordered from the identity outward, each on the same side of neutral as the authors'."""
    where = f"distortion {distortion.name!r}, side {side!r}"
    sign = np.sign(distortion.sides[side][0] - distortion.neutral)
    values = [float(level) for level in levels]
    low, high = distortion.domain
    for value in values:
        if not low <= value <= high or np.sign(value - distortion.neutral) != sign:
            raise UserError(
                f"{where}: level {value} must lie in [{low}, {high}] on the same side of the neutral "
                f"level {distortion.neutral} as {distortion.sides[side]} ({distortion.unit})"
            )
    if len(set(values)) != len(values):
        raise UserError(f"{where}: levels {values} repeat a level")
    return tuple(sorted(values, key=lambda value: abs(value - distortion.neutral)))


def group_members(selection: Mapping[str, Distortion]) -> dict[str, list[str]]:
    """Per group (in :data:`GROUPS` order, groups without a selected distortion left out), its selected
    distortions: the classes of the ``rank+classify`` head, the columns of the ``rank+regress`` head."""
    members = {group: [name for name, d in selection.items() if d.group == group] for group in GROUPS}
    return {group: names for group, names in members.items() if names}
