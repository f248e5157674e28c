"""Extraction throughput: the full path (decode in workers, MLSP pooling, float16, parquet parts)
against the bare ``model(x)`` forward pass on the same images and batch shapes, in one run.

Runs without DVC and without weights (random weights, asked for by name) on synthetic AVA-like JPEGs
(long side up to 800 px), so it also runs on a GPU machine that has no registry:

    PYTHONPATH=src python benchmarks/extract_throughput.py --device cuda --backbone resnext101_32x8d --precision bf16

Prints absolute images per second of both, their ratio (target: at least 0.9), the batch shapes, and
the feature files' bytes per dimension per image (target: at most 2.1). ``--cycles`` lists every file that
many times, so that a GPU run is long enough for the loader's workers to reach their steady state (a real
AVA run is hundreds of times longer than one pass over a few hundred images).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from iaakd.data.images import ImageDataset, same_size_batches
from iaakd.devices import autocast_context
from iaakd.extract import ExtractConfig, Extractor, extract_to_parts, loader_dataset
from iaakd.features import PartWriter

AVA_LIKE_SIZES = ((800, 600), (600, 800), (800, 533), (533, 800), (800, 800))


def make_jpegs(folder: Path, count: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """Smooth random colour fields with grain, saved at JPEG quality 90 (decode cost like real photos)."""
    rng = np.random.default_rng(seed)
    paths, sizes = [], []
    for i in range(count):
        width, height = AVA_LIKE_SIZES[i % len(AVA_LIKE_SIZES)]
        coarse = rng.integers(0, 255, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
        path = folder / f"{i}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
        sizes.append((width, height))
    return paths, sizes


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_forward(
    extractor: Extractor, paths, sizes, config: ExtractConfig, device: torch.device, passes: int
) -> float:
    """Images per second of model(x) alone: batches decoded and moved to the device beforehand, then
    ``passes`` timed passes over them."""
    dataset = ImageDataset(paths, extractor.preprocess)
    batches = [
        extractor.preprocess.normalise(torch.stack([dataset[i][1] for i in batch]).to(device))
        for batch in same_size_batches(sizes, config.batch_size)
    ]
    if extractor.channels_last:
        batches = [batch.contiguous(memory_format=torch.channels_last) for batch in batches]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # A separate, hook-free copy: MLSP's hooks would capture (and keep) every level's output.
    model = copy.deepcopy(extractor.mlsp.backbone)
    model._forward_hooks.clear()
    for module in model.modules():
        module._forward_hooks.clear()
    with torch.inference_mode(), autocast_context(device, config.precision):
        for batch in batches:
            model(batch)  # warm-up: every batch shape once (kernel selection)
        synchronise(device)
        start = time.perf_counter()
        for _ in range(passes):
            for batch in batches:
                model(batch)
        synchronise(device)
    return passes * len(paths) / (time.perf_counter() - start)


def loader_only(extractor: Extractor, paths, sizes, config: ExtractConfig, workers: int) -> float:
    """Images per second of the data loader alone, no model: decoding (cpu) or reading bytes (gpu)."""
    dataset, collate = loader_dataset(paths, extractor.preprocess, config)
    batches = same_size_batches(sizes, config.batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(paths) / (time.perf_counter() - start)


def full_path(
    extractor: Extractor,
    paths,
    sizes,
    config: ExtractConfig,
    device: torch.device,
    workers: int,
    out: Path,
    repeats: int,
    cycles: int,
) -> float:
    """Images per second of the stage's own path: decode, forward, MLSP pooling, float16, parquet parts,
    over every file listed ``cycles`` times, ``repeats`` times."""
    # Warm-up as for the bare forward: one untimed pass over the same batch shapes, so kernel selection
    # for every batch shape (cudnn.benchmark, oneDNN) is outside the timing in both. It writes each file
    # once, into the parts that bytes per dimension are measured on (repeated rows would compress).
    writer = PartWriter(out / "warm-up")
    ids = np.array([Path(p).stem for p in paths])
    extract_to_parts(
        extractor, paths, sizes, ids, config, device, writer, {"benchmark": True}, workers, False
    )
    writer.commit()
    synchronise(device)
    paths, sizes = paths * cycles, sizes * cycles
    ids = np.array([f"{Path(p).stem}_{i}" for i, p in enumerate(paths)])
    start = time.perf_counter()
    for repeat in range(repeats):
        writer = PartWriter(out / f"run{repeat}")
        extract_to_parts(
            extractor, paths, sizes, ids, config, device, writer, {"benchmark": True}, workers, False
        )
        writer.commit()
    return repeats * len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--decode", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=1, help="times each file is listed in a timed pass")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = ExtractConfig(
        backbone=args.backbone,
        weights="random",
        batch_size=args.batch_size,
        precision=args.precision,
        channels_last=args.channels_last,
        decode=args.decode,
    )
    extractor = Extractor.create(config, device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        paths, sizes = make_jpegs(tmp / "images", args.images)
        bare = bare_forward(extractor, paths, sizes, config, device, args.repeats * args.cycles)
        loader = loader_only(extractor, paths * args.cycles, sizes * args.cycles, config, args.workers)
        full = full_path(
            extractor, paths, sizes, config, device, args.workers, tmp / "features", args.repeats, args.cycles
        )
        feature_bytes = sum(p.stat().st_size for p in (tmp / "features" / "warm-up").iterdir())
    shapes = sorted(
        {f"{len(b)}x3x{sizes[b[0]][1]}x{sizes[b[0]][0]}" for b in same_size_batches(sizes, args.batch_size)}
    )
    result = {
        "backbone": extractor.full_name,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "precision": args.precision,
        "channels_last": args.channels_last,
        "decode": args.decode,
        "workers": args.workers,
        "images": args.images,
        "cycles": args.cycles,
        "batch_shapes": shapes,
        "bare_forward_img_per_s": round(bare, 2),
        "loader_only_img_per_s": round(loader, 2),
        "full_path_img_per_s": round(full, 2),
        "ratio": round(full / bare, 3),
        "mlsp_dim": extractor.mlsp.dim,
        "bytes_per_dim_per_image": round(feature_bytes / (args.images * extractor.mlsp.dim), 3),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
