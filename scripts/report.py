"""One command from results/*.json to something a person can read: results/REPORT.md (every table, in
the paper's order, with the command that made it) and its plots in results/plots/, and the documentation's
result sections between their markers (``<!-- results:NAME -->``, in docs/**/*.md).

    python scripts/report.py            # writes results/REPORT.md, results/plots/*.png, docs/**/*.md
    python scripts/report.py --check    # exits 1 if a page or results/REPORT.md is out of date

--check reads the result files as committed (git HEAD), so that `make repro` on another machine, which moves
metrics/*.json in the last digits, does not make the committed pages look stale; where the working tree's
results differ from the committed ones, it also accepts pages made from them (`report.py` run, not yet
committed). Without git (an unpacked archive) it reads the working tree.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import yaml
from paper_beside import (
    NOT_IN_PAPER,
    PAPER,
    PARAMS,
    Beside,
    PaperError,
    beside,
    departures,
    paper_row,
    unmatched_references,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DOCS = Path("docs")  # the pages with result sections: docs/**/*.md
RESULTS = Path("results")
REPORT = RESULTS / "REPORT.md"
PLOTS = RESULTS / "plots"
KD_RESULTS = RESULTS / "kd_comparison.json"
PRETRAINING_RESULTS = RESULTS / "pretraining.json"
CSKD_RESULTS = RESULTS / "cskd.json"
MATCHING_RESULTS = RESULTS / "matching.json"
TEACHER_SPREAD_RESULTS = RESULTS / "teacher_spread.json"
ABLATION_RESULTS = RESULTS / "ablations.json"
RETRAINED_RESULTS = RESULTS / "folds_and_outputs.json"
EVALUATION = Path("metrics/evaluate.json")  # the pipeline's own result (dvc repro)
PER_CATEGORY = Path("reports/per_category.json")  # its Table IX (a table, not metrics to diff)
ROWS = (  # the KD comparison's rows; keys feed paper_beside's MATCHES (a key it does not name: —)
    ("teacher", "teacher (3 backbones at full resolution + distiller)"),
    ("student_kd", "student with KD"),
    ("student_no_kd", "student without KD (ground truth only)"),
    ("student_kd_shuffled", "student with KD, teacher knowledge shuffled across images"),
    ("student_kd_no_feature", "student with KD, no feature term (output term only)"),
    ("student_kd_oof", "student with KD, out-of-fold teacher outputs (f_t of the full distiller)"),
    ("student_kd_oof_fold_feature", "student with KD, out-of-fold outputs and f_t of the fold distillers"),
    ("student_kd_oof_output_only", "student with KD, out-of-fold teacher outputs, no feature term"),
    ("constant_predictor", "constant predictor (mean training distribution)"),
)
KD_SHORT = {  # the KD comparison's arms as the paired differences name them
    "student_kd": "KD",
    "student_no_kd": "no KD",
    "student_kd_shuffled": "KD shuffled",
    "student_kd_no_feature": "KD without f_t term",
    "student_kd_oof": "KD out-of-fold",
    "student_kd_oof_fold_feature": "KD out-of-fold with fold f_t",
    "student_kd_oof_output_only": "KD out-of-fold without f_t term",
}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _metrics(row: dict, keys: tuple[str, ...] = ("srcc", "plcc", "acc")) -> list[str]:
    return [_cell(row[key]) for key in keys]


def _markdown(
    intro: str,
    header: list[str],
    rows: list[list],
    paper: Beside | None = None,
    keys: list[str] | None = None,
) -> str:
    """A line saying what the numbers are, then the table; with ``paper``, the paper's numbers beside
    (each row matched by its key in ``keys``, else by its first cell)."""
    if paper is not None:
        intro, header, rows = paper.apply(intro, header, rows, keys)
    lines = [intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def _unfinished(results: dict) -> str:
    return (
        ""
        if results.get("complete")
        else " **From a run that did not finish: some tables or rows are not there yet.**"
    )


def _over_seeds(results: dict, key: str) -> tuple[dict, int]:
    """An arm's summary over seeds, with the sd computed from its runs where the summary lacks it (results
    written before the seed protocol), and its number of seeds."""
    summary = {name: dict(values) for name, values in results["summary"][key].items()}
    runs = results["runs"].get(key, [])
    for name, values in summary.items():
        if "sd" not in values:
            per_seed = [run[name] for run in runs if run.get(name) is not None]
            values["sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    return summary, len(runs)


def _kd_keys(results: dict) -> list[str]:
    """The KD table's rows: ROWS' order, then any other arm of the summary, constant predictor last."""
    known = [key for key, _ in ROWS]
    others = [key for key in results["summary"] if key not in known]
    return [*known[:-1], *others, known[-1]]


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _interval(result: dict | None) -> str:
    if result is None or result["ci95_low"] is None:
        return "n/a"
    return f"[{result['ci95_low']:+.3f}, {result['ci95_high']:+.3f}]"


def _share(result: dict | None) -> str:
    return (
        "n/a" if result is None or result["share_a_beats_b"] is None else f"{result['share_a_beats_b']:.0%}"
    )


def _teacher_fit(fit: dict | None) -> str:
    """The teacher on its own training images against its validation images, in a sentence."""
    if not fit:
        return ""

    def srcc_emd(name: str) -> str:
        return f"SRCC {_cell(fit[name]['srcc'])}, EMD {_cell(fit[name].get('emd'))}"

    return (
        f" The teacher on its own training images: {srcc_emd('train_in_fold')} in-fold, "
        f"{srcc_emd('train_out_of_fold')} out-of-fold ({fit['folds']} fold distillers), against "
        f"{srcc_emd('val')} on the validation images (train - val SRCC gap {_cell(fit['train_val_srcc_gap'])} "
        f"in-fold, {_cell(fit['train_out_of_fold_val_srcc_gap'])} out-of-fold)."
    )


def _seed_counts(results: dict) -> str:
    """Which seeds the rows ran with: one list for every row, or (the seed protocol) the first ones of a list,
    as many as the row's seeds column says."""
    seeds = ", ".join(str(seed) for seed in results["seeds"])
    if "protocol" not in results:
        return f"seeds {seeds}"
    return f"seeds {seeds}, each row over as many of them (the first) as its seeds column says"


