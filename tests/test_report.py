"""The documentation's result sections (docs/**/*.md) and results/REPORT.md are generated from the committed results: they must
say what the result files say."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from paper_beside import MATCHES, unmatched_references  # noqa: E402

GIT_COMMIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q")


def report_check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "report.py"), "--check"],
        cwd=repo,
        capture_output=True,
        text=True,
    )


def test_readme_and_report_match_the_committed_results():
    result = report_check(REPO_ROOT)
    assert result.returncode == 0, (
        f"{result.stderr}docs/ or results/REPORT.md is stale: run `python scripts/report.py`"
    )


def committed_file(path: str) -> bytes:
    """``path`` as committed at this repository's HEAD, never the working tree's copy: `make repro` on another
    CPU rewrites metrics/*.json in the working tree, and the committed pages were rendered from the committed
    ones."""
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO_ROOT, capture_output=True, check=True)
    return shown.stdout


@pytest.fixture
def results_repo(tmp_path) -> Path:
    """This repository's committed docs/, params.yaml, results/, metrics/evaluate.json and
    reports/per_category.json (read from git HEAD), committed in a new git repository."""
    repo = tmp_path / "repo"
    listed = subprocess.run(
        [
            "git",
            "ls-files",
            "docs",
            "params.yaml",
            "metrics/evaluate.json",
            "reports/per_category.json",
            "results",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "metrics/evaluate.json" in listed and "docs/results.md" in listed
    for name in listed:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(committed_file(name))
    for command in (("git", "init", "-q"), ("git", "add", "."), (*GIT_COMMIT, "-m", "results")):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    return repo


def move_teacher_srcc(repo: Path) -> None:
    """What `make repro` on another CPU does to metrics/evaluate.json (there: 0.626 -> 0.633), in bigger."""
    evaluation = repo / "metrics" / "evaluate.json"
    report = json.loads(evaluation.read_text())
    report["teacher"]["srcc"] += 0.1
    evaluation.write_text(json.dumps(report, indent=2))


def test_check_compares_the_committed_readme_with_the_committed_metrics_not_a_rerun(results_repo):
    """A rerun elsewhere moves metrics/evaluate.json in the working tree; the committed pages still match
    the committed metrics, so `make test` after `make repro` stays green. Committing the moved metrics
    without `report.py` makes it stale."""
    assert report_check(results_repo).returncode == 0
    move_teacher_srcc(results_repo)
    rerun = report_check(results_repo)
    assert rerun.returncode == 0, rerun.stderr
    assert "metrics/evaluate.json in the working tree differ" in rerun.stderr
    subprocess.run((*GIT_COMMIT, "-am", "moved metrics"), cwd=results_repo, check=True)
    committed = report_check(results_repo)
    assert committed.returncode == 1
    assert "error: docs/ or results/REPORT.md is stale" in committed.stderr


def test_check_without_git_reads_the_working_tree(results_repo):
    shutil.rmtree(results_repo / ".git")
    assert report_check(results_repo).returncode == 0
    move_teacher_srcc(results_repo)
    assert report_check(results_repo).returncode == 1


def test_check_fails_when_a_readme_table_is_edited_by_hand(results_repo):
    readme = results_repo / "docs" / "tutorials" / "demo.md"  # the KD comparison's table
    text = readme.read_text(encoding="utf-8")
    assert "| 0.770 | 0.770 | 0.821 |" in text
    readme.write_text(
        text.replace("| 0.770 | 0.770 | 0.821 |", "| 0.771 | 0.770 | 0.821 |", 1), encoding="utf-8"
    )
    stale = report_check(results_repo)
    assert stale.returncode == 1
    assert "error: docs/ or results/REPORT.md is stale" in stale.stderr


def test_check_fails_when_a_paper_number_changes_under_the_committed_readme(results_repo):
    """A corrected transcription in results/paper.json, committed without `report.py`, makes the pages stale."""
    paper_file = results_repo / "results" / "paper.json"
    paper = json.loads(paper_file.read_text(encoding="utf-8"))
    paper["tables"]["VI"]["rows"][1]["srcc"] = 0.767  # was 0.766
    paper_file.write_text(json.dumps(paper, ensure_ascii=False), encoding="utf-8")
    subprocess.run((*GIT_COMMIT, "-am", "paper number corrected"), cwd=results_repo, check=True)
    assert report_check(results_repo).returncode == 1


# ---- the paper's numbers beside the demo's (results/paper.json through paper_beside.MATCHES)

PAPER = json.loads((REPO_ROOT / "results" / "paper.json").read_text(encoding="utf-8"))


def paper_rows(paper: dict) -> dict[tuple[str, str], dict]:
    return {(table, row["label"]): row for table, entry in paper["tables"].items() for row in entry["rows"]}


def expected_cell(row: dict, name: str) -> str:
    """How a paper value must look in the table, written out here independently of paper_beside."""
    value = row.get(name)
    if value is None:
        return "—"
    if name == "portion":
        text = f"{100 * value:.1f}%"
    elif name in ("flops_g", "params_m"):
        text = f"{value:.1f}"
    elif name == "input":
        text = value
    else:
        text = f"{value:.3f}"
    return text + "?" if name in row.get("uncertain", ()) else text


def markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first markdown table in ``text`` (the KD comparison's is followed by its
    paired differences, a table with other columns)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


def rendered_tables() -> dict[str, list[tuple[str, str]]]:
    """Each result section's table as the documentation (between its markers) and results/REPORT.md show it."""
    from report import SECTIONS

    pages = subprocess.run(["git", "ls-files", "docs/*.md", "docs/**/*.md"], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    readme = "\n".join(committed_file(page).decode("utf-8") for page in sorted(set(pages)))
    report = committed_file("results/REPORT.md").decode("utf-8")
    shown: dict[str, list[tuple[str, str]]] = {}
    for section in SECTIONS:
        block = re.search(
            rf"<!-- results:{section.name} -->\n(.*?)\n<!-- /results:{section.name} -->", readme, re.S
        )
        assert block, f"docs/: the {section.name} section is empty or its markers are missing"
        shown.setdefault(section.name, []).append(("docs/", block.group(1)))
        part = report.split(f"\n## {section.heading}\n", 1)[1].split("\n## ", 1)[0]
        shown.setdefault(section.name, []).append(("results/REPORT.md", part))
    return shown


