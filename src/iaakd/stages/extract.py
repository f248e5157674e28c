"""Stage `extract@<backbone>`: MLSP features of every labelled image into data/features/<backbone>/."""

from __future__ import annotations

import importlib.metadata
import shutil

import pandas as pd
import PIL
import timm
import torch

from iaakd import distributed
from iaakd.checkpoints import fingerprint
from iaakd.errors import UserError
from iaakd.extract import ExtractConfig, Extractor, extract_to_parts
from iaakd.features import PartWriter
from iaakd.models import resolve_name
from iaakd.stages import common


def device_description(device: torch.device) -> str:
    """The kind of device, and for a GPU its model: the same network gives other last bits elsewhere."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def resume_key(
    metadata: dict, config: ExtractConfig, rows_per_part: int, device: torch.device, labels: pd.DataFrame
) -> str:
    """The name of the work folder a run resumes from: everything that changes a part's numbers (the
    metadata's backbone, weights, input mode, precision and decoder; the memory format, the device, the
    libraries that decode and compute; the batches and parts; the images), so a resumed run never mixes
    parts made under other settings. The device's index is left out: every rank of a run shares it."""
    settings = {
        **metadata,
        "batch_size": config.batch_size,
        "rows_per_part": rows_per_part,
        "channels_last": config.channels_last,
        "device": device_description(device),
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "pillow": PIL.__version__},
    }
    if config.decode == "gpu":
        settings["versions"]["torchvision"] = importlib.metadata.version("torchvision")
    return fingerprint(
        settings,
        labels["image_id"].tolist(),
        labels["file_hash"].tolist(),
        labels[["width", "height"]].to_numpy(),
    )


def extract_config(params: dict, backbone: str) -> tuple[ExtractConfig, int]:
    """The stage's configuration for ``backbone`` from params.yaml's ``features``, and its rows per part;
    a mistake is one line naming the key."""
    features = common.section(params, "features")
    if backbone not in features.get("backbones", []):
        raise UserError(f"params: '{backbone}' is not in features.backbones")
    config = common.build_config(
        ExtractConfig, {**features, "backbone": backbone}, "features", ignore=("backbones", "rows_per_part")
    )
    rows_per_part = common.check_type(features.get("rows_per_part", 4096), int, "features.rows_per_part")
    if rows_per_part <= 0:
        raise UserError(f"params: features.rows_per_part={rows_per_part} must be positive")
    full_name = resolve_name(backbone)
    if full_name != backbone:
        raise UserError(f"params: features.backbones must use full names: '{backbone}' is '{full_name}'")
    return config, rows_per_part


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise UserError("usage: python -m iaakd.stages.extract <backbone>")
    backbone = argv[0]
    config, rows_per_part = extract_config(common.load_params(), backbone)
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
    run_key = resume_key(metadata, config, rows_per_part, device, labels)
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
