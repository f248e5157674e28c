"""Stage `student`: trains the student by knowledge distillation (or on ground truth) (models/student.pt)."""

from __future__ import annotations

from pathlib import Path

import iaakd.student  # the training library loads when a student trains: `pretrain`, `align` read only its config
from iaakd import distributed
from iaakd.plots import training_curves
from iaakd.stages import common
from iaakd.student.config import StudentConfig
from iaakd.student.data import StudentData

INIT_FILES = {"pretrain": common.PRETRAIN_MODEL, "align": common.ALIGN_MODEL}  # student.init's


def student_config(params: dict) -> StudentConfig:
    return common.build_config(StudentConfig, common.section(params, "student"), "student")


def main(_argv: list[str]) -> None:
    params = common.load_params()
    config = student_config(params)
    pipeline = common.tables()
    task = common.task_from_params(params, pipeline)
    ranks, device = distributed.start(common.device_from_env())
    frame = pipeline.labels_with_split()
    with_tags = config.semantic != "none"

    def training_data() -> tuple[StudentData, StudentData | None]:
        train = pipeline.student_data(frame, "train", task, with_teacher=True, with_tags=with_tags)
        if not config.unlabeled.enabled:
            return train, None
        # CSKD: split.label_fraction's withheld images and the pool's (absent or empty: none)
        return train, pipeline.unlabeled_student_data(frame, common.POOL_MANIFEST)

    if ranks.is_main:  # one process writes the knowledge's row matrices in .work/; the others then find them
        train, unlabeled = training_data()
    distributed.barrier(ranks)
    if not ranks.is_main:
        train, unlabeled = training_data()
    val = pipeline.student_data(frame, "val", task, with_teacher=False, with_tags=with_tags)
    feature_dim = train.teacher_feature.shape[1]
    model, preprocess, weights_source, history = iaakd.student.train_student(
        config,
        train,
        val,
        feature_dim,
        task,
        num_workers=common.num_workers_from_env(),
        progress=common.show_progress(),
        device=device,
        work_root=common.WORK_DIR / "student",
        ranks=ranks,
        init_file=INIT_FILES.get(config.init),
        unlabeled=unlabeled,
    )
    distributed.finish(ranks)
    if not ranks.is_main:
        return  # rank 0 alone writes the model, metrics and plots
    last = history.rows[-1]
    common.require(
        last["val_srcc"] is not None,
        "student: its predictions on the validation images are constant, so SRCC is undefined; the model"
        " learnt nothing usable (raise student.epochs, or check student.lr)",
    )
    data_source = common.section(params, "data").get("source")
    used = iaakd.student.unlabeled_schedule(
        config, len(train.paths), len(unlabeled.paths) if unlabeled else 0, ranks
    )
    iaakd.student.save_student(common.STUDENT_MODEL, model, preprocess, config, weights_source, task, data_source,
                 unlabeled_images=used.images_used)  # fmt: skip
    common.write_metrics(
        Path("metrics/student.json"),
        {
            "val_srcc": last["val_srcc"],
            "val_loss": last["val_loss"],
            "output": task.output,
            "train_loss": last["train_loss"],
            "epochs": config.epochs,
            "kd": config.kd.enabled,
            "backbone": config.backbone,
            "init": config.init,
            "unlabeled": used.images_used,  # unlabelled images the semi-supervised KD drew (0: switched off)
            "weights": weights_source["source"],
            # which file: the Hub repository and commit it was resolved at, and its SHA-256 (string values:
            # `dvc metrics diff` lists them only when they change)
            **{
                f"weights_{key}": weights_source[key]
                for key in ("hub_id", "revision", "sha256")
                if weights_source.get(key)
            },
        },
        provenance=common.provenance(device=str(device), precision=config.precision),
    )
    training_curves(history.rows, Path("plots/student"), "student")
    print(f"student: val SRCC {last['val_srcc']}")


if __name__ == "__main__":
    common.run(main, distributed=True)
