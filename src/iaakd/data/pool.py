"""CSKD's pool of unlabelled images: made (more demo photos, without votes) or scanned (any folders of
photos, the multi-source pool), with every copy of a labelled image dropped.

The pool never holds a validation or test image, nor a copy of any labelled one: a candidate whose content
hash equals a labelled image's is an exact copy; one that :mod:`iaakd.data.copies` finds to be a flipped,
cropped, rotated, rescaled, re-encoded or letterboxed version of a labelled image is a near copy. Copies
within the pool are dropped the same way, the first in the pool's order kept. Every drop is counted and
listed with the image it copies.

Pool ids carry the prefix ``pool-`` (``pool-demo-000000`` ..., ``pool-<content hash>`` for folders), so they
never collide with AVA's numeric ids or a CSV's ids; a labelled id with that prefix is refused. Nothing here
reads params.yaml or knows of DVC.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from iaakd.config import Rule, param
from iaakd.data.copies import CopyConfig, embeddings, find_copies
from iaakd.data.demo import CATEGORIES, FACTORS, SIZES, draw_factors, latent_scores, render_image
from iaakd.data.scan import IMAGE_SUFFIXES, scan_images, usable_images
from iaakd.errors import UserError
from iaakd.features import write_parquet_atomic

POOL_SOURCES = ("none", "demo", "folders")
ID_PREFIX = "pool-"
DEMO_ID_PREFIX = ID_PREFIX + "demo-"
# A different random stream from the labelled demo's (data.seed) and the pretraining pool's, whatever the seeds
DEMO_STREAM = 15
MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # ID_PREFIX ...
        ("path", pa.string()),  # demo: relative to the repository root; folders: as found
        ("width", pa.int32()),  # upright (after EXIF orientation), as iaakd.data.images.load_rgb decodes it
        ("height", pa.int32()),
        ("file_hash", pa.string()),  # the content hash of iaakd.data.scan, as in labels.parquet
        ("source", pa.string()),  # demo | folders
    ]
)
MANIFEST_COLUMNS = MANIFEST_SCHEMA.names
# kind: one of DROP_KINDS; reason: the scan's problem, or how close the copy is; match: the labelled image_id,
# or the pool file, it copies
DROPPED_COLUMNS = ["file", "kind", "reason", "match"]
DROP_KINDS = ("bad_file", "exact_copy_of_labelled", "exact_copy_within_pool", "near_copy_of_labelled",
              "near_copy_within_pool")  # fmt: skip


@dataclass(frozen=True)
class PoolConfig:
    """Where the unlabelled pool comes from (params.yaml's ``unlabeled``)."""

    source: str = param("none", choices=POOL_SOURCES)  # none: an empty pool
    num_images: int = param(200, minimum=2)  # demo: images made (their latent scores standardised over them)
    folders: list[str] = field(default_factory=list)  # folders: scanned recursively, bad files listed
    seed: int = 1  # demo: the pool generator's seed (a stream of its own: never the labelled demo's images)
    copies: CopyConfig = field(default_factory=CopyConfig)  # how near copies of labelled images are found

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            lambda c: c.source != "folders" or bool(c.folders),
            "{prefix}.source=folders needs {prefix}.folders (a list of folders of photos)",
        ),
    )


@dataclass
class Pool:
    """The pool: its manifest (:data:`MANIFEST_COLUMNS`), the candidates left out (:data:`DROPPED_COLUMNS`),
    counts of each, and for the demo the known latent scores (for evaluation only, never for training)."""

    manifest: pd.DataFrame
    dropped: pd.DataFrame
    counts: dict[str, int]
    latent_scores: pd.DataFrame | None = None


def empty_manifest() -> pd.DataFrame:
    """A manifest with no rows and the manifest's columns and types."""
    return MANIFEST_SCHEMA.empty_table().to_pandas()


