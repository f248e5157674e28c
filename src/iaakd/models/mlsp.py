"""MLSP: multi-layer spatial pooling (Hosu et al., CVPR 2019) as the paper uses it.

The levels are every entry of timm's ``feature_info`` (stem and stages). The final feature map (after a
head conv or a final norm) replaces the last level when it is as wide, and is added as one more level
when its width differs (METHOD.md). Each level is globally average-pooled; the results are concatenated.
"""

from __future__ import annotations

import torch
from torch import nn


class MLSP(nn.Module):
    """Wraps a timm model; ``forward(images)`` returns the (batch, sum of level widths) pooled vector."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.level_modules = [info["module"] for info in backbone.feature_info]
        widths = [int(info["num_chs"]) for info in backbone.feature_info]
        self.final_replaces_last = int(backbone.num_features) == widths[-1]
        self.level_dims = widths if self.final_replaces_last else [*widths, int(backbone.num_features)]
        self._captured: list[torch.Tensor] = []
        modules = dict(backbone.named_modules())
        hooked = self.level_modules[:-1] if self.final_replaces_last else self.level_modules
        for name in hooked:
            modules[name].register_forward_hook(self._capture)

    @property
    def dim(self) -> int:
        return sum(self.level_dims)

    def _capture(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self._captured.append(output)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._captured = []
        final_map = self.backbone.forward_features(images)
        levels = [*self._captured, final_map]
        self._captured = []
        return torch.cat([level.float().mean(dim=(2, 3)) for level in levels], dim=1)


def mlsp_level_dims(backbone: nn.Module) -> list[int]:
    """Per-level widths without running the model (works on the meta device)."""
    return MLSP(backbone).level_dims
