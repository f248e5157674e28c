"""The paper's AVA numbers beside the demo's, for scripts/report.py.

results/paper.json holds the paper's numbers as transcribed from its Tables I-XV (and the numbers its text
gives for Fig. 6 and Fig. 7), with its hyper-parameters. Here: which paper row each demo row is matched with
(MATCHES, data), the columns that puts beside a demo table, and the list of params.yaml's departures from
the paper's hyper-parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAPER = Path("results/paper.json")
PARAMS = Path("params.yaml")
NOT_IN_PAPER = "—"
UNSURE = "?"  # after a value read from a garbled passage of the paper's text (see its note in paper.json)

PaperRow = tuple[str, str]  # (table, row label), as in results/paper.json


class PaperError(ValueError):
    """results/paper.json or params.yaml does not hold what the report's mapping or departures name."""


@dataclass(frozen=True)
class Match:
    """The paper's counterpart of one report table: each demo row's paper row (by the demo row's key: its
    first cell unless the table says otherwise) and the paper's columns shown beside; or, for a demo table
    whose rows the paper has no numbers for, a figure whose numbers its text gives, in a line."""

    rows: Mapping[str, PaperRow] = field(default_factory=dict)
    columns: tuple[str, ...] = ("srcc", "plcc", "acc")
    figure: str | None = None


_LITE = ("tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k")
_TEACHER = ("VIII", "Teacher Composite*, ~640×640")
_STUDENT_KD = ("V", "Trainable backbone ✓, KD scheme ✓")
_STUDENT_NO_KD = ("V", "Trainable backbone ✓, KD scheme ✗")

# Report section -> its match. The demo's Lite0/1/2 (ImageNet, three sizes) stand where Table I has
# ResNet18/50/101 (ImageNet, three depths); the demo's teacher is the paper's composite teacher and its
# student the ResNeXt101 (SWSL) student at 300x300 (the paper's resized input). Rows not named: "—".
MATCHES: dict[str, Match] = {
    "kd_comparison": Match({"teacher": _TEACHER, "student_kd": _STUDENT_KD, "student_no_kd": _STUDENT_NO_KD}),
    "teacher_backbones": Match(
        {
            _LITE[0]: ("I", "ResNet18"),
            _LITE[1]: ("I", "ResNet50"),
            _LITE[2]: ("I", "ResNet101"),
            f"{_LITE[0]} + {_LITE[1]}": ("I", "ResNet18 + ResNet50"),
            f"{_LITE[0]} + {_LITE[2]}": ("I", "ResNet18 + ResNet101"),
            f"{_LITE[1]} + {_LITE[2]}": ("I", "ResNet50 + ResNet101"),
            f"{_LITE[0]} + {_LITE[1]} + {_LITE[2]}": ("I", "ResNet18 + ResNet50 + ResNet101"),
        }
    ),
    "matching": Match(
        {"gsf_matching": ("IV", "GSF"), "teacher_feature_matching": ("IV", "AF"), "teacher": _TEACHER}
    ),
    "table_v": Match(
        {
            "trainable, no KD": _STUDENT_NO_KD,
            "trainable, KD": _STUDENT_KD,
            "frozen, no KD": ("V", "Trainable backbone ✗, KD scheme ✗"),
            "frozen, KD": ("V", "Trainable backbone ✗, KD scheme ✓"),
        }
    ),
    "table_vi": Match(
        {
            "no KD: EMD to the ground truth": ("VI", "Feature ✗, Output ✗"),
            "EMD to the ground truth + feature term": ("VI", "Feature ✓, Output ✗"),
            "EMD to the teacher, no feature term": ("VI", "Feature ✗, Output ✓"),
            "EMD to the teacher + feature term (Eq. 7)": ("VI", "Feature ✓, Output ✓"),
        }
    ),
    "table_vii": Match(
        {
            "256x256 (pad 320), no KD": ("VII", "640×640, KD ✗"),
            "128x128, no KD": ("VII", "300×300, KD ✗"),
            "256x256 (pad 320), KD": ("VII", "640×640, KD ✓"),
            "128x128, KD": ("VII", "300×300, KD ✓"),
        },
        columns=("srcc", "plcc", "acc", "flops_g"),
    ),
    "teacher_student": Match(
        {"teacher": _TEACHER, "student": ("VIII", "Student ResNeXt101 (SWSL), 300×300")},
        columns=("input", "params_m", "flops_g", "srcc", "plcc", "acc"),
    ),
    "per_category": Match(  # the pipeline's student, trained with KD
        {
            "Still Life": ("IX", "Still life, KD ✓"),
            "Architecture": ("IX", "Architecture, KD ✓"),
            "Landscape": ("IX", "Landscape, KD ✓"),
            "Animals": ("IX", "Animals, KD ✓"),
            "Portraiture": ("IX", "Portraiture, KD ✓"),
            "Floral": ("IX", "Floral, KD ✓"),
            "Cityscape": ("IX", "Cityscape, KD ✓"),
            "Food and Drink": ("IX", "Food, KD ✓"),
        },
        columns=("portion", "srcc", "plcc", "acc"),
    ),
    "table_xii": Match(
        {
            "baseline: EMD to the ground truth": ("XII", "Baseline ResNet18"),
            "multi-modal: tags as auxiliary input": ("XII", "Multi-modal ResNet18"),
            "multi-task: tags as auxiliary BCE target (Eq. 9)": ("XII", "Multi-task ResNet18"),
            "KD (proposed)": ("XII", "KD ResNet18 (proposed)"),
        }
    ),
    "table_xiv": Match(
        {
            "KD (Eq. 7)": ("XIV", "with teacher prediction"),
            "mixed loss (Eq. 10)": ("XIV", "with mixed loss"),
            "mixed label (Eq. 11)": ("XIV", "with mixed label"),
        }
    ),
    "outputs": Match(  # keys: output/model
        {
            "binary/teacher": ("XV", "AVA, Classification, Teacher"),
            "binary/student_kd": ("XV", "AVA, Classification, with KD"),
            "binary/student_no_kd": ("XV", "AVA, Classification, w/o KD"),
            "score/teacher": ("XV", "AVA, Regression, Teacher"),
            "score/student_kd": ("XV", "AVA, Regression, with KD"),
            "score/student_no_kd": ("XV", "AVA, Regression, w/o KD"),
        }
    ),
    "folds": Match(figure="Fig. 6"),
    "teacher_spread": Match(figure="Fig. 7"),
}