def _seed_row(results: dict, key: str) -> list[str]:
    """A row's seeds, and SRCC (mean, sd), PLCC, Acc and EMD over them (n/a where it has not run)."""
    if key not in results["summary"]:
        return ["0", *["n/a"] * 5]
    summary, seeds = _over_seeds(results, key)
    get = lambda name, field="mean": summary.get(name, {}).get(field)  # noqa: E731
    return [
        seeds,
        *(_cell(value) for value in (get("srcc"), get("srcc", "sd"), get("plcc"), get("acc"), get("emd"))),
    ]


SEED_HEADER = ["seeds", "SRCC", "SRCC sd", "PLCC", "Acc", "EMD"]


def _which_exploratory(comparisons: list[dict]) -> str:
    if any(entry["primary"] for entry in comparisons):
        return (
            "The primary comparison was named before the runs; every other difference is exploratory: with "
            "this many intervals, some exclude 0 by chance."
        )
    return (
        "Every difference here is exploratory (the demo's one primary comparison is the KD comparison's): "
        "with this many intervals, some exclude 0 by chance."
    )


def _interval_made(metrics: dict) -> str:
    """How a paired difference's 95 % interval was made (iaakd.paired; results written before it said so
    hold the earlier percentile bootstrap's)."""
    if metrics.get("interval", "percentile") == "seed-t":
        if metrics.get("n_seeds_a") == metrics.get("n_seeds_b") == 1:  # no seeds' part to add
            return ("95 % seed-t interval, with one seed a side its test images' part alone (a t interval "
                    "from the bootstrap over the test images; another seed's spread is not in it)")  # fmt: skip
        return ("95 % seed-t interval (the spread over resampled test images and over seeds added, a t "
                "quantile with Welch-Satterthwaite's degrees of freedom: about one fewer than the seeds where "
                "the seeds' spread dominates)")  # fmt: skip
    return (
        "95 % interval of the earlier percentile bootstrap over test images and seeds (too narrow at 3 seeds)"
    )


def kd_paired_table(results: dict, short: dict[str, str] = KD_SHORT) -> str | None:
    """The paired differences A - B of a result script's rows (results' "paired"; rows named by ``short``);
    None before the seed protocol wrote them."""
    comparisons = results.get("paired")
    if not comparisons:
        return None
    rows = []
    for entry in comparisons:
        srcc, emd = entry["metrics"]["srcc"], entry["metrics"].get("emd")
        seeds = f"{srcc['n_seeds_a']} / {srcc['n_seeds_b']}" + (" paired" if srcc["paired_seeds"] else "")
        label = f"{short.get(entry['a'], entry['a'])} − {short.get(entry['b'], entry['b'])}"
        rows.append(
            [label, "**primary**" if entry["primary"] else "exploratory", seeds,
             _signed(srcc["difference"]), _interval(srcc), _share(srcc),
             _signed(emd and emd["difference"]), _interval(emd), _share(emd)]
        )  # fmt: skip
    first = comparisons[0]["metrics"]["srcc"]
    return _markdown(
        f"Paired differences (A − B), {_interval_made(first)}, share of seed pairs A beats "
        f"B ({first['n_images']} test images, {first['resamples']} bootstrap resamples; seeds paired where "
        "both rows ran the same seeds). Higher SRCC is better, lower EMD is better (a negative EMD "
        f"difference favours A). {_which_exploratory(comparisons)}",
        ["A − B", "comparison", "seeds A / B", "SRCC A − B", "SRCC 95 % interval", "SRCC: A beats B",
         "EMD A − B", "EMD 95 % interval", "EMD: A beats B"],
        rows,
    )  # fmt: skip


def kd_table(results: dict, paper: Beside | None = None) -> str:
    """The KD comparison: each row's mean and sd over its seeds (the paper's numbers beside), then the
    paired differences; also for results written before the seed protocol (no paired differences)."""
    config = results["student_config"]
    labels = dict(ROWS)
    keys = [
        key
        for key in _kd_keys(results)
        if key in results["summary"] or key in ("teacher", "constant_predictor")
    ]
    rows = []
    for key in keys:
        label = labels.get(key, key)
        if key in results["summary"]:
            rows.append([label, *_seed_row(results, key)])
        else:
            single = results[key]
            rows.append(
                [label, "one run", _cell(single["srcc"]), "n/a", *_metrics(single, ("plcc", "acc", "emd"))]
            )
    unfinished = _unfinished(results) if "complete" in results else ""
    table = _markdown(
        f"Demo numbers: {results['n_train']} training and {results['n_test']} test images; student "
        f"`{config['backbone']}` at {config['input_size']}x{config['input_size']}, {config['epochs']} epochs; "
        f"{_seed_counts(results)}. Mean and sd over seeds (sd: n/a for one seed). "
        f"Noise ceiling (SRCC of the known latent score against the vote means): "
        f"{_cell(results['noise_ceiling_srcc'])}.{_teacher_fit(results.get('teacher_fit'))}{unfinished}",
        ["model", "seeds", "SRCC", "SRCC sd", "PLCC", "Acc", "EMD"],
        rows,
        paper,
        keys,
    )
    differences = kd_paired_table(results)
    if differences is None:
        return (
            table
            + "\n\nNo paired differences yet: `python scripts/kd_comparison.py` (the seed protocol) writes them."
        )
    return table + "\n\n" + differences


