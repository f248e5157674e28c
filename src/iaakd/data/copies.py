"""Copies of labelled photos among unlabelled ones: a detector that survives flips, crops, rotations by 90°,
rescaling, re-encoding and letterboxing.

Two steps, as image-copy detection is usually done:

1. **Shortlist** by a global embedding: ``tf_efficientnet_lite0`` (the ImageNet weights packaged offline),
   globally pooled features of the image with uniform borders (letterboxes) trimmed, at 128 x 128 px. A
   reference image is embedded in its four rotations by 90° (the features barely move under a mirror or a
   crop), a query upright; a query's shortlist is the ``shortlist`` references of highest cosine similarity,
   each over its four rotations.
2. **Verify** each shortlisted pair geometrically: ORB keypoints (OpenCV) of both images at 480 px on the
   long side, matched with Lowe's ratio test, then a similarity transform (rotation, scale, shift) fitted by
   RANSAC; the query and its mirror image are both tried. A pair is a copy when at least ``min_inliers``
   matches agree with one transform: a crop, rescale or rotation of the same photo keeps hundreds, two
   different photos a handful. The embedding alone cannot decide: the demo's generated photos of one
   category are as close in it as a cropped copy (README "Copies of labelled images").

Embeddings are cached by content hash (one decode and forward pass per image, ever). Nothing here reads
params.yaml or knows of DVC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from iaakd.config import param
from iaakd.data.images import load_rgb
from iaakd.features import write_parquet_atomic

EMBEDDER = "tf_efficientnet_lite0.in1k"
EMBED_SIDE = 128
ROTATIONS = 4
KEYPOINT_SIDE = 480  # ORB on the image scaled to this long side
KEYPOINTS = 1000
RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 5.0
BORDER_TOLERANCE = 10  # a border row or column within this of the corner's colour (of 255) is letterbox
CACHE_VERSION = 1
CACHE_CHUNK = 256  # images embedded between two writes of the cache


@dataclass(frozen=True)
class CopyConfig:
    """How copies of labelled images are found (``unlabeled.copies``, ``pretrain.copies``)."""

    shortlist: int = param(8, minimum=1)  # references verified per query, the nearest by embedding
    # Geometrically consistent ORB matches that make a pair a copy. Measured (benchmarks/copy_detector.py,
    # README): copies of real photos keep about 126 or more, two different real photos at most about 11, two
    # generated demo photos up to 65 (they share the generator's shapes and textures).
    min_inliers: int = param(100, minimum=8)


def trim_borders(image: Image.Image, tolerance: int = BORDER_TOLERANCE) -> Image.Image:
    """``image`` without uniform borders of its top-left corner's colour (a letterbox or pillarbox); the
    whole image when it is all one colour."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    differs = np.abs(pixels - pixels[0, 0]).max(axis=2) > tolerance
    rows, columns = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if len(rows) == 0:
        return image
    return image.crop((int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1))


