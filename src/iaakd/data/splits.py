"""Train / val / test assignment of image ids: the official AVA split, ILGnet's, and random folds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iaakd.data.ava import read_id_list
from iaakd.errors import UserError

SPLIT_NAMES = ("official", "ilgnet", "random")


@dataclass(frozen=True)
class SplitConfig:
    name: str = "official"
    seed: int = 0
    val_fraction: float = 0.1
    num_folds: int = 3
    fold: int = 0
    test_size: float = 0.2  # a fraction of the images, or a count when > 1


def _member(ids: np.ndarray, names: list[str] | np.ndarray) -> np.ndarray:
    """``np.isin`` for strings by hashing: numpy's own compares every pair of object strings (minutes on AVA)."""
    return pd.Index(ids).isin(set(names))


def _carve_validation(train_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.sort(train_ids))
    n_val = int(round(fraction * len(shuffled)))
    return shuffled[n_val:], shuffled[:n_val]


def make_split(
    image_ids: pd.Series, config: SplitConfig, test_list: Path | None = None, train_list: Path | None = None
) -> pd.DataFrame:
    """DataFrame (image_id, split) with split in {train, val, test}; ids named by a list but unlabelled are ignored.

    ``official`` and ``ilgnet`` take the test ids from ``test_list`` (``generic_test.jpgl``, ILGnet's val file);
    ``ilgnet`` also restricts training to ``train_list``. ``random`` draws ``num_folds`` disjoint test sets
    with ``seed`` and takes number ``fold``.
    """
    ids = np.sort(image_ids.astype(str).to_numpy())
    if config.name in ("official", "ilgnet"):
        if test_list is None:
            raise UserError(f"split.name={config.name} needs its test list")
        test_mask = _member(ids, read_id_list(test_list))
        train_pool = ids[~test_mask]
        if config.name == "ilgnet" and train_list is not None:
            train_pool = train_pool[_member(train_pool, read_id_list(train_list))]
        test_ids = ids[test_mask]
    elif config.name == "random":
        rng = np.random.default_rng(config.seed)
        n_test = int(config.test_size) if config.test_size > 1 else int(round(config.test_size * len(ids)))
        if n_test * config.num_folds > len(ids):
            raise UserError(
                f"split: {config.num_folds} disjoint test sets of {n_test} need {n_test * config.num_folds} images, "
                f"there are {len(ids)}"
            )
        if not 0 <= config.fold < config.num_folds:
            raise UserError(f"split.fold={config.fold} is outside 0..{config.num_folds - 1}")
        order = rng.permutation(ids)
        test_ids = order[config.fold * n_test : (config.fold + 1) * n_test]
        train_pool = ids[~_member(ids, test_ids)]
    else:
        raise UserError(f"split.name='{config.name}' is not one of {', '.join(SPLIT_NAMES)}")
    if len(test_ids) == 0:
        raise UserError(f"split.name={config.name}: no labelled image is in the test list")
    train_ids, val_ids = _carve_validation(train_pool, config.val_fraction, config.seed)
    frame = pd.concat(
        [
            pd.DataFrame({"image_id": part, "split": name})
            for name, part in (("train", train_ids), ("val", val_ids), ("test", test_ids))
        ],
        ignore_index=True,
    )
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)
