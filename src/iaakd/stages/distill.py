"""Stage `distill`: trains the knowledge distiller on the concatenated MLSP features (models/distiller.pt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iaakd.data.tables import ground_truth, targets
from iaakd.feature_rows import RowSubset
from iaakd.plots import training_curves
from iaakd.stages import common
from iaakd.tasks import Task
from iaakd.teacher import (
    DistillerConfig,
    iter_out_of_fold_knowledge,
    predict_output,
    save_distiller,
    train_distiller,
    train_fold_distillers,
)


def metrics(frame, task: Task, mask: np.ndarray, output: np.ndarray) -> dict:
    """The task's metrics of ``output`` on ``frame``'s rows in ``mask``; predictions that make SRCC undefined
    (constant, or not finite) end the stage in one line, before anything is written."""
    truth = ground_truth(frame)
    result = task.metrics(
        output, frame["mean_score"].to_numpy()[mask], truth[mask] if truth is not None else None
    )
    common.require(
        result["srcc"] is not None,
        f"distill: the distiller's predictions on {int(mask.sum())} images are constant or not finite, so SRCC is"
        " undefined; the model learnt nothing usable (check the features, or raise distiller.epochs)",
    )
    return result


def distiller_config(params: dict) -> tuple[DistillerConfig, list[str]]:
    """``distiller``'s configuration and its backbones (a non-empty subset of features.backbones), then, with
    ``align.teacher``, the aligned backbone (CSKD: its features from stage `extract_align`)."""
    distiller_params = common.section(params, "distiller")
    config = common.build_config(DistillerConfig, distiller_params, "distiller", ignore=("backbones",))
    backbones = distiller_params.get("backbones") or []
    available = common.section(params, "features").get("backbones", [])
    common.require(
        backbones and all(b in available for b in backbones),
        f"params: distiller.backbones {backbones} must be a non-empty subset of features.backbones {available}",
    )
    return config, backbones + ([common.ALIGNED] if common.aligned_teacher(params) else [])


def main(_argv: list[str]) -> None:
    params = common.load_params()
    config, backbones = distiller_config(params)
    pipeline = common.tables()
    task = common.task_from_params(params, pipeline)
    frame = pipeline.labels_with_split()
    matrix, metadata = pipeline.teacher_input(backbones)
    rows = matrix.row_of(frame["image_id"])
    training_targets = targets(frame, task)
    parts = {name: (frame["split"] == name).to_numpy() for name in ("train", "val")}
    common.require(parts["val"].sum() > 0, "split: the validation part is empty; raise split.val_fraction")
    data = (RowSubset(matrix, rows[parts["train"]]), training_targets[parts["train"]], RowSubset(matrix, rows[parts["val"]]),
            training_targets[parts["val"]], config, task, common.show_progress(), common.WORK_DIR / "distill")  # fmt: skip
    model, history = train_distiller(*data)
    folds, fold_models = train_fold_distillers(*data) if config.out_of_fold else (None, [])
    results = {name: metrics(frame, task, mask, predict_output(model, data[0 if name == "train" else 2]))
               for name, mask in parts.items()}  # fmt: skip
    if fold_models:  # each training image scored by the fold distiller that did not see it
        knowledge = iter_out_of_fold_knowledge(model, fold_models, folds, data[0])
        out_of_fold = np.concatenate([output for output, *_ in knowledge])
        results["train_out_of_fold"] = metrics(frame, task, parts["train"], out_of_fold)
    train_ids = frame["image_id"].to_numpy()[parts["train"]]
    held_out = [(train_ids[folds == k].tolist(), fold) for k, fold in enumerate(fold_models)]
    save_distiller(common.DISTILLER_MODEL, model, config, task, backbones, metadata, held_out)
    common.write_metrics(
        Path("metrics/distill.json"),
        {
            **results,
            "train_val_srcc_gap": results["train"]["srcc"] - results["val"]["srcc"],  # both known: see above
            "epochs": config.epochs,
            "kept_epoch": history.kept_epoch,
            "input_dim": matrix.dim,
            "teacher_feature_dim": model.feature_dim,
            "backbones": backbones,
            "output": task.output,
        },
        provenance=common.provenance(device="cpu", precision="fp32"),
    )
    training_curves(history.rows, Path("plots/distill"), "distiller")
    print(f"distill: val SRCC {results['val']['srcc']:.3f}, train SRCC {results['train']['srcc']:.3f}")


if __name__ == "__main__":
    common.run(main)
