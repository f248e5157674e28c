"""Plan a feature extraction before spending GPU hours on it; no weights are downloaded (meta device).

    python -m iaakd.plan --images 255502 --size 800x600 \\
        resnext101_32x8d.fb_swsl_ig1b_ft_in1k resnext101_32x48d.fb_wsl_ig1b_ft_in1k resnetv2_152x4_bit.goog_in21k_ft_in1k

For each backbone: MLSP levels and dimensions, parameters, GMACs per image (multiply-accumulates, the
paper's "FLOPs") at the given size; then the combined dimension, bytes per image and the feature files'
size in float16.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import timm
import torch

from iaakd.costs import gmacs
from iaakd.errors import UserError
from iaakd.models import MLSP, count_parameters, resolve_name
from iaakd.models.backbones import any_size_kwargs

BYTES_PER_VALUE = 2  # float16


@dataclass(frozen=True)
class BackbonePlan:
    name: str
    level_dims: list[int]
    params_m: float
    gmacs: float

    @property
    def dim(self) -> int:
        return sum(self.level_dims)


def plan_backbone(name: str, height: int, width: int) -> BackbonePlan:
    """MLSP levels, parameters and GMACs of ``name`` at height x width, on the meta device (no weights).

    The meta forward checks every level's shape; a model that fails it at this size is a UserError.
    """
    full_name = resolve_name(name)
    with torch.device("meta"):
        model = timm.create_model(full_name, pretrained=False, **any_size_kwargs(full_name))
    mlsp = MLSP(model)
    try:
        macs = gmacs(mlsp, (1, 3, height, width))
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - on the meta device, any failure is the model refusing the size
        first_line = (str(error).strip().splitlines() or ["its forward pass failed"])[0]
        raise UserError(
            f"backbone '{full_name}' cannot be pooled by MLSP at {width}x{height}: "
            f"{type(error).__name__}: {first_line}"
        ) from error
    return BackbonePlan(full_name, mlsp.level_dims, count_parameters(model) / 1e6, macs)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def positive_count(text: str) -> int:
    """An argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def image_size(text: str) -> tuple[int, int]:
    """An argparse type: WIDTHxHEIGHT, both whole numbers > 0, as (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:  # not two parts, or a part not a whole number
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (for example 800x600)") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """``iaakd plan`` (``python -m iaakd.plan``): its arguments, declared once for the command and its reference."""
    parser = argparse.ArgumentParser(prog="python -m iaakd.plan", description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="+", help="timm model names (full arch.tag names)")
    parser.add_argument(
        "--images", type=positive_count, default=255502, help="number of images (AVA: 255,502)"
    )
    parser.add_argument(
        "--size",
        type=image_size,
        default=(800, 600),
        help="WIDTHxHEIGHT for GMACs (AVA images: at most 800 px)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    width, height = args.size
    try:
        plans = [plan_backbone(name, height, width) for name in args.backbones]
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"{'backbone':45s} {'params (M)':>10s} {'GMACs':>8s} {'MLSP dims':>9s}  levels")
    for plan in plans:
        print(
            f"{plan.name:45s} {plan.params_m:10.1f} {plan.gmacs:8.1f} {plan.dim:9d}  {' + '.join(map(str, plan.level_dims))}"
        )
    total_dim = sum(p.dim for p in plans)
    per_image = total_dim * BYTES_PER_VALUE
    print(
        f"{'total':45s} {sum(p.params_m for p in plans):10.1f} {sum(p.gmacs for p in plans):8.1f} {total_dim:9d}"
    )
    print(
        f"at {width}x{height}; features: {per_image:,} bytes per image (float16), "
        f"{human_bytes(per_image * args.images)} for {args.images:,} images"
    )


if __name__ == "__main__":
    main()