class Embedder:
    """The shortlist's embedding: lite0's pooled features of the trimmed image, L2-normalised, in four
    rotations (ROTATIONS x 1280 per image)."""

    def __init__(self) -> None:
        from iaakd.models.backbones import create_backbone, normalisation

        self.model, _ = create_backbone(EMBEDDER, "auto", num_classes=0)  # never random: an error offline
        self.model.eval()
        mean, std = normalisation(self.model)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def input(self, path: str) -> torch.Tensor:
        image = trim_borders(load_rgb(path)).resize((EMBED_SIDE, EMBED_SIDE), Image.Resampling.BILINEAR)
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
        return (tensor - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, paths: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """(len(paths), ROTATIONS, features) float32."""
        out = []
        for start in range(0, len(paths), batch_size):
            images = torch.stack([self.input(path) for path in paths[start : start + batch_size]])
            rotated = torch.stack([torch.rot90(images, k, (2, 3)) for k in range(ROTATIONS)], dim=1)
            features = self.model(rotated.flatten(0, 1)).view(len(images), ROTATIONS, -1)
            out.append(torch.nn.functional.normalize(features, dim=2).numpy())
        return np.concatenate(out) if out else np.zeros((0, ROTATIONS, 0), np.float32)


def embeddings(
    paths: Sequence[str],
    file_hashes: Sequence[str],
    cache_file: Path | None = None,
    progress: bool = False,
    what: str = "images",
) -> np.ndarray:
    """Each image's embeddings (n, ROTATIONS, features), computing only those whose content hash is not in
    ``cache_file`` (file_hash -> float16 bytes; rewritten when it grew)."""
    cached: dict[str, bytes] = {}
    if cache_file is not None and Path(cache_file).is_file():
        table = pq.read_table(cache_file)
        cached = dict(
            zip(table.column("file_hash").to_pylist(), table.column("embedding").to_pylist(), strict=True)
        )
    todo: dict[str, str] = {}
    for content, path in zip(file_hashes, paths, strict=True):
        if content not in cached:
            todo.setdefault(content, path)
    if todo:
        embedder, contents, files = Embedder(), list(todo), list(todo.values())
        with tqdm(total=len(files), desc=f"embeddings of {what}", unit="img", disable=not progress) as bar:
            for start in range(0, len(files), CACHE_CHUNK):
                values = embedder(files[start : start + CACHE_CHUNK])
                for content, value in zip(contents[start : start + CACHE_CHUNK], values, strict=True):
                    cached[content] = value.astype(np.float16).tobytes()
                bar.update(len(values))
                if cache_file is not None:  # kept as it grows: an interrupted run loses one chunk at most
                    table = pa.table({"file_hash": pa.array(list(cached), pa.string()),
                                      "embedding": pa.array(list(cached.values()), pa.binary())})  # fmt: skip
                    write_parquet_atomic(table, Path(cache_file))
    if not len(file_hashes):
        return np.zeros((0, ROTATIONS, 0), np.float32)
    stacked = np.stack([np.frombuffer(cached[content], dtype=np.float16) for content in file_hashes])
    return stacked.reshape(len(file_hashes), ROTATIONS, -1).astype(np.float32)


def embedding_cache_file(work_dir: Path) -> Path:
    """Where the copy detector's embeddings are kept between runs (outside DVC's outputs); named after what
    makes an embedding, so a change of any of it starts a new cache."""
    made_by = f"{CACHE_VERSION}-{EMBEDDER}-{EMBED_SIDE}-{ROTATIONS}-{BORDER_TOLERANCE}"
    return Path(work_dir) / f"copy-embeddings-{hashlib.sha256(made_by.encode()).hexdigest()[:12]}.parquet"


# --- verification ------------------------------------------------------------------------------------

Keypoints = tuple[np.ndarray, np.ndarray | None]  # (points n x 2, ORB descriptors n x 32 or None)


def keypoints(image: Image.Image) -> Keypoints:
    import cv2

    grey = trim_borders(image).convert("L")
    scale = KEYPOINT_SIDE / max(grey.size)
    grey = grey.resize(
        (max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.Resampling.BOX
    )
    found, descriptors = cv2.ORB_create(nfeatures=KEYPOINTS).detectAndCompute(np.asarray(grey), None)
    return np.float32([point.pt for point in found]).reshape(-1, 2), descriptors


def inliers(query: Keypoints, reference: Keypoints) -> int:
    """Matches between two images that one similarity transform explains (RANSAC)."""
    import cv2

    (query_points, query_descriptors), (reference_points, reference_descriptors) = query, reference
    if query_descriptors is None or reference_descriptors is None:
        return 0
    if len(query_descriptors) < 2 or len(reference_descriptors) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query_descriptors, reference_descriptors, k=2)
    good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance]
    if len(good) < 3:
        return 0
    source = query_points[[match.queryIdx for match in good]]
    target = reference_points[[match.trainIdx for match in good]]
    _, mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS
    )
    return int(mask.sum()) if mask is not None else 0


