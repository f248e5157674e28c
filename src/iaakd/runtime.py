"""Where the scorer's forward pass runs: PyTorch, or ONNX Runtime on a CPU (``--backend auto|torch|onnxruntime``).

On a CPU, ONNX Runtime runs the student several times faster than eager PyTorch (benchmarks/RESULTS.md), so
``auto`` takes it there when it is installed. The ONNX graph is always this package's own export of the
weights being scored (a folder's shipped ``model.onnx`` is for other languages and is never run here: a
stranger's graph could compute anything on inputs other than those it is checked on). The export is kept in
the cache (``$IAAKD_CACHE``, else ``$XDG_CACHE_HOME/iaakd``, else ``~/.cache/iaakd``) under a key of the
weights' SHA-256 and everything else the graph holds (architecture, head, task, normalisation, input size),
so it is paid once per model; not beside the model, because ``models/`` is DVC's and a hub snapshot is the
Hub cache's. Every ONNX file is checked against the PyTorch model on a fresh random batch before use, and the
session runs the very bytes that were checked.

``$IAAKD_BACKEND`` sets the default of ``--backend`` and ``Scorer.load(backend=None)``.

Threads: the forward pass gets ``OMP_NUM_THREADS`` when it is set, else the cores this process may use less
the loader's workers (:func:`forward_threads`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from iaakd.errors import UserError, first_line

BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the export needs all three


def cache_folder() -> Path:
    if root := os.environ.get("IAAKD_CACHE"):
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iaakd"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: SLURM's and taskset's limits), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def forward_threads(workers: int) -> int:
    """The forward pass's threads: ``OMP_NUM_THREADS`` when set, else the usable cores the workers leave."""
    if (value := os.environ.get("OMP_NUM_THREADS", "")).isdigit() and int(value) > 0:
        return int(value)
    return max(1, usable_cores() - workers)


def default_backend() -> str:
    """``$IAAKD_BACKEND`` when set (for example ``torch`` on machines where ONNX Runtime should not run), else auto."""
    return os.environ.get("IAAKD_BACKEND") or "auto"


def choose_backend(name: str, device: torch.device) -> str:
    """``auto``: onnxruntime on a CPU when it and the exporter are installed; else torch. An explicit choice
    that cannot run is one line naming what is missing."""
    if name not in BACKENDS:
        raise UserError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    installed = all(find_spec(module) is not None for module in ONNX_MODULES)
    if name == "auto":
        return "onnxruntime" if device.type == "cpu" and installed else "torch"
    if name == "onnxruntime":
        if device.type != "cpu":
            raise UserError(
                f"backend onnxruntime runs on the CPU here; --device {device} needs --backend torch"
            )
        if not installed:
            from iaakd.command import require_modules

            require_modules(*ONNX_MODULES)
    return name


class TorchForward:
    """The model (a :class:`iaakd.scorer.ScoreModel`) on its device: uint8 batch in, float64 outputs out."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            output = self.model(images.to(self.device, non_blocking=True))[0]
        return output.double().cpu().numpy()

    def set_threads(self, threads: int) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(threads)


def onnx_session(model: bytes, threads: int):
    """An ONNX Runtime session on the CPU; its threads do not spin-wait when they share the machine."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    if threads < usable_cores():
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxForward:
    """An ONNX Runtime session of the checked model bytes, made at the first batch with the threads set by
    then (``iaakd score`` sets them once it knows its workers: a session is made once, not twice)."""

    name = "onnxruntime"

    def __init__(self, model: bytes, threads: int | None = None) -> None:
        self.model, self.threads, self._session = model, threads or forward_threads(0), None

    def set_threads(self, threads: int) -> None:
        if threads != self.threads:
            self.threads, self._session = threads, None

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if self._session is None:
            self._session = onnx_session(self.model, self.threads)
        return self._session.run(["output"], {"image": images.numpy()})[0].astype(np.float64)


def cache_key(scorer) -> str:
    """What the exported graph holds: the weights, and the architecture, head, task and normalisation."""
    preprocess = scorer.preprocess.as_dict()
    identity = {
        "weights_sha256": scorer.model_sha256,
        "backbone": scorer.checkpoint.get("backbone"),
        "head": scorer.checkpoint.get("head"),
        "task": scorer.task.as_dict(),
        "preprocess": {key: preprocess[key] for key in ("mean", "std", "size")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def onnx_model(scorer) -> bytes:
    """The checked bytes of the scorer's ONNX graph: the cached export, else a new export into the cache."""
    path = cache_folder() / "onnx" / f"{cache_key(scorer)}.onnx"
    if path.is_file():
        model = path.read_bytes()
        try:
            check_parity(scorer, model, str(path))
            return model
        except UserError:  # a damaged or foreign file under this name: made again below
            path.unlink(missing_ok=True)
    from iaakd.onnx_export import export_onnx

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        export_onnx(scorer, path)  # atomic, and checked against PyTorch before it is kept
    model = path.read_bytes()
    check_parity(scorer, model, str(path))
    return model


def check_parity(scorer, model: bytes, name: str) -> None:
    """The ONNX graph computes what the PyTorch model does on a fresh random batch, or one line saying not."""
    from iaakd.onnx_export import PARITY_TOLERANCE, example_batch

    example = example_batch(scorer, seed=None)
    try:
        got = onnx_session(model, 1).run(["output"], {"image": example.numpy()})[0]
    except Exception as error:  # onnxruntime's own error types, for a file it cannot run
        raise UserError(f"{name}: ONNX Runtime cannot run it ({first_line(error, 160)})") from None
    with torch.inference_mode():
        expected = scorer.model(example.to(scorer.device))[0].cpu().numpy()
    if got.shape != expected.shape or float(np.abs(got - expected).max()) > PARITY_TOLERANCE:
        raise UserError(
            f"{name}: its outputs differ from the model's ({scorer.model_path}); score with --backend torch"
        )
