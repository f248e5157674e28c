"""distiller.out_of_fold: a training image's knowledge comes from a distiller that never saw it."""

from __future__ import annotations

import numpy as np
import torch

from iaakd.feature_rows import ArrayRows, RowSubset
from iaakd.teacher import (
    FULL,
    DistillerConfig,
    assign_folds,
    iter_out_of_fold_knowledge,
    predict_output,
    train_distiller,
    train_fold_distillers,
)

CONFIG = DistillerConfig(hidden=[8, 4], dropout=0.0, epochs=3, batch_size=8, lr=1e-2, out_of_fold=3, seed=1)


def data(n: int = 60, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    targets = rng.dirichlet(np.ones(10), size=n).astype(np.float32)
    return features, targets


def test_folds_cover_every_row_once_in_near_equal_parts():
    folds = assign_folds(20, 3, seed=0)
    assert sorted(np.bincount(folds)) == [6, 7, 7]
    assert not np.array_equal(folds, assign_folds(20, 3, seed=1))
    assert np.array_equal(folds, assign_folds(20, 3, seed=0))


def test_each_fold_distiller_is_trained_without_its_fold():
    """Fold distiller k equals a distiller trained on the other folds' rows alone: so it never saw fold k."""
    features, targets = data()
    train, val = ArrayRows(features[:48]), ArrayRows(features[48:])
    folds, models = train_fold_distillers(train, targets[:48], val, targets[48:], CONFIG, progress=False)
    assert len(models) == 3 and sorted(set(folds)) == [0, 1, 2]
    for k, model in enumerate(models):
        outside = np.flatnonzero(folds != k)
        alone, _ = train_distiller(features[:48][outside], targets[:48][outside], features[48:], targets[48:], CONFIG,
                                   progress=False)  # fmt: skip
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), alone.state_dict().values(), strict=True)
        )


def test_out_of_fold_knowledge_comes_from_the_distiller_that_did_not_see_the_row():
    features, targets = data()
    train = ArrayRows(features[:48])
    full, _ = train_distiller(
        features[:48], targets[:48], features[48:], targets[48:], CONFIG, progress=False
    )
    folds, models = train_fold_distillers(train, targets[:48], ArrayRows(features[48:]), targets[48:], CONFIG,
                                          progress=False)  # fmt: skip
    fold_of_row = np.concatenate([folds, np.full(12, FULL)])  # validation rows: the full distiller
    for fold_feature in (False, True):
        chunks = list(
            iter_out_of_fold_knowledge(full, models, fold_of_row, features, fold_feature, batch_size=7)
        )
        output, feature, recorded = (np.concatenate(part) for part in zip(*chunks, strict=True))
        assert np.array_equal(recorded, fold_of_row)
        for k, model in enumerate(models):
            mine = np.flatnonzero(fold_of_row == k)
            np.testing.assert_allclose(output[mine], predict_output(model, features[mine]), rtol=1e-6)
            expected_feature = (model if fold_feature else full)(torch.from_numpy(features[mine]))[1].detach()
            np.testing.assert_allclose(feature[mine], expected_feature.numpy(), rtol=1e-5, atol=1e-6)
        rest = np.flatnonzero(fold_of_row == FULL)
        np.testing.assert_allclose(output[rest], predict_output(full, features[rest]), rtol=1e-6)
        # and a fold model's output differs from the full one's: the test can tell them apart
        assert not np.allclose(
            output[fold_of_row == 0], predict_output(full, RowSubset(train, np.flatnonzero(folds == 0)))
        )
