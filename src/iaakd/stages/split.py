"""Stage `split`: data/split.parquet, image_id -> train / val / test (metrics/split.json: counts)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from iaakd.data.ava import read_id_list
from iaakd.data.splits import SplitConfig, ilgnet_lists, make_split
from iaakd.features import write_parquet_atomic
from iaakd.stages import common
from iaakd.stages.dataset import data_config, layout_from_params


def split_config(params: dict) -> SplitConfig:
    return common.build_config(SplitConfig, common.section(params, "split"), "split", ignore=("ilgnet_dir",))


def main(_argv: list[str]) -> None:
    params = common.load_params()
    split_params = common.section(params, "split")
    config = split_config(params)
    data = data_config(params)
    common.require(
        data.source != "csv" or config.name == "random",
        f"params: split.name={config.name} needs AVA's image lists; use split.name=random with data.source=csv",
    )
    labels = pd.read_parquet(common.LABELS, columns=["image_id"])
    test_list, train_list = None, None
    if data.source != "csv":
        layout = layout_from_params(data)
        if config.name == "official":
            test_list = layout.lists_dir / "generic_test.jpgl"
        elif (
            config.name == "ilgnet"
        ):  # a folder under data.root, or an absolute path (a clone of ILGnet's repo)
            train_list, test_list = ilgnet_lists(
                layout.root / str(split_params.get("ilgnet_dir", "ilgnet_split"))
            )
    split = make_split(labels["image_id"], config, test_list, train_list)
    write_parquet_atomic(pa.Table.from_pandas(split, preserve_index=False), common.SPLIT)
    counts = {name: int((split["split"] == name).sum()) for name in ("train", "val", "test", "unlabeled")}
    # Ids a list names that have no usable labelled image (most of AVA's lists, with a partial download)
    # are left out of the split; how many is said here and in metrics/split.json.
    unlabelled = 0
    if test_list is not None:
        unlabelled = len(set(read_id_list(test_list)) - set(labels["image_id"]))
    common.write_json(
        Path("metrics/split.json"),
        {"name": config.name, **counts, "test_list_ids_without_image": unlabelled},
    )
    print(
        f"split {config.name}: "
        + ", ".join(f"{name} {count}" for name, count in counts.items())
        + (
            f"; {unlabelled} ids of {test_list.name} have no usable labelled image (left out)"
            if unlabelled
            else ""
        )
    )


if __name__ == "__main__":
    common.run(main)
