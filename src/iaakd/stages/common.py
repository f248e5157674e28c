"""What every stage shares: reading params.yaml into the library's dataclasses (validated, one clear
line per mistake), provenance, atomic JSON output, and the entry-point wrapper."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from iaakd.atomic import atomic_write_text
from iaakd.config import build_config, check_type  # noqa: F401  (the stages' entry to declared params)
from iaakd.data.tables import PipelineTables
from iaakd.distributed import launched_by_torchrun
from iaakd.errors import UserError
from iaakd.metrics import round_floats
from iaakd.stages.params_file import read_params
from iaakd.tasks import Task

PARAMS_FILE = Path("params.yaml")
LABELS = Path("data/labels.parquet")
SKIPPED = Path("data/skipped.csv")
SPLIT = Path("data/split.parquet")
FEATURES_DIR = Path("data/features")
TEACHER_DIR = Path("data/teacher")
POOL_DIR = Path("data/pool")  # CSKD's unlabelled pool (stage pool)
POOL_MANIFEST = POOL_DIR / "manifest.parquet"
POOL_FEATURES_DIR = Path("data/pool_features")
DISTILLER_MODEL = Path("models/distiller.pt")
STUDENT_MODEL = Path("models/student.pt")
DEMO_ROOT = Path("data/demo")
WORK_DIR = Path(".work")  # outside DVC's outputs: scan cache, training checkpoints (DESIGN.md)
PRETRAIN_MODEL = Path("models/pretrain.pt")  # the pretrain stage's backbone (student.init=pretrain)
ALIGN_MODEL = Path("models/align.pt")  # the align stage's (student.init=align, align.teacher)
ALIGNED = "align"  # the aligned backbone among the teacher's (align.teacher): its feature folders' name


def tables() -> PipelineTables:
    """The pipeline's tables where the stages write them."""
    return PipelineTables(LABELS, SPLIT, TEACHER_DIR, FEATURES_DIR, WORK_DIR, progress=show_progress())


def task_from_params(params: dict, pipeline: PipelineTables | None = None) -> Task:
    """The output type (``task.output``), the labels' score range, and the cut-off (``evaluate.cutoff``)."""
    output = section(params, "task").get("output", "distribution")
    cutoff = check_type(section(params, "evaluate").get("cutoff", 5.0), float, "evaluate.cutoff")
    return (pipeline or tables()).task(output, cutoff)


def aligned_teacher(params: dict) -> bool:
    """``align.teacher``: CSKD's aligned backbone serves the teacher too, as one more MLSP backbone of the
    distiller (its features: stage `extract_align`)."""
    return check_type(section(params, "align").get("teacher", False), bool, "align.teacher")


def load_params(path: Path = PARAMS_FILE) -> dict:
    """params.yaml as DVC reads it (YAML 1.2: ``1e-4`` is a number); one line naming a syntax error's place."""
    return read_params(path)


def section(params: dict, key: str) -> dict:
    value = params.get(key)
    if not isinstance(value, dict):
        raise UserError(f"params: '{key}' is missing or not a mapping")
    return value


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


def git_commit() -> str | None:
    """The commit checked out now (HEAD); None outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(*, device: str | None, precision: str | None, commit: str | None = None) -> dict:
    """Where and with what a result was produced. No timestamps, so reruns can be byte-identical.

    ``device`` and ``precision`` are those the result's models ran with (for example ``"cuda:0"`` and
    ``"bf16"``), required so that no caller can record defaults by accident; ``None`` for a result that
    ran no model (the dataset stage's statistics), and recorded as ``null``. ``commit`` is the code's
    commit where it was read before now (a results script reads it when it starts: a run of hours
    outlives later commits); by default HEAD now."""
    return {
        "git_commit": commit or git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": version("timm"),  # read, not imported: a stage without timm models does not load it
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "device": device,
        "precision": precision,
        "threads": torch.get_num_threads(),
    }


def write_json(path: Path, payload: dict) -> None:
    """``payload`` with floats rounded (NaN as null), as indented JSON, written atomically: a killed run
    leaves the old file or the new one, never half of one (:func:`iaakd.atomic.atomic_write_text`)."""
    atomic_write_text(path, json.dumps(round_floats(payload), indent=2, sort_keys=False) + "\n")


PROVENANCE_DIR = Path("reports/provenance")


def write_metrics(path: Path, metrics: dict, provenance: dict) -> None:
    """A stage's measurements as its DVC metrics file (``metrics/NAME.json``: what ``dvc metrics diff`` and
    ``dvc exp show`` list), and where and with what they were made beside it, not as a metric
    (``reports/provenance/NAME.json``: git commit, versions, device, precision, threads)."""
    write_json(path, metrics)
    write_json(provenance_file(path), {"metrics": path.as_posix(), **provenance})


def provenance_file(metrics_file: Path) -> Path:
    return PROVENANCE_DIR / metrics_file.name


DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_CHOICES = "cpu, cuda, cuda:<index> or mps (unset: cuda when available, else cpu)"


def device_from_env() -> torch.device:
    """The device comes from the environment (IAAKD_DEVICE), not params: it must not invalidate stages.
    A value that is not a device, or one this machine does not have, is one line naming the variable."""
    name = os.environ.get("IAAKD_DEVICE", "").strip()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"IAAKD_DEVICE='{name}' is not a device; use {DEVICE_CHOICES}") from None
    if device.type not in DEVICE_TYPES or (device.type != "cuda" and device.index):
        raise UserError(f"IAAKD_DEVICE='{name}' is not a device; use {DEVICE_CHOICES}")
    count = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    if device.type == "cuda" and count == 0:
        raise UserError(f"IAAKD_DEVICE='{name}': CUDA is not available on this machine; use cpu")
    if device.type == "cuda" and (device.index or 0) >= count:
        raise UserError(f"IAAKD_DEVICE='{name}': this machine has cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"IAAKD_DEVICE='{name}': MPS is not available on this machine; use cpu")
    return device


def num_workers_from_env() -> int:
    """Data loader worker processes (IAAKD_NUM_WORKERS, unset: 0, loading in the main process); anything
    but a whole number >= 0 is one line naming the variable."""
    value = os.environ.get("IAAKD_NUM_WORKERS", "").strip()
    if not value:
        return 0
    if not value.isdigit():  # digits only: no sign, no fraction
        raise UserError(
            f"IAAKD_NUM_WORKERS='{value}' must be a whole number >= 0 (0: load in the main process)"
        )
    return int(value)


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