def test_every_matched_paper_row_is_shown_with_the_numbers_of_paper_json():
    """Each demo row that MATCHES pairs with a paper row shows that row's name and its values, as
    results/paper.json has them, in docs/ and results/REPORT.md; a number missing, changed, or put
    in another column fails."""
    rows = paper_rows(PAPER)
    checked, unfinished = 0, 0
    for section, shown in rendered_tables().items():
        match = MATCHES.get(section)
        if match is None or not match.rows:
            continue
        for where, text in shown:
            # "Not finished yet" only where the results file lacks the table: a section that says so for a
            # finished table would otherwise skip every check below
            assert ("Not finished yet:" in text) == not_finished(section), (where, section)
            if not_finished(section):
                unfinished += len(match.rows)
                continue
            header, table = markdown_table(text)
            columns = [f"paper {name}" for name in ("SRCC", "PLCC", "Acc")]
            assert set(columns) <= set(header), f"{where}, {section}: no paper columns in {header}"
            by_reference = {line[header.index("paper (AVA) row")].rstrip("?"): line for line in table}
            for key, (table_number, label) in match.rows.items():
                line = by_reference.get(f"Table {table_number}: {label}")
                assert line is not None, (
                    f"{where}, {section}: demo row {key!r} does not show Table {table_number}: {label}"
                )
                paper_row = rows[(table_number, label)]
                for name in match.columns:
                    shown_cell = line[header.index(f"paper {paper_header(name)}")]
                    assert shown_cell == expected_cell(paper_row, name), (where, section, key, name)
                checked += 1
    # in docs/ and REPORT.md
    assert checked + unfinished == 2 * sum(len(match.rows) for match in MATCHES.values())