PRETRAINING_ROWS = {  # scripts/pretraining.py's rows
    "weights_kd": "ImageNet init, KD (the KD comparison's runs)",
    "weights_no_kd": "ImageNet init, no KD (the KD comparison's runs)",
    "pretrain_kd": "pretrained (all distortions), KD",
    "pretrain_no_kd": "pretrained (all distortions), no KD",
    "control_no_kd": "control: pretrained on temperature and tint only, no KD",
    "control_kd": "control: pretrained on temperature and tint only, KD",
    "pretrain_kd_labels80": "pretrained, KD, 80 % of the labels",
    "weights_kd_labels80": "ImageNet init, KD, 80 % of the labels",
}
PRETRAINING_SHORT = {
    "weights_kd": "ImageNet KD",
    "weights_no_kd": "ImageNet no KD",
    "pretrain_kd": "pretrained KD",
    "pretrain_no_kd": "pretrained no KD",
    "control_no_kd": "control no KD",
    "control_kd": "control KD",
    "pretrain_kd_labels80": "pretrained KD 80 %",
    "weights_kd_labels80": "ImageNet KD 80 %",
}


def _seed_rows(results: dict, labels: dict[str, str]) -> list[list[str]]:
    """One row per configuration of ``labels`` that ran: its seeds, and SRCC (mean, sd), PLCC, Acc, EMD."""
    return [[label, *_seed_row(results, key)] for key, label in labels.items() if key in results["summary"]]


def _pair_accuracy(accuracy: dict) -> str:
    """Held-out pair accuracy of each pretraining, mean over its seeds, overall and per group (after; before)."""
    parts = []
    for name, by_seed in accuracy.items():
        runs = list(by_seed.values())
        after = np.mean([run["after"]["overall"]["accuracy"] for run in runs])
        before = np.mean([run["before"]["overall"]["accuracy"] for run in runs])
        lowest = min(run["after"]["overall"]["ci95"][0] for run in runs)
        groups = sorted({group for run in runs for group in run["after"]["by_group"]})
        per_group = ", ".join(
            f"{group} {np.mean([run['after']['by_group'][group]['accuracy'] for run in runs]):.3f} (lowest "
            f"lower end {min(run['after']['by_group'][group]['ci95'][0] for run in runs):.3f})"
            for group in groups
        )
        parts.append(f"'{name}' {after:.3f} (before training {before:.3f}; lowest 95 % lower end over its "
                     f"{len(runs)} seeds {lowest:.3f}); per group {per_group}")  # fmt: skip
    return "; ".join(parts)


def pretraining_table(results: dict, paper: Beside | None = None) -> str:
    """scripts/pretraining.py: each row over its seeds, the pretrainings' held-out pair accuracy, the
    paired differences and the convergence of the validation EMD."""
    config, protocol = results["student_config"], results["protocol"]
    pretrain = protocol["pretrain"]
    table = _markdown(
        f"Demo numbers: {results['n_train']} training and {results['n_test']} test images; student "
        f"`{config['backbone']}` at {config['input_size']}x{config['input_size']}, {config['epochs']} epochs; "
        f"seeds {', '.join(map(str, results['seeds']))} for every row. Pretraining: {pretrain['num_images']} "
        f"good demo photos a seed, {pretrain['epochs']} epochs, {pretrain['variants_per_image']} variants per "
        f"image, task {pretrain['task']}. Held-out pair accuracy (chance 0.5), mean over seeds: "
        f"{_pair_accuracy(results.get('pretraining_accuracy', {}))}.{_unfinished(results)}",
        ["student", "seeds", "SRCC", "SRCC sd", "PLCC", "Acc", "EMD"],
        _seed_rows(results, PRETRAINING_ROWS),
    )
    parts = [table]
    differences = kd_paired_table(results, PRETRAINING_SHORT)
    if differences:
        parts.append(differences)
    curves = results.get("curves", {})
    if curves.get("first_epoch_at_reference_final") is not None:
        mean = curves["val_emd_mean"]
        parts.append(
            "Convergence (validation EMD per epoch, mean over seeds): ImageNet init with KD ends at "
            f"{curves['reference_final']:.4f}; the pretrained student with KD reaches that value first at epoch "
            f"{curves['first_epoch_at_reference_final']}, ImageNet init itself at epoch "
            f"{curves.get('reference_first_epoch_at_its_final', 'n/a')}. Per epoch, ImageNet: "
            + ", ".join(f"{v:.4f}" for v in mean["weights_kd"])
            + "; pretrained: "
            + ", ".join(f"{v:.4f}" for v in mean["pretrain_kd"])
            + "."
        )
    return "\n\n".join(parts)


CSKD_ROWS = {  # scripts/cskd.py's rows (align_kd: the earlier protocol's only)
    "weights_kd": "ImageNet init, KD",
    "weights_no_kd": "ImageNet init, no KD (the KD comparison's runs)",
    "weights_kd_pool": "ImageNet init, KD + the pool",
    "align_kd": "aligned student, KD",
    "align_kd_pool": "aligned student, KD + the pool",
    "both_kd_pool": "aligned student and teacher, KD + the pool",
    "q_weights_no_kd": "25 % of the labels: ImageNet init, no KD",
    "q_weights_kd": "25 %: ImageNet init, KD",
    "q_weights_kd_unlabeled": "25 %: ImageNet init, KD + withheld images and pool",
    "q_align_kd": "25 %: aligned student, KD",
    "q_align_kd_unlabeled": "25 %: aligned student, KD + withheld images and pool",
    "q_both_kd": "25 %: aligned student and teacher, KD",
    "q_both_kd_unlabeled": "25 %: aligned student and teacher, KD + withheld images and pool",
}
CSKD_SHORT = {
    "weights_kd": "KD",
    "weights_no_kd": "no KD",
    "weights_kd_pool": "KD + pool",
    "align_kd": "aligned KD",
    "align_kd_pool": "aligned KD + pool",
    "both_kd_pool": "both aligned KD + pool",
    "q_weights_no_kd": "25 % no KD",
    "q_weights_kd": "25 % KD",
    "q_weights_kd_unlabeled": "25 % KD + unlabelled",
    "q_align_kd": "25 % aligned KD",
    "q_align_kd_unlabeled": "25 % aligned KD + unlabelled",
    "q_both_kd": "25 % both aligned KD",
    "q_both_kd_unlabeled": "25 % both aligned KD + unlabelled",
}


