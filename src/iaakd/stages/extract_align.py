"""Stage `extract_align`: CSKD's aligned encoder serving the teacher too (Xu et al.: "both student and
teacher"). With ``align.teacher``, the align stage's backbone (models/align.pt: the student's architecture
aligned to the frozen encoder) gives MLSP features of every labelled image into data/features/align and, when
the student uses the pool, of every pool image into data/pool_features/align, by the same code and settings
(``features.*``) as every other backbone; the distiller takes them as one more backbone (`distill`).

Switched off (the default), both folders are written empty at once, without loading the backbone or timm
(:func:`~iaakd.features.write_empty_features`), so what depends on them sees nothing change."""

from __future__ import annotations

from pathlib import Path

import torch

from iaakd import distributed
from iaakd.features import write_empty_features
from iaakd.stages import common
from iaakd.stages.student import student_config

LABELLED = common.FEATURES_DIR / common.ALIGNED
POOL = common.POOL_FEATURES_DIR / common.ALIGNED


def extract_aligned(
    params: dict,
    checkpoint: Path,
    folders: tuple[Path, Path],
    manifest: Path,
    work: Path,
    ranks: distributed.Ranks = distributed.SINGLE,
    device: torch.device | None = None,
) -> None:
    """MLSP features of the aligned backbone in ``checkpoint`` (``student.backbone``'s architecture), with
    params.yaml's ``features`` settings: of every labelled image into ``folders[0]``, and of every image of
    the pool's ``manifest`` into ``folders[1]`` where the student uses the pool (else that folder empty,
    and why). Resumable: finished parts wait in ``work``."""
    from iaakd.extract import Extractor  # the extraction's libraries (timm) load only for this work
    from iaakd.models import WeightsInfo
    from iaakd.pretrained import load_backbone
    from iaakd.stages.extract import extract_images, extraction_settings, labelled_images, pool_images

    device = device or common.device_from_env()
    architecture = student_config(params).backbone
    backbone, source = load_backbone(checkpoint, "align", architecture)
    config, rows_per_part = extraction_settings(params, architecture, str(checkpoint))
    weights = WeightsInfo(source="align", path=source["path"], sha256=source["sha256"])
    extractor = Extractor.around(backbone, weights, config, device)
    labelled, pooled = folders
    extract_images(common.ALIGNED, labelled_images(), labelled, work / "labelled", config, rows_per_part,
                   ranks, device, extractor)  # fmt: skip
    pool, reason = pool_images(params, manifest)
    if pool is not None:
        extract_images(common.ALIGNED, pool, pooled, work / "pool", config, rows_per_part, ranks, device,
                       extractor)  # fmt: skip
    elif ranks.is_main:
        write_empty_features(pooled, common.ALIGNED, reason)
        print(f"extract_align: no pool features ({reason})")


def main(_argv: list[str]) -> None:
    params = common.load_params()
    ranks, device = distributed.start(common.device_from_env())
    if common.aligned_teacher(params):
        extract_aligned(params, common.ALIGN_MODEL, (LABELLED, POOL), common.POOL_MANIFEST,
                        common.WORK_DIR / "extract_align", ranks, device)  # fmt: skip
    elif ranks.is_main:
        for folder in (LABELLED, POOL):
            write_empty_features(folder, common.ALIGNED, "align.teacher=false")
        print("extract_align: no features (align.teacher=false)")
    distributed.finish(ranks)


if __name__ == "__main__":
    common.run(main, distributed=True)
