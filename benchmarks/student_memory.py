"""Peak memory of the student's data path against the number of training images (synthetic knowledge).

Target (issue 4): memory must not grow with the dataset. The student reads, per training image, the
teacher's output and feature f_t (1,024 dimensions for the paper's distiller). Held in memory, as the
student stage did before, that is about 1 GB for AVA's 235k training images, in every process; left on
disk as a float32 row matrix and read one item at a time (``iaakd.feature_rows.VectorRows``), it is not.

Each (size, way) runs in a fresh process, so its peak RSS (``VmHWM``) is its own. A process does what the
student stage does with its knowledge: get it for its training ids from the teacher's parquet parts,
then iterate the student's data loader over every training item (image decoding and knowledge reads; the
images are one small JPEG repeated, the point is the knowledge), then a few training steps.

    python benchmarks/student_memory.py [--rows 10000 100000] [--feature-dim 1024]
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
from distiller_memory import peak_rss_kb

ROWS_PER_PART = 16_384  # the teacher stage's part size
OUTPUT_SIZE = 10


def write_knowledge(folder: Path, rows: int, feature_dim: int) -> None:
    """Synthetic teacher knowledge in the teacher stage's format, part by part."""
    from iaakd.features import PartWriter, make_table

    rng = np.random.default_rng(0)
    writer = PartWriter(folder)
    for start in range(0, rows, ROWS_PER_PART):
        count = min(ROWS_PER_PART, rows - start)
        writer.write(
            make_table(
                {
                    "image_id": [f"{i:07d}" for i in range(start, start + count)],
                    "teacher_feature": rng.standard_normal((count, feature_dim), dtype=np.float32),
                    "teacher_output": rng.dirichlet(np.ones(OUTPUT_SIZE), size=count).astype(np.float32),
                },
                {},
            )
        )
    writer.commit()


def child(folder: Path, rows: int, way: str) -> None:
    """One size, one way of holding the knowledge. Prints a JSON line with the peak RSS."""
    import pandas as pd
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader

    from iaakd.feature_rows import VectorRows, build_row_matrix
    from iaakd.features import read_table, vector_column
    from iaakd.student import KDConfig, StudentConfig, StudentData, _TargetDataset, build_student, train_step

    ids = [f"{i:07d}" for i in range(rows)]
    timings = {}
    start = time.perf_counter()
    if way == "disk":
        matrix = build_row_matrix(
            [(folder / "teacher", "teacher_output"), (folder / "teacher", "teacher_feature")],
            ids,
            folder / "work",
            np.float32,
            "knowledge",
        )
        teacher_output = VectorRows(matrix, 0, OUTPUT_SIZE)
        teacher_feature = VectorRows(matrix, OUTPUT_SIZE, matrix.dim)
    else:  # what the student stage did before: the whole table, joined on id, in memory
        table = read_table(folder / "teacher")
        position = pd.Index(table.column("image_id").to_pylist()).get_indexer(pd.Index(ids))
        teacher_output = vector_column(table, "teacher_output")[position]
        teacher_feature = vector_column(table, "teacher_feature")[position]
        del table
    timings["knowledge_s"] = time.perf_counter() - start

    image = folder / "image.jpg"
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(image)
    ground_truth = np.full((rows, OUTPUT_SIZE), 0.1, np.float32)
    data = StudentData([str(image)] * rows, ground_truth, teacher_output, teacher_feature)
    config = StudentConfig(weights="random", input_size=32, batch_size=64, kd=KDConfig())
    model, preprocess, _ = build_student(config, teacher_feature.shape[1])
    loader = DataLoader(_TargetDataset(data, preprocess), batch_size=config.batch_size, shuffle=True)
    start = time.perf_counter()
    batches = 0
    for _batch in loader:  # every item once: the knowledge of every training image is read
        batches += 1
    timings["loader_pass_s"] = time.perf_counter() - start
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _, batch in zip(range(5), loader, strict=False):
        train_step(model, preprocess, batch, optimiser, scaler, config, torch.device("cpu"))
    print(
        json.dumps(
            {
                "rows": rows,
                "way": way,
                "batches": batches,
                "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
                **timings,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--feature-dim", type=int, default=1024)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/iaakd-student-memory"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.folder, int(args.child[0]), args.child[1])
        return

    needed = sum(args.rows) * (args.feature_dim + OUTPUT_SIZE) * 4 * 2.2  # parts + row matrix, headroom
    args.folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.folder).free
    if free < needed:
        sys.exit(
            f"error: {args.folder} has {free / 1e9:.1f} GB free; this benchmark needs {needed / 1e9:.1f} GB"
        )
    results = {}
    for rows in args.rows:
        folder = args.folder / f"rows{rows}"
        shutil.rmtree(folder, ignore_errors=True)
        write_knowledge(folder / "teacher", rows, args.feature_dim)
        for way in ("disk", "memory"):
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(rows), way, "--folder", str(folder)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[rows, way] = json.loads(output.strip().splitlines()[-1])
            print(json.dumps(results[rows, way]), flush=True)
        shutil.rmtree(folder)
    small, large = args.rows[0], args.rows[-1]
    for way in ("disk", "memory"):
        ratio = results[large, way]["peak_rss_mb"] / results[small, way]["peak_rss_mb"]
        print(
            f"{way}: peak RSS {results[small, way]['peak_rss_mb']:.0f} MB at {small} rows, "
            f"{results[large, way]['peak_rss_mb']:.0f} MB at {large} rows; ratio {ratio:.2f}"
            + (" (target <= 1.2)" if way == "disk" else " (before: knowledge in memory)")
        )


if __name__ == "__main__":
    main()
