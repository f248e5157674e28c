"""A no-op `dvc repro` against `dvc status` on the same repository, with AVA-sized tables (synthetic).

Target (issue 4): a no-op `dvc repro` with 255k-row labels and split files takes at most 1.5 x `dvc status`.
The repository is a copy of this project's dvc.yaml and params.yaml whose stage commands are replaced by
stubs that write outputs of real size, so DVC's own bookkeeping is what is measured.

    python benchmarks/noop_repro.py [--rows 255502] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DVC = str(Path(sys.executable).with_name("dvc"))
PIPELINE = """
stages:
  dataset:
    cmd: python make_tables.py {rows}
    deps: [make_tables.py]
    params: [data.source]
    outs: [data/labels.parquet]
  split:
    cmd: python -c "import shutil; shutil.copy('data/labels.parquet', 'data/split.parquet')"
    deps: [data/labels.parquet]
    params: [split.name]
    outs: [data/split.parquet]
  evaluate:
    cmd: python write_metrics.py
    deps: [data/labels.parquet, data/split.parquet, write_metrics.py]
    metrics:
      - metrics.json:
          cache: false
"""
MAKE_TABLES = """
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
rows = int(sys.argv[1])
rng = np.random.default_rng(0)
votes = rng.integers(0, 60, (rows, 10)).astype(np.int32)
table = pa.table({"image_id": [str(100000 + i) for i in range(rows)],
                  "path": [f"images/{100000 + i}.jpg" for i in range(rows)],
                  "votes": pa.FixedSizeListArray.from_arrays(pa.array(votes.reshape(-1)), 10),
                  "file_hash": [f"{i:032x}" for i in range(rows)]})
pq.write_table(table, "data/labels.parquet")
"""


def timed(repo: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([DVC, *args], cwd=repo, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=255502)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "data").mkdir()
        (repo / "dvc.yaml").write_text(PIPELINE.format(rows=args.rows))
        (repo / "params.yaml").write_text("data:\n  source: ava\nsplit:\n  name: official\n")
        (repo / "make_tables.py").write_text(MAKE_TABLES)
        (repo / "write_metrics.py").write_text(
            "import json\njson.dump({'n': 1}, open('metrics.json', 'w'))\n"
        )
        env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        os.environ["PATH"] = env_path
        for command in (
            ["git", "init", "-q"],
            [DVC, "init", "-q"],
            [DVC, "config", "core.analytics", "false"],
            [DVC, "repro", "-q"],
        ):
            subprocess.run(command, cwd=repo, check=True, capture_output=True)
        status = [timed(repo, "status") for _ in range(args.repeats)]
        repro = [timed(repo, "repro") for _ in range(args.repeats)]
        size = (repo / "data" / "labels.parquet").stat().st_size
        shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    result = {
        "rows": args.rows,
        "labels_bytes": size,
        "dvc_status_s": round(min(status), 3),
        "noop_repro_s": round(min(repro), 3),
        "ratio": round(min(repro) / min(status), 3),
        "repeats": args.repeats,
        "note": "best of repeats",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
