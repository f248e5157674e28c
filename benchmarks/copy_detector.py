"""The copy detector (iaakd.data.copies) measured on real photos: recall on made copies of each kind, and
false drops on independent photos, real (AVA) and generated (the demo's pool against its labelled images).

    python benchmarks/copy_detector.py                       # ../shared/ava-sample and a 900-image demo
    python benchmarks/copy_detector.py --photos DIR --demo-root data/demo

Each real photo is the labelled set's, and one copy of it per transform is a query; a copy counts as found
when the detector names its own original. Independent photos: each real photo is a query against the
others as the labelled set (leave one out), and each demo pool image against every demo labelled image.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

from iaakd.data.copies import CopyConfig, embeddings, find_copies
from iaakd.data.images import load_rgb

REPO = Path(__file__).resolve().parents[1]


def crop(image: Image.Image, fraction: float, where: str) -> Image.Image:
    width, height = image.size
    w, h = round(width * fraction), round(height * fraction)
    left, top = {
        "centre": ((width - w) // 2, (height - h) // 2),
        "corner": (0, 0),
        "far": (width - w, height - h),
    }[where]
    return image.crop((left, top, left + w, top + h))


def reencoded(image: Image.Image, quality: int = 40) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def letterboxed(image: Image.Image) -> Image.Image:
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


# The made copies: each kind a review found the perceptual hash missed, and all of them at once
TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "mirrored": ImageOps.mirror,
    "cropped 90 % (corner)": lambda image: crop(image, 0.9, "corner"),
    "cropped 80 % (centre)": lambda image: crop(image, 0.8, "centre"),
    "rotated 90°": lambda image: image.transpose(Image.Transpose.ROTATE_90),
    "rotated 270°": lambda image: image.transpose(Image.Transpose.ROTATE_270),
    "half size": lambda image: image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR),
    "re-encoded (JPEG 40)": reencoded,
    "letterboxed": letterboxed,
    "all at once": lambda image: reencoded(
        letterboxed(ImageOps.mirror(crop(image, 0.85, "far"))).resize((300, 300), Image.Resampling.BILINEAR)
    ),
}


def made_copies(originals: list[Path], folder: Path) -> dict[str, list[str]]:
    """Each transform's copy of every original, written as JPEG (quality 95) into ``folder``."""
    copies: dict[str, list[str]] = {}
    for number, (name, transform) in enumerate(TRANSFORMS.items()):
        copies[name] = []
        for original in originals:
            target = folder / f"t{number}-{original.stem}.jpg"
            transform(load_rgb(original)).save(target, quality=95)
            copies[name].append(str(target))
    return copies


def content_keys(paths: list[str]) -> list[str]:
    return [
        str(Path(path).resolve()) for path in paths
    ]  # stand-in content hashes: files made here are unique


def measure(photos: list[Path], demo_root: Path | None, config: CopyConfig) -> dict:
    labelled = [str(path) for path in photos]
    reference = embeddings(labelled, content_keys(labelled))
    results: dict = {"config": vars(config), "photos": len(photos), "recall": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name, copies in made_copies(photos, Path(folder)).items():
            found = find_copies(copies, embeddings(copies, content_keys(copies)), labelled, reference, config)
            own = sum(int(index) == row for row, index in enumerate(found.match))
            results["recall"][name] = {
                "found": own,
                "of": len(copies),
                "inliers_min": int(found.inliers.min()),
            }
    dropped = 0
    for row in range(len(labelled)):  # leave one out: each photo against the others
        others = [index for index in range(len(labelled)) if index != row]
        found = find_copies(
            [labelled[row]], reference[[row]], [labelled[i] for i in others], reference[others], config
        )
        dropped += int(found.match[0] >= 0)
    results["false_drops_real"] = {"dropped": dropped, "of": len(labelled)}
    if demo_root is not None:
        results["false_drops_demo"] = demo_false_drops(demo_root, config)
    return results


def demo_false_drops(demo_root: Path, config: CopyConfig, pool_images: int = 200) -> dict:
    """The demo's own pool (generated independently, seed 1) against its labelled images."""
    from iaakd.data.pool import make_demo_images

    labelled = sorted(str(path) for path in (demo_root / "images").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as folder:
        made = make_demo_images(Path(folder), pool_images, seed=1)["file"].tolist()
        found = find_copies(made, embeddings(made, content_keys(made)), labelled,
                            embeddings(labelled, content_keys(labelled)), config)  # fmt: skip
        within = find_copies(made, embeddings(made, content_keys(made)), made, embeddings(made, content_keys(made)),
                             config, earlier_only=True)  # fmt: skip
    return {"dropped": int((found.match >= 0).sum()), "within_pool": int((within.match >= 0).sum()),
            "of": len(made), "labelled": len(labelled), "inliers_max": int(found.inliers.max())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "ava-sample" / "images")
    parser.add_argument("--demo-root", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--limit", type=int, default=None, help="the first N photos only")
    parser.add_argument("--min-inliers", type=int, default=CopyConfig().min_inliers)
    args = parser.parse_args()
    photos = sorted(args.photos.glob("*.jpg"))[: args.limit]
    if not photos:
        sys.exit(f"error: no photos in {args.photos}")
    demo = args.demo_root if (args.demo_root / "images").is_dir() else None
    start = time.perf_counter()
    results = measure(photos, demo, CopyConfig(min_inliers=args.min_inliers))
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