def _cskd_teachers(results: dict) -> str:
    """Which teacher the CSKD rows learnt from, and each kind's test SRCC over its seeds."""
    # the earlier protocol: the pipeline's distiller, the encoder among its backbones
    if "teachers" not in results:
        teachers = [
            m["srcc"] for m in results.get("teacher_low_labels", {}).values() if m["srcc"] is not None
        ]
        low = f" (on 25 % of the labels, retrained: test SRCC {np.mean(teachers):.3f})" if teachers else ""
        return (f" Teacher: the pipeline's distiller, whose backbones include the encoder (the earlier "
                f"protocol){low}.")  # fmt: skip
    protocol = results["protocol"]
    names = " + ".join(f"`{name.split('.')[0]}`" for name in protocol["teacher_backbones"])
    kinds = []
    for kind, by_seed in results["teachers"].items():  # "<label fraction>[ aligned]"
        fraction, *aligned = kind.split()
        srcc = [metrics["srcc"] for metrics in by_seed.values() if metrics["srcc"] is not None]
        kinds.append(f"{float(fraction) * 100:g} % of the labels{', aligned' if aligned else ''} "
                     f"{_cell(np.mean(srcc) if srcc else None)} ({len(srcc)} seeds)")  # fmt: skip
    kinds = "; ".join(kinds)
    return (f" Teacher: a distiller on {names}, none of them the encoder `{protocol['align']['encoder']}`, "
            f"retrained with each seed; an aligned teacher adds the seed's aligned backbone's features. Its "
            f"test SRCC: {kinds}.")  # fmt: skip


def cskd_table(results: dict, paper: Beside | None = None) -> str:
    """scripts/cskd.py: each row over its seeds, the teachers, the alignment's held-out cosine, the pool, then
    the paired differences."""
    config, pool = results["student_config"], results["pool"]
    cosines = list(results.get("align_cosine", {}).values())
    aligned = (
        f" Alignment (held-out cosine to the encoder, centred, mean over {len(cosines)} seeds): "
        f"{np.mean([c['before'] for c in cosines]):.3f} after the head-only epoch, "
        f"{np.mean([c['after'] for c in cosines]):.3f} at the end."
        if cosines
        else ""
    )
    table = _markdown(
        f"Demo numbers: {results['n_train']} training images ({results['n_train_labelled_low']} labelled at "
        f"25 %), {results['n_test']} test images, a pool of {pool['kept']} unlabelled demo images; student "
        f"`{config['backbone']}` at {config['input_size']}x{config['input_size']}, {config['epochs']} epochs; "
        f"each row's seeds in its column.{_cskd_teachers(results)}{aligned} The encoder is an ImageNet CNN (no "
        f"CLIP weights offline): the aligned rows say nothing about CLIP.{_unfinished(results)}",
        ["student", "seeds", "SRCC", "SRCC sd", "PLCC", "Acc", "EMD"],
        _seed_rows(results, CSKD_ROWS),
    )
    differences = kd_paired_table(results, CSKD_SHORT)
    return table if differences is None else table + "\n\n" + differences


def _paper_gain(paper: Beside | None, category: str) -> str:
    """The paper's SRCC gain of KD in ``category`` (Table IX: its KD ✓ row minus its KD ✗ row)."""
    reference = None if paper is None else paper.match.rows.get(category)
    if reference is None:
        return NOT_IN_PAPER
    table, label = reference
    with_kd, without = (paper_row(paper.paper, (table, label.replace("✓", mark))) for mark in ("✓", "✗"))
    return _signed(with_kd["srcc"] - without["srcc"])


def kd_category_table(results: dict, paper: Beside | None = None) -> str | None:
    """Table IX's gain of KD over no KD per category, from the KD comparison's runs (exploratory)."""
    gains = results.get("per_category")
    if gains is None:
        return None
    if "empty_because" in gains:
        return f"No categories: {gains['empty_because']}."
    rows = []
    for name, entry in gains.items():
        if "metrics" not in entry:
            rows.append([name, entry["n"], *["n/a"] * 5, _paper_gain(paper, name)])
            continue
        srcc = entry["metrics"]["srcc"]
        rows.append([name, entry["n"], _cell(srcc["mean_a"]), _cell(srcc["mean_b"]), _signed(srcc["difference"]),
                     _interval(srcc), _share(srcc), _paper_gain(paper, name)])  # fmt: skip
    return _markdown(
        "Demo numbers: the KD comparison's KD and no-KD students (all their seeds) on the test images of each "
        "category (an image is in a category when either of its two tags names it); the difference with its "
        "paired 95 % interval, exploratory (eight intervals); n/a: too few test images in the category "
        "(`results/kd_comparison.json` says how few). Paper gain: Table IX's SRCC with KD minus without, on AVA.",
        ["category", "images", "SRCC KD", "SRCC no KD", "KD − no KD", "95 % interval", "KD beats no KD",
         "paper gain"],
        rows,
    )  # fmt: skip


