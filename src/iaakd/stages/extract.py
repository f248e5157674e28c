"""Stage `extract@<backbone>`: MLSP features of every labelled image into data/features/<backbone>/."""

from __future__ import annotations

import pandas as pd

from iaakd.devices import PRECISIONS
from iaakd.extract import DECODERS, ExtractConfig, Extractor, extract_features, write_features
from iaakd.features import PartWriter
from iaakd.models import resolve_name
from iaakd.stages import common


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
    common.require(
        config.decode in DECODERS,
        f"params: features.decode='{config.decode}' is not one of {', '.join(DECODERS)}",
    )
    full_name = resolve_name(backbone)
    common.require(
        full_name == backbone,
        f"params: features.backbones must use full names: '{backbone}' is '{full_name}'",
    )
    device = common.device_from_env()
    extractor = Extractor.create(config, device)
    labels = pd.read_parquet(common.LABELS, columns=["image_id", "path", "width", "height"])
    metadata = {
        "backbone": extractor.full_name,
        "weights": extractor.weights.as_dict(),
        "input_mode": "full" if config.input_size is None else f"resize{config.input_size}",
        "precision": config.precision,
        "decode": config.decode,
        "storage": "float16",
        "level_dims": extractor.mlsp.level_dims,
    }
    writer = PartWriter(common.FEATURES_DIR / backbone)
    batches = extract_features(
        extractor,
        labels["path"].tolist(),
        list(zip(labels["width"], labels["height"], strict=True)),
        config,
        device,
        num_workers=common.num_workers_from_env(),
        progress=common.show_progress(),
    )
    write_features(batches, labels["image_id"].to_numpy(), writer, metadata)
    writer.commit()
    print(
        f"extract {backbone}: {len(labels)} images, {extractor.mlsp.dim} dimensions ({extractor.weights.source} weights)"
    )


if __name__ == "__main__":
    common.run(main)
