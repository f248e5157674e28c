"""``iaakd``: one command for a trained student. ``iaakd score``, ``export``, ``explain``, ``compare``, ``weights``, ``plan``.

Bad input ends in one line, ``error: ...``, with exit status 1; ``score`` and ``explain`` exit with 2 when
some files could not be read (their rows say why). ``iaakd-score`` and ``python -m iaakd score`` are
``iaakd score``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from iaakd.command import Parser, run_command

# Each subcommand: the module that declares its arguments (add_arguments), runs it (run) and documents it
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("iaakd.score", "score photos: CSV or JSON lines, one row per file"),
    "export": ("iaakd.export", "ONNX and torch.export (.pt2) files with their preprocessing"),
    "explain": ("iaakd.explain", "LayerCAM heat maps and a contact sheet of the best and worst"),
    "compare": ("iaakd.compare", "is the difference between two revisions real? (dvc metrics diff's twin)"),
    "weights": ("iaakd.weights", "backbone weights: fetch from the Hub into the cache, list the cache"),
}


def build_parser(prog: str = "iaakd") -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(commands.add_parser(name, help=summary, description=module.__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))  # fmt: skip
    plan = commands.add_parser(
        "plan", help="backbone sizes and feature storage (python -m iaakd.plan)", add_help=False
    )
    plan.add_argument("plan_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None, prog: str = "iaakd") -> None:
    """``prog``: the name in messages (``iaakd-score`` calls this with ``score`` prepended)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["plan"]:  # the planner parses its own arguments
        from iaakd.plan import main as plan_main

        plan_main(argv[1:])
        return
    run_command(_run, build_parser(prog).parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    return importlib.import_module(COMMANDS[args.command][0]).run(args)


def score_main() -> None:
    """``iaakd-score``: the alias of ``iaakd score``."""
    main(["score", *sys.argv[1:]])


if __name__ == "__main__":
    main()
