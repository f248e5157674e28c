"""``iaakd compare [A] [B]``: is the difference between two revisions real? ``dvc metrics diff``'s twin.

For the student and the teacher, each metric's A, B, B − A and a paired 95 % interval over the test images
both revisions share (:mod:`iaakd.paired`: the same resampled images for both sides), and whether the interval
excludes 0 ("resolved"). A side may name several revisions, comma-separated: the seeds of one arm. Where both
sides have the same ``student.seed`` values, seeds are paired (seed j against seed j) and the interval covers
the seeds too; otherwise each side's seeds are resampled on their own.

A revision is anything git knows (a commit, branch or tag), the name of a ``dvc exp`` experiment, or
``workspace`` (the files on disk). A defaults to HEAD and B to the workspace, as ``dvc metrics diff``'s do. The
predictions come from ``reports/predictions.json`` (written by the evaluate stage) as each revision has it.

Exit status: 0, 1 bad usage or revisions that cannot be compared (another test split, no predictions), 3 with
``--fail-if-worse METRIC`` when B is resolved worse than A in that metric of the student (a pull-request gate).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iaakd.command import at_least
from iaakd.errors import UserError
from iaakd.paired import HIGHER_IS_BETTER, METRICS, compare
from iaakd.predictions import MODELS, Predictions

PREDICTIONS = Path("reports/predictions.json")
PARAMS = Path("params.yaml")
WORKSPACE = "workspace"
EXIT_WORSE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "a", nargs="?", default="HEAD", metavar="A", help="revision(s), comma-separated (HEAD)"
    )
    parser.add_argument("b", nargs="?", default=WORKSPACE, metavar="B", help="revision(s), comma-separated "
                        "(workspace: the files on disk)")  # fmt: skip
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--md", action="store_true", help="print a Markdown table")
    parser.add_argument("--fail-if-worse", choices=METRICS, metavar="METRIC",
                        help=f"exit status 3 when B is resolved worse than A in the student's METRIC ({', '.join(METRICS)})")  # fmt: skip
    parser.add_argument("--resamples", type=at_least(100), default=2000, help="bootstrap resamples (2000)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (0)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository (the current folder)")


@dataclass
class Revision:
    name: str  # as the user wrote it
    predictions: Predictions
    seed: int | None  # student.seed in its params.yaml


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def commit_of(repo: Path, name: str) -> str:
    """A git revision's commit, or a ``dvc exp`` experiment's (its ref under refs/exps/, by its name)."""
    found = git(repo, "rev-parse", "--verify", "-q", f"{name}^{{commit}}")
    if found.returncode == 0:
        return found.stdout.strip()
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout.split("\n")
    matches = [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(
            f"revision '{name}': {len(matches)} experiments have that name; name one by its commit"
        )
    raise UserError(f"revision '{name}': neither a git revision nor a dvc experiment in {repo}")


def read_revision(repo: Path, name: str) -> Revision:
    if name == WORKSPACE:
        file, params = repo / PREDICTIONS, repo / PARAMS
        if not file.is_file():
            raise UserError(
                f"{WORKSPACE}: no {PREDICTIONS} (run `dvc repro`, whose evaluate stage writes it)"
            )
        text, params_text = (
            file.read_text(encoding="utf-8"),
            params.read_text(encoding="utf-8") if params.is_file() else "",
        )
    else:
        commit = commit_of(repo, name)
        shown = git(repo, "show", f"{commit}:{PREDICTIONS.as_posix()}")
        if shown.returncode != 0:
            raise UserError(
                f"revision '{name}' ({commit[:10]}) has no {PREDICTIONS} (evaluated before it was kept?)"
            )
        text, params_text = shown.stdout, git(repo, "show", f"{commit}:{PARAMS.as_posix()}").stdout
    return Revision(name, Predictions.from_json(text, f"{name}:{PREDICTIONS}"), student_seed(params_text))


def student_seed(params_text: str) -> int | None:
    from ruamel.yaml import YAML

    try:
        params = YAML(typ="safe", pure=True).load(params_text) or {}
        seed = params.get("student", {}).get("seed")
    except Exception:  # noqa: BLE001 - a params file it cannot read pairs nothing by seed
        return None
    return seed if isinstance(seed, int) else None


def side(repo: Path, names: str) -> list[Revision]:
    revisions = [read_revision(repo, name.strip()) for name in names.split(",") if name.strip()]
    if not revisions:
        raise UserError(f"no revision in '{names}'")
    return revisions


def aligned(a: list[Revision], b: list[Revision]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The test images every revision was evaluated on, in one order; one line when they differ."""
    first = a[0].predictions
    for revision in [*a, *b]:
        other = revision.predictions
        if sorted(other.image_ids) != sorted(first.image_ids):
            shared = len(set(other.image_ids) & set(first.image_ids))
            raise UserError(
                f"{a[0].name} and {revision.name} were evaluated on different test images ({len(first.image_ids)} "
                f"and {len(other.image_ids)}, {shared} shared): a changed split or another dataset is not a "
                "paired comparison"
            )
        if other.output != first.output or other.cutoff != first.cutoff:
            raise UserError(f"{a[0].name} and {revision.name} differ in output type or cut-off "
                            f"({first.output}/{first.cutoff} vs {other.output}/{other.cutoff})")  # fmt: skip
    order = sorted(first.image_ids)
    positions = {revision.name: _positions(revision.predictions.image_ids, order) for revision in [*a, *b]}
    truth = first.true_score[positions[a[0].name]]
    for revision in [*a, *b]:
        if not np.allclose(revision.predictions.true_score[positions[revision.name]], truth, atol=1e-6):
            raise UserError(
                f"{a[0].name} and {revision.name} have other ground truth for the same test images"
            )
    return order, positions


