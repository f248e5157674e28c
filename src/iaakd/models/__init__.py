"""The networks: pretrained backbones (timm), the MLSP feature extractor, the distiller's and the student's heads.

Names load on first use (``lazy_loader``), so a stage that reads only ``heads`` does not import timm and
torchvision (about 2 s of every such stage's process).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "backbones": [
            "WeightsInfo",
            "count_parameters",
            "create_backbone",
            "file_sha256",
            "model_name",
            "normalisation",
            "resolve_name",
        ],  # fmt: skip
        "heads": ["NUM_BINS", "Distiller", "Student"],
        "mlsp": ["MLSP", "mlsp_level_dims"],
    },
)
