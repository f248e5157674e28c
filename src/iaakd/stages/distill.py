"""Stage `distill`: trains the knowledge distiller on the concatenated MLSP features (models/distiller.pt)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from iaakd.feature_rows import RowSubset
from iaakd.plots import training_curves
from iaakd.stages import common, data_access
from iaakd.teacher import DistillerConfig, predict_output, train_distiller


def main(_argv: list[str]) -> None:
    params = common.load_params()
    distiller_params = common.section(params, "distiller")
    config = common.build_config(DistillerConfig, distiller_params, "distiller", ignore=("backbones",))
    backbones = distiller_params.get("backbones") or []
    available = common.section(params, "features").get("backbones", [])
    common.require(
        backbones and all(b in available for b in backbones),
        f"params: distiller.backbones {backbones} must be a non-empty subset of features.backbones {available}",
    )
    common.require(
        config.keep in ("best", "last"), f"params: distiller.keep='{config.keep}' is not one of best, last"
    )
    common.require_positive(
        "distiller", epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
        lr_step_epochs=config.lr_step_epochs, hidden=min(config.hidden, default=0),
    )  # fmt: skip
    common.require_fraction("distiller.dropout", config.dropout)
    common.require(
        config.weight_decay >= 0, f"params: distiller.weight_decay={config.weight_decay} must be >= 0"
    )
    task = data_access.task_from_params(params)
    frame = data_access.labels_with_split()
    matrix, metadata = data_access.teacher_input(backbones)
    rows = matrix.row_of(frame["image_id"])
    targets = data_access.targets(frame, task)
    parts = {name: (frame["split"] == name).to_numpy() for name in ("train", "val")}
    common.require(parts["val"].sum() > 0, "split: the validation part is empty; raise split.val_fraction")
    model, history = train_distiller(
        RowSubset(matrix, rows[parts["train"]]),
        targets[parts["train"]],
        RowSubset(matrix, rows[parts["val"]]),
        targets[parts["val"]],
        config,
        task,
        progress=common.show_progress(),
        work_root=common.WORK_DIR / "distill",
    )
    common.DISTILLER_MODEL.parent.mkdir(parents=True, exist_ok=True)
    staging = common.DISTILLER_MODEL.with_name(common.DISTILLER_MODEL.name + ".partial")
    torch.save(
        {
            "config": asdict(config),
            "task": task.as_dict(),
            "backbones": backbones,
            "input_dim": matrix.dim,
            "feature_metadata": metadata,
            "state_dict": model.state_dict(),
        },
        staging,
    )
    staging.replace(common.DISTILLER_MODEL)

    results = {}
    true_distribution = data_access.ground_truth(frame)
    for name, mask in parts.items():
        output = predict_output(model, RowSubset(matrix, rows[mask]))
        results[name] = task.metrics(
            output,
            frame["mean_score"].to_numpy()[mask],
            true_distribution[mask] if true_distribution is not None else None,
        )
    gap = (
        None
        if results["train"]["srcc"] is None or results["val"]["srcc"] is None
        else results["train"]["srcc"] - results["val"]["srcc"]
    )
    best_epoch = min(history.rows, key=lambda row: row["val_loss"])["epoch"]
    common.write_json(
        Path("metrics/distill.json"),
        {
            **results,
            "train_val_srcc_gap": gap,
            "epochs": config.epochs,
            "kept_epoch": best_epoch if config.keep == "best" else config.epochs,
            "input_dim": matrix.dim,
            "teacher_feature_dim": model.feature_dim,
            "backbones": backbones,
            "output": task.output,
            "provenance": common.provenance(),
        },
    )
    training_curves(history.rows, Path("plots/distill"), "distiller")
    print(f"distill: val SRCC {results['val']['srcc']:.3f}, train SRCC {results['train']['srcc']:.3f}")


if __name__ == "__main__":
    common.run(main)