def matching_table(results: dict, paper: Beside | None = None) -> str:
    labels = (
        ("gsf_matching", f"nearest image in MLSP feature space ({results['gsf_dim']:,} dims)"),
        (
            "teacher_feature_matching",
            f"nearest image in teacher-feature space (f_t, {results['teacher_feature_dim']} dims)",
        ),
        ("teacher", "the teacher (distiller output)"),
    )
    return _markdown(
        f"Demo numbers: {results['n_test']} test images, each scored by its nearest of {results['n_train']} "
        f"training images (cosine similarity).",
        ["scored by", "SRCC", "PLCC", "Acc"],
        [[label, *_metrics(results[key])] for key, label in labels],
        paper,
        [key for key, _ in labels],
    )


def teacher_spread_table(results: dict, paper: Beside | None = None) -> str:
    srcc = results["srcc"]
    return _markdown(
        f"Demo numbers: the distiller trained {len(results['runs'])} times (seeds "
        f"{', '.join(str(run['seed']) for run in results['runs'])}) on the same features, scored on "
        f"{results['n_test']} test images. SRCC mean {_cell(srcc['mean'])}, sd {_cell(srcc['sd'])}, "
        f"range {_cell(srcc['min'])}-{_cell(srcc['max'])}.",
        ["seed", "SRCC", "PLCC", "Acc"],
        [[run["seed"], *_metrics(run)] for run in results["runs"]],
        paper,
    )


def teacher_backbones_table(results: dict, paper: Beside | None = None) -> str | None:
    """Tables I-III: the teacher on each subset of the backbones over its seeds, and each subset's paired
    difference from the teacher on all of them."""
    section = results.get("teacher_backbones")
    if section is None:
        return None
    table = _markdown(
        f"Demo numbers: the distiller (params.yaml's configuration) retrained on the features of each subset of "
        f"backbones, seeds {', '.join(map(str, results['seeds']))} (the distiller's), {results['n_test']} test "
        f"images; mean and sd over seeds.{_unfinished(results)}",
        ["backbones", "GSF dims", *SEED_HEADER],
        [[row["name"], f"{row['gsf_dim']:,}", *_seed_row(section, row["name"])] for row in section["rows"]],
        paper,
    )
    short = {
        row["name"]: " + ".join(name.split(".")[0] for name in row["backbones"]) for row in section["rows"]
    }
    differences = kd_paired_table(section, short)
    return table if differences is None else table + "\n\n" + differences


def ablation_table(results: dict, key: str, paper: Beside | None = None) -> str | None:
    """One of the student ablations (Tables V, VI, VII, XII, XIV) from results/ablations.json: each row over
    its seeds, and the table's paired differences."""
    table = results["tables"].get(key)
    if table is None:
        planned = key in results.get("protocol", {}).get("comparisons", {})
        return (
            f"Not finished yet: some of its runs are missing from `{ABLATION_RESULTS}` (`{ABLATIONS}` trains "
            "them, keeping those already run)."
            if planned
            else None
        )
    config = results["student_config"]
    costs = key == "vii"  # Table VII sets input size against cost
    rows = [
        [row["name"], *_seed_row(results, row["config"]), *([f"{row['gmacs']:.2f}"] if costs else [])]
        for row in table["rows"]
    ]
    intro = _markdown(
        f"Demo numbers: {results['n_train']} training and {results['n_test']} test images; student "
        f"`{config['backbone']}` at {config['input_size']}x{config['input_size']} unless the row says otherwise, "
        f"{config['epochs']} epochs; seeds {', '.join(map(str, results['seeds']))} for every row; mean and sd "
        f"over seeds. The rows with KD (Eq. 7), without KD and without the feature term are the KD comparison's runs."
        f"{_unfinished(results)}",
        ["student", *SEED_HEADER, *(["GMACs"] if costs else [])],
        rows,
        paper,
    )
    short = {row["config"]: row["name"] for row in table["rows"]}
    wanted = {tuple(pair) for pair in table["comparisons"]}
    paired = [entry for entry in results.get("paired", []) if (entry["a"], entry["b"]) in wanted]
    differences = kd_paired_table({"paired": paired}, short) if paired else None
    return intro if differences is None else intro + "\n\n" + differences


def teacher_student_table(report: dict, paper: Beside | None = None) -> str:
    """Table VIII from the pipeline's evaluation: effectiveness against cost."""
    teacher = report["teacher"]
    distiller = (
        f" The teacher's parameters and GMACs are its backbones', as the paper counts them; its distiller adds "
        f"{teacher['distiller_params_m']:.2f} M parameters and {teacher['distiller_gmacs']:.4f} GMACs."
        if "distiller_params_m" in teacher
        else ""
    )
    return _markdown(
        f"Demo numbers: the pipeline's own models (`dvc repro`), {report['n']} test images.{distiller}",
        ["model", "input", "params (M)", "GMACs", "SRCC", "PLCC", "Acc"],
        [
            [name, report[name]["gmacs_input"], f"{report[name]['params_m']:.1f}",
             f"{report[name]['gmacs']:.2f}", *_metrics(report[name])]
            for name in ("teacher", "student")
        ],
        paper,
    )  # fmt: skip


def per_category_table(report: dict, paper: Beside | None = None) -> str:
    """Table IX: per category of the test set, membership by AVA's two tags per image."""
    if not report["per_category"]:
        return f"No categories: {report.get('per_category_empty_because', 'none has test images')}."
    return _markdown(
        f"Demo numbers: the pipeline's student and teacher on the test images of each category "
        f"(an image is in a category when either of its two tags names it), {report['n']} test images.",
        ["category", "images", "share", "student SRCC", "student PLCC", "student Acc", "teacher SRCC"],
        [
            [name, row["n"], f"{row['n'] / report['n']:.1%}", *_metrics(row),
             _cell(report["per_category_teacher"][name]["srcc"])]
            for name, row in report["per_category"].items()
        ],
        paper,
    )  # fmt: skip


STUDENT_ROWS = (
    ("teacher", "teacher"),
    ("student_kd", "student with KD"),
    ("student_no_kd", "student without KD"),
)