def _positions(image_ids: list[str], order: list[str]) -> np.ndarray:
    index = {image_id: position for position, image_id in enumerate(image_ids)}
    return np.array([index[image_id] for image_id in order])


def paired_by_seed(a: list[Revision], b: list[Revision]) -> tuple[list[Revision], list[Revision], bool]:
    """Both sides ordered by seed, and whether seeds pair (the same seeds on both sides, more than one)."""
    seeds_a, seeds_b = [r.seed for r in a], [r.seed for r in b]
    pairs = (
        len(a) > 1
        and None not in seeds_a
        and sorted(seeds_a) == sorted(seeds_b)
        and len(set(seeds_a)) == len(a)
    )
    if pairs:
        a, b = sorted(a, key=lambda r: r.seed), sorted(b, key=lambda r: r.seed)
    return a, b, pairs


def comparison(a: list[Revision], b: list[Revision], resamples: int, seed: int) -> dict:
    """The JSON result: for each model and metric, A, B, B − A, its 95 % interval and whether it is resolved."""
    order, positions = aligned(a, b)
    a, b, paired = paired_by_seed(a, b)
    first = a[0].predictions
    at = positions[a[0].name]
    truth = first.true_score[at]
    true_dist = None if first.true_distribution is None else first.true_distribution[at]
    models = {}
    for model in MODELS:
        if any(model not in revision.predictions.models for revision in [*a, *b]):
            continue

        dist_a, dist_b = (
            stacked(a, model, "distribution", positions),
            stacked(b, model, "distribution", positions),
        )
        with_emd = true_dist is not None and dist_a is not None and dist_b is not None
        # paired's A - B with B first: B - A, as dvc metrics diff's change
        result = compare(stacked(b, model, "score", positions), stacked(a, model, "score", positions), truth, resamples=resamples, seed=seed,
                         cutoff=first.cutoff, high_a=stacked(b, model, "high", positions), high_b=stacked(a, model, "high", positions),
                         true_dist=true_dist if with_emd else None, dist_a=dist_b if with_emd else None,
                         dist_b=dist_a if with_emd else None, paired_seeds=paired, names=("B", "A"))  # fmt: skip
        models[model] = {metric: _entry(value) for metric, value in result.items() if value is not None}
    return {"a": [r.name for r in a], "b": [r.name for r in b], "n_images": len(order), "paired_seeds": paired,
            "seeds": {"a": [r.seed for r in a], "b": [r.seed for r in b]}, "models": models}  # fmt: skip


def stacked(
    revisions: list[Revision], model: str, part: str, positions: dict[str, np.ndarray]
) -> np.ndarray | None:
    """One side's ``part`` (score, high, distribution) of ``model`` in the common image order: (images, ...)
    for one revision, (seeds, images, ...) for several; None where a revision has none."""
    values = [getattr(r.predictions.models[model], part) for r in revisions]
    if any(value is None for value in values):
        return None
    values = [value[positions[r.name]] for value, r in zip(values, revisions, strict=True)]
    return np.stack(values) if len(values) > 1 else values[0]


def _entry(value: dict) -> dict:
    low, high = value["ci95_low"], value["ci95_high"]
    resolved = low is not None and high is not None and (low > 0 or high < 0)
    return {"a": value["mean_b"], "b": value["mean_a"], "diff": value["difference"], "ci95": [low, high],
            "resolved": resolved}  # fmt: skip


def worse(result: dict, metric: str) -> bool:
    """B resolved worse than A in the student's ``metric`` (for EMD: higher)."""
    entry = result["models"].get("student", {}).get(metric)
    if entry is None or not entry["resolved"]:
        return False
    return entry["diff"] < 0 if HIGHER_IS_BETTER[metric] else entry["diff"] > 0


def table(result: dict, markdown: bool) -> str:
    a, b = ",".join(result["a"]), ",".join(result["b"])
    header = ["Model", "Metric", a, b, "Change", "95% interval", "Resolved"]
    rows = []
    for model, metrics in result["models"].items():
        for metric, entry in metrics.items():
            interval = entry["ci95"]
            rows.append([model, metric, _number(entry["a"]), _number(entry["b"]), _number(entry["diff"], signed=True),
                         "n/a" if None in interval else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]",
                         "yes" if entry["resolved"] else "no"])  # fmt: skip
    note = (f"{result['n_images']} test images; seeds {'paired' if result['paired_seeds'] else 'not paired'} "
            f"(A: {len(result['a'])} revision(s), B: {len(result['b'])}); resolved: the interval excludes 0")  # fmt: skip
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + f"\n\n{note}\n"
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]  # fmt: skip
    return "\n".join(lines) + f"\n\n{note}\n"


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    repo = args.repo
    if not (repo / ".git").exists() and git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise UserError(f"{repo}: not a git repository (iaakd compare reads revisions from git)")
    result = comparison(side(repo, args.a), side(repo, args.b), args.resamples, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result, markdown=args.md), end="")
    if args.fail_if_worse and worse(result, args.fail_if_worse):
        print(
            f"iaakd compare: B is resolved worse than A in the student's {args.fail_if_worse}",
            file=sys.stderr,
        )
        return EXIT_WORSE
    return 0
