"""The student: one backbone trained on resized images, by knowledge distillation or on ground truth.

The loop reads top to bottom: build, then for each epoch train, validate, record; save the last epoch
(the paper's protocol) and a self-describing checkpoint.

One module each: ``config`` (StudentConfig and its parts), ``data`` (a split's images, targets and knowledge),
``build`` (the network), ``unlabeled`` (CSKD's unlabelled images), ``train`` (the loop), ``checkpoint`` (the file
format) and ``predict``. Names load on first use (``lazy_loader``): a stage that needs only ``config`` or
``data`` does not import timm.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "build": ["build_student"],
        "checkpoint": [
            "CHECKPOINT_FORMAT",
            "READABLE_FORMATS",
            "checkpoint_task",
            "load_student",
            "save_student",
        ],
        "config": ["BATCHNORM_MODES", "KDConfig", "StudentConfig", "UnlabeledConfig"],
        "data": ["StudentData", "_TargetDataset"],
        "predict": ["predict"],
        "train": ["_checkpoint", "_forward", "train_step", "train_student"],
        "unlabeled": ["UnlabeledSchedule", "_UnlabeledBatches", "unlabeled_schedule"],
    },
)
