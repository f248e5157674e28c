"""Stage `align`: CSKD phase 1, the student's backbone aligned to a frozen encoder's embedding (Xu et al.) on
the pool and the training images, labels unused (models/align.pt, metrics/align.json, plots/align/). Trains
when the student starts from it (`student.init=align`) or the teacher uses it (`align.teacher`); otherwise
it writes its documented no-op outputs at once."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from iaakd.align import RANDOM_WEIGHTS, AlignConfig, align_backbone, student_input  # noqa: E402
from iaakd.atomic import atomic_path, atomic_write_text  # noqa: E402
from iaakd.errors import UserError  # noqa: E402
from iaakd.plots import note_figure  # noqa: E402
from iaakd.pretrained import save_backbone, save_switched_off  # noqa: E402
from iaakd.stages import common  # noqa: E402
from iaakd.stages.student import student_config  # noqa: E402

MODEL = common.ALIGN_MODEL
METRICS = Path("metrics/align.json")
PLOTS = Path("plots/align")
CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_cosine", "val_uncentred_cosine")
IMAGE_SPLITS = ("train", "unlabeled")  # never val or test


def align_config(params: dict) -> AlignConfig:
    """How to align (``align.*``); who uses the result, ``align.teacher``, is read by :func:`common.aligned_teacher`."""
    return common.build_config(AlignConfig, common.section(params, "align"), "align", ignore=("teacher",))


def alignment_images(manifest: Path = common.POOL_MANIFEST) -> tuple[list[str], dict[str, int]]:
    """The images to align on: the pool's (its manifest; may be none) and the training split's (``train``
    and ``unlabeled``; their labels are not read), each once, in that order; and how many of each."""
    if not manifest.is_file():
        raise UserError(f"{manifest}: not found; run the pool stage first (dvc repro pool)")
    pool = pd.read_parquet(manifest, columns=["path"])["path"].astype(str).tolist()
    frame = common.tables().labels_with_split()
    training = frame.loc[frame["split"].isin(IMAGE_SPLITS), "path"].astype(str).tolist()
    paths = list(dict.fromkeys(pool + training))
    return paths, {"pool": len(pool), "training_split": len(training), "total": len(paths)}


def switched_off(reason: str) -> None:
    """The cheap outputs of a stage nothing asks for: a checkpoint without weights, metrics and a plot that
    say why."""
    save_switched_off(MODEL, "align", reason)
    common.write_metrics(
        METRICS, {"trained": False, "reason": reason}, common.provenance(device=None, precision=None)
    )
    PLOTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(PLOTS / "curves.csv", ",".join(CURVE_COLUMNS) + "\n")
    note_figure(PLOTS / "curves.png", f"align: not trained ({reason})")
    print(f"align: nothing to train ({reason})")


def alignment_curves(rows: list[dict], cosines: dict, folder: Path) -> None:
    """curves.csv (one row per epoch) and curves.png: the losses, and the held-out cosine with its value
    before (after the head-only epochs)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    with atomic_path(folder / "curves.csv") as staging:
        frame.to_csv(staging, index=False, float_format="%.6g")
    figure, (loss_axis, cosine_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for column in ("train_loss", "val_loss"):
        loss_axis.plot(frame["epoch"], frame[column], marker="o", markersize=3, label=column)
    for column in ("val_cosine", "val_uncentred_cosine"):
        cosine_axis.plot(frame["epoch"], frame[column], marker="o", markersize=3, label=column)
    cosine_axis.axhline(
        cosines["before"], color="grey", linestyle="--", linewidth=1, label="before (head only)"
    )
    loss_axis.set(xlabel="epoch", ylabel="loss", title="align: loss")
    cosine_axis.set(xlabel="epoch", ylabel="cosine", title="align: held-out cosine to the encoder")
    for axis in (loss_axis, cosine_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(folder / "curves.png") as staging:
        figure.savefig(staging, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)


def main(_argv: list[str]) -> None:
    params = common.load_params()
    student = student_config(params)
    config = align_config(params)
    if student.init != "align" and not common.aligned_teacher(params):
        return switched_off(f"student.init={student.init}, align.teacher=false")
    paths, counts = alignment_images()
    if config.encoder_weights == RANDOM_WEIGHTS:
        print("align: align.encoder_weights=random (asked for by name): the targets come from an untrained"
              " encoder, so the result says nothing about any pretrained one")  # fmt: skip
    device = common.device_from_env()
    preprocess = student_input(
        student.backbone, config.input_size or student.input_size, student.resize_filter
    )
    result = align_backbone(config, student.backbone, student.weights, preprocess, paths,
                            num_workers=common.num_workers_from_env(), progress=common.show_progress(),
                            device=device, work_root=common.WORK_DIR / "align")  # fmt: skip
    metrics = result.metrics
    encoder = metrics["encoder"]
    cosine, uncentred = metrics["held_out_cosine"], metrics["held_out_uncentred_cosine"]
    details = {
        "config": asdict(config),
        "preprocess": preprocess.as_dict(),
        "encoder": encoder,
        "embedding_dim": encoder["embedding_dim"],
        "loss": config.loss,
        "images": {**counts, **metrics["images"]},
        "held_out_cosine": cosine,
        "held_out_uncentred_cosine": uncentred,
    }
    save_backbone(MODEL, "align", result.backbone, result.weights_source, details)
    common.write_metrics(
        METRICS,
        {
            "trained": True,
            "held_out_cosine_before": cosine["before"],
            "held_out_cosine_after": cosine["after"],
            "held_out_cosine": cosine,
            "held_out_uncentred_cosine": uncentred,
            "centred": config.centre,
            "encoder": encoder["name"],
            "encoder_weights": encoder["weights"]["source"],
            "embedding": encoder["embedding"],
            "embedding_dim": encoder["embedding_dim"],
            "loss": config.loss,
            "images": {
                **counts,
                "training": metrics["images"]["training"],
                "held_out": metrics["images"]["held_out"],
            },  # fmt: skip
            "backbone": student.backbone,
            "weights": result.weights_source["source"],
        },
        provenance=common.provenance(device=str(device), precision="fp32"),
    )
    alignment_curves(result.history.rows, cosine, PLOTS)
    print(f"align: held-out cosine to {encoder['name']} {cosine['after']:.3f} (before {cosine['before']:.3f},"
          f" at the start {cosine['start']:.3f}; {'centred' if config.centre else 'uncentred'})")  # fmt: skip


if __name__ == "__main__":
    common.run(main)
