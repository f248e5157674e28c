"""A synthetic AVA-shaped dataset with a known, learnable aesthetic signal.

Written in the layout of a real AVA download (``AVA_dataset/AVA.txt`` with the original 15 columns,
``tags.txt`` with AVA's real tag ids, ``challenges.txt``, ``aesthetics_image_lists/*.jpgl``, an ILGnet
split in ``ilgnet_split/``, and ``images/<id>.jpg``), so the demo goes through the real AVA code path.

Each image shows content of one of AVA's 8 categories, drawn procedurally, and is then degraded by
known factors. A latent aesthetic score is a weighted sum of the factors' quality terms, with weights
that depend on the category (knowing the content helps). Fine-detail factors (sharpness, noise, JPEG
quality) are weakened, not erased, when an image is downscaled to the student's input size, so a
full-resolution teacher has something to teach. Votes come from simulated voters, calibrated to AVA.
The latent score is kept in ``latent_scores.csv`` beside the labels for the noise ceiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from iaakd.config import param

# Real AVA tag ids (AVA_dataset/tags.txt) of the categories, and a few others used as second tags.
CATEGORIES: dict[str, int] = {
    "animal": 19,
    "architecture": 20,
    "cityscape": 2,
    "floral": 38,
    "fooddrink": 40,
    "landscape": 14,
    "portrait": 17,
    "stilllife": 18,
}
OTHER_TAGS: dict[int, str] = {
    7: "Sky",
    10: "Urban",
    15: "Nature",
    21: "Black and White",
    22: "Macro",
    23: "Travel",
    27: "Rural",
    28: "Water",
    29: "Studio",
    35: "Seascapes",
    6: "Interior",
    1: "Abstract",
}
TAG_NAMES: dict[int, str] = {
    19: "Animals",
    20: "Architecture",
    2: "Cityscape",
    38: "Floral",
    40: "Food and Drink",
    14: "Landscape",
    17: "Portraiture",
    18: "Still Life",
    **OTHER_TAGS,
}
# (width, height) of the few aspect ratios, so that equal-size batching at full resolution works.
SIZES: tuple[tuple[int, int], ...] = ((320, 240), (240, 320), (320, 214), (288, 288), (320, 180))

FACTORS = ("exposure", "contrast", "saturation", "sharpness", "noise", "jpeg", "tilt", "placement")
FINE_DETAIL_FACTORS = ("sharpness", "noise", "jpeg")
# Weight of each factor's (standardised) quality term, per category. Rows follow CATEGORIES, columns FACTORS.
# Saturation helps flowers, food and landscapes and hurts portraits and architecture; tilt matters for
# scenes with lines; placement for single subjects; fine detail everywhere, most for close-ups.
FACTOR_WEIGHTS = np.array(
    [
        # expo  contr  satur  sharp  noise  jpeg   tilt   place
        [0.50, 0.35, 0.10, 0.70, 0.50, 0.40, 0.15, 0.60],  # animal
        [0.45, 0.45, -0.45, 0.45, 0.40, 0.40, 0.70, 0.20],  # architecture
        [0.45, 0.45, 0.10, 0.40, 0.55, 0.45, 0.65, 0.20],  # cityscape
        [0.45, 0.30, 0.60, 0.70, 0.45, 0.40, 0.10, 0.45],  # floral
        [0.55, 0.30, 0.60, 0.60, 0.40, 0.45, 0.10, 0.35],  # fooddrink
        [0.50, 0.45, 0.45, 0.40, 0.55, 0.45, 0.60, 0.25],  # landscape
        [0.55, 0.30, -0.50, 0.65, 0.45, 0.40, 0.15, 0.60],  # portrait
        [0.45, 0.40, 0.15, 0.65, 0.45, 0.45, 0.20, 0.45],  # stilllife
    ]
)
# Share of the mean-score variance the image cannot explain (taste of the voters of that day):
# it lowers the noise ceiling below 1, as real data has one.
UNEXPLAINED_SHARE = 0.10
AVA_MEAN, AVA_SD = 5.383, 0.731
VOTE_SD_RANGE = (1.1, 1.75)  # per-image spread of individual votes; AVA averages about 1.43
VOTES_MEDIAN, VOTES_RANGE = 200, (78, 549)


@dataclass(frozen=True)
class DemoConfig:
    num_images: int = param(600, minimum=40)
    seed: int = 0
    test_fraction: float = param(0.25, above=0.0, below=1.0)  # share listed in generic_test.jpgl
    first_id: int = 100001


@dataclass(frozen=True)
class ImageFactors:
    """The degradations applied to one image; quality terms are derived from them."""

    exposure: float  # stops, 0 is right
    contrast: float  # multiplier around the mean, 1.1 is best
    saturation: float  # multiplier, 1 is unchanged
    sharpness: float  # Gaussian blur radius in pixels at full size (0 is sharp)
    noise: float  # sd of additive Gaussian noise, in 0-255 units
    jpeg: int  # JPEG quality the file is saved with
    tilt: float  # degrees of rotation
    placement: float  # distance of the subject from the nearest rule-of-thirds point, in image fractions

    def quality_terms(self) -> np.ndarray:
        """Raw (unstandardised) quality of each factor, higher is better, in FACTORS order."""
        return np.array(
            [
                -abs(self.exposure),
                -abs(math.log(self.contrast / 1.1)),
                self.saturation - 1.0,
                -self.sharpness,
                -self.noise,
                (self.jpeg - 95) / 80.0,
                -abs(self.tilt),
                -self.placement,
            ]
        )


def draw_factors(rng: np.random.Generator) -> ImageFactors:
    thirds = rng.uniform(0, 0.35)
    return ImageFactors(
        exposure=float(rng.normal(0, 0.55)),
        contrast=float(np.exp(rng.uniform(np.log(0.45), np.log(1.5)))),
        saturation=float(rng.uniform(0.25, 1.7)),
        sharpness=float(rng.uniform(0, 1.5) if rng.random() < 0.8 else 0.0),
        noise=float(rng.uniform(0, 20) if rng.random() < 0.8 else 0.0),
        jpeg=int(rng.integers(12, 96)),
        tilt=float(rng.normal(0, 4.0)),
        placement=float(thirds),
    )


# --- content ---------------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, base: tuple[int, int, int], jitter: int = 30) -> tuple[int, int, int]:
    return tuple(int(np.clip(value + rng.integers(-jitter, jitter + 1), 0, 255)) for value in base)


def _vertical_gradient(width: int, height: int, top: tuple, bottom: tuple) -> Image.Image:
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = (1 - ramp) * np.array(top) + ramp * np.array(bottom)
    return Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).astype(np.uint8))


def _subject_centre(
    rng: np.random.Generator, placement: float, width: int, height: int
) -> tuple[float, float]:
    """A point at distance ``placement`` (in image fractions) from a random rule-of-thirds point."""
    third_x, third_y = rng.choice([1 / 3, 2 / 3]), rng.choice([1 / 3, 2 / 3])
    angle = rng.uniform(0, 2 * math.pi)
    x = float(np.clip(third_x + placement * math.cos(angle), 0.12, 0.88))
    y = float(np.clip(third_y + placement * math.sin(angle), 0.12, 0.88))
    return x * width, y * height


def _draw_landscape(rng, width, height, centre):
    image = _vertical_gradient(width, height, _colour(rng, (90, 150, 230)), _colour(rng, (200, 220, 245)))
    draw = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.45, 0.65))
    for layer, base in enumerate(((110, 120, 140), (70, 110, 80))):
        ridge = [(0, height)]
        for x in np.linspace(0, width, 9):
            ridge.append((float(x), horizon - rng.uniform(0.05, 0.3) * height / (layer + 1)))
        ridge.append((width, height))
        draw.polygon(ridge, fill=_colour(rng, base))
    draw.rectangle([0, horizon, width, height], fill=_colour(rng, (80, 140, 60)))
    x, y = centre
    draw.ellipse(
        [x - 0.06 * width, y - 0.06 * width, x + 0.06 * width, y + 0.06 * width],
        fill=_colour(rng, (250, 220, 120)),
    )
    return image


def _draw_cityscape(rng, width, height, centre):
    image = _vertical_gradient(width, height, _colour(rng, (40, 60, 110)), _colour(rng, (230, 150, 100)))
    draw = ImageDraw.Draw(image)
    x = 0.0
    while x < width:
        building_width = rng.uniform(0.05, 0.14) * width
        top = height * rng.uniform(0.2, 0.6)
        draw.rectangle([x, top, x + building_width, height], fill=_colour(rng, (60, 60, 70), 20))
        for wy in np.arange(top + 4, height - 4, 9):
            for wx in np.arange(x + 3, x + building_width - 3, 7):
                if rng.random() < 0.55:
                    draw.rectangle([wx, wy, wx + 3, wy + 4], fill=_colour(rng, (240, 220, 140), 15))
        x += building_width + rng.uniform(1, 4)
    cx, cy = centre
    draw.rectangle(
        [cx - 0.05 * width, cy - 0.25 * height, cx + 0.05 * width, height],
        fill=_colour(rng, (30, 30, 40), 10),
    )
    return image


def _draw_architecture(rng, width, height, centre):
    image = _vertical_gradient(width, height, _colour(rng, (120, 170, 230)), _colour(rng, (210, 225, 240)))
    draw = ImageDraw.Draw(image)
    cx, cy = centre
    half = 0.28 * width
    base_y, top_y = height * 0.92, cy - 0.15 * height
    stone = _colour(rng, (200, 185, 160))
    draw.rectangle([cx - half, top_y, cx + half, base_y], fill=stone)
    draw.polygon(
        [(cx - half * 1.1, top_y), (cx, top_y - 0.2 * height), (cx + half * 1.1, top_y)],
        fill=_colour(rng, (150, 80, 60)),
    )
    for column in np.linspace(cx - half * 0.85, cx + half * 0.85, 6):
        draw.rectangle([column - 3, top_y + 6, column + 3, base_y], fill=_colour(rng, (235, 230, 215), 10))
    draw.rectangle([0, base_y, width, height], fill=_colour(rng, (120, 120, 110)))
    return image


def _draw_floral(rng, width, height, centre):
    image = Image.new("RGB", (width, height), _colour(rng, (50, 110, 50)))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(4, 14)
        draw.ellipse([x - r, y - r / 2, x + r, y + r / 2], fill=_colour(rng, (40, 140, 40), 25))
    petal = _colour(rng, (rng.choice([230, 250]), rng.choice([60, 120, 200]), rng.choice([80, 160, 220])), 20)
    cx, cy = centre
    radius = 0.16 * min(width, height)
    for angle in np.linspace(0, 2 * math.pi, int(rng.integers(5, 9)), endpoint=False):
        px, py = cx + radius * math.cos(angle), cy + radius * math.sin(angle)
        draw.ellipse([px - radius * 0.6, py - radius * 0.6, px + radius * 0.6, py + radius * 0.6], fill=petal)
    draw.ellipse(
        [cx - radius * 0.45, cy - radius * 0.45, cx + radius * 0.45, cy + radius * 0.45],
        fill=_colour(rng, (240, 200, 40)),
    )
    return image


def _draw_fooddrink(rng, width, height, centre):
    image = Image.new("RGB", (width, height), _colour(rng, (140, 95, 60)))
    draw = ImageDraw.Draw(image)
    for y in range(0, height, 12):
        draw.line([0, y, width, y + rng.integers(-3, 4)], fill=_colour(rng, (120, 80, 50), 10), width=2)
    cx, cy = centre
    radius = 0.3 * min(width, height)
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=_colour(rng, (245, 245, 240), 8))
    for _ in range(int(rng.integers(4, 9))):
        angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.55) * radius
        fx, fy, fr = (
            cx + distance * math.cos(angle),
            cy + distance * math.sin(angle),
            rng.uniform(0.12, 0.25) * radius,
        )
        base = [(200, 60, 40), (90, 160, 60), (230, 180, 60), (120, 70, 40)][int(rng.integers(0, 4))]
        draw.ellipse([fx - fr, fy - fr, fx + fr, fy + fr], fill=_colour(rng, base, 20))
    return image


def _draw_animal(rng, width, height, centre):
    image = _vertical_gradient(width, height, _colour(rng, (150, 190, 230)), _colour(rng, (100, 150, 80)))
    draw = ImageDraw.Draw(image)
    fur = _colour(rng, (rng.choice([120, 180, 60]), rng.choice([90, 140, 50]), 50), 25)
    cx, cy = centre
    body_w, body_h = 0.22 * width, 0.12 * width
    for leg in (-0.7, -0.3, 0.3, 0.7):
        lx = cx + leg * body_w
        draw.rectangle([lx - 3, cy, lx + 3, cy + body_h * 1.6], fill=fur)
    draw.ellipse([cx - body_w, cy - body_h, cx + body_w, cy + body_h], fill=fur)
    head_x, head_r = cx + body_w * rng.choice([-1.05, 1.05]), body_h * 0.85
    draw.ellipse([head_x - head_r, cy - body_h - head_r, head_x + head_r, cy - body_h + head_r], fill=fur)
    for ear in (-0.6, 0.6):
        ex = head_x + ear * head_r
        draw.polygon(
            [
                (ex - 5, cy - body_h - head_r * 0.6),
                (ex, cy - body_h - head_r * 1.5),
                (ex + 5, cy - body_h - head_r * 0.6),
            ],
            fill=fur,
        )
    draw.ellipse([head_x - 3, cy - body_h - 4, head_x + 2, cy - body_h + 1], fill=(20, 20, 20))
    return image


def _draw_portrait(rng, width, height, centre):
    image = Image.new(
        "RGB", (width, height), _colour(rng, (rng.choice([60, 180]), 120, rng.choice([90, 170])), 30)
    )
    draw = ImageDraw.Draw(image)
    cx, cy = centre
    face_w, face_h = 0.13 * max(width, height), 0.17 * max(width, height)
    draw.ellipse(
        [cx - face_w * 1.9, cy + face_h * 0.8, cx + face_w * 1.9, cy + face_h * 3.5],
        fill=_colour(rng, (50, 60, 90)),
    )
    hair = _colour(rng, (rng.choice([30, 90, 160]), 60, 30), 20)
    draw.ellipse([cx - face_w * 1.1, cy - face_h * 1.15, cx + face_w * 1.1, cy + face_h * 0.6], fill=hair)
    draw.ellipse([cx - face_w, cy - face_h, cx + face_w, cy + face_h], fill=_colour(rng, (225, 185, 155), 25))
    for eye in (-0.4, 0.4):
        ex = cx + eye * face_w
        draw.ellipse([ex - 5, cy - face_h * 0.25 - 3, ex + 5, cy - face_h * 0.25 + 3], fill=(250, 250, 250))
        draw.ellipse([ex - 2, cy - face_h * 0.25 - 2, ex + 2, cy - face_h * 0.25 + 2], fill=(40, 30, 20))
    draw.arc(
        [cx - face_w * 0.4, cy + face_h * 0.2, cx + face_w * 0.4, cy + face_h * 0.6],
        20,
        160,
        fill=(150, 60, 60),
        width=2,
    )
    return image


def _draw_stilllife(rng, width, height, centre):
    image = _vertical_gradient(width, height, _colour(rng, (90, 80, 70)), _colour(rng, (40, 35, 30)))
    draw = ImageDraw.Draw(image)
    table = height * 0.68
    draw.rectangle([0, table, width, height], fill=_colour(rng, (150, 110, 70)))
    cx, cy = centre
    vase_w, vase_h = 0.07 * width, 0.3 * height
    glaze = _colour(rng, (rng.choice([60, 180]), rng.choice([90, 150]), 200), 30)
    draw.rectangle([cx - vase_w * 0.4, table - vase_h, cx + vase_w * 0.4, table - vase_h * 0.6], fill=glaze)
    draw.ellipse([cx - vase_w, table - vase_h * 0.7, cx + vase_w, table + 4], fill=glaze)
    for _ in range(int(rng.integers(2, 5))):
        fx, fr = rng.uniform(0.1, 0.9) * width, rng.uniform(0.03, 0.06) * width
        draw.ellipse(
            [fx - fr, table - 2 * fr + 6, fx + fr, table + 6],
            fill=_colour(rng, ((220, 60, 40), (240, 190, 40), (120, 170, 60))[int(rng.integers(0, 3))], 20),
        )
    return image


DRAWERS = {
    "animal": _draw_animal,
    "architecture": _draw_architecture,
    "cityscape": _draw_cityscape,
    "floral": _draw_floral,
    "fooddrink": _draw_fooddrink,
    "landscape": _draw_landscape,
    "portrait": _draw_portrait,
    "stilllife": _draw_stilllife,
}


# --- degradations ----------------------------------------------------------------------------------


def render_image(
    rng: np.random.Generator, category: str, size: tuple[int, int], factors: ImageFactors
) -> Image.Image:
    """Draws the content, then applies tilt, blur, exposure, contrast, saturation and noise (JPEG on save)."""
    width, height = size
    margin = 1.18  # draw larger, rotate, crop the centre: no empty corners after tilting
    canvas_size = (int(width * margin), int(height * margin))
    centre = _subject_centre(rng, factors.placement, *canvas_size)
    image = DRAWERS[category](rng, *canvas_size, centre)
    image = image.rotate(factors.tilt, resample=Image.Resampling.BICUBIC)
    left, top = (canvas_size[0] - width) // 2, (canvas_size[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    # Texture every photo has, at a few pixels' scale (so it survives downscaling, unlike sensor noise),
    # plus a little fine grain: blur has something to remove, and noise something to hide in.
    coarse = rng.normal(0, 9, (height // 3 + 1, width // 3 + 1)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += texture[:, :, None] + rng.normal(0, 2, (height, width, 1)).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if factors.sharpness > 0:
        image = image.filter(ImageFilter.GaussianBlur(factors.sharpness))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = np.clip(pixels * 2.0**factors.exposure, 0, 1)
    mean = pixels.mean()
    pixels = np.clip(mean + factors.contrast * (pixels - mean), 0, 1)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = np.clip(grey + factors.saturation * (pixels - grey), 0, 1) * 255.0
    if factors.noise > 0:
        pixels += rng.normal(0, factors.noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


# --- labels ----------------------------------------------------------------------------------------


def latent_scores(
    categories: list[str], factors: list[ImageFactors], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(image-explained latent score, observed mean-score target) in AVA's mean-score units.

    Quality terms are standardised per factor over the dataset, weighted by the category's weights,
    standardised again, and mixed with an unexplained part of variance share UNEXPLAINED_SHARE.
    """
    terms = np.stack([f.quality_terms() for f in factors])
    terms = (terms - terms.mean(axis=0)) / (terms.std(axis=0) + 1e-12)
    weights = FACTOR_WEIGHTS[[list(CATEGORIES).index(c) for c in categories]]
    explained = (terms * weights).sum(axis=1)
    # Categories differ in their average appeal, as in AVA (florals and landscapes score higher).
    category_offset = {
        "floral": 0.25,
        "landscape": 0.2,
        "animal": 0.1,
        "portrait": 0.0,
        "architecture": -0.05,
        "cityscape": 0.0,
        "stilllife": -0.15,
        "fooddrink": -0.2,
    }
    explained += np.array([category_offset[c] for c in categories]) * explained.std()
    explained = (explained - explained.mean()) / explained.std()
    unexplained = rng.normal(0, 1, len(categories))
    total = math.sqrt(1 - UNEXPLAINED_SHARE) * explained + math.sqrt(UNEXPLAINED_SHARE) * unexplained
    # The observed means also carry vote-sampling noise (sd about 0.1), so the target spread is a bit lower.
    spread = math.sqrt(AVA_SD**2 - 0.1**2)
    return AVA_MEAN + spread * math.sqrt(1 - UNEXPLAINED_SHARE) * explained, AVA_MEAN + spread * total


