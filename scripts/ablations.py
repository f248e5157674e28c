"""The paper's ablations on the pipeline's outputs, one seed each (the reduced protocol of the demo):

- Tables I-III: the teacher from each subset of the distiller's backbones;
- Table V: backbone frozen or trainable, with and without KD;
- Table VI: the KD loss's terms (feature term off, output target teacher or ground truth);
- Table VII: student input padded and centre-cropped (the paper's 800 -> 640) vs resized, with and without KD;
- Table XII: semantic guidance from AVA's two tags, as input (multi-modal) and as target (multi-task);
- Table XIV: mixed loss (Eq. 10) and mixed label (Eq. 11).

Every student differs from params.yaml's only where its row says; a configuration shared by rows of
several tables is trained once. The noise floor to read the differences against is the KD comparison's
spread over seeds (results/kd_comparison.json). Run `dvc repro` first; writes results/ablations.json;
`python scripts/report.py` turns it into tables.

    python scripts/ablations.py [--tables i_iii v vi vii xii xiv] [--epochs N] [--crop-size 640 --pad-size 800]

A table already in results/ablations.json from the same configurations and pipeline outputs is kept, so an
interrupted run goes on where it stopped; `--fresh` trains every table again.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

from experiment import (
    DistillerRuns,
    Pipeline,
    StudentRuns,
    distiller_base,
    earlier_results,
    pipeline_inputs,
    with_overrides,
    write_results,
)

NO_KD = {"kd": {"enabled": False}}


def student_tables(size: int, crop: int, pad: int) -> dict[str, tuple[str, list[tuple[str, dict]]]]:
    """Each table: (title, rows of (name, overrides of params.yaml's student configuration))."""
    padded = {"input_mode": "pad_crop", "input_size": crop, "pad_size": pad}
    return {
        "v": (
            "Table V: backbone frozen or trainable",
            [
                ("trainable, no KD", NO_KD),
                ("trainable, KD", {}),
                ("frozen, no KD", {"freeze_backbone": True, **NO_KD}),
                ("frozen, KD", {"freeze_backbone": True}),
            ],
        ),
        "vi": (
            "Table VI: the terms of the KD loss",
            [
                ("no KD: EMD to the ground truth", NO_KD),
                ("EMD to the ground truth + feature term", {"kd": {"target": "ground_truth"}}),
                ("EMD to the teacher, no feature term", {"kd": {"feature_weight": 0.0}}),
                ("EMD to the teacher + feature term (Eq. 7)", {}),
            ],
        ),
        "vii": (
            f"Table VII: input padded to {pad} and centre-cropped to {crop}, or resized to {size}",
            [
                (f"{crop}x{crop} (pad {pad}), no KD", {**padded, **NO_KD}),
                (f"{size}x{size}, no KD", NO_KD),
                (f"{crop}x{crop} (pad {pad}), KD", padded),
                (f"{size}x{size}, KD", {}),
            ],
        ),
        "xii": (
            "Table XII: semantic guidance from AVA's two tags per image",
            [
                ("baseline: EMD to the ground truth", NO_KD),
                ("multi-modal: tags as auxiliary input", {"semantic": "input", **NO_KD}),
                ("multi-task: tags as auxiliary BCE target (Eq. 9)", {"semantic": "target", **NO_KD}),
                ("KD (proposed)", {}),
            ],
        ),
        "xiv": (
            "Table XIV: mixing the teacher's output with the ground truth",
            [
                ("KD (Eq. 7)", {}),
                ("mixed loss (Eq. 10)", {"kd": {"mix": "loss"}}),
                ("mixed label (Eq. 11)", {"kd": {"mix": "label"}}),
            ],
        ),
    }


def noise_floor(path: Path) -> dict | None:
    """The KD student's SRCC over seeds, from the KD comparison, when it has been run."""
    if not path.is_file():
        return None
    comparison = json.loads(path.read_text(encoding="utf-8"))
    return {"seeds": comparison["seeds"], "student_kd_srcc": comparison["summary"]["student_kd"]["srcc"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", nargs="+", default=["i_iii", "v", "vi", "vii", "xii", "xiv"])
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs (smoke tests)")
    parser.add_argument(
        "--pad-size", type=int, default=None, help="Table VII; default: the largest image side"
    )
    parser.add_argument("--crop-size", type=int, default=None, help="Table VII; default: 0.8 x the pad size")
    parser.add_argument("--out", type=Path, default=Path("results/ablations.json"))
    parser.add_argument("--fresh", action="store_true", help="train every table again")
    args = parser.parse_args()

    pipeline = Pipeline.load()
    students = StudentRuns(pipeline, args.epochs)
    pad = args.pad_size or int(pipeline.frame[["width", "height"]].max(axis=None))
    crop = args.crop_size or round(0.8 * pad)  # the paper: 800 -> 640
    tables = student_tables(students.base.input_size, crop, pad)
    unknown = set(args.tables) - set(tables) - {"i_iii"}
    if unknown:
        parser.error(f"unknown tables {sorted(unknown)}; known: i_iii {' '.join(tables)}")
    signature = {
        "inputs": pipeline_inputs(),
        "student": dataclasses.asdict(students.base),
        "distiller": dataclasses.asdict(distiller_base(pipeline.params, args.epochs)),
        "pad_size": pad,
        "crop_size": crop,
    }
    earlier = earlier_results(args.out, signature, args.fresh)
    results: dict = {
        "n_test": len(students.test),
        "seed": students.base.seed,
        "student_config": dataclasses.asdict(students.base),
        "noise_floor": noise_floor(args.out.parent / "kd_comparison.json"),
        "signature": signature,
        "tables": dict(earlier.get("tables", {})),
        "complete": False,  # true once every table is there
    }
    if "teacher_backbones" in earlier:
        results["teacher_backbones"] = earlier["teacher_backbones"]
    kept = [key for key in args.tables if _has_table(results, key)]
    if kept:
        print(f"--- kept from {args.out}: tables {' '.join(kept)}", flush=True)

    if "i_iii" in args.tables and not _has_table(results, "i_iii"):
        results["teacher_backbones"] = teacher_backbone_table(DistillerRuns(pipeline, args.epochs))
        write_results(args.out, results)

    trained: dict[str, dict] = {}  # a configuration shared by several tables is trained once
    for table in results["tables"].values():
        for row in table["rows"]:
            trained.setdefault(_identity(students.base, row["overrides"]), _metrics_of(row))
    for key in (key for key in tables if key in args.tables and not _has_table(results, key)):
        title, variants = tables[key]
        if key == "xii" and not pipeline.has_tags:
            print("--- Table XII skipped: the labels have no semantic tags", flush=True)
            continue
        rows = []
        for name, overrides in variants:
            identity = _identity(students.base, overrides)
            if identity not in trained:
                print(f"--- {title}: {name}", flush=True)
                trained[identity] = students.run(with_overrides(students.base, overrides))
            rows.append({"name": name, "overrides": overrides, **trained[identity]})
        results["tables"][key] = {"title": title, "rows": rows}
        write_results(args.out, results)  # what is done so far survives an interrupted run
    every_table = ["i_iii", *(key for key in tables if key != "xii" or pipeline.has_tags)]
    results["complete"] = all(_has_table(results, key) for key in every_table)
    write_results(args.out, results)
    print(f"wrote {args.out}: {len(trained)} students" + ("" if results["complete"] else "; not every table"))


def teacher_backbone_table(distillers: DistillerRuns) -> dict:
    """Tables I-III: a teacher from every non-empty subset of the distiller's backbones."""
    rows = []
    for count in range(1, len(distillers.backbones) + 1):
        for subset in itertools.combinations(distillers.backbones, count):
            print(f"--- teacher from {' + '.join(subset)}", flush=True)
            rows.append({"backbones": list(subset), **distillers.run(list(subset), distillers.base.seed)})
    return {"title": "Tables I-III: which backbones feed the teacher", "rows": rows}


def _has_table(results: dict, key: str) -> bool:
    return "teacher_backbones" in results if key == "i_iii" else key in results["tables"]


def _identity(base, overrides: dict) -> str:
    """One string per student configuration, whichever table's row asks for it."""
    return json.dumps(dataclasses.asdict(with_overrides(base, overrides)), sort_keys=True)


def _metrics_of(row: dict) -> dict:
    return {key: value for key, value in row.items() if key not in ("name", "overrides")}


if __name__ == "__main__":
    main()