def copy_inliers(query: str, reference: str) -> int:
    """The most inliers between ``query`` (upright or mirrored) and ``reference``."""
    image = load_rgb(query)
    target = keypoints(load_rgb(reference))
    return max(inliers(keypoints(image), target), inliers(keypoints(ImageOps.mirror(image)), target))


@dataclass
class Copies:
    """For each query: the index of the reference it copies (-1: none) and the inliers that say so."""

    match: np.ndarray
    inliers: np.ndarray


def find_copies(
    query_paths: Sequence[str],
    query_embeddings: np.ndarray,
    reference_paths: Sequence[str],
    reference_embeddings: np.ndarray,
    config: CopyConfig,
    earlier_only: bool = False,
    progress: bool = False,
) -> Copies:
    """Which references each query copies: its ``config.shortlist`` nearest references by embedding,
    verified by ORB matches. ``earlier_only``: queries and references are the same list, and a query is
    compared with the references before it only (a copy within one pool)."""
    count = len(query_paths)
    found = Copies(np.full(count, -1, dtype=np.int64), np.zeros(count, dtype=np.int64))
    if count == 0 or len(reference_paths) == 0:
        return found
    shortlists = nearest(query_embeddings[:, 0], reference_embeddings, config.shortlist, earlier_only)
    reference_keypoints: dict[int, Keypoints] = {}
    for row in tqdm(range(count), desc="copies verified", unit="img", disable=not progress):
        candidates = [int(index) for index in shortlists[row] if index >= 0]
        if earlier_only:  # compared with kept earlier images only (a dropped one's slot stays unused)
            candidates = [index for index in candidates if found.match[index] < 0]
        if not candidates:
            continue
        image = load_rgb(query_paths[row])
        mine = (keypoints(image), keypoints(ImageOps.mirror(image)))
        if earlier_only:  # one list: this image is a later row's reference, its keypoints found once
            reference_keypoints.setdefault(row, mine[0])
        for index in candidates:
            if index not in reference_keypoints:
                reference_keypoints[index] = keypoints(load_rgb(reference_paths[index]))
            agreed = max(inliers(side, reference_keypoints[index]) for side in mine)
            if agreed >= config.min_inliers and agreed > found.inliers[row]:
                found.match[row], found.inliers[row] = index, agreed
    return found


SIMILARITY_CELLS = 1 << 24  # query x reference x rotation similarities computed at a time (64 MiB)


def nearest(
    queries: np.ndarray, references: np.ndarray, count: int, earlier_only: bool = False
) -> np.ndarray:
    """For each query (n x features), the indices of the ``count`` references (m x ROTATIONS x features) of
    highest cosine similarity over their rotations, best first; -1 pads where there are fewer
    (``earlier_only``: only references before the query's own index)."""
    flat = references.reshape(-1, references.shape[-1])
    rows = max(1, SIMILARITY_CELLS // max(len(flat), 1))
    shortlists = np.full((len(queries), count), -1, dtype=np.int64)
    for start in range(0, len(queries), rows):
        stop = min(start + rows, len(queries))
        similarity = (queries[start:stop] @ flat.T).reshape(stop - start, len(references), -1).max(axis=2)
        if earlier_only:
            similarity[np.arange(len(references))[None, :] >= np.arange(start, stop)[:, None]] = -np.inf
        top = min(count, similarity.shape[1])
        head = np.argpartition(-similarity, top - 1, axis=1)[:, :top]  # the best, unordered, then ordered
        order = np.take_along_axis(
            head, np.argsort(-np.take_along_axis(similarity, head, axis=1), axis=1), axis=1
        )
        valid = np.isfinite(np.take_along_axis(similarity, order, axis=1))
        shortlists[start:stop, : order.shape[1]] = np.where(valid, order, -1)
    return shortlists
