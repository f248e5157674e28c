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
    full_name = resolve_name(name)
    with torch.device("meta"):
        model = timm.create_model(full_name, pretrained=False)
    mlsp = MLSP(model)
    return BackbonePlan(
        full_name, mlsp.level_dims, count_parameters(model) / 1e6, gmacs(mlsp, (1, 3, height, width))
    )


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m iaakd.plan", description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="+")
    parser.add_argument("--images", type=int, default=255502, help="number of images (AVA: 255,502)")
    parser.add_argument(
        "--size", default="800x600", help="WIDTHxHEIGHT for GMACs (AVA images: at most 800 px)"
    )
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        plans = [plan_backbone(name, height, width) for name in args.backbones]
    except ValueError:
        print(f"error: --size {args.size!r} is not WIDTHxHEIGHT", file=sys.stderr)
        sys.exit(1)
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