def _part_differences(parts: dict[str, dict], what: str) -> str | None:
    """The paired differences of each part (an output type, a fold) in one table, the part named first."""
    short = dict(STUDENT_ROWS)
    rows = []
    for part, entry in parts.items():
        for comparison in entry.get("paired", []):
            srcc, emd = comparison["metrics"]["srcc"], comparison["metrics"].get("emd")
            rows.append([part, f"{short[comparison['a']]} − {short[comparison['b']]}", srcc["n_images"],
                         f"{srcc['n_seeds_a']} / {srcc['n_seeds_b']}", _signed(srcc["difference"]), _interval(srcc),
                         _share(srcc), _signed(emd and emd["difference"]), _interval(emd)])  # fmt: skip
    if not rows:
        return None
    return _markdown(
        f"Paired differences (A − B) on each {what}, {_interval_made(srcc)} on its test images, share of "
        "seed pairs A beats B; every one exploratory (the demo's primary comparison is the KD comparison's).",
        [what, "A − B", "test images", "seeds A / B", "SRCC A − B", "SRCC 95 % interval", "SRCC: A beats B",
         "EMD A − B", "EMD 95 % interval"],
        rows,
    )  # fmt: skip


def outputs_table(results: dict, paper: Beside | None = None) -> str | None:
    """Table XV: the other output types, each with its own teachers, over seeds; and their differences."""
    outputs = results["outputs"]
    if not outputs:
        return None
    first = next(iter(outputs.values()))
    table = _markdown(
        'Demo numbers: for each output type and seed the distiller is trained again (BCE against "above the '
        'cut-off", or MSE against the score), then students with and without its knowledge (seed s: the '
        f"distiller's and the students'); {first['n_train']} training and {first['n_test']} test images, seeds "
        f"{', '.join(map(str, results['seeds']))}; mean and sd over seeds. For binary outputs SRCC and PLCC rank "
        f'by the probability of "high"; EMD: n/a.{_unfinished(results)}',
        ["output", "model", *SEED_HEADER],
        [[output, label, *_seed_row(entry, key)] for output, entry in outputs.items() for key, label in STUDENT_ROWS],
        paper,
        [f"{output}/{key}" for output in outputs for key, _ in STUDENT_ROWS],
    )  # fmt: skip
    differences = _part_differences(outputs, "output")
    return table if differences is None else table + "\n\n" + differences


def folds_table(results: dict, paper: Beside | None = None) -> str | None:
    """Fig. 6: teacher and students on disjoint random test sets; KD - no KD on each and over all of them."""
    folds = results["folds"]
    if not folds:
        return None
    mean = lambda entry, key: entry["summary"].get(key, {}).get("srcc", {}).get("mean")  # noqa: E731
    rows = [
        [fold["fold"], fold["n_test"], *(_cell(mean(fold, key)) for key, _ in STUDENT_ROWS)] for fold in folds
    ]
    ahead = sum(1 for fold in folds if (mean(fold, "student_kd") or 0) > (mean(fold, "student_no_kd") or 0))
    images_only = (
        " With one seed on each fold, each interval below is over that fold's test images only: it leaves out "
        "how far another seed would move the students, so it is narrower than an interval over seeds."
        if len(results["fold_seeds"]) == 1
        else ""
    )
    table = _markdown(
        f"Demo numbers: {len(folds)} random folds with disjoint test sets (the paper: 12 of 20,000); on each, the "
        f"distiller is trained again and students with and without KD, seeds "
        f"{', '.join(map(str, results['fold_seeds']))} on each fold (SRCC: mean over them). KD ahead in {ahead} "
        f"of {len(folds)} folds. The last difference ranks every fold's test images together, each scored by "
        f"its own fold's models, so offsets between the folds' models count against both rows.{images_only}"
        f"{_unfinished(results)}",
        ["fold", "test images", "teacher SRCC", "student with KD", "student without KD"],
        rows,
        paper,
    )  # fmt: skip
    parts = {f"fold {fold['fold']}": fold for fold in folds}
    # over all folds' test images, each ranked by its own fold's models: offsets between folds count too
    if "pooled_folds" in results:
        parts["all folds' test images"] = results["pooled_folds"]
    differences = _part_differences(parts, "fold")
    return table if differences is None else table + "\n\n" + differences


@dataclass(frozen=True)
class Section:
    """One table of the report: where its numbers come from, the command that made them, how to show them."""

    name: str  # also the pages' marker: <!-- results:name -->
    heading: str
    path: Path
    command: str
    make_table: Callable[[dict, Beside | None], str | None]
    paper_section: str | None = None  # whose paper rows it is given (paper_beside.MATCHES); None: its own


ABLATIONS = "python scripts/ablations.py"
RETRAINED = "python scripts/folds_and_outputs.py"


def _ablation(key: str, heading: str) -> Section:
    return Section(f"table_{key}", heading, ABLATION_RESULTS, ABLATIONS,
                   lambda results, paper: ablation_table(results, key, paper))  # fmt: skip


