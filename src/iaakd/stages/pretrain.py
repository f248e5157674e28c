"""Stage `pretrain`: the student's backbone pretrained by distortion ranking (Pfister et al.) on a pool of good
photos (models/pretrain.pt, metrics/pretrain.json, plots/pretrain/). Trains only when `student.init=pretrain`;
otherwise it writes its documented no-op outputs at once."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from iaakd.data.demo import generate_good_pool
from iaakd.data.pool import PoolConfig, folder_pool
from iaakd.errors import UserError
from iaakd.plots import note_figure, training_curves
from iaakd.pretrained import save_backbone, save_switched_off
from iaakd.pretraining.train import PretrainConfig, pretrain_backbone, pretraining_preprocess
from iaakd.stages import common
from iaakd.stages.pool import EMBEDDING_CACHE, labelled_images
from iaakd.stages.student import student_config

MODEL = common.PRETRAIN_MODEL
METRICS = Path("metrics/pretrain.json")
PLOTS = Path("plots/pretrain")
POOL_DIR = common.WORK_DIR / "pretrain" / "pool"


def pool_images(config: PretrainConfig) -> tuple[list[str], list[dict]]:
    """(usable pool images, skipped files with their reasons); the pool is made (demo) or scanned (folders)."""
    if config.source == "demo":
        folder = POOL_DIR / f"demo-{config.seed}-{config.num_images}"
        if not folder.is_dir() or len(list(folder.glob("*.jpg"))) != config.num_images:
            staging = folder.with_name(folder.name + ".partial")
            for leftover in (staging, folder):
                shutil.rmtree(leftover, ignore_errors=True)
            generate_good_pool(staging, config.num_images, config.seed, progress=common.show_progress())
            staging.replace(folder)
        return sorted(str(path) for path in folder.glob("*.jpg")), []
    if not config.folders:
        raise UserError(
            "params: pretrain.source=folders needs pretrain.folders (a list of folders of photos)"
        )
    for folder in map(Path, config.folders):
        if not folder.is_dir():
            raise UserError(f"params: pretrain.folders: {folder} is not a folder")
    # the folders' photos less bad files and every copy of a labelled image (train, validation or test):
    # the unlabelled pool's own scan and copy detector
    pool = folder_pool(PoolConfig(source="folders", folders=config.folders, copies=config.copies),
                       labelled_images(), common.WORK_DIR / "scan" / "pretrain-cache.parquet", EMBEDDING_CACHE,
                       progress=common.show_progress())  # fmt: skip
    skipped = [{"file": row.file, "reason": f"{row.kind}: {row.reason}" + (f" ({row.match})" if isinstance(row.match, str) else "")}
               for row in pool.dropped.itertuples(index=False)]  # fmt: skip
    return pool.manifest["path"].tolist(), skipped


def switched_off(reason: str) -> None:
    """The cheap outputs of a stage nothing asks for: a checkpoint without weights, metrics and a plot that
    say why."""
    save_switched_off(MODEL, "pretrain", reason)
    common.write_metrics(
        METRICS, {"trained": False, "reason": reason}, common.provenance(device=None, precision=None)
    )
    PLOTS.mkdir(parents=True, exist_ok=True)
    (PLOTS / "curves.csv").write_text("epoch,train_loss,val_loss,val_pair_accuracy\n", encoding="utf-8")
    note_figure(PLOTS / "curves.png", f"pretrain: not trained ({reason})")
    print(f"pretrain: nothing to train ({reason})")


def pretrain_config(params: dict) -> PretrainConfig:
    return common.build_config(PretrainConfig, common.section(params, "pretrain"), "pretrain")


def main(_argv: list[str]) -> None:
    params = common.load_params()
    student = student_config(params)
    config = pretrain_config(params)
    if student.init != "pretrain":
        return switched_off(f"student.init={student.init}")
    device = common.device_from_env()
    pool, skipped = pool_images(config)
    preprocess = pretraining_preprocess(config, student)
    result = pretrain_backbone(config, student.backbone, student.weights, preprocess, pool,
                               num_workers=common.num_workers_from_env(), progress=common.show_progress(),
                               device=device, work_root=common.WORK_DIR / "pretrain")  # fmt: skip
    details = {"config": asdict(config), "preprocess": preprocess.as_dict(), "pool_images": len(pool)}
    save_backbone(MODEL, "pretrain", result.backbone, result.weights_source, details)
    common.write_metrics(
        METRICS,
        {
            "trained": True,
            "held_out_pair_accuracy": result.accuracy_after,
            "held_out_pair_accuracy_before": result.accuracy_before,
            "pool_images": len(pool),
            "skipped": len(skipped),
            "skipped_files": skipped[:50],
            "task": config.task,
            "backbone": student.backbone,
            "weights": result.weights_source["source"],
        },
        provenance=common.provenance(device=str(device), precision="fp32"),
    )
    training_curves(result.history.rows, PLOTS, "pretrain")
    overall = result.accuracy_after["overall"]
    print(f"pretrain: held-out pair accuracy {overall['accuracy']:.3f} (95 % CI {overall['ci95'][0]:.3f}-"
          f"{overall['ci95'][1]:.3f}; before {result.accuracy_before['overall']['accuracy']:.3f}; chance 0.5)")  # fmt: skip


if __name__ == "__main__":
    common.run(main)
