"""Stage `student`: trains the student by knowledge distillation (or on ground truth) (models/student.pt)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iaakd import distributed
from iaakd.data.images import INPUT_MODES, RESIZE_FILTERS
from iaakd.devices import PRECISIONS
from iaakd.losses import MIXES, OUTPUT_TARGETS
from iaakd.models.heads import SEMANTIC_MODES
from iaakd.plots import training_curves
from iaakd.stages import common, data_access
from iaakd.student import StudentConfig, StudentData, save_student, train_student
from iaakd.tasks import Task


def student_config(params: dict) -> StudentConfig:
    config = common.build_config(StudentConfig, common.section(params, "student"), "student")
    common.require(
        config.input_size >= 32, f"params: student.input_size={config.input_size} is too small (at least 32)"
    )
    common.require(
        config.resize_filter in RESIZE_FILTERS,
        f"params: student.resize_filter='{config.resize_filter}' is not one of {', '.join(RESIZE_FILTERS)}",
    )
    common.require(
        config.input_mode in INPUT_MODES,
        f"params: student.input_mode='{config.input_mode}' is not one of {', '.join(INPUT_MODES)}",
    )
    common.require(
        config.input_mode != "pad_crop" or config.pad_size >= config.input_size,
        f"params: student.pad_size={config.pad_size} must be >= student.input_size={config.input_size}"
        " (pad_crop cuts input_size out of the padded square)",
    )
    common.require(
        not config.jpeg_draft or config.input_mode == "resize",
        "params: student.jpeg_draft=true works with student.input_mode=resize only"
        " (pad_crop keeps the pixels' scale)",
    )
    common.require(
        config.semantic in SEMANTIC_MODES,
        f"params: student.semantic='{config.semantic}' is not one of {', '.join(SEMANTIC_MODES)}",
    )
    common.require(
        config.semantic_weight >= 0,
        f"params: student.semantic_weight={config.semantic_weight} must be >= 0",
    )
    common.require_positive(
        "student", epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
        lr_step_epochs=config.lr_step_epochs,
    )  # fmt: skip
    common.require(
        config.weight_decay >= 0, f"params: student.weight_decay={config.weight_decay} must be >= 0"
    )
    common.require(
        config.kd.feature_weight >= 0,
        f"params: student.kd.feature_weight={config.kd.feature_weight} must be >= 0",
    )
    common.require(
        config.kd.target in OUTPUT_TARGETS,
        f"params: student.kd.target='{config.kd.target}' is not one of {', '.join(OUTPUT_TARGETS)}",
    )
    common.require(
        config.kd.mix in MIXES, f"params: student.kd.mix='{config.kd.mix}' is not one of {', '.join(MIXES)}"
    )
    common.require(
        config.precision in PRECISIONS,
        f"params: student.precision='{config.precision}' is not one of {', '.join(PRECISIONS)}",
    )
    return config


def split_data(
    frame,
    split_name: str,
    task: Task,
    with_teacher: bool,
    with_tags: bool = False,
    knowledge: Callable[[list[str]], tuple] = data_access.teacher_knowledge_rows,
) -> StudentData:
    """The student's data of one split; ``knowledge`` gives (teacher output, teacher feature) rows for image
    ids: the pipeline's teacher, read from disk item by item, by default; scripts pass a teacher trained
    on another split or task."""
    part = frame[frame["split"] == split_name]
    data = StudentData(part["path"].tolist(), data_access.targets(part, task))
    if with_teacher:
        data.teacher_output, data.teacher_feature = knowledge(part["image_id"].tolist())
    if with_tags:
        data.tags = data_access.tags(part)
    return data


def main(_argv: list[str]) -> None:
    params = common.load_params()
    config = student_config(params)
    task = data_access.task_from_params(params)
    ranks, device = distributed.start(common.device_from_env())
    frame = data_access.labels_with_split()
    with_tags = config.semantic != "none"
    if ranks.is_main:  # one process writes the knowledge's row matrix in .work/; the others then find it
        train = split_data(frame, "train", task, with_teacher=True, with_tags=with_tags)
    distributed.barrier(ranks)
    if not ranks.is_main:
        train = split_data(frame, "train", task, with_teacher=True, with_tags=with_tags)
    val = split_data(frame, "val", task, with_teacher=False, with_tags=with_tags)
    feature_dim = train.teacher_feature.shape[1]
    model, preprocess, weights_source, history = train_student(
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
    )
    distributed.finish(ranks)
    if not ranks.is_main:
        return  # rank 0 alone writes the model, metrics and plots
    save_student(common.STUDENT_MODEL, model, preprocess, config, weights_source, task)
    last = history.rows[-1]
    common.write_json(
        Path("metrics/student.json"),
        {
            "val_srcc": last["val_srcc"],
            "val_loss": last["val_loss"],
            "output": task.output,
            "train_loss": last["train_loss"],
            "epochs": config.epochs,
            "kd": config.kd.enabled,
            "backbone": config.backbone,
            "weights": weights_source["source"],
            "provenance": common.provenance(),
        },
    )
    training_curves(history.rows, Path("plots/student"), "student")
    print(f"student: val SRCC {last['val_srcc']}")


if __name__ == "__main__":
    common.run(main, distributed=True)
