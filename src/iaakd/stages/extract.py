"""Stage `extract@<backbone>`: MLSP features of every labelled image into data/features/<backbone>/."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iaakd.extract import PRECISIONS, ExtractConfig, Extractor, extract_features
from iaakd.features import PartWriter, make_table
from iaakd.stages import common

ROWS_PER_PART = 4096


def main(argv: list[str]) -> None:
    common.require(len(argv) == 1, "usage: python -m iaakd.stages.extract <backbone>")
    backbone = argv[0]
    features = common.section(common.load_params(), "features")
    common.require(
        backbone in features.get("backbones", []), f"params: '{backbone}' is not in features.backbones"
    )
    config = common.build_config(
        ExtractConfig, {**features, "backbone": backbone}, "features", ignore=("backbones",)
    )
    common.require(
        config.precision in PRECISIONS,
        f"params: features.precision='{config.precision}' is not one of {', '.join(PRECISIONS)}",
    )
    common.require(config.batch_size > 0, "params: features.batch_size must be positive")
    device = common.device_from_env()
    extractor = Extractor.create(config, device)
    common.require(
        extractor.full_name == backbone,
        f"params: features.backbones must use full names: '{backbone}' is '{extractor.full_name}'",
    )
    labels = pd.read_parquet(common.LABELS, columns=["image_id", "path", "width", "height"])
    metadata = {
        "backbone": extractor.full_name,
        "weights": extractor.weights.as_dict(),
        "input_mode": "full" if config.input_size is None else f"resize{config.input_size}",
        "precision": config.precision,
        "storage": "float16",
        "level_dims": extractor.mlsp.level_dims,
    }
    writer = PartWriter(common.FEATURES_DIR / backbone)
    ids, vectors, buffered = [], [], 0
    for indices, pooled in extract_features(
        extractor,
        labels["path"].tolist(),
        list(zip(labels["width"], labels["height"], strict=True)),
        config,
        device,
        num_workers=common.num_workers_from_env(),
        progress=common.show_progress(),
    ):
        ids.append(labels["image_id"].to_numpy()[indices])
        vectors.append(pooled)
        buffered += len(indices)
        if buffered >= ROWS_PER_PART:
            writer.write(
                make_table(
                    {"image_id": np.concatenate(ids).tolist(), "feature": np.concatenate(vectors)}, metadata
                )
            )
            ids, vectors, buffered = [], [], 0
    if buffered:
        writer.write(
            make_table(
                {"image_id": np.concatenate(ids).tolist(), "feature": np.concatenate(vectors)}, metadata
            )
        )
    writer.commit()
    print(
        f"extract {backbone}: {len(labels)} images, {extractor.mlsp.dim} dimensions ({extractor.weights.source} weights)"
    )


if __name__ == "__main__":
    common.run(main)
