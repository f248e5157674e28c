"""Stage `split`: data/split.parquet, image_id -> train / val / test."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from iaakd.data.splits import SplitConfig, make_split
from iaakd.features import write_parquet_atomic
from iaakd.stages import common
from iaakd.stages.dataset import layout_from_params


def main(_argv: list[str]) -> None:
    params = common.load_params()
    split_params = common.section(params, "split")
    config = common.build_config(SplitConfig, split_params, "split", ignore=("ilgnet_dir",))
    common.require(
        0 <= config.val_fraction < 1, f"params: split.val_fraction={config.val_fraction} must be in [0, 1)"
    )
    layout = layout_from_params(common.section(params, "data"))
    labels = pd.read_parquet(common.LABELS, columns=["image_id"])
    ilgnet_dir = layout.root / str(split_params.get("ilgnet_dir", "ilgnet_split"))
    test_list, train_list = {
        "official": (layout.lists_dir / "generic_test.jpgl", None),
        "ilgnet": (ilgnet_dir / "AVA1_val.txt", ilgnet_dir / "AVA1_train.txt"),
    }.get(config.name, (None, None))
    split = make_split(labels["image_id"], config, test_list, train_list)
    write_parquet_atomic(pa.Table.from_pandas(split, preserve_index=False), common.SPLIT)
    counts = split["split"].value_counts().to_dict()
    print(
        f"split {config.name}: "
        + ", ".join(f"{name} {counts.get(name, 0)}" for name in ("train", "val", "test"))
    )


if __name__ == "__main__":
    common.run(main)
