"""split.label_fraction: only that share of the training split keeps its labels; the rest are `unlabeled`,
which neither the distiller nor the student reads (they train on split == "train")."""

from __future__ import annotations

import pandas as pd
import pytest

from iaakd.config import build_config
from iaakd.data.splits import SplitConfig, make_split, with_label_fraction
from iaakd.errors import UserError

IDS = pd.Series([str(100000 + i) for i in range(400)])


def random_split(**changes) -> pd.DataFrame:
    config = SplitConfig(name="random", test_size=0.25, num_folds=2, val_fraction=0.1, **changes)
    return make_split(IDS, config).set_index("image_id")["split"]


def test_a_quarter_of_the_training_labels_are_kept_and_nothing_else_moves():
    full, quarter = random_split(), random_split(label_fraction=0.25)
    n_train = int((full == "train").sum())
    assert (quarter == "train").sum() == round(0.25 * n_train)
    assert (quarter == "unlabeled").sum() == n_train - round(0.25 * n_train)
    # the withheld ids are training ids; validation and test ids are those of the full split
    assert set(quarter.index[quarter.isin(["train", "unlabeled"])]) == set(full.index[full == "train"])
    for part in ("val", "test"):
        assert set(quarter.index[quarter == part]) == set(full.index[full == part])


def test_the_withheld_ids_are_drawn_with_the_split_seed():
    assert random_split(label_fraction=0.5).equals(random_split(label_fraction=0.5))
    one, other = random_split(label_fraction=0.5, seed=1), random_split(label_fraction=0.5, seed=2)
    assert set(one.index[one == "unlabeled"]) != set(other.index[other == "unlabeled"])


def test_the_default_withholds_nothing():
    assert "unlabeled" not in set(random_split())


@pytest.mark.parametrize("value", [0, -0.5, 1.5])
def test_a_label_fraction_outside_0_to_1_is_named(value):
    with pytest.raises(UserError, match=rf"split\.label_fraction={value}"):
        build_config(SplitConfig, {"label_fraction": value}, "split")


def test_a_result_script_withholds_the_same_ids_as_the_split_stage():
    """Scripts apply split.label_fraction to the pipeline's full split (with_label_fraction); drawing other
    ids than `dvc exp run -S split.label_fraction=...` would make their low-label rows another experiment."""
    full = make_split(IDS, SplitConfig(name="random", test_size=0.25, num_folds=2, val_fraction=0.1, seed=3))
    stage = random_split(label_fraction=0.8, seed=3)
    script = with_label_fraction(full, 0.8, seed=3).set_index("image_id")["split"]
    assert script.sort_index().equals(stage.sort_index())
    with pytest.raises(UserError, match="already withheld"):
        with_label_fraction(with_label_fraction(full, 0.8, seed=3), 0.5, seed=3)
