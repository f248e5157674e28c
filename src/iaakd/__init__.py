"""Image aesthetics assessment by knowledge distillation from object-classification models.

The library knows nothing of DVC: stage modules in :mod:`iaakd.stages` read params and paths and call it.
``from iaakd import Scorer`` scores photos with a trained student (:mod:`iaakd.scorer`); it is imported on
first use, so ``import iaakd`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Scorer", "__version__"]

if TYPE_CHECKING:
    from iaakd.scorer import Scorer


def __getattr__(name: str):
    if name == "Scorer":
        from iaakd.scorer import Scorer

        return Scorer
    raise AttributeError(f"module 'iaakd' has no attribute {name!r}")
