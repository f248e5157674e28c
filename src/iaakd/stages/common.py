"""What every stage shares: reading params.yaml into the library's dataclasses (validated, one clear
line per mistake), provenance, atomic JSON output, and the entry-point wrapper."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import timm
import torch
import yaml

from iaakd.distributed import launched_by_torchrun
from iaakd.errors import UserError
from iaakd.metrics import round_floats

PARAMS_FILE = Path("params.yaml")
LABELS = Path("data/labels.parquet")
SKIPPED = Path("data/skipped.csv")
SPLIT = Path("data/split.parquet")
FEATURES_DIR = Path("data/features")
TEACHER_DIR = Path("data/teacher")
DISTILLER_MODEL = Path("models/distiller.pt")
STUDENT_MODEL = Path("models/student.pt")
DEMO_ROOT = Path("data/demo")
WORK_DIR = Path(".work")  # outside DVC's outputs: scan cache, training checkpoints (DESIGN.md)


def load_params(path: Path = PARAMS_FILE) -> dict:
    if not path.is_file():
        raise UserError(f"params file not found: {path} (run from the repository root)")
    with open(path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle) or {}
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return params


def section(params: dict, key: str) -> dict:
    value = params.get(key)
    if not isinstance(value, dict):
        raise UserError(f"params: '{key}' is missing or not a mapping")
    return value


def check_type(value: object, annotation: object, key: str) -> object:
    """Checks ``value`` against a simple annotation (bool, int, float, str, list[int], X | None, dataclass)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_type(value, option, key)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"params: '{key}' must be a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [check_type(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise UserError(f"params: '{key}' must be a mapping, got {value!r}")
        return build_config(annotation, value, key)
    if annotation is bool:
        if not isinstance(value, bool):
            raise UserError(f"params: '{key}' must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"params: '{key}' must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"params: '{key}' must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UserError(f"params: '{key}' must be a string, got {value!r}")
        return value
    return value


def build_config(cls: type, values: dict, prefix: str, ignore: tuple[str, ...] = ()):
    """A dataclass from a params mapping: unknown keys and wrong types are errors naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names and key not in ignore:
            raise UserError(f"params: unknown key '{prefix}.{key}'; known: {', '.join(sorted(names))}")
    kwargs = {
        name: check_type(values[name], hints[name], f"{prefix}.{name}") for name in names if name in values
    }
    return cls(**kwargs)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def require_positive(prefix: str, **values: float) -> None:
    """Every value > 0, else one line naming the first key that is not."""
    for name, value in values.items():
        require(value > 0, f"params: {prefix}.{name}={value} must be positive")


def require_fraction(key: str, value: float, closed_high: bool = False) -> None:
    """0 <= value < 1 (or <= 1), else one line naming the key."""
    require(
        0 <= value <= 1 if closed_high else 0 <= value < 1,
        f"params: {key}={value} must be in [0, {'1]' if closed_high else '1)'}",
    )


def provenance(device: str = "cpu", precision: str = "fp32") -> dict:
    """Where and with what a result was produced. No timestamps, so reruns can be byte-identical."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "git_commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "device": device,
        "precision": precision,
        "threads": torch.get_num_threads(),
    }


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(round_floats(payload), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(staging, path)


def device_from_env() -> torch.device:
    """The device comes from the environment (IAAKD_DEVICE), not params: it must not invalidate stages."""
    name = os.environ.get("IAAKD_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def num_workers_from_env() -> int:
    return int(os.environ.get("IAAKD_NUM_WORKERS", "0"))


def show_progress() -> bool:
    return os.environ.get("IAAKD_PROGRESS", "1") != "0"


def relaunch_under_launcher() -> None:
    """Starts this stage again under ``IAAKD_LAUNCHER`` (for example ``torchrun --nproc_per_node=4``).

    The launcher is an environment variable, not part of the stage's command in dvc.yaml, so choosing
    it never invalidates a stage. Already inside the launcher (or none set): nothing happens.
    """
    launcher = os.environ.get("IAAKD_LAUNCHER", "").strip()
    if not launcher or launched_by_torchrun() or os.environ.get("IAAKD_LAUNCHED") == "1":
        return
    module = sys.modules["__main__"].__spec__.name
    command = [*shlex.split(launcher), "-m", module, *sys.argv[1:]]
    print(f"{module}: starting under {launcher}", flush=True)
    os.environ["IAAKD_LAUNCHED"] = "1"
    try:
        os.execvp(command[0], command)
    except OSError as error:
        raise UserError(
            f"IAAKD_LAUNCHER='{launcher}': cannot start {command[0]} ({error.strerror})"
        ) from None


def run(main: Callable[[list[str]], None], distributed: bool = False) -> None:
    """Entry point: a user error ends with one line on stderr and exit status 1. A ``distributed`` stage
    runs under ``IAAKD_LAUNCHER`` when that is set."""
    try:
        if distributed:
            relaunch_under_launcher()
        main(sys.argv[1:])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; outputs of this stage were not completed", file=sys.stderr)
        sys.exit(130)
