"""Peak memory of distiller training and teacher export against the number of images (synthetic features).

Target (issue 4): with 10k and 100k rows of 23,424 float16 features (the paper's teacher input), the
peak resident memory (RSS) of the larger run is at most 1.2 x the smaller's, and under 2 GB plus one batch.

Each size runs in a fresh process, so its peak RSS (``VmHWM``) is its own. The process does what the
`distill` and `teacher` stages do with their features: build the row matrix from parquet parts, train
the distiller for one epoch (a small MLP: the point is the data path, not the model), and export the
knowledge of every row, forward only, into parquet parts.

    python benchmarks/distiller_memory.py [--rows 10000 100000] [--dim 23424] [--folder /tmp/iaakd-memory]

Needs about rows x dim x 4 bytes of free disk (parts and row matrix); checks before it writes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS_PER_PART = 4096


def write_features(folder: Path, rows: int, dim: int) -> None:
    """Synthetic MLSP-like features (float16, parquet parts of 4,096 rows), generated part by part."""
    from iaakd.features import PartWriter, make_table

    rng = np.random.default_rng(0)
    writer = PartWriter(folder)
    for start in range(0, rows, ROWS_PER_PART):
        count = min(ROWS_PER_PART, rows - start)
        values = rng.standard_normal((count, dim), dtype=np.float32).astype(np.float16)
        ids = [f"{i:07d}" for i in range(start, start + count)]
        writer.write(make_table({"image_id": ids, "feature": values}, {"synthetic": True}))
    writer.commit()


def peak_rss_kb() -> int:
    """This process's peak resident memory since its start. Not ``ru_maxrss``: Linux carries that over
    from the parent's copy across fork and exec, so it would report the parent's size."""
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def child(folder: Path, rows: int) -> None:
    """One size: matrix, one training epoch, export. Prints a JSON line with the peak RSS."""
    import torch

    from iaakd.feature_rows import RowSubset, build_feature_matrix
    from iaakd.features import PartWriter, make_table
    from iaakd.teacher import DistillerConfig, iter_knowledge, train_distiller

    torch.set_num_threads(max(1, torch.get_num_threads()))
    timings = {}
    start = time.perf_counter()
    ids = [f"{i:07d}" for i in range(rows)]
    matrix, _ = build_feature_matrix([folder / "features"], ids, folder / "work")
    timings["matrix_s"] = time.perf_counter() - start

    rng = np.random.default_rng(1)
    targets = rng.dirichlet(np.ones(10), size=rows).astype(np.float32)
    n_val = rows // 20
    config = DistillerConfig(hidden=[64], dropout=0.0, epochs=1, batch_size=512, lr=1e-4)
    start = time.perf_counter()
    model, _ = train_distiller(
        RowSubset(matrix, np.arange(n_val, rows)),
        targets[n_val:],
        RowSubset(matrix, np.arange(n_val)),
        targets[:n_val],
        config,
        progress=False,
    )
    timings["train_epoch_s"] = time.perf_counter() - start

    start = time.perf_counter()
    writer, position = PartWriter(folder / "teacher"), 0
    for output, teacher_feature in iter_knowledge(model, matrix):  # 1,024 input rows at a time, as the stage
        part_ids = ids[position : position + len(output)]
        writer.write(
            make_table(
                {"image_id": part_ids, "teacher_feature": teacher_feature, "teacher_output": output}, {}
            )
        )
        position += len(output)
    writer.commit()
    timings["export_s"] = time.perf_counter() - start
    peak_mb = peak_rss_kb() / 1024
    print(json.dumps({"rows": rows, "dim": matrix.dim, "peak_rss_mb": round(peak_mb, 1), **timings}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=23_424)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/iaakd-memory"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.folder, args.child)
        return

    needed = sum(args.rows) * args.dim * 4 * 1.1  # float16 parts + float16 row matrix, 10 % headroom
    args.folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.folder).free
    if free < needed:
        sys.exit(
            f"error: {args.folder} has {free / 1e9:.1f} GB free; this benchmark needs {needed / 1e9:.1f} GB"
        )
    results = []
    for rows in args.rows:
        folder = args.folder / f"rows{rows}"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        write_features(folder / "features", rows, args.dim)
        print(
            f"{rows} rows x {args.dim}: features written in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(rows), "--folder", str(folder)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
        shutil.rmtree(folder)
    smallest, largest = results[0], results[-1]
    batch_mb = 512 * args.dim * 4 / 2**20
    print(
        f"peak RSS: {smallest['rows']} rows {smallest['peak_rss_mb']:.0f} MB, {largest['rows']} rows "
        f"{largest['peak_rss_mb']:.0f} MB; ratio {largest['peak_rss_mb'] / smallest['peak_rss_mb']:.3f} "
        f"(target <= 1.2); one batch of 512 rows is {batch_mb:.0f} MB as float32 (target: < 2048 MB + one batch)"
    )


if __name__ == "__main__":
    main()
