"""Student training throughput: the stage's loop (decode and resize in loader workers, uint8 to the device,
``train_step``) against bare ``train_step`` calls on the same batch shapes already on the device, in one run.

Target (issue 4): the loop at least 0.8 x the bare step (the loader keeps up). Runs without DVC, random
weights by name, synthetic AVA-like JPEGs (long side 800 px) and random teacher knowledge. The loader alone
and the loop are each timed twice, with full decoding and with ``student.jpeg_draft`` (JPEGs decoded at a
reduced scale), side by side. ``--cycles`` lists every file that many times, so that an epoch is long enough
for the loader's workers to reach their steady state (an AVA epoch is thousands of steps):

    PYTHONPATH=src python benchmarks/student_throughput.py --device cuda --backbone resnext101_32x8d --precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from extract_throughput import make_jpegs, synchronise
from torch.utils.data import DataLoader

from iaakd.student import KDConfig, StudentConfig, StudentData, _TargetDataset, build_student, train_step

FEATURE_DIM = 1024


def loader_images_per_second(dataset, batch_size: int, workers: int, passes: int = 2) -> float:
    """Images per second of the data loader alone (decode, resize, knowledge), after one warm-up pass."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:
        pass
    start = time.perf_counter()
    for _ in range(passes):
        for _ in loader:
            pass
    return passes * len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=300)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=1, help="times each file is listed in an epoch")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config = StudentConfig(
        backbone=args.backbone,
        weights="random",
        input_size=args.input_size,
        batch_size=args.batch_size,
        precision=args.precision,
        kd=KDConfig(enabled=True),
    )
    model, preprocess, _ = build_student(config, FEATURE_DIM)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths, _ = make_jpegs(Path(tmp), args.images)
        items = args.images * args.cycles
        data = StudentData(
            paths * args.cycles,
            rng.dirichlet(np.ones(10), items).astype(np.float32),
            rng.dirichlet(np.ones(10), items).astype(np.float32),
            rng.random((items, FEATURE_DIM), dtype=np.float32),
        )
        ways = ("full_decode", "jpeg_draft")
        datasets = {
            way: _TargetDataset(data, dataclasses.replace(preprocess, jpeg_draft=way == "jpeg_draft"))
            for way in ways
        }
        loaders = {
            way: DataLoader(
                dataset,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=args.workers,
                pin_memory=device.type == "cuda",
                drop_last=True,
                persistent_workers=args.workers > 0,
            )
            for way, dataset in datasets.items()
        }
        steps = items // args.batch_size

        def images_per_second(batches) -> float:
            """Runs a training step on every batch (after a warm-up pass), timed between synchronisations."""
            for batch in batches:
                train_step(model, preprocess, batch, optimiser, scaler, config, device)
            synchronise(device)
            start = time.perf_counter()
            for batch in batches:
                train_step(model, preprocess, batch, optimiser, scaler, config, device)
            synchronise(device)
            return steps * args.batch_size / (time.perf_counter() - start)

        loader_alone = {
            way: loader_images_per_second(dataset, args.batch_size, args.workers)
            for way, dataset in datasets.items()
        }
        # Bare: the same steps on batches already on the device; then the loop as the stage runs it.
        bare = images_per_second([[part.to(device) for part in batch] for batch in loaders["full_decode"]])
        loop = {way: images_per_second(loader) for way, loader in loaders.items()}
    result = {
        "backbone": model.backbone.pretrained_cfg["architecture"],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "precision": args.precision,
        "batch_shape": f"{args.batch_size}x3x{args.input_size}x{args.input_size}",
        "source_images": "JPEG, long side 800",
        "workers": args.workers,
        "images": args.images,
        "cycles": args.cycles,
        "steps": steps,
        "bare_step_img_per_s": round(bare, 2),
        "loop_img_per_s": {way: round(value, 2) for way, value in loop.items()},
        "ratio": {way: round(value / bare, 3) for way, value in loop.items()},
        "loader_alone_img_per_s": {way: round(value, 2) for way, value in loader_alone.items()},
        "loader_draft_speedup": round(loader_alone["jpeg_draft"] / loader_alone["full_decode"], 2),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
