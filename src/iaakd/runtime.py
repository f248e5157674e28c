"""Where the scorer's forward pass runs: PyTorch, or ONNX Runtime on a CPU (``--backend auto|torch|onnxruntime``).

On a CPU, ONNX Runtime runs the student many times faster than eager PyTorch (benchmarks/RESULTS.md), so
``auto`` takes it there when it is installed. The ONNX file is the one that came with a hub folder, or an
export of the checkpoint kept in the cache (``$IAAKD_CACHE``, else ``$XDG_CACHE_HOME/iaakd``, else
``~/.cache/iaakd``) under the weights' SHA-256, so the export is paid once per model; not beside the model,
because ``models/`` is DVC's and a hub snapshot is the Hub cache's. Every ONNX file is checked against the
PyTorch model on a random batch before use (within :data:`iaakd.onnx_export.PARITY_TOLERANCE`).
"""

from __future__ import annotations

import contextlib
import io
import os
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from iaakd.errors import UserError, first_line

BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # exporting needs all three; running, onnxruntime


def cache_folder() -> Path:
    if root := os.environ.get("IAAKD_CACHE"):
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iaakd"


def choose_backend(name: str, device: torch.device, shipped_onnx: Path | None) -> str:
    """``auto``: onnxruntime on a CPU when it is installed (and, unless the model came with its ONNX file,
    the exporter too); else torch. An explicit choice that cannot run is one line naming what is missing."""
    if name not in BACKENDS:
        raise UserError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    needed = ("onnxruntime",) if shipped_onnx is not None else ONNX_MODULES
    installed = all(find_spec(module) is not None for module in needed)
    if name == "auto":
        return "onnxruntime" if device.type == "cpu" and installed else "torch"
    if name == "onnxruntime":
        if device.type != "cpu":
            raise UserError(
                f"backend onnxruntime runs on the CPU here; --device {device} needs --backend torch"
            )
        if not installed:
            from iaakd.command import require_modules

            require_modules(*needed)
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


class OnnxForward:
    """An ONNX Runtime session on the CPU, made at the first batch with the threads set by then."""

    name = "onnxruntime"

    def __init__(self, onnx_file: Path, threads: int | None = None) -> None:
        self.onnx_file, self.threads, self._session = onnx_file, threads, None

    def set_threads(self, threads: int) -> None:
        self.threads, self._session = threads, None

    def session(self):
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            self._session = onnxruntime.InferenceSession(
                str(self.onnx_file), options, providers=["CPUExecutionProvider"]
            )
        return self._session

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        output = self.session().run(["output"], {"image": images.numpy()})[0]
        return output.astype(np.float64)


def onnx_file_for(scorer, shipped: Path | None) -> Path:
    """The ONNX file the scorer runs: the one shipped with its folder, or the cached export of its weights
    (exported now when missing); checked against PyTorch either way."""
    if shipped is not None:
        check_parity(scorer, shipped)
        return shipped
    path = cache_folder() / "onnx" / f"{scorer.model_sha256}.onnx"
    if path.is_file():
        try:
            check_parity(scorer, path)
            return path
        except UserError:  # a cached export of another version: made again below
            path.unlink()
    from iaakd.onnx_export import export_onnx

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        export_onnx(scorer, path)  # checks its own parity before keeping the file
    return path


def check_parity(scorer, path: Path) -> None:
    """The ONNX file computes what the PyTorch model does, on a random batch, or one line saying it does not."""
    import onnxruntime

    from iaakd.onnx_export import PARITY_TOLERANCE, example_batch

    example = example_batch(scorer)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["output"], {"image": example.numpy()})[0]
    except Exception as error:  # onnxruntime's own error types, for a file it cannot run
        raise UserError(f"{path}: ONNX Runtime cannot run it ({first_line(error, 160)})") from None
    with torch.inference_mode():
        expected = scorer.model.cpu()(example)[0].numpy()
    scorer.model.to(scorer.device)
    if got.shape != expected.shape or float(np.abs(got - expected).max()) > PARITY_TOLERANCE:
        raise UserError(f"{path}: its outputs differ from the model's weights ({scorer.model_path}); "
                        "export the folder again, or score with --backend torch")  # fmt: skip
