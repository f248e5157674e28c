"""Stage `extract@<backbone>`: MLSP features of every labelled image into data/features/<backbone>/; with
``--pool`` (stage `extract_pool@<backbone>`), of every image of CSKD's unlabelled pool (data/pool/manifest.parquet)
into data/pool_features/<backbone>/, in the same format, by the same code.

An empty pool, or one the student does not use (``student.unlabeled.enabled: false``), gives at once an empty
folder without loading the backbone: one part of no rows whose metadata holds ``empty`` (why) instead of the
backbone's details (:func:`iaakd.features.write_empty_features`)."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pandas as pd
import PIL
import torch

from iaakd import distributed
from iaakd.checkpoints import fingerprint
from iaakd.data.pool import read_manifest
from iaakd.errors import UserError
from iaakd.extract import ExtractConfig, Extractor, extract_to_parts
from iaakd.features import PartWriter, write_empty_features
from iaakd.models import resolve_name
from iaakd.stages import common

IMAGE_COLUMNS = ["image_id", "path", "width", "height", "file_hash"]


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
        "versions": {
            "torch": torch.__version__,
            "timm": importlib.metadata.version("timm"),
            "pillow": PIL.__version__,
        },
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
    weights = weights_file_of(features).get(backbone, features.get("weights", "auto"))
    config, rows_per_part = extraction_settings(params, backbone, weights)
    full_name = resolve_name(backbone)
    if full_name != backbone:
        raise UserError(f"params: features.backbones must use full names: '{backbone}' is '{full_name}'")
    return config, rows_per_part


def extraction_settings(params: dict, backbone: str, weights: str) -> tuple[ExtractConfig, int]:
    """params.yaml's ``features`` settings (input size, batches, precision, decoder, parts) for ``backbone``
    with ``weights``; a mistake is one line naming the key."""
    features = common.section(params, "features")
    config = common.build_config(
        ExtractConfig,
        {**features, "backbone": backbone, "weights": weights},
        "features",
        ignore=("backbones", "rows_per_part", "weights_files"),
    )
    rows_per_part = common.check_type(features.get("rows_per_part", 4096), int, "features.rows_per_part")
    if rows_per_part <= 0:
        raise UserError(f"params: features.rows_per_part={rows_per_part} must be positive")
    return config, rows_per_part


def weights_file_of(features: dict) -> dict[str, str]:
    """``features.weights_files`` as backbone -> file: a list of ``{backbone, file}`` entries, since a
    backbone's name holds dots, which DVC's dotted parameter paths cannot key on. Each entry names a
    backbone of ``features.backbones`` once; a mistake is one line naming the entry."""
    entries = features.get("weights_files") or []
    common.require(
        isinstance(entries, list), "params: features.weights_files must be a list of {backbone, file}"
    )
    files: dict[str, str] = {}
    for index, entry in enumerate(entries):
        key = f"features.weights_files[{index}]"
        common.require(
            isinstance(entry, dict) and set(entry) == {"backbone", "file"}
            and all(isinstance(value, str) and value for value in entry.values()),
            f"params: {key} must be {{backbone: <full timm name>, file: <path>}}, not {entry!r}",
        )  # fmt: skip
        common.require(
            entry["backbone"] in features.get("backbones", []),
            f"params: {key}: '{entry['backbone']}' is not in features.backbones",
        )
        common.require(
            entry["backbone"] not in files, f"params: {key}: '{entry['backbone']}' has a file already"
        )
        files[entry["backbone"]] = entry["file"]
    return files


def pool_images(params: dict, manifest: Path) -> tuple[pd.DataFrame | None, str | None]:
    """The pool's images to extract (:data:`IMAGE_COLUMNS` of ``manifest``); or None, and why none: the
    student uses no pool, or it is empty."""
    reason = pool_unused_because(params)
    if reason is not None:
        return None, reason
    images = read_manifest(manifest)
    return (None, f"{manifest} lists no image") if images.empty else (images[IMAGE_COLUMNS], None)


def pool_unused_because(params: dict) -> str | None:
    """Why the pool's features are not needed (the student trains on no unlabelled images), or None."""
    unlabeled = common.section(params, "student").get("unlabeled", {})
    common.require(isinstance(unlabeled, dict), "params: 'student.unlabeled' must be a mapping")
    enabled = common.check_type(unlabeled.get("enabled", False), bool, "student.unlabeled.enabled")
    return None if enabled else "student.unlabeled.enabled=false"


