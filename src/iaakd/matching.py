"""Matching (the paper's Table IV): score each test image by its nearest training image, by cosine
similarity in some feature space (the concatenated MLSP features, or the teacher feature f_t).

It asks how much of the aesthetic judgement the features carry by themselves, without a trained head.
Both sides are read a chunk at a time, so it also runs on AVA's 255k images from the row matrix.
"""

from __future__ import annotations

import numpy as np

from iaakd.feature_rows import FeatureRows, as_rows, iter_chunks


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def nearest_neighbours(
    train: np.ndarray | FeatureRows, test: np.ndarray | FeatureRows, chunk_rows: int = 4096
) -> np.ndarray:
    """For each test row, the index of the training row with the highest cosine similarity (the first
    one on ties)."""
    train, test = as_rows(train), as_rows(test)
    nearest = np.zeros(len(test), dtype=np.int64)
    for test_rows, test_block in iter_chunks(test, chunk_rows):
        test_unit = _unit_rows(test_block)
        best = np.full(len(test_rows), -np.inf)
        for train_rows, train_block in iter_chunks(train, chunk_rows):
            similarity = test_unit @ _unit_rows(train_block).T
            column = similarity.argmax(axis=1)
            value = similarity[np.arange(len(test_rows)), column]
            better = value > best
            best[better] = value[better]
            nearest[test_rows[better]] = train_rows[column[better]]
    return nearest
