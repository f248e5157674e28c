"""The student: one backbone trained on resized images, by knowledge distillation or on ground truth.

The loop reads top to bottom: build, then for each epoch train, validate, record; save the last epoch
(the paper's protocol) and a self-describing checkpoint.

One module each: ``config`` (StudentConfig and its parts), ``data`` (a split's images, targets and knowledge),
``build`` (the network), ``unlabeled`` (CSKD's unlabelled images), ``train`` (the loop), ``checkpoint`` (the file
format) and ``predict``.
"""

from iaakd.student.build import build_student
from iaakd.student.checkpoint import (
    CHECKPOINT_FORMAT,
    READABLE_FORMATS,
    checkpoint_task,
    load_student,
    save_student,
)
from iaakd.student.config import BATCHNORM_MODES, KDConfig, StudentConfig, UnlabeledConfig
from iaakd.student.data import StudentData, _TargetDataset
from iaakd.student.predict import predict
from iaakd.student.train import _checkpoint, _forward, train_step, train_student
from iaakd.student.unlabeled import UnlabeledSchedule, _UnlabeledBatches, unlabeled_schedule

__all__ = [
    "BATCHNORM_MODES",
    "CHECKPOINT_FORMAT",
    "KDConfig",
    "READABLE_FORMATS",
    "StudentConfig",
    "StudentData",
    "UnlabeledConfig",
    "UnlabeledSchedule",
    "_TargetDataset",
    "_UnlabeledBatches",
    "_checkpoint",
    "_forward",
    "build_student",
    "checkpoint_task",
    "load_student",
    "predict",
    "save_student",
    "train_step",
    "train_student",
    "unlabeled_schedule",
]