def extract_images(
    backbone: str,
    images: pd.DataFrame,
    folder: Path,
    work_root: Path,
    config: ExtractConfig,
    rows_per_part: int,
    ranks: distributed.Ranks,
    device: torch.device,
    extractor: Extractor | None = None,
) -> None:
    """MLSP features of every image of ``images`` (:data:`IMAGE_COLUMNS`) into ``folder``, on ``device`` (one of
    ``ranks``), resumable: finished parts are kept in ``work_root/<run key>`` until the folder is complete.
    ``extractor``: a backbone already built (by default ``config``'s, created here)."""
    extractor = extractor or Extractor.create(config, device)
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
    run_key = resume_key(metadata, config, rows_per_part, device, images)
    if ranks.is_main:
        for stale in work_root.glob("*"):
            if stale.name != run_key:
                shutil.rmtree(stale)  # parts of other inputs or params can never be used again
    distributed.barrier(ranks)
    writer = PartWriter(folder, work_dir=work_root / run_key)
    done_before, total = extract_to_parts(
        extractor,
        images["path"].tolist(),
        list(zip(images["width"], images["height"], strict=True)),
        images["image_id"].to_numpy(),
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
            f"extract {backbone}: {len(images)} images into {folder}, {extractor.mlsp.dim} dimensions "
            f"({extractor.weights.source} weights, {ranks.world} process{'es' if ranks.world > 1 else ''})"
        )


def extract_pool(backbone: str, params: dict, manifest: Path = common.POOL_MANIFEST,
                 features_dir: Path = common.POOL_FEATURES_DIR) -> None:  # fmt: skip
    """The pool's features for ``backbone`` into ``features_dir/<backbone>``; an empty or unused pool: an
    empty folder at once (:func:`iaakd.features.write_empty_features`), the backbone never loaded."""
    config, rows_per_part = extract_config(params, backbone)
    ranks, device = distributed.start(common.device_from_env())
    images, reason = pool_images(params, manifest)
    if images is not None:
        work_root = common.WORK_DIR / "extract_pool" / backbone  # beside, never in, the labelled images' own
        extract_images(backbone, images, features_dir / backbone, work_root, config, rows_per_part, ranks,
                       device)  # fmt: skip
    elif ranks.is_main:
        write_empty_features(features_dir / backbone, backbone, reason)
        print(f"extract {backbone} --pool: no features ({reason})")
    distributed.finish(ranks)


def labelled_images() -> pd.DataFrame:
    """Every labelled image (:data:`IMAGE_COLUMNS`), as data/labels.parquet lists them."""
    common.require(common.LABELS.is_file(), f"{common.LABELS} not found (run the dataset stage)")
    return pd.read_parquet(common.LABELS, columns=IMAGE_COLUMNS)


def extract_labelled(backbone: str, params: dict) -> None:
    """Every labelled image's features for ``backbone`` into data/features/<backbone>."""
    config, rows_per_part = extract_config(params, backbone)
    ranks, device = distributed.start(common.device_from_env())
    extract_images(backbone, labelled_images(), common.FEATURES_DIR / backbone,
                   common.WORK_DIR / "extract" / backbone, config, rows_per_part, ranks, device)  # fmt: skip
    distributed.finish(ranks)


def main(argv: list[str]) -> None:
    arguments = [argument for argument in argv if argument != "--pool"]
    if len(arguments) != 1 or len(argv) - len(arguments) > 1:
        raise UserError("usage: python -m iaakd.stages.extract <backbone> [--pool]")
    (extract_pool if "--pool" in argv else extract_labelled)(arguments[0], common.load_params())


if __name__ == "__main__":
    common.run(main, distributed=True)
