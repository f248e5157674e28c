"""``iaakd explain MODEL IMAGE... --out DIR``: where the student looks (LayerCAM, the paper's Fig. 8/9).

For each image, ``DIR/<name>.layercam.png``: the LayerCAM heat map of the predicted score (``grad-cam``'s
LayerCAM on the backbone's last feature map, the one global pooling reads, or ``--layer``) over the image,
with the score; and ``DIR/contact_sheet.png``: the ``--count`` best and worst scored of all the images
given, with their scores.
Exit status 2 when some files could not be read (they are named on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iaakd.command import at_least, output_folder, require_modules
from iaakd.errors import UserError

DISPLAY_SIDE = 512  # overlays: the image scaled to fit this square
THUMB_SIDE = 192  # contact sheet cells
SHEET_NAME = "contact_sheet.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a student checkpoint (models/student.pt)")
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files, folders (recursive), @list.txt"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the PNG files")
    parser.add_argument(
        "--count", type=at_least(1), default=8, help="best and worst images on the contact sheet"
    )
    parser.add_argument(
        "--layer", action="append", help="module name(s) of the backbone to explain (repeatable)"
    )
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda")
    parser.add_argument(
        "--batch-size", type=at_least(1), default=16, help="images per forward and backward pass"
    )


POOLING_AND_HEAD = ("global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "pre_logits")


def target_layers(backbone, names: Sequence[str] | None = None) -> list:
    """The named modules of the backbone, or the module whose output global pooling reads (timm's last
    child before its pooling and head: ``bn2`` of an EfficientNet, ``layer4`` of a ResNet), or else its
    last convolution."""
    from torch import nn

    if names:
        modules = dict(backbone.named_modules())
        missing = [name for name in names if name not in modules]
        if missing:
            children = [name for name, _ in backbone.named_children()]
            raise UserError(f"--layer {missing[0]!r} is not a module of the backbone; its parts: {children}")
        return [modules[name] for name in names]
    features = []
    for name, module in backbone.named_children():
        if name in POOLING_AND_HEAD:
            break
        features.append(module)
    if features:
        return [features[-1]]
    convolutions = [module for module in backbone.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise UserError(
            "the backbone has no convolutional feature map to explain; name a module with --layer"
        )
    return [convolutions[-1]]


class _Score:
    """grad-cam target: the model's output for one image is already the scalar to explain."""

    def __call__(self, output):
        return output


