"""Regenerates the README's result tables from the committed files under results/.

python scripts/render_results.py            # rewrites README.md between the result markers
python scripts/render_results.py --check    # exits 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

README = Path("README.md")
KD_RESULTS = Path("results/kd_comparison.json")
MATCHING_RESULTS = Path("results/matching.json")
TEACHER_SPREAD_RESULTS = Path("results/teacher_spread.json")
ROWS = (
    ("teacher", "teacher (3 backbones at full resolution + distiller)"),
    ("student_kd", "student with KD"),
    ("student_no_kd", "student without KD (ground truth only)"),
    ("student_kd_shuffled", "student with KD, teacher knowledge shuffled across images"),
    ("constant_predictor", "constant predictor (mean training distribution)"),
)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def kd_table(results: dict) -> str:
    config = results["student_config"]
    lines = [
        f"Demo numbers: {results['n_train']} training and {results['n_test']} test images; student "
        f"`{config['backbone']}` at {config['input_size']}x{config['input_size']}, {config['epochs']} epochs; "
        f"seeds {', '.join(str(s) for s in results['seeds'])}. Mean over seeds, spread = max - min. "
        f"Noise ceiling (SRCC of the known latent score against the vote means): {_cell(results['noise_ceiling_srcc'])}.",
        "",
        "| model | SRCC | SRCC spread | PLCC | Acc | EMD |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in ROWS:
        if key in results["summary"]:
            summary = results["summary"][key]
            get = lambda name, field="mean", s=summary: s.get(name, {}).get(field)  # noqa: E731
            lines.append(
                f"| {label} | {_cell(get('srcc'))} | {_cell(get('srcc', 'spread'))} | {_cell(get('plcc'))} | "
                f"{_cell(get('acc'))} | {_cell(get('emd'))} |"
            )
        else:
            single = results[key]
            lines.append(
                f"| {label} | {_cell(single['srcc'])} | (one run) | {_cell(single['plcc'])} | {_cell(single['acc'])} | {_cell(single['emd'])} |"
            )
    return "\n".join(lines)


def matching_table(results: dict) -> str:
    lines = [
        f"Demo numbers: {results['n_test']} test images, each scored by its nearest of {results['n_train']} "
        f"training images (cosine similarity).",
        "",
        "| scored by | SRCC | PLCC | Acc |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("gsf_matching", f"nearest image in MLSP feature space ({results['gsf_dim']:,} dims)"),
        (
            "teacher_feature_matching",
            f"nearest image in teacher-feature space (f_t, {results['teacher_feature_dim']} dims)",
        ),
        ("teacher", "the teacher (distiller output)"),
    ):
        row = results[key]
        lines.append(f"| {label} | {_cell(row['srcc'])} | {_cell(row['plcc'])} | {_cell(row['acc'])} |")
    return "\n".join(lines)


def teacher_spread_table(results: dict) -> str:
    srcc = results["srcc"]
    lines = [
        f"Demo numbers: the distiller trained {len(results['runs'])} times (seeds "
        f"{', '.join(str(run['seed']) for run in results['runs'])}) on the same features, scored on "
        f"{results['n_test']} test images. SRCC mean {_cell(srcc['mean'])}, sd {_cell(srcc['sd'])}, "
        f"range {_cell(srcc['min'])}-{_cell(srcc['max'])}.",
        "",
        "| seed | SRCC | PLCC | Acc |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {run['seed']} | {_cell(run['srcc'])} | {_cell(run['plcc'])} | {_cell(run['acc'])} |"
        for run in results["runs"]
    ]
    return "\n".join(lines)


TABLES = {
    "kd_comparison": (KD_RESULTS, kd_table),
    "matching": (MATCHING_RESULTS, matching_table),
    "teacher_spread": (TEACHER_SPREAD_RESULTS, teacher_spread_table),
}


def render(readme: str) -> str:
    for name, (path, make_table) in TABLES.items():
        if not path.is_file():
            continue
        table = make_table(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(\n<!-- /results:{name} -->)", re.S)
        readme = pattern.sub(lambda m, table=table: m.group(1) + table + m.group(2), readme)
    return readme


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    updated = render(current)
    if args.check:
        sys.exit(0 if updated == current else 1)
    README.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
