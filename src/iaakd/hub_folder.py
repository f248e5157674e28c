"""A student as a folder the Hugging Face Hub takes as it is, and back (``iaakd export MODEL --hub-folder DIR``).

    DIR/model.safetensors   the student's weights (safetensors: reading them runs no code)
    DIR/config.json         architecture, preprocessing (input size, resize filter, normalisation), output
                            type, head sizes, what it was trained on (data_source) and how (training_config)
    DIR/model.onnx          the same model, normalisation inside, for ONNX Runtime (preprocessing in its metadata)
    DIR/README.md           the model card (:mod:`iaakd.model_card`)

Upload it with the Hub's own CLI, ``hf upload ORG/NAME DIR``; ``iaakd score hf://ORG/NAME ...`` and
``Scorer.load("hf://ORG/NAME")`` read it back (:mod:`iaakd.model_ref`). A folder is read from JSON and
safetensors only: a pickle in any file of it is never loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from iaakd.data.images import RESIZE_FILTERS, Preprocess
from iaakd.errors import UserError, first_line
from iaakd.models import Student
from iaakd.student.checkpoint import student_from_checkpoint

FOLDER_FORMAT = 1
CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE, CARD_FILE = (
    "config.json",
    "model.safetensors",
    "model.onnx",
    "README.md",
)
# the checkpoint's fields under the names config.json gives them (the rest keep theirs)
RENAMED = {"backbone": "architecture", "config": "training_config"}
CHECKPOINT_FIELDS = ("backbone", "preprocess", "task", "feature_dim", "head", "data_source",
                     "unlabeled_images", "weights_source", "config")  # fmt: skip


def folder_config(checkpoint: dict, source_sha256: str) -> dict:
    """config.json: the checkpoint's description (all but its tensors), with the file it came from."""
    config = {"library_name": "iaakd", "kind": "student", "folder_format": FOLDER_FORMAT}
    for key in CHECKPOINT_FIELDS:
        if key in checkpoint:
            config[RENAMED.get(key, key)] = checkpoint[key]
    config["source_checkpoint_sha256"] = source_sha256
    return config


def write_weights(model: Student, path: Path) -> None:
    """The student's state as safetensors (contiguous copies: safetensors stores no views)."""
    from safetensors.torch import save_file

    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "library": "iaakd"})


def write_config(config: dict, path: Path) -> None:
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def read_config(folder: Path) -> dict:
    """config.json, checked to be an iaakd student folder's; one line naming the file otherwise."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{folder}: no {CONFIG_FILE} (not a folder written by iaakd export --hub-folder)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not readable as JSON ({first_line(error)})") from None
    if (
        not isinstance(config, dict)
        or config.get("library_name") != "iaakd"
        or config.get("kind") != "student"
    ):
        raise UserError(f"{path}: not an iaakd student's config (library_name iaakd, kind student)")
    if config.get("folder_format") != FOLDER_FORMAT:
        raise UserError(
            f"{path}: folder_format {config.get('folder_format')}; this version reads {FOLDER_FORMAT}"
        )
    return config


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; anything else (a pickle renamed, a truncated file) refused in one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        found = f" (found {', '.join(pickles)}: pickles are never loaded from a folder)" if pickles else ""
        raise UserError(f"{path.parent}: no {WEIGHTS_FILE}{found}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(
            f"{path}: not a safetensors file ({first_line(error, 120)}); a folder's weights are read from "
            "safetensors only, never from a pickle"
        ) from None


def check_config(config: dict, path: Path) -> None:
    """The fields a student is built from have the right kinds and values: one line naming the key if not."""

    def require(holds: bool, key: str, wanted: str) -> None:
        if not holds:
            raise UserError(f"{path}: {key} must be {wanted}, not {_shown(config, key)}")

    def is_pair(value: object) -> bool:
        return isinstance(value, list) and len(value) == 2 and all(type(v) is int and v > 0 for v in value)

    require(isinstance(config.get("architecture"), str), "architecture", "a timm model name")
    require(
        type(config.get("feature_dim")) is int and config["feature_dim"] > 0,
        "feature_dim",
        "a positive integer",
    )
    head, preprocess = config.get("head"), config.get("preprocess")
    require(isinstance(head, dict), "head", "a mapping")
    require(is_pair(head.get("to_feature")), "head.to_feature", "two positive integers")
    require(is_pair(head.get("output")), "head.output", "two positive integers")
    require(isinstance(preprocess, dict), "preprocess", "a mapping")
    require(
        type(preprocess.get("size")) is int and preprocess["size"] >= 8, "preprocess.size", "an integer >= 8"
    )
    require(preprocess.get("resize_filter") in RESIZE_FILTERS, "preprocess.resize_filter",
            f"one of {', '.join(RESIZE_FILTERS)}")  # fmt: skip
    for key in ("mean", "std"):
        values = preprocess.get(key)
        require(isinstance(values, list) and len(values) == 3 and all(isinstance(v, int | float) and not
                isinstance(v, bool) for v in values), f"preprocess.{key}", "three numbers")  # fmt: skip
    require(all(v > 0 for v in preprocess["std"]), "preprocess.std", "positive")
    require(isinstance(config.get("task", {}), dict), "task", "a mapping")


def _shown(config: dict, key: str) -> str:
    value: object = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return json.dumps(value)[:60]


def read_folder(folder: Path) -> tuple[Student, Preprocess, dict]:
    """The model, its preprocessing and a checkpoint-shaped description (as :func:`load_student` returns)."""
    config = read_config(folder)
    check_config(config, folder / CONFIG_FILE)
    inverse = {new: old for old, new in RENAMED.items()}
    checkpoint = {inverse.get(key, key): value for key, value in config.items()}
    checkpoint["kind"], checkpoint["state_dict"] = "student", read_weights(folder / WEIGHTS_FILE)
    model, preprocess = student_from_checkpoint(checkpoint, str(folder))
    return model, preprocess, checkpoint


def write_hub_folder(
    scorer, folder: Path, metrics: Path | None = None, program=None, opset: int | None = None
) -> None:
    """The folder for ``scorer``'s model (an :class:`iaakd.scorer.Scorer`). ``metrics``: a JSON file of
    the evaluate stage for the model card; ``program``: its ``torch.export`` program when already traced.
    config.json is removed first and written last, so a folder left by a failure cannot be loaded."""
    from iaakd.atomic import atomic_path
    from iaakd.model_card import model_card
    from iaakd.onnx_export import ONNX_OPSET, export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).unlink(missing_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as staging:
        write_weights(scorer.model.student, staging)
    export_onnx(scorer, folder / ONNX_FILE, opset or ONNX_OPSET, program)
    (folder / (ONNX_FILE + ".json")).unlink(missing_ok=True)  # the same description is in config.json
    config = folder_config(scorer.checkpoint, scorer.model_sha256)
    measured = read_metrics(metrics) if metrics is not None else None
    with atomic_path(folder / CARD_FILE) as staging:
        staging.write_text(model_card(folder.resolve().name, config, measured, metrics), encoding="utf-8")
    with atomic_path(folder / CONFIG_FILE) as staging:
        write_config(config, staging)


def read_metrics(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not readable as JSON ({first_line(error)})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: not a metrics file (a JSON object)")
    return metrics
