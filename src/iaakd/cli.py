"""``iaakd``: one command for a trained student. ``iaakd score``, ``export``, ``explain``, ``compare``, ``plan``.

Bad input ends in one line, ``error: ...``, with exit status 1; ``score`` and ``explain`` exit with 2 when
some files could not be read (their rows say why). ``iaakd-score`` and ``python -m iaakd score`` are
``iaakd score``.
"""

from __future__ import annotations

import argparse
import sys

from iaakd.command import Parser, run_command


def build_parser(prog: str = "iaakd") -> argparse.ArgumentParser:
    from iaakd import compare, explain, export, score

    parser = Parser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    score.add_arguments(
        commands.add_parser("score", help="score photos: CSV or JSON lines, one row per file", description=score.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    )  # fmt: skip
    export.add_arguments(
        commands.add_parser("export", help="ONNX and torch.export (.pt2) files with their preprocessing",
                            description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )  # fmt: skip
    explain.add_arguments(
        commands.add_parser("explain", help="LayerCAM heat maps and a contact sheet of the best and worst",
                            description=explain.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )  # fmt: skip
    compare.add_arguments(
        commands.add_parser("compare", help="is the difference between two revisions real? (dvc metrics diff's twin)",
                            description=compare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )  # fmt: skip
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
    if args.command == "score":
        from iaakd.score import run
    elif args.command == "export":
        from iaakd.export import run
    elif args.command == "compare":
        from iaakd.compare import run
    else:
        from iaakd.explain import run
    return run(args)


def score_main() -> None:
    """``iaakd-score``: the alias of ``iaakd score``."""
    main(["score", *sys.argv[1:]])


if __name__ == "__main__":
    main()
