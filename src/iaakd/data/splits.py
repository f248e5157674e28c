"""Train / val / test assignment of image ids: the official AVA split, ILGnet's, and random folds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from iaakd.config import Rule, param
from iaakd.data.ava import read_id_list
from iaakd.errors import UserError

SPLIT_NAMES = ("official", "ilgnet", "random")


@dataclass(frozen=True)
class SplitConfig:
    name: str = param("official", choices=SPLIT_NAMES)
    seed: int = 0
    val_fraction: float = param(0.1, minimum=0, below=1)
    num_folds: int = param(3, minimum=1)
    fold: int = param(0, minimum=0)
    test_size: float = param(0.2, above=0)  # a fraction of the images, or a count when > 1
    label_fraction: float = param(
        1.0, above=0, maximum=1
    )  # share of the training split that keeps its labels

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(lambda c: c.fold < c.num_folds, "{prefix}.fold={fold} must be < {prefix}.num_folds={num_folds}"),
    )


def _member(ids: np.ndarray, names: list[str] | np.ndarray) -> np.ndarray:
    """``np.isin`` for strings by hashing: numpy's own compares every pair of object strings (minutes on AVA)."""
    return pd.Index(ids).isin(set(names))


def _carve_validation(train_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.sort(train_ids))
    n_val = int(round(fraction * len(shuffled)))
    return shuffled[n_val:], shuffled[:n_val]


def _withhold_labels(train_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training ids that keep their labels, those whose labels are withheld): ``fraction`` of them, at least
    one, drawn with ``seed`` from a stream of its own, so the validation ids do not move with it."""
    if fraction >= 1:
        return train_ids, train_ids[:0]
    shuffled = np.random.default_rng([seed, 1]).permutation(np.sort(train_ids))
    n_kept = max(1, int(round(fraction * len(shuffled))))
    return shuffled[:n_kept], shuffled[n_kept:]


# Where the ILGnet split's lists are, in order of preference: the file names this project's demo writes, and
# the layout of the ILGnet repository itself (github.com/BestiVictory/ILGnet: data/AVA1/{train,val}.txt,
# "<id>.jpg <label>" per line), so that split.ilgnet_dir can name a clone of it.
ILGNET_LAYOUTS = (
    (Path("AVA1_train.txt"), Path("AVA1_val.txt")),
    (Path("data/AVA1/train.txt"), Path("data/AVA1/val.txt")),
)


def ilgnet_lists(folder: Path) -> tuple[Path, Path]:
    """(training list, test list) of the ILGnet split in ``folder``, in either of ILGNET_LAYOUTS; neither is
    one line naming the files looked for."""
    for train, test in ILGNET_LAYOUTS:
        if (folder / train).is_file() and (folder / test).is_file():
            return folder / train, folder / test
    looked_for = " or ".join(f"{train} and {test}" for train, test in ILGNET_LAYOUTS)
    raise UserError(f"split.name=ilgnet: {folder} has neither {looked_for} (split.ilgnet_dir)")


def with_label_fraction(split: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """``split`` (image_id, split) with the labels of all but ``fraction`` of its training images withheld
    (marked ``unlabeled``): the ids :func:`make_split` withholds with ``label_fraction`` and ``seed``, for a
    split made with label_fraction 1."""
    if (split["split"] == "unlabeled").any():
        raise UserError(
            "split: labels are already withheld (split.label_fraction < 1); start from a full split"
        )
    train = split["split"] == "train"
    _, withheld = _withhold_labels(split.loc[train, "image_id"].to_numpy(), fraction, seed)
    marked = split.copy()
    marked.loc[marked["image_id"].isin(set(withheld)), "split"] = "unlabeled"
    return marked


def make_split(
    image_ids: pd.Series, config: SplitConfig, test_list: Path | None = None, train_list: Path | None = None
) -> pd.DataFrame:
    """DataFrame (image_id, split) with split in {train, val, test, unlabeled}; ids named by a list but
    unlabelled are ignored. ``unlabeled``: training images whose labels are withheld
    (``label_fraction`` < 1); neither the distiller nor the student sees their labels.

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
    train_ids, withheld_ids = _withhold_labels(train_ids, config.label_fraction, config.seed)
    parts = (("train", train_ids), ("val", val_ids), ("test", test_ids), ("unlabeled", withheld_ids))
    frame = pd.concat(
        [
            pd.DataFrame({"image_id": part, "split": name})
            for name, part in parts
            if len(part) or name != "unlabeled"
        ],
        ignore_index=True,
    )
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)
