"""Stage `extract@<backbone>`: MLSP features of every labelled image into data/features/<backbone>/."""

from __future__ import annotations

import shutil

import pandas as pd

from iaakd import distributed
from iaakd.checkpoints import fingerprint
from iaakd.devices import PRECISIONS
from iaakd.extract import DECODERS, ExtractConfig, Extractor, extract_to_parts
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
        ExtractConfig, {**features, "backbone": backbone}, "features", ignore=("backbones", "rows_per_part")
    )
    rows_per_part = common.check_type(features.get("rows_per_part", 4096), int, "features.rows_per_part")
    common.require(
        config.precision in PRECISIONS,
        f"params: features.precision='{config.precision}' is not one of {', '.join(PRECISIONS)}",
    )
    common.require_positive("features", batch_size=config.batch_size, rows_per_part=rows_per_part)
    common.require(
        config.decode in DECODERS,
        f"params: features.decode='{config.decode}' is not one of {', '.join(DECODERS)}",
    )
    full_name = resolve_name(backbone)
    common.require(
        full_name == backbone,
        f"params: features.backbones must use full names: '{backbone}' is '{full_name}'",
    )
    ranks, device = distributed.start(common.device_from_env())
    extractor = Extractor.create(config, device)
    labels = pd.read_parquet(common.LABELS, columns=["image_id", "path", "width", "height", "file_hash"])
    metadata = {
        "backbone": extractor.full_name,
        "weights": extractor.weights.as_dict(),
        "input_mode": "full" if config.input_size is None else f"resize{config.input_size}",
        "precision": config.precision,
        "decode": config.decode,
        "storage": "float16",
        "level_dims": extractor.mlsp.level_dims,
    }
    # Finished parts live outside DVC's outputs (DVC deletes those before a rerun), in a folder named by
    # everything that decides their content; a run with other inputs or params starts a new folder.
    run_key = fingerprint(
        {**metadata, "batch_size": config.batch_size, "rows_per_part": rows_per_part},
        labels["image_id"].tolist(),
        labels["file_hash"].tolist(),
        labels[["width", "height"]].to_numpy(),
    )
    work_root = common.WORK_DIR / "extract" / backbone
    if ranks.is_main:
        for stale in work_root.glob("*"):
            if stale.name != run_key:
                shutil.rmtree(stale)  # parts of other inputs or params can never be used again
    distributed.barrier(ranks)
    writer = PartWriter(common.FEATURES_DIR / backbone, work_dir=work_root / run_key)
    done_before, total = extract_to_parts(
        extractor,
        labels["path"].tolist(),
        list(zip(labels["width"], labels["height"], strict=True)),
        labels["image_id"].to_numpy(),
        config,
        device,
        writer,
        metadata,
        num_workers=common.num_workers_from_env(),
        progress=common.show_progress(),
        rows_per_part=rows_per_part,
        ranks=ranks,
    )
    distributed.barrier(ranks)  # every rank's parts are in the work folder
    if ranks.is_main:
        missing = [number for number in range(total) if not writer.has_part(number)]
        common.require(
            not missing, f"extract {backbone}: parts {missing[:5]} missing in {work_root / run_key}"
        )
        if done_before:
            print(
                f"extract {backbone}: resumed; {done_before} of {total} parts were already done in {work_root / run_key}"
            )
        writer.commit()
        print(
            f"extract {backbone}: {len(labels)} images, {extractor.mlsp.dim} dimensions "
            f"({extractor.weights.source} weights, {ranks.world} process{'es' if ranks.world > 1 else ''})"
        )
    distributed.finish(ranks)


if __name__ == "__main__":
    common.run(main, distributed=True)