HEADERS = {"srcc": "SRCC", "plcc": "PLCC", "acc": "Acc", "flops_g": "FLOPs (G)", "params_m": "params (M)",
           "input": "input", "portion": "share"}  # fmt: skip
FORMATS = {"flops_g": "{:.1f}", "params_m": "{:.1f}", "portion": "{:.1%}"}  # else three decimals


def paper_cell(row: Mapping, name: str) -> str:
    """One of a paper row's values as the report shows it: three decimals (Acc as a fraction, like the
    demo's), ranges as low-high, "—" where the paper prints none, and "?" after an uncertain reading."""
    value = row.get(name)
    if value is None:
        return NOT_IN_PAPER
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        text = "-".join(FORMATS.get(name, "{:.3f}").format(part) for part in value)
    else:
        text = FORMATS.get(name, "{:.3f}").format(value)
    return text + UNSURE if name in row.get("uncertain", ()) else text


def paper_row(paper: Mapping, reference: PaperRow) -> Mapping:
    """The row of results/paper.json that ``reference`` names."""
    table, label = reference
    rows = {row["label"]: row for row in paper["tables"].get(table, {}).get("rows", [])}
    if label not in rows:
        raise PaperError(f"{PAPER} has no row '{label}' in Table {table}")
    return rows[label]


def reference_cell(paper: Mapping, reference: PaperRow) -> str:
    """The cell naming a matched paper row: "Table V: <its label>", "?" where the label was reconstructed."""
    table, label = reference
    return f"Table {table}: {label}{UNSURE if 'label' in paper_row(paper, reference).get('uncertain', ()) else ''}"


def unmatched_references(paper: Mapping) -> list[str]:
    """Every row or figure that MATCHES names and results/paper.json lacks, one line each."""
    missing = []
    for section, match in MATCHES.items():
        for key, reference in match.rows.items():
            try:
                paper_row(paper, reference)
            except PaperError as error:
                missing.append(f"{error} (report section {section}, demo row '{key}')")
        if match.figure is not None and match.figure not in paper.get("figures", {}):
            missing.append(f"{PAPER} has no figure '{match.figure}' (report section {section})")
    return missing


