"""``iaakd score`` at the machine's limit, measured side by side in one run.

Parts, each alone, with the resources the command gives it: the forward pass in ONNX Runtime (threads =
cores - loader workers) and in PyTorch on batches already decoded; decoding alone (the command's loader and
workers, full decode and JPEG draft). Then the command's own loop end to end with each backend and decoding.
Target (issue 27): on a CPU, ``iaakd score`` >= 0.8 x the slower of its two parts (ONNX Runtime's forward,
decoding); on a GPU, the torch backend >= 0.9 x the bare forward. The peers' forward cost (random weights,
fp32, batch 4, all cores) on the same machine in the same run: the LAION predictor's CLIP ViT-L/14 at 224,
TOPIQ-IAA's Swin-B at 384, the paper's student ResNeXt101 32x8d at 300.

    PYTHONPATH=src python benchmarks/score_throughput.py --images 86 --cycles 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from extract_throughput import make_jpegs, synchronise
from torch.utils.data import DataLoader

from iaakd.score import RowWriter, score_into
from iaakd.scorer import ImageInputs, Scorer, collate_inputs, prepare
from iaakd.student import StudentConfig, build_student, save_student

AVA_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "ava-sample" / "images"
PEERS = {  # name: (timm architecture, input side)
    "CLIP ViT-L/14 (LAION predictor)": ("vit_large_patch14_clip_224", 224),
    "Swin-B (TOPIQ-IAA)": ("swin_base_patch4_window12_384", 384),
    "ResNeXt101 32x8d (the paper's student)": ("resnext101_32x8d", 300),
}


def rate(images: int, seconds: float) -> float:
    return round(images / seconds, 1)


def forward_alone(scorer: Scorer, batches: list[torch.Tensor], passes: int) -> float:
    """Images per second of the scorer's backend on batches already decoded (after a warm-up pass)."""
    for batch in batches:
        scorer.forward(batch)
    synchronise(scorer.device)
    start = time.perf_counter()
    for _ in range(passes):
        for batch in batches:
            scorer.forward(batch)
    synchronise(scorer.device)
    return rate(passes * sum(len(batch) for batch in batches), time.perf_counter() - start)


def decoding_alone(scorer: Scorer, paths: list[str], batch_size: int, workers: int) -> float:
    """Images per second of the command's loader alone: decoding and resizing in its workers, no model."""
    loader = DataLoader(ImageInputs(paths, scorer.preprocess), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_inputs)  # fmt: skip
    start = time.perf_counter()
    for _ in loader:
        pass
    return rate(len(paths), time.perf_counter() - start)


def command_loop(scorer: Scorer, paths: list[str], batch_size: int, workers: int, out: Path) -> float:
    """Images per second of ``iaakd score``'s own loop (the model already loaded), writing CSV rows."""
    args = argparse.Namespace(batch_size=batch_size, num_workers=workers, strict=False)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = RowWriter(handle, scorer.columns, "csv")
        writer.header()
        start = time.perf_counter()
        tally = score_into(scorer, paths, writer, args)
        seconds = time.perf_counter() - start
    assert tally.scored == len(paths), tally
    return rate(len(paths), seconds)


def peer_forward(architecture: str, side: int, passes: int) -> float:
    """Images per second of a peer's backbone forward (random weights, fp32, batch 4, all cores)."""
    import timm

    torch.set_num_threads(os.cpu_count() or 1)
    model = timm.create_model(architecture, pretrained=False, num_classes=0).eval()
    batch = torch.randn(4, 3, side, side)
    with torch.inference_mode():
        model(batch)
        start = time.perf_counter()
        for _ in range(passes):
            model(batch)
    return round(passes * len(batch) / (time.perf_counter() - start), 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--images", type=int, default=86, help="photos (the AVA sample's when present)")
    parser.add_argument("--cycles", type=int, default=2, help="times each file is listed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--passes", type=int, default=3, help="timed passes of each forward alone")
    parser.add_argument("--peer-passes", type=int, default=1, help="0: leave the peers out")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = StudentConfig(backbone=args.backbone, weights="random", input_size=args.input_size)
    result: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                    "cores": os.cpu_count(), "workers": args.workers, "torch": torch.__version__}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, preprocess, weights = build_student(config, 1024)
        save_student(folder / "student.pt", model, preprocess, config, weights)
        if AVA_SAMPLE.is_dir():
            files = sorted(str(path) for path in AVA_SAMPLE.glob("*.jpg"))[: args.images]
            result["photos"] = f"{len(files)} AVA sample photos"
        else:
            files, _ = make_jpegs(folder, args.images)
            result["photos"] = f"{len(files)} synthetic JPEGs, long side 800"
        paths = files * args.cycles
        result.update(images=len(paths), batch=f"{args.batch_size}x3x{args.input_size}x{args.input_size}",
                      backbone=args.backbone)  # fmt: skip
        backends = ["onnxruntime", "torch"] if args.device == "cpu" else ["torch"]
        start = time.perf_counter()
        scorers = {
            name: Scorer.load(folder / "student.pt", args.device, warn=False, backend=name)
            for name in backends
        }
        result["load_with_onnx_export_s"] = round(time.perf_counter() - start, 1)
        for scorer in scorers.values():
            scorer.share_cores(args.workers)
        decoded = [prepare(path, preprocess) for path in paths]
        batches = [
            torch.stack(decoded[i : i + args.batch_size]) for i in range(0, len(decoded), args.batch_size)
        ]
        for name, scorer in scorers.items():
            result[f"forward_alone_{name}"] = forward_alone(scorer, batches, args.passes)
        for draft in (False, True):
            reader = Scorer.load(
                folder / "student.pt", args.device, warn=False, backend="torch", jpeg_draft=draft
            )
            label = "draft" if draft else "full"
            result[f"decoding_alone_{label}"] = decoding_alone(reader, paths, args.batch_size, args.workers)
            for name, scorer in scorers.items():
                scorer.preprocess = reader.preprocess
                runs = [
                    command_loop(scorer, paths, args.batch_size, args.workers, folder / "rows.csv")
                    for _ in range(2)
                ]
                result[f"iaakd_score_{name}_{label}"] = max(runs)
                slower = min(result[f"forward_alone_{name}"], result[f"decoding_alone_{label}"])
                result[f"ratio_{name}_{label}_to_slower_part"] = round(max(runs) / slower, 3)
        if "onnxruntime" in scorers:
            result["onnxruntime_over_torch_forward"] = round(
                result["forward_alone_onnxruntime"] / result["forward_alone_torch"], 2
            )
        if args.peer_passes:
            result["peers_forward_img_per_s"] = {
                name: peer_forward(architecture, side, args.peer_passes)
                for name, (architecture, side) in PEERS.items()
            }
            result["peers_forward_img_per_s"][
                f"{args.backbone} at {args.input_size} (ours, torch, all cores)"
            ] = peer_forward(args.backbone, args.input_size, max(5, args.peer_passes))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