SECTIONS = [  # in the paper's order
    Section("kd_comparison", "The KD comparison, with its controls", KD_RESULTS,
            "python scripts/kd_comparison.py --seeds 0 1 2 3 4", kd_table),
    Section("pretraining", "Pretraining by distortion ranking (Pfister et al.)", PRETRAINING_RESULTS,
            "python scripts/pretraining.py --seeds 0 1 2", pretraining_table),
    Section("cskd", "CSKD: alignment and semi-supervised KD (Xu et al.)", CSKD_RESULTS,
            "python scripts/cskd.py --seeds 0 1 2 3 4", cskd_table),
    Section("teacher_backbones", "Tables I-III: which backbones feed the teacher", ABLATION_RESULTS,
            ABLATIONS, teacher_backbones_table),
    Section("matching", "Table IV: matching in feature spaces", MATCHING_RESULTS,
            "python scripts/matching.py", matching_table),
    _ablation("v", "Table V: backbone frozen or trainable"),
    _ablation("vi", "Table VI: the terms of the KD loss"),
    _ablation("vii", "Table VII: input size (pad and centre-crop vs resize)"),
    Section("teacher_student", "Table VIII: teacher and student, effectiveness and cost", EVALUATION,
            "dvc repro", teacher_student_table),
    Section("per_category", "Table IX: per category, by AVA's two tags", PER_CATEGORY,
            "dvc repro", per_category_table),
    Section("kd_per_category", "Table IX: KD's gain per category", KD_RESULTS,
            "python scripts/kd_comparison.py --seeds 0 1 2 3 4", kd_category_table, paper_section="per_category"),
    _ablation("xii", "Table XII: semantic guidance from AVA's tags"),
    _ablation("xiv", "Table XIV: mixed loss and mixed label"),
    Section("outputs", "Table XV: binary classification and score regression", RETRAINED_RESULTS,
            RETRAINED, outputs_table),
    Section("folds", "Fig. 6: random folds", RETRAINED_RESULTS, RETRAINED, folds_table),
    Section("teacher_spread", "Fig. 7: the teacher over training runs", TEACHER_SPREAD_RESULTS,
            "python scripts/teacher_spread.py --seeds 0 1 2 3 4", teacher_spread_table),
]  # fmt: skip


ResultReader = Callable[[Path], str | None]


def working_tree_text(path: Path) -> str | None:
    """The file as it is on disk, or None where it is not there."""
    return path.read_text(encoding="utf-8") if path.is_file() else None


def committed_reader() -> ResultReader | None:
    """A reader of files as committed at git HEAD, or None where there is no git repository with a commit."""
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True)
    except OSError:  # no git installed
        return None
    if head.returncode != 0:
        return None

    def committed_text(path: Path) -> str | None:
        shown = subprocess.run(["git", "show", f"HEAD:./{path.as_posix()}"], capture_output=True)
        return shown.stdout.decode("utf-8") if shown.returncode == 0 else None

    return committed_text


def departures_table(paper: dict, params: dict) -> str:
    """params.yaml's departures from the paper's hyper-parameters (results/paper.json's list)."""
    return _markdown(*departures(paper, params))


def tables(read: ResultReader = working_tree_text) -> dict[str, str | None]:
    """Each section's markdown table, with the paper's numbers beside where results/paper.json is there,
    and the departures from the paper's hyper-parameters; None where its results are not there yet."""
    paper_text, params_text = read(PAPER), read(PARAMS)
    paper = None if paper_text is None else json.loads(paper_text)
    if paper is not None and (missing := unmatched_references(paper)):
        raise PaperError("; ".join(missing))
    loaded: dict[Path, dict | None] = {}
    made = {}
    for section in SECTIONS:
        if section.path not in loaded:
            text = read(section.path)
            loaded[section.path] = None if text is None else json.loads(text)
        results = loaded[section.path]
        made[section.name] = (
            None
            if results is None
            else section.make_table(results, beside(section.paper_section or section.name, paper))
        )
    params = None if params_text is None else yaml.safe_load(params_text)
    made["departures"] = None if paper is None or params is None else departures_table(paper, params)
    return made


def report(made: dict[str, str | None], plots: list[str]) -> str:
    lines = [
        "# Results on the demo",
        "",
        "Generated by `python scripts/report.py` from `results/*.json`; do not edit by hand. **Demo numbers**: "
        "synthetic images (each table says how many test images), three small backbones (EfficientNet-Lite0/1/2) "
        "instead of the paper's trio; the KD comparison under the demo tutorial's seed protocol (5 seeds, paired "
        "intervals, one primary comparison), the ablations (Tables I-III, V-VII, XII, XIV, XV) 3 seeds a row and "
        "Fig. 6 three folds, with paired intervals, every one of their differences exploratory; Tables IV, VIII "
        "and IX are the "
        "pipeline's own models (one `dvc repro`), Fig. 7 the teacher over 5 seeds. They show "
        "that each experiment runs and what it measures, not the paper's values; the documentation's "
        '"Reproducing the paper" gives the commands for real AVA. Beside each table, in columns marked '
        "paper, the paper's AVA numbers for the matching row (Acc as a fraction, like the demo's; `results/paper.json`, "
        "each with its source; the matching is `MATCHES` in `scripts/paper_beside.py`), — where the paper has "
        "no such row: to read the demo against, not to match (the data, backbones and hyper-parameters differ, "
        "last section).",
        "",
    ]
    for section in SECTIONS:
        made_by = "" if section.command == "dvc repro" else " (after `dvc repro`)"
        lines += [f"## {section.heading}", "", f"Made by `{section.command}`{made_by}.", ""]
        lines += [made[section.name] or "Not run yet.", ""]
        if section.name in plots:
            lines += [f"![{section.heading}](plots/{section.name}.png)", ""]
    lines += ["## Departures from the paper's hyper-parameters", "", made["departures"] or "Not run yet.", ""]
    lines += [
        "## Not reproduced",
        "",
        "Fig. 10 needs the authors' hand-made subject masks; CUHK-PQ cannot be obtained offline. Tables X "
        "and XI compare with published methods and other student backbones (ResNet18/50), whose weights "
        'are not available offline here: on AVA they are DVC experiments (docs, "Reproducing the paper"). '
        "The paper's numbers for them (and Table XIII's costs) are in `results/paper.json`.",
        "",
    ]
    return "\n".join(lines)


