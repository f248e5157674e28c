"""The student's self-describing checkpoint: written atomically, read safely (``weights_only``), its task recovered."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from iaakd.checkpoints import safe_load, save_atomically
from iaakd.data.images import Preprocess
from iaakd.errors import UserError, first_line
from iaakd.models import Student, create_backbone, model_name
from iaakd.student.config import StudentConfig
from iaakd.tasks import DISTRIBUTION, Task

CHECKPOINT_FORMAT = 2  # 2: "kind" and "data_source" recorded; loads with weights_only=True


READABLE_FORMATS = (1, 2)


def save_student(
    path: Path,
    model: Student,
    preprocess: Preprocess,
    config: StudentConfig,
    weights_source: dict,
    task: Task = DISTRIBUTION,
    data_source: str | None = None,
    unlabeled_images: int = 0,
) -> None:
    """A self-describing checkpoint: architecture, input and normalisation, head sizes, weights source, and
    what it was trained on (``data_source``: demo, ava, csv; ``unlabeled_images``: how many unlabelled
    images CSKD's semi-supervised KD used, :class:`UnlabeledSchedule`); its init is in ``config``; it loads
    without running pickle code."""
    checkpoint = {
        "kind": "student",
        "format": CHECKPOINT_FORMAT,
        "backbone": model_name(model.backbone),
        "weights_source": weights_source,
        "data_source": data_source,
        "unlabeled_images": unlabeled_images,
        "preprocess": preprocess.as_dict(),
        "feature_dim": model.output.in_features,
        "head": {
            "to_feature": [model.to_feature[0].in_features, model.output.in_features],
            "output": [model.output.in_features, model.output.out_features],
            "semantic": model.semantic,
        },
        "task": task.as_dict(),
        "config": asdict(config),
        "state_dict": model.state_dict(),
    }
    save_atomically(checkpoint, path)


def load_student(path: Path) -> tuple[Student, Preprocess, dict]:
    """The model, its preprocessing and the checkpoint (its ``task`` says how to read the outputs) from a
    file written by :func:`save_student`; no weights download, and no code in the file runs: anything else
    (a distiller, a random, truncated or crafted file) is refused in one line naming the file."""
    checkpoint = safe_load(Path(path), "a student checkpoint (models/student.pt)")
    kind = checkpoint.get("kind", "student" if "backbone" in checkpoint else None)  # format 1 had no kind
    if kind != "student" or checkpoint.get("format") not in READABLE_FORMATS:
        raise UserError(
            f"{path}: not a student checkpoint (kind: {kind}, format: {checkpoint.get('format')}; "
            f"this version reads formats {', '.join(map(str, READABLE_FORMATS))})"
        )
    model, preprocess = student_from_checkpoint(checkpoint, str(path))
    return model, preprocess, checkpoint


def student_from_checkpoint(checkpoint: dict, source: str) -> tuple[Student, Preprocess]:
    """The model (eval mode) and its preprocessing from a checkpoint's fields and ``state_dict``, however
    they were read (a ``.pt`` file, or a hub folder's JSON and safetensors); a damaged one is refused in one
    line naming ``source``."""
    try:
        head = checkpoint.get("head")
        if not isinstance(head, dict):
            raise TypeError(f"head is {type(head).__name__}, not a mapping")
        task = checkpoint_task(checkpoint)
        with torch.random.fork_rng(
            devices=[]
        ):  # random weights, overwritten below: the caller's stream stays
            backbone, _ = create_backbone(checkpoint["backbone"], "random", num_classes=0)
            model = Student(backbone, checkpoint["feature_dim"], task.output_size, task.activation,
                        semantic=head.get("semantic", "none"))  # fmt: skip
        model.load_state_dict(checkpoint["state_dict"])
        preprocess = Preprocess.from_dict(checkpoint["preprocess"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = first_line(error)
        raise UserError(
            f"{source}: a damaged student checkpoint ({type(error).__name__}: {detail})"
        ) from None
    model.eval()
    return model, preprocess


def checkpoint_task(checkpoint: dict) -> Task:
    """The output type a student checkpoint was trained for (checkpoints before outputs had types: distribution)."""
    return Task.from_dict(checkpoint["task"]) if "task" in checkpoint else DISTRIBUTION