def not_finished(section_name: str) -> bool:
    """Whether the committed results file lacks this section's table: an ablation table whose runs are not
    all in results/ablations.json (the only result script that writes a table at a time)."""
    from report import ABLATION_RESULTS, SECTIONS

    section = next(section for section in SECTIONS if section.name == section_name)
    if section.path != ABLATION_RESULTS or not section_name.startswith("table_"):
        return False
    results = json.loads(committed_file(ABLATION_RESULTS.as_posix()))
    return section_name.removeprefix("table_") not in results["tables"]


def paper_header(name: str) -> str:
    return {"srcc": "SRCC", "plcc": "PLCC", "acc": "Acc", "flops_g": "FLOPs (G)", "params_m": "params (M)",
            "input": "input", "portion": "share"}[name]  # fmt: skip


def test_rows_the_paper_lacks_show_a_dash():
    header, table = markdown_table(rendered_tables()["kd_comparison"][-1][1])
    shuffled = next(
        line for line in table if line[0].startswith("student with KD, teacher knowledge shuffled")
    )
    assert shuffled[header.index("paper (AVA) row") :] == ["—"] * 4


def test_every_paper_row_the_mapping_names_is_in_paper_json():
    assert unmatched_references(PAPER) == []
    without_eq7 = json.loads(json.dumps(PAPER))
    without_eq7["tables"]["VI"]["rows"] = [
        row for row in without_eq7["tables"]["VI"]["rows"] if row["label"] != "Feature ✓, Output ✓"
    ]
    assert unmatched_references(without_eq7) == [
        "results/paper.json has no row 'Feature ✓, Output ✓' in Table VI "
        "(report section table_vi, demo row 'EMD to the teacher + feature term (Eq. 7)')"
    ]


def test_a_mapping_to_a_paper_row_that_is_not_there_stops_the_report_in_one_line(results_repo):
    """A relabelled row in results/paper.json: report.py and --check stop with one line naming the row and
    the demo row mapped to it, and write nothing."""
    paper_file = results_repo / "results" / "paper.json"
    paper_file.write_text(
        paper_file.read_text(encoding="utf-8").replace('"label": "AF"', '"label": "AFs"'), encoding="utf-8"
    )
    readme_before = (results_repo / "docs" / "results.md").read_text(encoding="utf-8")
    for args in ((), ("--check",)):
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "report.py"), *args],
            cwd=results_repo, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "error: results/paper.json has no row 'AF' in Table IV (report section matching, demo row "
            "'teacher_feature_matching')"
        ]
    assert (results_repo / "docs" / "results.md").read_text(encoding="utf-8") == readme_before


def test_departures_list_every_hyper_parameter_where_params_yaml_differs_from_the_paper():
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    report = (REPO_ROOT / "results" / "REPORT.md").read_text(encoding="utf-8")
    header, table = markdown_table(
        report.split("## Departures from the paper's hyper-parameters\n", 1)[1].split("\n## ")[0]
    )
    listed = {line[0].strip("`"): line for line in table}
    for named in ("distiller.dropout", "distiller.weight_decay", "distiller.epochs", "distiller.lr",
                  "distiller.lr_step_epochs", "distiller.keep", "student.lr", "student.input_size"):  # fmt: skip
        assert named in listed, f"{named} is not in the departures"
    assert listed["distiller.dropout"][1:3] == ["0.5", "0"]
    assert listed["distiller.keep"][1:3] == ["best", "last"]
    assert listed["student.input_size"][1:3] == ["128", "300"]
    for entry in PAPER["departures"]:
        section, key = entry["param"].split(".")
        assert (entry["param"] in listed) == (params[section][key] != entry["paper"]), entry["param"]


