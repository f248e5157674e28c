"""``iaakd score`` throughput: the command's loop (decode and resize in loader workers, forward, rows written
and flushed per batch) against the bare forward pass of the same model on the same batches already decoded,
with ONNX Runtime (CPU) on those batches beside it, side by side in one run.

Target (issue 16): ``iaakd score`` at least 0.9 x the bare forward on a GPU. On a CPU, decoding shares the
cores with the forward pass, so the ratio there says how much of the machine decoding takes. Random weights
by name, synthetic AVA-like JPEGs (long side 800 px); ``--cycles`` lists each file that many times:

    PYTHONPATH=src python benchmarks/score_throughput.py --images 64 --input-size 128 --workers 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from extract_throughput import make_jpegs, synchronise
from torch.utils.data import DataLoader

from iaakd.export import export_onnx
from iaakd.score import RowWriter, score_into, share_cores
from iaakd.scorer import ImageInputs, Scorer, collate_inputs, prepare
from iaakd.student import StudentConfig, build_student, save_student


def bare_forward(scorer: Scorer, batches: list[torch.Tensor], passes: int) -> float:
    """Images per second of the model on uint8 batches already on the device (after a warm-up pass),
    with the outputs brought back to the host as the command does."""
    with torch.inference_mode():
        for batch in batches:
            scorer.model(batch)[0].cpu()
        synchronise(scorer.device)
        start = time.perf_counter()
        for _ in range(passes):
            for batch in batches:
                scorer.model(batch)[0].cpu()
        synchronise(scorer.device)
    return passes * sum(len(batch) for batch in batches) / (time.perf_counter() - start)


def onnx_runtime(onnx_file: Path, batches: list[np.ndarray], passes: int) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in batches:
        session.run(None, {"image": batch})
    start = time.perf_counter()
    for _ in range(passes):
        for batch in batches:
            session.run(None, {"image": batch})
    return passes * sum(len(batch) for batch in batches) / (time.perf_counter() - start)


def loader_alone(scorer: Scorer, paths: list[str], batch_size: int, workers: int) -> float:
    """Images per second of the command's loader alone: decoding and resizing, no model."""
    loader = DataLoader(
        ImageInputs(paths, scorer.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_inputs,
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(paths) / (time.perf_counter() - start)


def command_loop(scorer: Scorer, paths: list[str], batch_size: int, workers: int, out: Path) -> float:
    """Images per second of ``iaakd score``'s own loop (the model already loaded), writing CSV rows."""
    args = argparse.Namespace(batch_size=batch_size, num_workers=workers, strict=False)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = RowWriter(handle, scorer.columns, "csv")
        writer.header()
        start = time.perf_counter()
        tally = score_into(scorer, paths, writer, args)
        elapsed = time.perf_counter() - start
    assert tally.scored == len(paths), tally
    return len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--cycles", type=int, default=1, help="times each file is listed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--passes", type=int, default=2, help="timed passes of the bare forward and of ORT")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: as iaakd score sets them)")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = StudentConfig(backbone=args.backbone, weights="random", input_size=args.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, preprocess, weights = build_student(config, 1024)
        save_student(folder / "student.pt", model, preprocess, config, weights)
        scorer = Scorer.load(folder / "student.pt", args.device, warn=False)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        else:
            share_cores(scorer.device, args.workers)  # as the command does, for all three
        files, _ = make_jpegs(folder, args.images)
        paths = files * args.cycles
        decoded = [prepare(path, scorer.preprocess) for path in paths]
        batches = [
            torch.stack(decoded[i : i + args.batch_size]) for i in range(0, len(decoded), args.batch_size)
        ]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            export_onnx(scorer, folder / "student.onnx")
        export_seconds = time.perf_counter() - start
        # side by side: the command's loop, the bare forward, ONNX Runtime, then the command again
        command_first = command_loop(scorer, paths, args.batch_size, args.workers, folder / "a.csv")
        bare = bare_forward(scorer, [batch.to(scorer.device) for batch in batches], args.passes)
        ort = onnx_runtime(folder / "student.onnx", [batch.numpy() for batch in batches], args.passes)
        loader = loader_alone(scorer, paths, args.batch_size, args.workers)
        command_second = command_loop(scorer, paths, args.batch_size, args.workers, folder / "b.csv")
    command = max(command_first, command_second)
    result = {
        "backbone": model.backbone.pretrained_cfg["architecture"],
        "device": torch.cuda.get_device_name() if scorer.device.type == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "batch_shape": f"{args.batch_size}x3x{args.input_size}x{args.input_size}",
        "source_images": "JPEG, long side 800",
        "images": len(paths),
        "workers": args.workers,
        "bare_forward_img_per_s": round(bare, 1),
        "iaakd_score_img_per_s": round(command, 1),
        "iaakd_score_runs_img_per_s": [round(command_first, 1), round(command_second, 1)],
        "onnxruntime_cpu_img_per_s": round(ort, 1),
        "loader_alone_img_per_s": round(loader, 1),
        "ratio_score_to_bare": round(command / bare, 3),
        "ratio_onnxruntime_to_bare": round(ort / bare, 3),
        "onnx_export_s": round(export_seconds, 1),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
