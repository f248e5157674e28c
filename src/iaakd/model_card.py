"""The model card (``README.md``) of a hub folder: what the model is, how to use it, what it was trained on,
its test metrics with their intervals, and the synthetic-demo warning where it applies. Written from the
folder's ``config.json`` and, when given, the evaluate stage's metrics file; nothing in it is typed by hand.
"""

from __future__ import annotations

from pathlib import Path

OUTPUTS = {
    "distribution": "a distribution over the scores 1..10; the score is its mean (`mean_score`)",
    "score": "a score in the training data's units (`mean_score`)",
    "binary": "the probability that the photo is rated above the cut-off (`p_high`)",
}
DEMO = (
    "> **Warning: trained on the synthetic demo** (`data.source=demo`): its scores say nothing about real "
    "photos. It exists to show the pipeline end to end."
)
METRIC_NAMES = {"srcc": "SRCC", "plcc": "PLCC", "acc": "Accuracy", "emd": "EMD"}


def model_card(name: str, config: dict, metrics: dict | None, metrics_file: Path | None) -> str:
    preprocess, task, training = (
        config["preprocess"],
        config.get("task", {}),
        config.get("training_config", {}),
    )
    output = task.get("output", "distribution")
    lines = [
        "---",
        "library_name: iaakd",
        "tags:",
        *(f"- {tag}" for tag in ("image-aesthetics-assessment", "knowledge-distillation", "iaakd", "onnx")),
        "---",
        "",
        f"# {name}",
        "",
        f"An image aesthetics student of iaakd (image aesthetics assessment by knowledge distillation): `{config['architecture']}` "
        f"at {preprocess['size']} px, predicting {OUTPUTS[output]}.",
        "",
    ]
    if config.get("data_source") == "demo":
        lines += [DEMO, ""]
    lines += [
        "## Use",
        "",
        "```bash",
        "pip install 'iaakd[scoring]'",
        f"iaakd score hf://ORG/{name} photos/ --out scores.csv --html page/",
        "```",
        "",
        f'In Python, `Scorer.load("hf://ORG/{name}").score(paths)`. `model.onnx` takes uint8 RGB images, '
        f"N x 3 x {preprocess['size']} x {preprocess['size']}, normalisation inside; `config.json` says how to "
        "decode and resize.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{config['architecture']}` |",
        f"| input | {preprocess['size']} x {preprocess['size']} px, {preprocess['mode']}, "
        f"{preprocess['resize_filter']} filter{', JPEG draft decoding' if preprocess.get('jpeg_draft') else ''} |",
        f"| normalisation | mean {preprocess['mean']}, std {preprocess['std']} |",
        f"| output | {output}, {config['head']['output'][1]} values |",
        f"| head | {config['head']['to_feature']} -> {config['head']['output']} |",
        "",
        "## Training",
        "",
        f"- Data: `{config.get('data_source')}`"
        + (
            f", with {config['unlabeled_images']} unlabelled images" if config.get("unlabeled_images") else ""
        ),
        f"- Initialisation: `{training.get('init')}`; backbone weights: {_weights(config.get('weights_source'))}",
        f"- Knowledge distillation: {'on' if training.get('kd', {}).get('enabled') else 'off'}; "
        f"{training.get('epochs')} epochs, batch {training.get('batch_size')}, learning rate {training.get('lr')}, "
        f"seed {training.get('seed')}",
        f"- Weights converted from the checkpoint with SHA-256 `{config.get('source_checkpoint_sha256')}`",
        "",
        "## Test metrics",
        "",
    ]
    lines += _metrics(metrics, metrics_file)
    return "\n".join(lines) + "\n"


def _weights(source: dict | None) -> str:
    if not source:
        return "not recorded"
    parts = [f"{key} `{value}`" for key, value in source.items() if value not in (None, "")]
    return ", ".join(parts)


def _metrics(metrics: dict | None, path: Path | None) -> list[str]:
    student = (metrics or {}).get("student")
    if not isinstance(student, dict):
        return ["None were given (`iaakd export MODEL --hub-folder DIR --metrics metrics/evaluate.json`)."]
    rows = ["| metric | value |", "|---|---|"]
    for key, label in METRIC_NAMES.items():
        if student.get(key) is None:
            continue
        interval = student.get(f"{key}_ci95")
        extra = f" (95 % interval {interval[0]:.3f} to {interval[1]:.3f})" if interval else ""
        rows.append(f"| {label} | {student[key]:.3f}{extra} |")
    teacher = metrics.get("teacher", {}).get("srcc")
    notes = [f"On {metrics.get('n', '?')} held-out test images, from `{path}`."]
    if teacher is not None:
        notes.append(f"The teacher it was distilled from: SRCC {teacher:.3f}.")
    return [*rows, "", " ".join(notes)]
