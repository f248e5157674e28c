"""MLSP: multi-layer spatial pooling (Hosu et al., CVPR 2019) as the paper uses it, for CNNs and ViTs.

CNNs: the levels are every entry of timm's ``feature_info`` (stem and stages). The final feature map (after
a head conv or a final norm) replaces the last level when it is as wide, and is added as one more level
when its width differs (METHOD.md). Each level is globally average-pooled; the results are concatenated.

ViT-style models (timm's ``VisionTransformer`` and its subclasses: ViT, DeiT, DINOv2, CLIP and SigLIP
towers, hybrid ViTs; and timm's ``Eva``): the same rule on tokens. timm's ``feature_info`` names every
transformer block, so every block is a level: the mean of its output's patch tokens (class, distillation
and register tokens left out). The final token map (after the final norm) replaces the last block, which
is as wide, and the final map's class token is one more level where the model has one. So a ViT of depth
D and width C gives (D + 1) x C dimensions (ViT-B/16: 13 x 768 = 9,984); one without a class token D x C.
An attention-pool head (SigLIP's ``map``) is not used. Images of any size pass when the ViT was created
with timm's ``dynamic_img_size`` (position embeddings interpolated to the patch grid) and
``dynamic_img_pad`` (the bottom and right edges padded with zeros, after normalisation, to a multiple of
the patch size), as :func:`~iaakd.models.backbones.create_backbone` does.

Any other model (no ``feature_info``, tokens in a structure not listed above, levels that are not NCHW
maps) is refused with a :class:`~iaakd.errors.UserError` naming it.
"""

from __future__ import annotations

import torch
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from iaakd.errors import UserError

TOKEN_MODELS = (VisionTransformer, Eva)  # ViT-style models MLSP pools by tokens (subclasses included)
SUPPORTED = (
    "CNNs whose feature_info levels are NCHW maps, and ViT-style models (timm's VisionTransformer, Eva)"
)


def _name(backbone: nn.Module) -> str:
    config = getattr(backbone, "pretrained_cfg", None) or {}
    architecture = config.get("architecture", type(backbone).__name__)
    return f"{architecture}.{config['tag']}" if config.get("tag") else architecture


def _refuse(backbone: nn.Module, why: str) -> UserError:
    return UserError(f"backbone '{_name(backbone)}' cannot be pooled by MLSP: {why}; MLSP pools {SUPPORTED}")


def is_token_model(backbone: nn.Module) -> bool:
    """True for the ViT-style models MLSP pools by tokens."""
    return isinstance(backbone, TOKEN_MODELS)


def _check_structure(backbone: nn.Module) -> list[dict]:
    feature_info = getattr(backbone, "feature_info", None)
    if not feature_info:
        raise _refuse(backbone, "timm gives it no feature_info")
    if is_token_model(backbone):
        if not backbone.dynamic_img_size:
            raise _refuse(
                backbone,
                "a ViT must be created with dynamic_img_size=True so that images of any size pass "
                "(iaakd.models.create_backbone does)",
            )
    elif hasattr(backbone, "cls_token") or hasattr(backbone, "num_prefix_tokens"):
        raise _refuse(
            backbone, f"its tokens come in a structure ({type(backbone).__name__}) MLSP does not know"
        )
    elif getattr(backbone, "output_fmt", "NCHW") != "NCHW":
        raise _refuse(backbone, f"its feature maps are {backbone.output_fmt}, not NCHW")
    return list(feature_info)


class MLSP(nn.Module):
    """Wraps a timm model; ``forward(images)`` returns the (batch, sum of level widths) pooled vector."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        feature_info = _check_structure(backbone)
        self.tokens = is_token_model(backbone)
        self.level_modules = [info["module"] for info in feature_info]
        widths = [int(info["num_chs"]) for info in feature_info]
        self.final_replaces_last = int(backbone.num_features) == widths[-1]
        if self.tokens:
            self.final_replaces_last = True  # blocks and final norm are all embed_dim wide
            self.prefix_tokens = int(backbone.num_prefix_tokens)
            self.has_class_token = bool(backbone.cls_token is not None)
            self.level_dims = widths + ([widths[-1]] if self.has_class_token else [])
        else:
            self.level_dims = widths if self.final_replaces_last else [*widths, int(backbone.num_features)]
        self._captured: list[torch.Tensor] = []
        modules = dict(backbone.named_modules())
        self.hooked = self.level_modules[:-1] if self.final_replaces_last else self.level_modules
        for name in self.hooked:
            if name not in modules:
                raise _refuse(backbone, f"its feature_info names a module '{name}' it does not have")
            modules[name].register_forward_hook(self._capture)

    @property
    def dim(self) -> int:
        return sum(self.level_dims)

    def _capture(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self._captured.append(output)

    def _check_level(self, level: torch.Tensor, name: str, width: int) -> None:
        rank = 3 if self.tokens else 4
        channel_dim = -1 if self.tokens else 1
        if not isinstance(level, torch.Tensor) or level.dim() != rank or level.shape[channel_dim] != width:
            shape = tuple(level.shape) if isinstance(level, torch.Tensor) else type(level).__name__
            layout = "(batch, tokens, channels)" if self.tokens else "(batch, channels, height, width)"
            raise _refuse(self.backbone, f"level '{name}' gives {shape}, not {layout} with {width} channels")

    def _pooled_tokens(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        pooled = [level[:, self.prefix_tokens :].float().mean(dim=1) for level in levels]
        if self.has_class_token:
            pooled.append(levels[-1][:, 0].float())
        return pooled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._captured = []
        try:
            final_map = self.backbone.forward_features(images)
            levels = [*self._captured, final_map]
        finally:
            self._captured = []
        names = [*self.hooked, "forward_features"]
        widths = self.level_dims[: len(levels)]
        if len(levels) != len(names):
            ran = len(levels) - 1
            raise _refuse(self.backbone, f"its hooked levels gave {ran} outputs, not {len(self.hooked)}")
        for level, name, width in zip(levels, names, widths, strict=True):
            self._check_level(level, name, width)
        if self.tokens:
            return torch.cat(self._pooled_tokens(levels), dim=1)
        return torch.cat([level.float().mean(dim=(2, 3)) for level in levels], dim=1)


def mlsp_level_dims(backbone: nn.Module) -> list[int]:
    """Per-level widths without running the model (works on the meta device).

    ``MLSP(backbone)`` on a meta-device model, run once on a meta tensor, checks them against the
    levels' real shapes without any weights (``iaakd.plan`` does).
    """
    return MLSP(backbone).level_dims
