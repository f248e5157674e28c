from iaakd.models.backbones import (
    WeightsInfo,
    count_parameters,
    create_backbone,
    model_name,
    normalisation,
    resolve_name,
)
from iaakd.models.heads import NUM_BINS, Distiller, Student
from iaakd.models.mlsp import MLSP, mlsp_level_dims

__all__ = [
    "MLSP",
    "NUM_BINS",
    "Distiller",
    "Student",
    "WeightsInfo",
    "count_parameters",
    "create_backbone",
    "mlsp_level_dims",
    "model_name",
    "normalisation",
    "resolve_name",
]
