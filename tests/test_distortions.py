"""The pretraining distortions (Pfister et al.): the authors' levels, identity at the neutral level,
monotone in the level by a measure fit for each, deterministic per seed."""

import time

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from iaakd.errors import UserError
from iaakd.pretraining.distortions import (
    DISTORTIONS,
    GROUPS,
    disk_kernel,
    largest_inner_rectangle,
    reference,
    select_distortions,
    srgb_to_lab,
    srgb_to_linear,
    temperature_gains,
)

PHOTOMETRIC_AND_TECHNICAL = [name for name, d in DISTORTIONS.items() if d.group != "composition"]
RANDOM = {"motion_blur", "gaussian_noise", "impulse_noise"}


def textured_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Colour ramps (red left to right, green top to bottom) under a fixed random texture, inside
    [20, 235] so that most edits do not clip."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([60 + 120 * x / (width - 1), 60 + 120 * y / (height - 1), np.full(x.shape, 120.0)], -1)
    texture = rng.uniform(-35, 35, (height, width, 1)) + rng.uniform(-10, 10, (height, width, 3))
    return Image.fromarray(np.clip(ramps + texture, 20, 235).round().astype(np.uint8))


def ramp_image(width: int = 64, height: int = 48) -> Image.Image:
    """Clean ramps: red codes the column, green the row, blue a diagonal."""
    y, x = np.mgrid[0:height, 0:width]
    values = np.stack(
        [40 + 170 * x / (width - 1), 40 + 170 * y / (height - 1), 40 + 85 * (x / width + y / height)], -1
    )
    return Image.fromarray(values.round().astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def apply(name: str, image: Image.Image, level: float, seed: int = 7) -> Image.Image:
    return DISTORTIONS[name](image, level, np.random.default_rng(seed))


def lightness(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def ordered_levels(name: str) -> list[float]:
    """Every level of ``name`` with the neutral one, in increasing value (vibrance: its upper side; its lower
    side, the authors' sliders 20 and 0, has its own test)."""
    distortion = DISTORTIONS[name]
    sides = ["pos"] if name == "vibrance" else list(distortion.sides)
    return sorted([distortion.neutral, *(level for side in sides for level in distortion.sides[side])])


# the authors' levels per side (train_pre/utils.py): 171 variants in all
AUTHORS_LEVELS_PER_SIDE = {
    "brightness": (5, 5), "contrast": (5, 5), "saturation": (5, 5), "shadows": (5, 3), "highlights": (3, 5),
    "exposure": (5, 5), "vibrance": (2, 4), "temperature": (4, 5), "tint": (5, 5),
    "jpeg_compression": (0, 5), "defocus_blur": (0, 5), "motion_blur": (0, 5), "gaussian_noise": (0, 5),
    "impulse_noise": (0, 5), "pixelate": (0, 5),
    "rotate": (5, 5), "hcrop": (5, 5), "vcrop": (5, 5), "leftcornerscrop": (5, 5), "rightcornerscrop": (5, 5),
    "ratio": (5, 5),
}  # fmt: skip


def test_registry_keeps_the_authors_levels_per_side_and_171_variants():
    counts = {
        name: (len(d.sides.get("neg", ())), len(d.sides.get("pos", ()))) for name, d in DISTORTIONS.items()
    }
    assert counts == AUTHORS_LEVELS_PER_SIDE
    assert sum(d.num_variants for d in DISTORTIONS.values()) == 171
    assert {d.group for d in DISTORTIONS.values()} == set(GROUPS)
    assert {d.implementation for d in DISTORTIONS.values()} <= {"numpy", "PIL", "scipy"}


def test_every_side_is_ordered_from_the_identity_outward():
    for name, distortion in DISTORTIONS.items():
        for side, levels in distortion.sides.items():
            distances = [abs(level - distortion.neutral) for level in levels]
            assert distances == sorted(distances) and len(set(distances)) == len(distances), (name, side)
            signs = {np.sign(level - distortion.neutral) for level in levels}
            assert len(signs) == 1 and 0 not in signs, (name, side)


@pytest.mark.parametrize("name", PHOTOMETRIC_AND_TECHNICAL)
def test_photometric_and_technical_distortions_are_the_identity_at_the_neutral_level(name):
    image = textured_image()
    out = apply(name, image, DISTORTIONS[name].neutral)
    assert out.size == image.size and np.array_equal(np.asarray(out), np.asarray(image))


@pytest.mark.parametrize("name", [name for name, d in DISTORTIONS.items() if d.group == "composition"])
def test_crops_and_rotations_equal_their_reference_at_level_zero(name):
    image = textured_image()
    out = apply(name, image, 0.0)
    assert np.array_equal(np.asarray(out), np.asarray(reference(image, name)))
    # every level has the reference's size, so the comparison is between frames of one size
    for level in ordered_levels(name):
        assert apply(name, image, level).size == reference(image, name).size


def test_references_are_the_centred_window_and_the_unturned_rotation_box():
    image = textured_image()
    assert reference(image, "hcrop").size == (43, 32)  # 2/3 of 64 x 48
    centre = np.asarray(reference(image, "vcrop"))
    assert np.array_equal(centre, np.asarray(image)[8:40, 10:53])
    width, height = largest_inner_rectangle(64, 48, 10.0)
    assert reference(image, "rotate").size == (int(width) - 1, int(height) - 1)
    assert reference(image, "ratio").size == image.size and reference(image, "exposure").size == image.size


def test_largest_inner_rectangle_of_a_square_turned_45_degrees_is_the_inscribed_square():
    width, height = largest_inner_rectangle(100, 100, 45.0)
    assert width == pytest.approx(100 / np.sqrt(2)) and height == pytest.approx(100 / np.sqrt(2))
    assert largest_inner_rectangle(80, 60, 0.0) == pytest.approx((80, 60))


@pytest.mark.parametrize("level", [-10, -6, -2, 2, 6, 10])
def test_rotations_keep_no_black_corner(level):
    white = Image.new("RGB", (64, 48), (255, 255, 255))
    assert np.asarray(apply("rotate", white, level)).min() >= 250


def _darkest_quarter(image: Image.Image) -> np.ndarray:
    values = lightness(textured_image())
    return values <= np.quantile(values, 0.25)


def _brightest_quarter(image: Image.Image) -> np.ndarray:
    values = lightness(textured_image())
    return values >= np.quantile(values, 0.75)


# name -> measure of an output (the original given too); it rises with the level's value
RISING_WITH_LEVEL = {
    "brightness": lambda out, original: lightness(out).mean(),
    "exposure": lambda out, original: lightness(out).mean(),
    "contrast": lambda out, original: lightness(out).std(),  # RMS contrast
    "saturation": lambda out, original: np.asarray(out.convert("HSV"))[..., 1].mean(),
    "vibrance": lambda out, original: np.asarray(out.convert("HSV"))[..., 1].mean(),
    "shadows": lambda out, original: lightness(out)[_darkest_quarter(original)].mean(),
    "highlights": lambda out, original: lightness(out)[_brightest_quarter(original)].mean(),
    "temperature": lambda out, original: pixels(out)[..., 0].mean() / pixels(out)[..., 2].mean(),
    "tint": lambda out, original: pixels(out)[..., 1].mean() / pixels(out)[..., [0, 2]].mean(),
}


def _laplacian_variance(out: Image.Image, original: Image.Image) -> float:
    return ndimage.laplace(lightness(out)).var()


def _rms_difference(out: Image.Image, original: Image.Image) -> float:
    return float(np.sqrt(((pixels(out) - pixels(original)) ** 2).mean()))


# name -> (measure, +1 if it grows with the distance from the neutral level, -1 if it falls)
WITH_DISTANCE = {
    "defocus_blur": (_laplacian_variance, -1),
    "motion_blur": (_laplacian_variance, -1),
    "gaussian_noise": (lambda out, original: (pixels(out) - pixels(original)).std(), 1),
    "impulse_noise": (lambda out, original: (pixels(out) != pixels(original)).mean(), 1),
    "jpeg_compression": (_rms_difference, 1),
    "pixelate": (_rms_difference, 1),
}


@pytest.mark.parametrize("name", sorted(RISING_WITH_LEVEL))
def test_style_distortions_move_their_measure_monotonically_with_the_level(name):
    image = textured_image()
    measured = [RISING_WITH_LEVEL[name](apply(name, image, level), image) for level in ordered_levels(name)]
    assert np.all(np.diff(measured) > 0), dict(zip(ordered_levels(name), measured, strict=True))


@pytest.mark.parametrize("name", sorted(WITH_DISTANCE))
def test_technical_distortions_grow_monotonically_with_the_severity(name):
    image = textured_image()
    measure, direction = WITH_DISTANCE[name]
    distortion = DISTORTIONS[name]
    levels = [distortion.neutral, *distortion.sides["pos"]]
    measured = [measure(apply(name, image, level), image) for level in levels]
    assert np.all(direction * np.diff(measured) > 0), dict(zip(levels, measured, strict=True))


def test_jpeg_levels_are_qualities_so_stronger_levels_encode_smaller():
    """The JPEG level is the quality PIL encodes at: the encoded size falls along the side."""
    import io

    sizes = []
    for quality in DISTORTIONS["jpeg_compression"].sides["pos"]:
        buffer = io.BytesIO()
        textured_image().save(buffer, format="JPEG", quality=int(quality))
        sizes.append(len(buffer.getvalue()))
    assert np.all(np.diff(sizes) < 0)


def test_blur_radius_is_relative_to_the_short_side():
    """Level 6 at a 224-px short side is a 6-px disk; at 112 px, 3 px."""
    small, large = Image.new("RGB", (150, 112)), Image.new("RGB", (300, 224))
    small.putpixel((75, 56), (255, 255, 255))
    large.putpixel((150, 112), (255, 255, 255))
    spread_small = (np.asarray(apply("defocus_blur", small, 6))[..., 0] > 0).sum()
    spread_large = (np.asarray(apply("defocus_blur", large, 6))[..., 0] > 0).sum()
    assert spread_small == (disk_kernel(3.0) * 255 >= 0.5).sum()
    assert spread_large == (disk_kernel(6.0) * 255 >= 0.5).sum()


@pytest.mark.parametrize("seed", range(4))
def test_motion_blur_keeps_a_point_at_its_place_and_trails_it_on_one_side(seed):
    """The path's first tap (weight 1) is the pixel itself, so a bright point stays brightest where it was,
    whatever the direction drawn; its trail is one-sided, within 45 degrees of the horizontal."""
    point = Image.new("RGB", (96, 96))
    point.putpixel((48, 48), (255, 255, 255))
    trail = np.asarray(apply("motion_blur", point, 15, seed=seed))[..., 0].astype(float)
    assert np.unravel_index(trail.argmax(), trail.shape) == (48, 48)
    rows, columns = np.nonzero(trail)
    assert (columns >= 48).all() and (np.abs(rows - 48) <= columns - 48 + 1).all()
    assert trail.sum() == pytest.approx(255, rel=0.05)


def _shift(out: Image.Image, ref: Image.Image) -> np.ndarray:
    """How far (in codes of the red and green ramps) a crop's window moved from the reference's."""
    return pixels(out)[..., :2].mean(axis=(0, 1)) - pixels(ref)[..., :2].mean(axis=(0, 1))


# crop -> the sign of the (x, y) move of the window for a positive level (y: + down), the negative side's
CROP_DIRECTIONS = {
    "hcrop": ((1, 0), (-1, 0)),
    "vcrop": ((0, -1), (0, 1)),
    "leftcornerscrop": ((-1, -1), (-1, 1)),
    "rightcornerscrop": ((1, -1), (1, 1)),
}


@pytest.mark.parametrize("name", sorted(CROP_DIRECTIONS))
def test_crop_windows_move_further_in_their_direction_with_the_level(name):
    image = ramp_image()
    ref = reference(image, name)
    for side, direction in zip(("pos", "neg"), CROP_DIRECTIONS[name], strict=True):
        shifts = np.array([_shift(apply(name, image, level), ref) for level in DISTORTIONS[name].sides[side]])
        assert np.array_equal(np.sign(shifts).astype(int), np.tile(direction, (5, 1))), (side, shifts)
        moving = [axis for axis in (0, 1) if direction[axis]]
        assert np.all(np.diff(np.abs(shifts[:, moving]), axis=0) > 0), (side, shifts)


def test_rotation_departs_further_from_its_reference_with_the_angle():
    image = ramp_image()
    ref = pixels(reference(image, "rotate"))
    for side in ("neg", "pos"):
        departures = [
            np.abs(pixels(apply("rotate", image, lv)) - ref).mean()
            for lv in DISTORTIONS["rotate"].sides[side]
        ]
        assert np.all(np.diff(departures) > 0), (side, departures)


def test_aspect_stretch_flattens_the_ramp_along_the_stretched_side():
    """+ stretches the height (the green, row ramp spreads less in the cut), - the width (red)."""
    image = ramp_image()
    for side, channel in (("pos", 1), ("neg", 0)):
        spreads = [pixels(image)[..., channel].std()]
        spreads += [
            pixels(apply("ratio", image, lv))[..., channel].std() for lv in DISTORTIONS["ratio"].sides[side]
        ]
        assert np.all(np.diff(spreads) < 0), (side, spreads)


@pytest.mark.parametrize("name", list(DISTORTIONS))
def test_each_distortion_is_deterministic_per_seed(name):
    image = textured_image()
    level = DISTORTIONS[name].sides["pos"][2]
    first, again = apply(name, image, level, seed=3), apply(name, image, level, seed=3)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    other = apply(name, image, level, seed=4)
    assert np.array_equal(np.asarray(first), np.asarray(other)) == (name not in RANDOM)


def test_temperature_gains_warm_above_6500_k_as_darktables_coefficients_do():
    """The authors' darktable coefficients (R/G, B/G): 2000 K (0.257, 31.7), 18000 K (1.43, 0.568)."""
    cold, warm = temperature_gains(2000), temperature_gains(18000)
    assert cold[0] / cold[1] == pytest.approx(0.257, rel=0.1) and cold[2] / cold[1] == pytest.approx(
        31.7, rel=0.1
    )
    assert warm[0] / warm[1] == pytest.approx(1.43, rel=0.1) and warm[2] / warm[1] == pytest.approx(
        0.568, rel=0.1
    )
    assert temperature_gains(6500) == pytest.approx([1, 1, 1])


@pytest.mark.parametrize(
    ("level", "red", "blue"),
    [(0.75, 3.3342, 1.7440), (0.9, 1.4576, 1.2365), (1.1, 0.7279, 0.8144), (1.25, 0.478, 0.6003)],
)
def test_tint_moves_red_and_blue_against_green_by_darktables_decoded_gains(level, red, blue):
    """The audit decoded the authors' darktable coefficients (edit_image.py): at 0.75 red x 3.33 and blue
    x 1.74 against green. Measured on a linear-light mid grey (no channel clips)."""
    grey = Image.new("RGB", (8, 8), (118, 118, 118))
    out = srgb_to_linear(pixels(apply("tint", grey, level)) / 255).mean(axis=(0, 1))
    assert out[0] / out[1] == pytest.approx(red, rel=0.03) and out[2] / out[1] == pytest.approx(
        blue, rel=0.03
    )


def test_brightness_is_colisas_doubled_slider_on_lab_lightness_with_chroma_kept():
    """darktable colisa: b = 2 x slider, L' = 100 (L / 100)^(1 / (1 + b)); a and b untouched."""
    image = textured_image()
    before, after = srgb_to_lab(image), srgb_to_lab(apply("brightness", image, 0.4))
    expected = 100 * (before[..., 0] / 100) ** (1 / 1.8)
    assert np.abs(after[..., 0] - expected).mean() < 0.5  # 8-bit rounding only
    assert np.abs(after[..., 1:] - before[..., 1:]).mean() < 1.0
    darker = srgb_to_lab(apply("brightness", image, -0.4))
    assert np.abs(darker[..., 0] - 100 * (before[..., 0] / 100) ** 1.8).mean() < 0.5


def test_vibrance_lower_side_is_the_authors_weaker_boost_then_the_unedited_photo():
    """The authors' sliders 20 and 0 beside the default 25 (the unedited file): darktable's vibrance at 0 is
    the identity and at 20 a boost, weaker than at 40; the most saturated colours gain most."""
    image = textured_image()
    saturation = {level: np.asarray(apply("vibrance", image, level).convert("HSV"))[..., 1].mean()
                  for level in (-0.25, -0.05, 0.0, 0.15)}  # fmt: skip
    assert np.array_equal(np.asarray(apply("vibrance", image, -0.25)), np.asarray(image))
    assert saturation[-0.25] == saturation[0.0] < saturation[-0.05] < saturation[0.15]
    vivid = Image.new("RGB", (4, 4), (200, 40, 40))
    dull = Image.new("RGB", (4, 4), (130, 110, 110))
    gain = {
        name: srgb_to_lab(apply("vibrance", patch, 0.75))[..., 1:].mean() / srgb_to_lab(patch)[..., 1:].mean()
        for name, patch in (("vivid", vivid), ("dull", dull))
    }
    assert gain["vivid"] > gain["dull"] > 1.0


def test_a_level_outside_the_domain_is_refused():
    with pytest.raises(ValueError, match="rotate: level 12"):
        apply("rotate", textured_image(), 12)


def test_selection_by_name_and_group_in_registry_order():
    selection = select_distortions(["ratio", "technical", "tint"])
    assert list(selection) == [
        "tint", "jpeg_compression", "defocus_blur", "motion_blur", "gaussian_noise", "impulse_noise", "pixelate",
        "ratio",
    ]  # fmt: skip
    assert list(select_distortions()) == list(DISTORTIONS)


def test_selected_levels_replace_the_authors_and_are_ordered_outward():
    selection = select_distortions(
        ["exposure", "jpeg_compression"],
        {"exposure": {"neg": [-2, -1]}, "jpeg_compression": {"pos": [10, 50]}},
    )
    assert selection["exposure"].sides == {"neg": (-1.0, -2.0), "pos": DISTORTIONS["exposure"].sides["pos"]}
    assert selection["jpeg_compression"].sides == {"pos": (50.0, 10.0)}


@pytest.mark.parametrize(
    ("names", "levels", "message"),
    [
        (["sharpness"], None, "distortion 'sharpness' is not one of"),
        ([], None, "the selection is empty"),
        (["exposure"], {"tint": {"pos": [1.1]}}, "'tint' is not among the selected"),
        (["exposure"], {"exposure": {"up": [1]}}, "side 'up' is not one of"),
        (["exposure"], {"exposure": {"neg": [0.5]}}, "level 0.5 must lie in"),
        (["jpeg_compression"], {"jpeg_compression": {"pos": [101]}}, "level 101.0 must lie in"),
        (["exposure"], {"exposure": {"pos": [1, 1]}}, "repeat a level"),
    ],
)
def test_bad_selection_is_one_clear_user_error(names, levels, message):
    with pytest.raises(UserError, match=message):
        select_distortions(names, levels)


def test_every_distortion_runs_on_a_real_photo_at_the_authors_scale(ava_sample):
    """A real AVA photo at a 224-px short side: every level of every distortion, the frame sizes right,
    all 171 variants within a few seconds."""
    from iaakd.data.images import load_rgb

    photo = load_rgb(sorted((ava_sample / "images").glob("*.jpg"))[0])
    photo = photo.resize(
        (round(photo.width * 224 / min(photo.size)), round(photo.height * 224 / min(photo.size)))
    )
    start = time.perf_counter()
    for name, distortion in DISTORTIONS.items():
        for level in ordered_levels(name):
            out = distortion(photo, level, np.random.default_rng(0))
            assert out.mode == "RGB" and out.size == reference(photo, name).size, (name, level)
    assert time.perf_counter() - start < 20