def test_an_empty_result_section_gets_its_table_and_keeps_it_on_the_next_render():
    """A section added to a page as two adjacent markers was never filled (the pattern wanted a line
    between them), so `report.py --check` passed over it; filled once, it stays as it is."""
    from report import render

    readme = "intro\n<!-- results:x -->\n<!-- /results:x -->\nafter\n"
    filled = render(readme, {"x": "| a |\n|---|"})
    assert filled == "intro\n<!-- results:x -->\n| a |\n|---|\n<!-- /results:x -->\nafter\n"
    assert render(filled, {"x": "| a |\n|---|"}) == filled
    assert render(filled, {"x": "| b |"}) == "intro\n<!-- results:x -->\n| b |\n<!-- /results:x -->\nafter\n"


def test_kd_gain_per_category_shows_the_papers_gain_beside_each_category():
    """Table IX's KD gain per category, as docs/ and REPORT.md show it: each category the paper has shows
    its SRCC with KD minus without, computed here from results/paper.json."""
    rows = paper_rows(PAPER)
    for where, text in rendered_tables()["kd_per_category"]:
        header, table = markdown_table(text)
        assert table, f"{where}: no per-category rows"
        for line in table:
            reference = MATCHES["per_category"].rows.get(line[0])
            if reference is None:  # a category the paper does not have
                assert line[header.index("paper gain")] == "—", (where, line)
                continue
            table_number, label = reference
            with_kd = rows[(table_number, label)]["srcc"]
            without = rows[(table_number, label.replace("✓", "✗"))]["srcc"]
            assert line[header.index("paper gain")] == f"{with_kd - without:+.3f}", (where, line)


def test_fig_6_says_its_intervals_are_over_test_images_only_when_each_fold_has_one_seed():
    """Fig. 6's per-fold intervals resample the fold's test images; with one seed a fold they say nothing of
    seed-to-seed spread, and the table must say so (issue 26), not when each fold has several seeds."""
    from report import folds_table

    results = json.loads((REPO_ROOT / "results" / "folds_and_outputs.json").read_text())
    one_seed = folds_table({**results, "fold_seeds": [0]})
    several = folds_table({**results, "fold_seeds": [0, 1, 2]})
    assert "over that fold's test images only" in one_seed
    assert "over that fold's test images only" not in several


def test_paired_tables_name_the_interval_each_result_was_made_with():
    """Results recomputed with the seed-t interval and results of the earlier percentile bootstrap (written
    before the method was recorded) sit side by side until every script has run again: each table must say
    which interval it shows, the earlier one as too narrow (issue 26)."""
    from report import kd_paired_table

    results = json.loads((REPO_ROOT / "results" / "kd_comparison.json").read_text())
    methods = {entry["metrics"]["srcc"].get("interval") for entry in results["paired"]}
    earlier = {**results, "paired": [
        {**entry, "metrics": {name: {key: value for key, value in metric.items() if key != "interval"}
                              for name, metric in entry["metrics"].items() if metric is not None}}
        for entry in results["paired"]
    ]}  # fmt: skip
    assert methods == {"seed-t"}
    assert "95 % seed-t interval" in kd_paired_table(results)
    assert "earlier percentile bootstrap" in kd_paired_table(earlier)
    assert "seed-t" not in kd_paired_table(earlier)


def test_a_seed_t_table_with_one_seed_a_side_says_its_interval_has_no_seeds_part():
    """Fig. 6 runs one seed a fold: its seed-t interval is the test images' part alone (iaakd.paired adds no
    seeds' part below two seeds), so its caption must not describe a spread over seeds."""
    from report import folds_table

    results = json.loads((REPO_ROOT / "results" / "folds_and_outputs.json").read_text())
    one_seed = folds_table({**results, "fold_seeds": [0]})
    assert {fold["paired"][0]["metrics"]["srcc"]["n_seeds_a"] for fold in results["folds"]} == {1}
    assert "with one seed a side its test images' part alone" in one_seed
    assert "over seeds added" not in one_seed