def simulate_votes(mean_score: float, rng: np.random.Generator) -> np.ndarray:
    """10-bin vote counts from voters whose scores follow a discretised normal around ``mean_score``."""
    n_votes = int(np.clip(round(VOTES_MEDIAN * math.exp(rng.normal(0, 0.35))), *VOTES_RANGE))
    vote_sd = rng.uniform(*VOTE_SD_RANGE)
    # Rounding to integer bins adds 1/12 of variance; take it off so the vote sd lands where intended.
    latent_sd = math.sqrt(max(vote_sd**2 - 1 / 12, 0.25))
    edges = np.arange(0.5, 11.5)
    from scipy.stats import norm

    cdf = norm.cdf(edges, loc=mean_score, scale=latent_sd)
    probabilities = np.diff(cdf)
    probabilities /= probabilities.sum()
    return rng.multinomial(n_votes, probabilities)


# --- writing ---------------------------------------------------------------------------------------


def generate_demo(root: Path, config: DemoConfig, progress: bool = True) -> dict[str, float]:
    """Writes the whole demo dataset under ``root`` and returns a summary of its label statistics."""
    rng = np.random.default_rng(config.seed)
    n = config.num_images
    names = list(CATEGORIES)
    categories = [names[i % len(names)] for i in rng.permutation(n)]
    factors = [draw_factors(rng) for _ in range(n)]
    sizes = [SIZES[int(i)] for i in rng.integers(0, len(SIZES), n)]
    image_ids = [str(config.first_id + i) for i in range(n)]
    explained, target = latent_scores(categories, factors, rng)
    votes = np.stack([simulate_votes(score, rng) for score in target])
    second_tags = [
        CATEGORIES[names[int(rng.integers(0, len(names)))]]
        if rng.random() < 0.15
        else (int(rng.choice(list(OTHER_TAGS))) if rng.random() < 0.7 else 0)
        for _ in range(n)
    ]
    challenges = rng.integers(1, 21, n)

    ava_dir, images_dir = root / "AVA_dataset", root / "images"
    lists_dir, ilgnet_dir = ava_dir / "aesthetics_image_lists", root / "ilgnet_split"
    for folder in (ava_dir, images_dir, lists_dir, ilgnet_dir):
        folder.mkdir(parents=True, exist_ok=True)

    image_seeds = rng.integers(0, 2**63 - 1, n)
    for i in tqdm(range(n), desc="demo images", disable=not progress):
        image_rng = np.random.default_rng(int(image_seeds[i]))
        image = render_image(image_rng, categories[i], sizes[i], factors[i])
        image.save(images_dir / f"{image_ids[i]}.jpg", quality=factors[i].jpeg)

    with open(ava_dir / "AVA.txt", "w", encoding="utf-8") as handle:
        for i in range(n):
            tag1, tag2 = CATEGORIES[categories[i]], second_tags[i]
            if tag2 == tag1:
                tag2 = 0
            counts = " ".join(str(int(c)) for c in votes[i])
            handle.write(f"{i + 1} {image_ids[i]} {counts} {tag1} {tag2} {int(challenges[i])}\n")
    with open(ava_dir / "tags.txt", "w", encoding="utf-8") as handle:
        for tag_id, name in sorted(TAG_NAMES.items(), key=lambda item: item[1]):
            handle.write(f"{tag_id} {name}\n")
    with open(ava_dir / "challenges.txt", "w", encoding="utf-8") as handle:
        for challenge in range(1, 21):
            handle.write(f"{challenge} Demo_Challenge_{challenge}\n")

    test = set(rng.permutation(n)[: int(round(config.test_fraction * n))].tolist())
    _write_list(lists_dir / "generic_test.jpgl", [image_ids[i] for i in sorted(test)])
    for name in names:
        for part, members in (("test", test), ("train", set(range(n)) - test)):
            ids = [image_ids[i] for i in sorted(members) if categories[i] == name]
            _write_list(lists_dir / f"{name}_{part}.jpgl", ids)
    # ILGnet's split: another test set of the same size, with binary labels (mean strictly above 5).
    mean_scores = votes @ np.arange(1, 11) / votes.sum(axis=1)
    ilgnet_test = set(rng.permutation(n)[: len(test)].tolist())
    for file_name, members in (
        ("AVA1_train.txt", set(range(n)) - ilgnet_test),
        ("AVA1_val.txt", ilgnet_test),
    ):
        lines = [f"{image_ids[i]}.jpg {int(mean_scores[i] > 5)}" for i in sorted(members)]
        (ilgnet_dir / file_name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    factor_table = np.array([[getattr(f, name) for name in FACTORS] for f in factors], dtype=np.float64)
    with open(root / "latent_scores.csv", "w", encoding="utf-8") as handle:
        handle.write("image_id,category,latent_score," + ",".join(FACTORS) + "\n")
        for i in range(n):
            values = ",".join(f"{v:.6g}" for v in factor_table[i])
            handle.write(f"{image_ids[i]},{categories[i]},{explained[i]:.6f},{values}\n")

    vote_means = mean_scores
    vote_sds = np.sqrt(votes @ (np.arange(1, 11) ** 2) / votes.sum(axis=1) - vote_means**2)
    return {
        "images": n,
        "mean_score_mean": float(vote_means.mean()),
        "mean_score_sd": float(vote_means.std()),
        "share_above_5": float((vote_means > 5).mean()),
        "votes_median": float(np.median(votes.sum(axis=1))),
        "votes_min": int(votes.sum(axis=1).min()),
        "votes_max": int(votes.sum(axis=1).max()),
        "vote_sd_mean": float(vote_sds.mean()),
    }


# Every factor of the latent score at its best (saturation, whose best depends on the category, unchanged).
BEST_FACTORS = ImageFactors(
    exposure=0.0, contrast=1.1, saturation=1.0, sharpness=0.0, noise=0.0, jpeg=95, tilt=0.0, placement=0.0
)


def generate_good_pool(folder: Path, num_images: int, seed: int, first_id: int = 900001,
                       progress: bool = True) -> list[Path]:  # fmt: skip
    """``num_images`` undistorted demo photos (:data:`BEST_FACTORS`, the demo's categories and sizes) as
    ``<id>.jpg`` in ``folder``, from a generator of their own (``seed``; ids from ``first_id``, outside the
    labelled demo's): a pool for self-supervised pretraining, which needs good photos and no labels."""
    rng = np.random.default_rng([seed, 3])
    names = list(CATEGORIES)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(num_images), desc="pool images", disable=not progress):
        category, size = names[int(rng.integers(len(names)))], SIZES[int(rng.integers(len(SIZES)))]
        image = render_image(
            np.random.default_rng(int(rng.integers(2**63 - 1))), category, size, BEST_FACTORS
        )
        path = folder / f"{first_id + i}.jpg"
        image.save(path, quality=BEST_FACTORS.jpeg)
        paths.append(path)
    return paths


def _write_list(path: Path, ids: list[str]) -> None:
    path.write_text("".join(f"{image_id}\n" for image_id in ids), encoding="utf-8")