def layercam(scorer, images, layers: list | None = None):
    """LayerCAM maps (N, S, S) in [0, 1] of the predicted score for a uint8 batch, and the scores (N,)."""
    import torch
    from pytorch_grad_cam import LayerCAM

    class ScoreOnly(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.model(image)[1]

    layers = layers or target_layers(scorer.model.student.backbone)
    with LayerCAM(model=ScoreOnly(scorer.model), target_layers=layers) as cam:
        try:
            maps = cam(input_tensor=images, targets=[_Score()] * len(images))
        except ValueError as error:  # grad-cam's "Invalid activation shape": tokens, not a feature map
            raise UserError(
                f"LayerCAM needs a convolutional feature map (N, C, H, W) to explain ({error}); "
                "name a convolutional module with --layer"
            ) from None
        scores = cam.outputs.detach().float().cpu().numpy()
    return maps, scores


def overlay(image, heat_map, caption: str):
    """The heat map (any size, values in [0, 1]) stretched over ``image`` (PIL RGB), with a caption."""
    import numpy as np
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    mask = np.asarray(
        Image.fromarray(heat_map.astype(np.float32)).resize(image.size, Image.Resampling.BILINEAR)
    )
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    blended = Image.fromarray(
        show_cam_on_image(pixels, np.clip(mask, 0.0, 1.0), use_rgb=True, image_weight=0.5)
    )
    return _captioned(blended, caption)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType
        return ImageFont.load_default()


def _captioned(image, caption: str):
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    font = _font(max(12, image.height // 16))
    box = draw.textbbox((4, 4), caption, font=font)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 4), caption, fill=(255, 255, 255), font=font)
    return image


def display_image(scorer, path: str, network_input):
    """What the map is drawn on: the upright image, scaled to fit DISPLAY_SIDE (a square resize maps back
    by stretching); for ``pad_crop`` and ``letterbox`` models the model's own input (its crop of the padded image,
    or the image on its black bars)."""
    from PIL import Image, ImageOps

    from iaakd.data.images import load_rgb

    if scorer.preprocess.mode != "resize":
        return Image.fromarray(network_input.permute(1, 2, 0).numpy())
    return ImageOps.contain(load_rgb(path), (DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BILINEAR)


def contact_sheet(best: list[tuple[str, float]], worst: list[tuple[str, float]]):
    """One PNG: a row of the best scored images and a row of the worst, each captioned with its score."""
    from PIL import Image, ImageDraw, ImageOps

    from iaakd.data.images import load_rgb

    label_width, caption_height = 70, 24
    columns = max(len(best), len(worst), 1)
    sheet = Image.new("RGB", (label_width + columns * THUMB_SIDE, 2 * (THUMB_SIDE + caption_height)), "white")
    draw, font = ImageDraw.Draw(sheet), _font(16)
    for row, (label, entries) in enumerate((("best", best), ("worst", worst))):
        top = row * (THUMB_SIDE + caption_height)
        draw.text((8, top + THUMB_SIDE // 2 - 8), label, fill="black", font=font)
        for column, (path, score) in enumerate(entries):
            thumb = ImageOps.contain(
                load_rgb(path), (THUMB_SIDE - 8, THUMB_SIDE - 8), Image.Resampling.BILINEAR
            )
            left = label_width + column * THUMB_SIDE
            sheet.paste(
                thumb, (left + (THUMB_SIDE - thumb.width) // 2, top + (THUMB_SIDE - thumb.height) // 2)
            )
            caption = f"{score:.3f}  {Path(path).name}"[:26]
            draw.text((left + 6, top + THUMB_SIDE), caption, fill="black", font=_font(13))
    return sheet


@dataclass
class Explained:
    overlays: list[Path]
    sheet: Path
    scores: dict[str, float]
    failed: list[tuple[str, str]]


def overlay_names(paths: Sequence[str]) -> list[str]:
    """``<stem>.layercam.png``, with ``-2``, ``-3``, ... for images of the same stem from different folders."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.layercam.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.layercam.png")
    return names


def explain(
    scorer, paths: Sequence[str], out: Path, count: int = 8, layer_names=None, batch_size: int = 16
) -> Explained:
    """Overlays for every readable image and the contact sheet of the ``count`` best and worst."""
    from torch.utils.data import DataLoader

    from iaakd.scorer import ImageInputs, collate_inputs

    if count < 1 or batch_size < 1:
        raise UserError(f"count ({count}) and batch_size ({batch_size}) must be at least 1")
    output_folder(out, "--out")
    layers = target_layers(scorer.model.student.backbone, layer_names)
    out.mkdir(parents=True, exist_ok=True)
    names = overlay_names(paths)
    result = Explained([], out / SHEET_NAME, {}, [])
    loader = DataLoader(
        ImageInputs(list(paths), scorer.preprocess), batch_size=batch_size, collate_fn=collate_inputs
    )
    for indices, images, failed, _ in loader:
        result.failed += [(paths[index], problem) for index, problem in failed]
        if images is None:
            continue
        maps, scores = layercam(scorer, images.to(scorer.device), layers)
        for index, image, heat_map, score in zip(indices, images, maps, scores, strict=True):
            caption = f"{scorer.score_column} {score:.3f}"
            target = out / names[index]
            overlay(display_image(scorer, paths[index], image), heat_map, caption).save(target)
            result.overlays.append(target)
            result.scores[paths[index]] = float(score)
    ranked = sorted(result.scores.items(), key=lambda item: (-item[1], item[0]))
    best = ranked[:count]
    worst = [item for item in ranked[::-1] if item not in best][:count]
    contact_sheet(best, worst).save(result.sheet)
    return result


def run(args: argparse.Namespace) -> int:
    from iaakd.scorer import DEMO_WARNING, Scorer, collect_paths

    require_modules("pytorch_grad_cam")
    output_folder(args.out, "--out")
    scorer = Scorer.load(args.model, args.device, warn=False, backend="torch")  # LayerCAM needs gradients
    if scorer.trained_on_demo:
        print(f"warning: {args.model}: {DEMO_WARNING}", file=sys.stderr)
    result = explain(scorer, collect_paths(args.images), args.out, args.count, args.layer, args.batch_size)
    print(
        f"iaakd explain: {len(result.overlays)} overlays and {result.sheet.name} in {args.out}; "
        f"failed {len(result.failed)}",
        file=sys.stderr,
    )
    for path, problem in result.failed:
        print(f"  failed: {path}: {problem}", file=sys.stderr)
    return 2 if result.failed else 0
