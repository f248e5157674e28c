"""The student as ONNX and ``torch.export`` files, with its preprocessing: what ``iaakd export`` writes and
what the scorer's ONNX Runtime backend runs.

Both files take what the scorer's loader hands the network: uint8 RGB images, N x 3 x S x S, already
decoded and resized; normalisation is inside the graph. They return ``output`` (the distribution over the
10 score bins, the score scaled to [0, 1], or the probability of "high") and ``score`` (the mean score in
1..10, the score in the data's units, or that probability). How to decode and resize, so that another
language prepares images exactly as in training, is in the ONNX model's metadata (``metadata_props``) and
in ``FILE.json`` beside each file. ``scorer`` below is an :class:`iaakd.scorer.Scorer` (its model,
preprocessing, task and identity); this module does not import it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from iaakd.atomic import atomic_path
from iaakd.errors import UserError, first_line

ONNX_OPSET = 18
PARITY_TOLERANCE = 1e-4
OUTPUT_MEANING = {
    "distribution": (
        "probabilities of the scores 1..10 (N x 10, sum 1)",
        "mean score, sum_k k * p_k, in 1..10",
    ),
    "score": (
        "the score scaled to [0, 1] by the training data's range (N x 1)",
        "the score in the data's units",
    ),
    "binary": ("the probability that the score is above the cut-off (N x 1)", "the same probability (N)"),
}


def preprocessing_description(scorer) -> dict:
    """Everything a user in another language needs to feed the exported model as the scorer does."""
    preprocess, task = scorer.preprocess, scorer.task
    size = preprocess.size
    if preprocess.mode == "resize":
        resize = {
            "mode": "resize",
            "size": [size, size],
            "keep_aspect_ratio": False,
            "filter": preprocess.resize_filter,
            "antialias": True,
            "how": f"Pillow Image.resize((S, S), Image.Resampling.{preprocess.resize_filter.upper()}) of the "
            "whole image; Pillow widens the filter when downscaling (antialiased, like torchvision's "
            "antialias=True, unlike OpenCV's INTER_LINEAR)",
        }
        if preprocess.jpeg_draft:
            resize["jpeg_draft"] = (
                "JPEGs decoded with libjpeg DCT scaling (Pillow Image.draft) at the smallest of 1/1..1/8 that stays >= S"
            )
    elif preprocess.mode == "letterbox":
        resize = {
            "mode": "letterbox",
            "size": [size, size],
            "keep_aspect_ratio": True,
            "filter": preprocess.resize_filter,
            "antialias": True,
            "how": f"scaled (Pillow, {preprocess.resize_filter}) until the long side is {size} px, up or down, "
            f"then centred on a black {size} x {size} square (left and top offsets rounded down)",
        }
    else:
        resize = {
            "mode": "pad_crop",
            "size": [size, size],
            "pad_size": preprocess.pad_size,
            "filter": preprocess.resize_filter,
            "antialias": True,
            "how": f"images larger than {preprocess.pad_size} px on their long side are first scaled to fit "
            f"(Pillow, {preprocess.resize_filter}); centred on a black {preprocess.pad_size} square; the "
            f"centre {size} x {size} is cut out",
        }
    output_meaning, score_meaning = OUTPUT_MEANING[task.output]
    return {
        "input": {
            "name": "image",
            "dtype": "uint8",
            "layout": "NCHW",
            "channels": "RGB",
            "shape": ["N", 3, size, size],
            "range": [0, 255],
        },
        "decode": "apply the EXIF orientation, then convert to 8-bit RGB as Pillow's Image.convert('RGB') "
        "does (greyscale, palette and CMYK converted; alpha dropped, not composited), except that a 16-bit "
        "grey image is first scaled to 8 bits (value / 257, rounded) where convert clips it at 255",
        "resize": resize,
        "normalisation": {
            "inside_model": True,
            "formula": "(image / 255 - mean) / std, per channel",
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
        },
        "outputs": {"output": output_meaning, "score": score_meaning},
        "task": task.as_dict(),
        "backbone": scorer.checkpoint.get("backbone"),
        "data_source": scorer.data_source,
        "model_sha256": scorer.model_sha256,
        "package_version": _version(),
    }


def _version() -> str:
    from iaakd import __version__

    return __version__


def flat_metadata(description: dict) -> dict[str, str]:
    """ONNX ``metadata_props`` (string to string): the main fields one by one, and the whole as JSON."""
    resize, normalisation = description["resize"], description["normalisation"]
    return {
        "iaakd.preprocessing": json.dumps(description),
        "input_size": str(resize["size"][0]),
        "input_dtype": "uint8 RGB NCHW, 0..255",
        "resize_mode": resize["mode"],
        "resize_filter": resize["filter"],
        "resize_antialias": str(resize["antialias"]).lower(),
        "normalisation": f"inside the model: (x / 255 - mean) / std, mean={normalisation['mean']}, std={normalisation['std']}",
        "output_type": description["task"]["output"],
        "score_range": json.dumps(description["task"]["score_range"]),
        "model_sha256": description["model_sha256"],
        "data_source": str(description["data_source"]),
        "package_version": description["package_version"],
    }


def exported_program(scorer):
    """The scorer's model as a ``torch.export`` program with a free batch size: what ``--pt2`` saves and
    what the ONNX exporter translates (traced once for both)."""
    import torch

    try:
        return torch.export.export(
            _cpu_model(scorer), (example_batch(scorer),), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    except Exception as error:  # torch.export's many failure types, for a model it cannot trace
        raise UserError(f"torch.export of {scorer.model_path} failed: {first_line(error, 200)}") from None


def export_onnx(scorer, path: Path, opset: int = ONNX_OPSET, program=None) -> dict:
    """Writes the ONNX file (weights inside) and ``path.json``; checks onnxruntime against PyTorch on a
    random batch before keeping it. ``program``: from :func:`exported_program`, else traced here. Returns
    the preprocessing description."""
    import numpy as np
    import onnxruntime
    import torch

    description, example = preprocessing_description(scorer), example_batch(scorer)
    program = program if program is not None else exported_program(scorer)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            onnx_program = torch.onnx.export(
                program, (example,), None, dynamo=True, input_names=["image"], output_names=["output", "score"],
                opset_version=opset, external_data=False,
            )  # fmt: skip
    except Exception as error:  # the exporter's many failure types, for a model it cannot translate
        raise UserError(f"ONNX export of {scorer.model_path} failed: {first_line(error, 200)}") from None
    for key, value in flat_metadata(description).items():
        onnx_program.model.metadata_props[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as staging:  # a unique staging file: parallel exports of one model do not collide
        onnx_program.save(staging)
        session = onnxruntime.InferenceSession(str(staging), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": example.numpy()})
        with torch.no_grad():
            expected = program.module()(example)
        worst = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(got, expected, strict=True))
        if worst > PARITY_TOLERANCE:
            raise UserError(
                f"ONNX export of {scorer.model_path}: onnxruntime differs from PyTorch by {worst:.2g}"
            )
    _write_json(path, description)
    return description


def export_pt2(scorer, path: Path, program=None) -> dict:
    """Writes a ``torch.export`` program (batch size free) with the description as ``preprocessing.json``
    inside (``torch.export.load(path, extra_files={"preprocessing.json": ""})``) and in ``path.json``."""
    import torch

    description = preprocessing_description(scorer)
    program = program if program is not None else exported_program(scorer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as staging:  # its name keeps the .pt2 suffix torch.export.save wants
        torch.export.save(program, staging, extra_files={"preprocessing.json": json.dumps(description)})
    _write_json(path, description)
    return description


def _cpu_model(scorer):
    import copy

    return copy.deepcopy(scorer.model).cpu().eval()


def example_batch(scorer, seed: int | None = 0):
    """Two random uint8 images of the model's input size; ``seed`` None: drawn afresh each time."""
    import torch

    size = scorer.preprocess.size
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)


def _write_json(path: Path, description: dict) -> None:
    path.with_name(path.name + ".json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
