"""``iaakd export MODEL [--onnx FILE] [--pt2 FILE] [--hub-folder DIR]``: the student for deployment and sharing.

``--onnx`` and ``--pt2`` write the model with its preprocessing (:mod:`iaakd.onnx_export`: uint8 RGB in,
normalisation inside, the preprocessing in the file's metadata and in ``FILE.json``); ``--pt2`` is a
``torch.export`` program (TorchScript, deprecated in PyTorch, is not offered). ``--hub-folder`` writes a
folder the Hugging Face Hub takes as it is (:mod:`iaakd.hub_folder`): safetensors weights, ``config.json``,
the ONNX file and a model card from the model's test metrics; upload it with ``hf upload ORG/NAME DIR`` and
score with ``iaakd score hf://ORG/NAME ...``. MODEL may itself be such a folder or ``hf://ORG/NAME``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iaakd.command import at_least, output_file, output_folder, require_modules
from iaakd.errors import UserError
from iaakd.onnx_export import ONNX_OPSET
from iaakd.runtime import ONNX_MODULES


class _TorchScriptRefused(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(
            "--torchscript: TorchScript is deprecated in PyTorch; use --pt2 FILE (torch.export), "
            "or --onnx FILE"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="models/student.pt, a folder from --hub-folder, or hf://ORG/NAME[@REVISION]"
    )
    parser.add_argument("--onnx", type=Path, metavar="FILE", help="the ONNX file to write")
    parser.add_argument("--pt2", type=Path, metavar="FILE", help="also a torch.export program (.pt2)")
    parser.add_argument("--torchscript", action=_TorchScriptRefused, help=argparse.SUPPRESS)
    parser.add_argument(
        "--hub-folder", type=Path, metavar="DIR", help="a folder to upload to the Hub as it is"
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        metavar="FILE",
        help="the model card's test metrics (default with --hub-folder: metrics/evaluate.json when MODEL "
        "is models/student.pt and it exists)",
    )
    parser.add_argument("--opset", type=at_least(1), default=ONNX_OPSET, help="the ONNX opset to export to")


def run(args: argparse.Namespace) -> int:
    from iaakd.onnx_export import export_onnx, export_pt2, exported_program
    from iaakd.scorer import Scorer

    if args.onnx is None and args.pt2 is None and args.hub_folder is None:
        raise UserError("iaakd export: name at least one of --onnx FILE, --pt2 FILE, --hub-folder DIR")
    require_modules(*ONNX_MODULES)
    for flag, path in (("--onnx", args.onnx), ("--pt2", args.pt2)):
        if path is not None:
            output_file(path, flag)
    if args.hub_folder is not None:
        output_folder(args.hub_folder, "--hub-folder")
    metrics = card_metrics(args)
    scorer = Scorer.load(args.model, "cpu", warn=False, backend="torch")
    program = exported_program(scorer)
    written = []
    if args.onnx is not None:
        export_onnx(scorer, args.onnx, args.opset, program)
        written.append(str(args.onnx))
    if args.pt2 is not None:
        export_pt2(scorer, args.pt2, program)
        written.append(str(args.pt2))
    if args.hub_folder is not None:
        from iaakd.hub_folder import write_hub_folder

        write_hub_folder(scorer, args.hub_folder, metrics, program, args.opset)
        written.append(f"{args.hub_folder}/ (upload: hf upload ORG/NAME {args.hub_folder})")
    print(f"iaakd export: wrote {', '.join(written)}", file=sys.stderr)
    return 0


def card_metrics(args: argparse.Namespace) -> Path | None:
    """The metrics file for the model card: ``--metrics``, or the pipeline's own when MODEL is its student."""
    if args.metrics is not None:
        if not args.metrics.is_file():
            raise UserError(f"--metrics {args.metrics}: not a file")
        return args.metrics
    default = Path("metrics/evaluate.json")
    if (
        args.hub_folder is not None
        and Path(str(args.model)) == Path("models/student.pt")
        and default.is_file()
    ):
        return default
    return None