def plot_srcc(
    name: str, rows: list[tuple[str, list[float]]], title: str, reference: dict[str, float]
) -> None:
    """SRCC per row, one dot per run, and reference lines (teacher, constant predictor)."""
    PLOTS.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    for position, (_, values) in enumerate(rows):
        axis.scatter(values, [position] * len(values), color="C0", zorder=3)
        axis.plot([min(values), max(values)], [position, position], color="C0", alpha=0.5)
    reference = {label: value for label, value in reference.items() if value is not None}
    for index, (label, value) in enumerate(reference.items()):
        axis.axvline(value, color=f"C{index + 1}", linestyle="--", label=label)
    axis.set_yticks(range(len(rows)), [label for label, _ in rows])
    axis.invert_yaxis()
    axis.set(xlabel="test SRCC", title=title)
    axis.grid(alpha=0.3)
    if reference:
        axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(PLOTS / f"{name}.png", dpi=100, metadata={"Software": None})
    plt.close(figure)


def plots() -> list[str]:
    """The report's figures (any other section's figure removed); returns the names of the sections that
    have one."""
    made = []
    if KD_RESULTS.is_file():
        results = json.loads(KD_RESULTS.read_text(encoding="utf-8"))
        labels = dict(ROWS)
        rows = [  # every arm, one dot per seed (a run whose SRCC is undefined left out)
            (labels.get(key, key), [run["srcc"] for run in results["runs"][key] if run["srcc"] is not None])
            for key in _kd_keys(results)
            if key in results["runs"]
        ]
        rows = [(label, values) for label, values in rows if values]
        reference = {
            "teacher": results["teacher"]["srcc"],
            "constant predictor": results["constant_predictor"]["srcc"],
        }
        plot_srcc("kd_comparison", rows, "KD comparison (demo): one dot per seed", reference)
        made.append("kd_comparison")
    if TEACHER_SPREAD_RESULTS.is_file():
        results = json.loads(TEACHER_SPREAD_RESULTS.read_text(encoding="utf-8"))
        rows = [(f"seed {run['seed']}", [run["srcc"]]) for run in results["runs"]]
        plot_srcc(
            "teacher_spread", rows, "Fig. 7 (demo): the teacher over runs", {"mean": results["srcc"]["mean"]}
        )
        made.append("teacher_spread")
    if RETRAINED_RESULTS.is_file():
        results = json.loads(RETRAINED_RESULTS.read_text(encoding="utf-8"))
        if results["folds"]:
            rows = [
                (label, [run["srcc"] for fold in results["folds"] for run in fold["runs"].get(key, [])])
                for key, label in STUDENT_ROWS
            ]
            plot_srcc("folds", rows, "Fig. 6 (demo): one dot per fold and seed", {})
            made.append("folds")
    if ABLATION_RESULTS.is_file():
        results = json.loads(ABLATION_RESULTS.read_text(encoding="utf-8"))
        for key, table in results["tables"].items():
            rows = [
                (row["name"], [run["srcc"] for run in results["runs"][row["config"]]])
                for row in table["rows"]
            ]
            plot_srcc(f"table_{key}", rows, f"{table['title']} (demo): one dot per seed", {})
            made.append(f"table_{key}")
    for section in SECTIONS:  # a figure whose results are gone or not finished would show old numbers
        if section.name not in made:
            (PLOTS / f"{section.name}.png").unlink(missing_ok=True)
    return made


def pages() -> list[Path]:
    """The documentation pages that hold result sections."""
    return sorted(path for path in DOCS.rglob("*.md") if "<!-- results:" in path.read_text(encoding="utf-8"))


def render(readme: str, made: dict[str, str | None]) -> str:
    for name, table in made.items():
        if table is None:
            continue
        # between the markers: the table, or nothing yet (an empty section: the end marker on the next line)
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S)
        readme = pattern.sub(lambda m, table=table: m.group(1) + table + "\n" + m.group(2), readme)
    return readme


def is_fresh(made: dict[str, str | None]) -> bool:
    """The pages' result sections and results/REPORT.md say what ``made`` says."""
    texts = [page.read_text(encoding="utf-8") for page in pages()]
    report_text = REPORT.read_text(encoding="utf-8") if REPORT.is_file() else ""
    plot_names = [section.name for section in SECTIONS if (PLOTS / f"{section.name}.png").is_file()]
    return all(render(text, made) == text for text in texts) and report(made, plot_names) == report_text


def check() -> int:
    """0 where the pages and results/REPORT.md match the committed results (or, without git, the working
    tree's), or match the working tree's results where those differ; else 1, with a line on stderr."""
    read_committed = committed_reader()
    working = tables(working_tree_text)
    if read_committed is None:
        fresh = is_fresh(working)
    else:
        committed = tables(read_committed)
        fresh_committed, fresh_working = is_fresh(committed), is_fresh(working)
        fresh = fresh_committed or fresh_working
        if fresh_committed and not fresh_working:
            inputs = {section.path for section in SECTIONS} | {PAPER, PARAMS}
            changed = sorted(str(path) for path in inputs if read_committed(path) != working_tree_text(path))
            print(
                f"note: the pages match the committed results; {', '.join(changed)} in the working tree "
                "differ (rerun here?): run `python scripts/report.py` before committing them",
                file=sys.stderr,
            )
    if not fresh:
        print("error: docs/ or results/REPORT.md is stale: run `python scripts/report.py`", file=sys.stderr)
    return 0 if fresh else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    try:
        if args.check:
            sys.exit(check())
        made = tables()
    except PaperError as error:
        sys.exit(f"error: {error}")
    plot_names = plots()
    written = pages()
    for page in written:
        page.write_text(render(page.read_text(encoding="utf-8"), made), encoding="utf-8")
    REPORT.write_text(report(made, plot_names), encoding="utf-8")
    print(
        f"wrote {REPORT}, {len(plot_names)} plots in {PLOTS}, and the result sections of {len(written)} pages"
    )


if __name__ == "__main__":
    main()