@dataclass(frozen=True)
class Beside:
    """The paper's numbers for one report table: results/paper.json read through the table's Match."""

    paper: Mapping
    match: Match

    def apply(
        self, intro: str, header: list[str], rows: list[list], keys: Sequence[str] | None = None
    ) -> tuple[str, list[str], list[list]]:
        """The table with the paper's columns added (rows matched by ``keys``, else by their first cell),
        and its intro with a sentence saying where they come from."""
        if self.match.figure is not None:
            return f"{intro} {self.figure_line()}", header, rows
        keys = [str(row[0]) for row in rows] if keys is None else list(keys)
        added = [self.cells(key) for key in keys]
        tables = list(dict.fromkeys(table for table, _ in self.match.rows.values()))
        note = (
            f" Columns marked paper: the paper's AVA numbers (`{PAPER}`, its Table{'s' * (len(tables) > 1)} "
            f"{', '.join(tables)}) for the row named, {NOT_IN_PAPER} where it has none"
        )
        if any(cell.endswith(UNSURE) for cells in added for cell in cells):
            note += f"; {UNSURE}: read from a garbled passage of the paper's text (its note in `{PAPER}`)"
        columns = ["paper (AVA) row", *(f"paper {HEADERS[name]}" for name in self.match.columns)]
        return (
            intro + note + ".",
            header + columns,
            [[*row, *cells] for row, cells in zip(rows, added, strict=True)],
        )

    def cells(self, key: str) -> list[str]:
        """The paper's cells for the demo row ``key``: its row's name, then its values."""
        reference = self.match.rows.get(key)
        if reference is None:
            return [NOT_IN_PAPER] * (1 + len(self.match.columns))
        row = paper_row(self.paper, reference)
        return [
            reference_cell(self.paper, reference),
            *(paper_cell(row, name) for name in self.match.columns),
        ]

    def figure_line(self) -> str:
        """The numbers the paper's text gives for the figure, in one sentence."""
        figure = self.paper["figures"][self.match.figure]
        rows = "; ".join(
            f"{row['label']}: "
            + ", ".join(f"{HEADERS[name]} {paper_cell(row, name)}" for name in ("srcc", "plcc", "acc"))
            for row in figure["rows"]
        )
        return f"Paper (AVA), {self.match.figure}, {figure['quantity']}: {rows} (from {figure['source']})."


def beside(section: str, paper: Mapping | None) -> Beside | None:
    """The paper's numbers for a report section's table, or None where there are none (or no paper.json)."""
    match = MATCHES.get(section)
    return None if paper is None or match is None else Beside(paper, match)


def _param(params: Mapping, key: str) -> object:
    value = params
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise PaperError(f"{PARAMS} has no key {key} ({PAPER}'s departures name it)")
        value = value[part]
    return value


def _value(value: object) -> str:
    if value is None:
        return "not given"
    if isinstance(value, list):
        return ", ".join(_value(part) for part in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def departures(paper: Mapping, params: Mapping) -> tuple[str, list[str], list[list[str]]]:
    """The intro, header and rows of the list of params.yaml's values that differ from the paper's
    (results/paper.json's departures: the parameter, the paper's value, where the paper says it, and why
    the demo departs where that is documented)."""
    rows, agree = [], []
    for entry in paper["departures"]:
        demo = _param(params, entry["param"])
        if demo == entry["paper"]:
            agree.append(f"`{entry['param']}`")
            continue
        rows.append([f"`{entry['param']}`", _value(demo), _value(entry["paper"]), entry["paper_source"],
                     entry.get("why", "")])  # fmt: skip
    intro = (
        f"`{PARAMS}` (the demo's configuration) against the paper's hyper-parameters (`{PAPER}`, departures); "
        f"the same in both: {', '.join(agree) or 'none'}."
    )
    return (
        intro,
        ["parameter", "demo (params.yaml)", "paper", "the paper's source", "why the demo departs"],
        rows,
    )
