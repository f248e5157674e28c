"""Stage `pool`: CSKD's unlabelled pool (data/pool/: manifest.parquet, skipped.csv; for the demo its images/ and
latent_scores.parquet), made (`unlabeled.source=demo`) or scanned (`folders`), with every copy of a labelled
image dropped, and its counts (metrics/pool.json). `none`, the default, writes an empty pool at once.

The pool has stages of its own, so a change of the pool never reruns `demo`, `dataset` or the labelled
images' extraction; the folder is put in place whole (built beside it, then renamed), never half-written."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa

from iaakd.data.copies import embedding_cache_file
from iaakd.data.pool import (
    DROPPED_COLUMNS,
    Pool,
    PoolConfig,
    demo_pool,
    empty_pool,
    folder_pool,
    write_manifest,
)
from iaakd.features import write_parquet_atomic
from iaakd.stages import common

POOL_DIR = common.POOL_DIR
MANIFEST = common.POOL_MANIFEST
LATENT_SCORES = POOL_DIR / "latent_scores.parquet"  # demo only: for evaluation, never for training
SKIPPED = POOL_DIR / "skipped.csv"  # bad files and dropped copies, with what each copies
METRICS = Path("metrics/pool.json")
SCAN_CACHE = common.WORK_DIR / "scan" / "pool-cache.parquet"
EMBEDDING_CACHE = embedding_cache_file(common.WORK_DIR / "copies")  # shared with the pretrain stage
LISTED_IN_METRICS = 50  # dropped files named in metrics/pool.json; all of them are in skipped.csv


def pool_config(params: dict) -> PoolConfig:
    """``unlabeled`` of params.yaml, validated; a folder that does not exist is one line naming its key."""
    config = common.build_config(PoolConfig, common.section(params, "unlabeled"), "unlabeled")
    if config.source == "folders":
        for number, folder in enumerate(config.folders):
            common.require(
                Path(folder).is_dir(), f"params: unlabeled.folders[{number}]={folder} is not a folder"
            )
    return config


def labelled_images() -> pd.DataFrame:
    """image_id, path and content hash of every labelled image (train, validation and test alike)."""
    common.require(common.LABELS.is_file(), f"{common.LABELS} not found (run the dataset stage)")
    return pd.read_parquet(common.LABELS, columns=["image_id", "path", "file_hash"])


def build(config: PoolConfig, staging: Path) -> tuple[Pool, int]:
    """The pool, its demo images made in ``staging/images`` (recorded where they will be); and the number of
    labelled images it was compared with."""
    if config.source == "none":
        return empty_pool(), 0
    labelled = labelled_images()
    progress = common.show_progress()
    if config.source == "demo":
        pool = demo_pool(config, labelled, staging / "images", POOL_DIR / "images", EMBEDDING_CACHE, progress)
    else:
        pool = folder_pool(config, labelled, SCAN_CACHE, EMBEDDING_CACHE, progress)
    return pool, len(labelled)


def write_pool(pool: Pool, staging: Path) -> None:
    """The pool's tables into ``staging``, then ``staging`` in place of data/pool (a rename)."""
    write_manifest(pool.manifest, staging / MANIFEST.name)
    if pool.latent_scores is not None:
        write_parquet_atomic(pa.Table.from_pandas(pool.latent_scores, preserve_index=False),
                             staging / LATENT_SCORES.name)  # fmt: skip
    pool.dropped[DROPPED_COLUMNS].to_csv(staging / SKIPPED.name, index=False)
    shutil.rmtree(POOL_DIR, ignore_errors=True)
    os.replace(staging, POOL_DIR)


def main(_argv: list[str]) -> None:
    config = pool_config(common.load_params())
    staging = POOL_DIR.with_name(POOL_DIR.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    staging.mkdir(parents=True)
    try:
        pool, compared = build(config, staging)
        write_pool(pool, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    common.write_metrics(
        METRICS,
        {
            **pool.counts,
            "copies": asdict(config.copies),
            "labelled_images_compared": compared,
            # the first few (a missing match is null); all of them in data/pool/skipped.csv
            "dropped_files": pool.dropped.head(LISTED_IN_METRICS).to_dict(orient="records"),
        },
        provenance=common.provenance(device=None, precision=None),  # no model ran
    )
    counts = pool.counts
    exact, near = sum(counts["exact_copies_dropped"].values()), sum(counts["near_copies_dropped"].values())
    print(
        f"pool ({config.source}): {counts['kept']} of {counts['candidates']} images kept; dropped "
        f"{counts['bad_files']} bad files, {exact} exact and {near} near copies (listed in {SKIPPED})"
    )


if __name__ == "__main__":
    common.run(main)
