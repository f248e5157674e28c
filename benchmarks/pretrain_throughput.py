"""Pretraining throughput: the `pretrain` loop (distorted stacks made in loader workers, uint8 to the device,
backbone + score head, margin ranking loss, optimiser step) against bare forward+backward steps on the same
batches already on the device, in one run; the ratio is the share of the step's speed the loop keeps. The
workers alone (stacks made, no step) are timed too: what the distortions cost.

Target (issue 14): at least 0.8 on a GPU. On 2 CPU cores the workers share the cores with the step, so the
ratio there says how much the distortions cost, not whether a GPU would be fed. Runs without DVC, on good
photos from the demo generator, with the backbone's packaged weights (or random ones by name):

    PYTHONPATH=src python benchmarks/pretrain_throughput.py --device cuda --input-size 224 --workers 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from iaakd.data.demo import generate_good_pool
from iaakd.models import create_backbone
from iaakd.pretraining.dataset import DistortionStackDataset, collate_stacks
from iaakd.pretraining.distortions import group_members, select_distortions
from iaakd.pretraining.losses import PretrainHeads, pretraining_loss
from iaakd.pretraining.train import PretrainModel, student_preprocess


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--weights", default="auto")
    parser.add_argument("--images", type=int, default=32, help="pool images")
    parser.add_argument("--batch-size", type=int, default=4, help="pool images per step")
    parser.add_argument("--variants", type=int, default=8, help="variants per pool image")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as folder:
        pool = [str(p) for p in generate_good_pool(Path(folder), args.images, seed=0, progress=False)]
        selection = select_distortions(None)
        preprocess = student_preprocess(args.backbone, args.input_size, "bilinear")
        backbone, _ = create_backbone(args.backbone, args.weights, num_classes=0)
        groups = {group: len(members) for group, members in group_members(selection).items()}
        model = (
            PretrainModel(backbone, PretrainHeads(backbone.num_features, "rank", groups)).to(device).train()
        )
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-5)
        dataset = DistortionStackDataset(pool, preprocess, selection, args.variants, seed=0)
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                            collate_fn=collate_stacks, persistent_workers=args.workers > 0)  # fmt: skip

        def step(batch: dict) -> None:
            batch = {
                key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()
            }
            outputs = model(preprocess.normalise(batch["images"]))
            loss = pretraining_loss(outputs, batch, "rank")["total"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        batches = list(loader)  # warm-up pass: the workers start, every batch shape is seen once
        for batch in batches:
            step(batch)
        synchronise(device)
        rows = sum(len(batch["images"]) for batch in batches)

        start = time.perf_counter()
        for batch in loader:  # the loop as the stage runs it: new stacks from the workers each step
            step(batch)
        synchronise(device)
        loop = time.perf_counter() - start

        start = time.perf_counter()
        for _ in loader:  # the workers alone: distorted stacks made and collated, no step
            pass
        loader_alone = time.perf_counter() - start

        on_device = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
        synchronise(device)
        start = time.perf_counter()
        for batch in on_device:  # bare steps on the same batches, already on the device
            step(batch)
        synchronise(device)
        bare = time.perf_counter() - start

    result = {
        "device": str(device), "backbone": args.backbone, "input_size": args.input_size, "workers": args.workers,
        "pool_images_per_step": args.batch_size, "variants": args.variants, "rows": rows,
        "loop_pool_images_per_s": round(args.images / loop, 2), "bare_pool_images_per_s": round(args.images / bare, 2),
        "loader_alone_pool_images_per_s": round(args.images / loader_alone, 2),
        "ratio_loop_to_bare": round(bare / loop, 3),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