def manifest_table(manifest: pd.DataFrame) -> pa.Table:
    """The manifest as an arrow table of :data:`MANIFEST_SCHEMA` (columns in order, ints as int32)."""
    return pa.Table.from_pandas(manifest[MANIFEST_COLUMNS], schema=MANIFEST_SCHEMA, preserve_index=False)


def write_manifest(manifest: pd.DataFrame, path: Path) -> None:
    write_parquet_atomic(manifest_table(manifest), Path(path))


def read_manifest(path: Path) -> pd.DataFrame:
    """The pool's manifest; a missing file, or one without the manifest's columns, is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found (run the pool stage)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"{path}: not a readable parquet file ({error})") from None
    missing = [name for name in MANIFEST_COLUMNS if name not in table.column_names]
    if missing:
        raise UserError(f"{path}: not a pool manifest (no column {', '.join(missing)}; rerun the pool stage)")
    return table.select(MANIFEST_COLUMNS).cast(MANIFEST_SCHEMA).to_pandas()


def empty_pool(source: str = "none") -> Pool:
    return Pool(empty_manifest(), pd.DataFrame(columns=DROPPED_COLUMNS), count_drops(source, 0, []))


# --- candidates --------------------------------------------------------------------------------------


def demo_id(number: int) -> str:
    return f"{DEMO_ID_PREFIX}{number:06d}"


def make_demo_images(folder: Path, num_images: int, seed: int, progress: bool = False) -> pd.DataFrame:
    """``num_images`` demo photos as ``<id>.jpg`` in ``folder``, drawn as the labelled demo's are (AVA's 8
    categories, its sizes, every degradation factor, the JPEG quality a factor) from a stream of their own
    (``seed``), and no votes. Returns one row per image: image_id, file, category, latent_score (the
    image-explained score, standardised over these images as the labelled demo's is over its own) and the
    factors; the scores are for evaluation only."""
    rng = np.random.default_rng([seed, DEMO_STREAM])
    names = list(CATEGORIES)
    categories = [names[i % len(names)] for i in rng.permutation(num_images)]
    factors = [draw_factors(rng) for _ in range(num_images)]
    sizes = [SIZES[int(i)] for i in rng.integers(0, len(SIZES), num_images)]
    explained, _ = latent_scores(categories, factors, rng)  # the observed-target half is for votes: unused
    image_seeds = rng.integers(0, 2**63 - 1, num_images)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(num_images), desc="pool demo images", disable=not progress):
        image = render_image(np.random.default_rng(int(image_seeds[i])), categories[i], sizes[i], factors[i])
        file = folder / f"{demo_id(i)}.jpg"
        image.save(file, quality=factors[i].jpeg)
        rows.append({"image_id": demo_id(i), "file": str(file), "category": categories[i],
                     "latent_score": float(explained[i]),
                     **{name: float(getattr(factors[i], name)) for name in FACTORS}})  # fmt: skip
    return pd.DataFrame(rows, columns=["image_id", "file", "category", "latent_score", *FACTORS])


def folder_files(folders: Sequence[str | Path]) -> list[str]:
    """Every image file (by suffix, :data:`iaakd.data.scan.IMAGE_SUFFIXES`) under each folder, recursively:
    folder by folder in the order given, sorted within each, each file once. A folder that does not exist
    is one line naming it."""
    files, seen = [], set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise UserError(f"unlabelled pool: {folder} is not a folder")
        for path in sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        ):
            if (real := os.path.realpath(path)) not in seen:  # overlapping folders: a file counts once
                seen.add(real)
                files.append(str(path))
    return files


def scanned_candidates(
    files: Sequence[str], source: str, scan_cache: Path | None = None, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable candidates: path, width, height, file_hash, source; bad files: file, reason, match) after a full
    decode of each file (:func:`iaakd.data.scan.scan_images`, cached in ``scan_cache``)."""
    scans = scan_images(list(files), scan_cache, progress=progress)
    reasons = usable_images(scans, "decode")  # PNG, grey, CMYK, EXIF-rotated: decoded upright RGB
    bad = reasons.notna().to_numpy()
    bad_files = pd.DataFrame({"file": scans["path"][bad].to_numpy(), "kind": "bad_file",
                              "reason": reasons[bad].to_numpy(), "match": None}, columns=DROPPED_COLUMNS)  # fmt: skip
    usable = scans.loc[~bad, ["path", "width", "height", "file_hash"]].reset_index(drop=True)
    usable["source"] = source
    return usable, bad_files


# --- copies ----------------------------------------------------------------------------------------


def require_distinct_ids(labelled_ids: Sequence[str], labels_name: str = "the labels") -> None:
    """Pool ids can never collide with labelled ones: a labelled id with the pool's prefix is refused."""
    clashing = [str(image_id) for image_id in labelled_ids if str(image_id).startswith(ID_PREFIX)]
    if clashing:
        raise UserError(
            f"{labels_name}: image id '{clashing[0]}' starts with '{ID_PREFIX}', the prefix kept for the "
            f"unlabelled pool's ids ({len(clashing)} such ids); rename them"
        )


def count_drops(source: str, candidates: int, kinds: Sequence[str]) -> dict:
    """The pool's counts: candidates (images made, or files scanned), what was dropped by kind, and kept."""
    dropped = pd.Series(list(kinds), dtype=object).value_counts()

    def count(kind: str) -> int:
        return int(dropped.get(kind, 0))

    return {
        "source": source,
        "candidates": candidates,
        "bad_files": count("bad_file"),
        "exact_copies_dropped": {"of_labelled": count("exact_copy_of_labelled"),
                                 "within_pool": count("exact_copy_within_pool")},
        "near_copies_dropped": {"of_labelled": count("near_copy_of_labelled"),
                                "within_pool": count("near_copy_within_pool")},
        "kept": candidates - len(kinds),
    }  # fmt: skip


def drop_copies(
    candidates: pd.DataFrame,
    labelled: pd.DataFrame,
    config: CopyConfig,
    embedding_cache: Path | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the candidates that copy no labelled image and no earlier candidate, the dropped ones:
    :data:`DROPPED_COLUMNS`). ``candidates``: path, file_hash and any other columns, in the pool's order; ``labelled``:
    image_id, path, file_hash of every labelled image (train, validation and test alike).

    Exact copies (equal content hash) go first, without a decode; then each remaining candidate is checked
    against the labelled images, then against the earlier candidates, by :func:`iaakd.data.copies.find_copies`."""
    candidates = candidates.reset_index(drop=True)
    dropped: list[dict] = []

    def drop(row: int, kind: str, reason: str, match: str) -> None:
        dropped.append(
            {"file": candidates.at[int(row), "path"], "kind": kind, "reason": reason, "match": match}
        )

    labelled_of_hash = dict(zip(labelled["file_hash"], labelled["image_id"], strict=True))
    exact = candidates["file_hash"].map(labelled_of_hash)
    first_of_hash: dict[str, int] = {}
    for row, (content, labelled_id) in enumerate(zip(candidates["file_hash"], exact, strict=True)):
        if not pd.isna(labelled_id):
            drop(row, "exact_copy_of_labelled", "the same content", str(labelled_id))
        elif (first := first_of_hash.setdefault(content, row)) != row:
            drop(row, "exact_copy_within_pool", "the same content", candidates.at[first, "path"])
    remaining = np.array(sorted(first_of_hash.values()), dtype=np.int64)

    if len(remaining):
        pool_paths = candidates["path"].iloc[remaining].tolist()
        labelled_embeddings = embeddings(labelled["path"].tolist(), labelled["file_hash"].tolist(),
                                         embedding_cache, progress, "labelled images")  # fmt: skip
        pool_embeddings = embeddings(pool_paths, candidates["file_hash"].iloc[remaining].tolist(),
                                     embedding_cache, progress, "pool images")  # fmt: skip
        of_labelled = find_copies(pool_paths, pool_embeddings, labelled["path"].tolist(), labelled_embeddings,
                                  config, progress=progress)  # fmt: skip
        near = of_labelled.match >= 0
        for row, agreed, index in zip(
            remaining[near], of_labelled.inliers[near], of_labelled.match[near], strict=True
        ):
            drop(
                row,
                "near_copy_of_labelled",
                f"{agreed} matching keypoints",
                str(labelled["image_id"].iloc[index]),
            )
        survivors = remaining[~near]
        survivor_paths = [path for path, copied in zip(pool_paths, near, strict=True) if not copied]
        survivor_embeddings = pool_embeddings[~near]
        within = find_copies(survivor_paths, survivor_embeddings, survivor_paths, survivor_embeddings, config,
                             earlier_only=True, progress=progress)  # fmt: skip
        for position in np.flatnonzero(within.match >= 0):
            drop(survivors[position], "near_copy_within_pool", f"{within.inliers[position]} matching keypoints",
                 candidates.at[int(survivors[within.match[position]]), "path"])  # fmt: skip
        remaining = survivors[within.match < 0]
    return candidates.iloc[remaining].reset_index(drop=True), pd.DataFrame(dropped, columns=DROPPED_COLUMNS)


# --- the pool --------------------------------------------------------------------------------------


def demo_pool(
    config: PoolConfig,
    labelled: pd.DataFrame,
    folder: Path,
    recorded_folder: Path | None = None,
    embedding_cache: Path | None = None,
    progress: bool = False,
) -> Pool:
    """``config.num_images`` demo photos made into ``folder``, less copies of labelled images (their files
    removed); the manifest records each as ``recorded_folder/<id>.jpg`` (where the folder will be; default
    ``folder``)."""
    require_distinct_ids(labelled["image_id"].tolist())
    made = make_demo_images(Path(folder), config.num_images, config.seed, progress)
    candidates, bad = scanned_candidates(made["file"].tolist(), "demo", progress=False)
    if len(bad):  # the generator's own files: never expected, never silently lost
        raise UserError(
            f"unlabelled pool: made {bad['file'].iloc[0]}, which does not decode ({bad['reason'].iloc[0]})"
        )
    candidates.insert(0, "image_id", made["image_id"].to_numpy())
    kept, dropped = drop_copies(candidates, labelled, config.copies, embedding_cache, progress)
    for file in dropped["file"]:
        Path(file).unlink()
    recorded = Path(recorded_folder if recorded_folder is not None else folder)
    kept["path"] = [str(recorded / Path(path).name) for path in kept["path"]]
    dropped["file"] = [str(recorded / Path(path).name) for path in dropped["file"]]
    latent = made.drop(columns="file").set_index("image_id").loc[kept["image_id"]].reset_index()
    return Pool(kept[MANIFEST_COLUMNS], dropped, count_drops("demo", len(made), dropped["kind"]), latent)


def folder_pool(
    config: PoolConfig,
    labelled: pd.DataFrame,
    scan_cache: Path | None = None,
    embedding_cache: Path | None = None,
    progress: bool = False,
) -> Pool:
    """Every image file under ``config.folders``, less bad files (listed with their reasons) and copies;
    each kept image's id is ``pool-`` and its content hash (stable, wherever the file moves)."""
    require_distinct_ids(labelled["image_id"].tolist())
    files = folder_files(config.folders)
    candidates, bad = scanned_candidates(files, "folders", scan_cache, progress)
    kept, dropped = drop_copies(candidates, labelled, config.copies, embedding_cache, progress)
    kept.insert(0, "image_id", [ID_PREFIX + content for content in kept["file_hash"]])
    if len(bad):  # bad files first, then the copies
        dropped = pd.concat([bad, dropped], ignore_index=True) if len(dropped) else bad
    return Pool(kept[MANIFEST_COLUMNS], dropped, count_drops("folders", len(files), dropped["kind"]))
