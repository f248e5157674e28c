"""Image aesthetics assessment by knowledge distillation from object-classification models.

The library knows nothing of DVC: stage modules in :mod:`iaakd.stages` read params and paths and call it.
"""

__version__ = "0.1.0"
