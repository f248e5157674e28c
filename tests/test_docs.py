"""The documentation (docs/, mkdocs.yml): it builds with warnings as errors, its generated reference covers
every key of params.yaml and every option of every command, the README is a front page whose links resolve,
and the scoring tutorial's block ran on the tiny demo (the reproduction script runs every tutorial block)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

MKDOCS = Path(sys.executable).with_name("mkdocs")


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location(
        "reference_pages", REPO_ROOT / "docs" / "reference_pages.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_pages"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def leaf_keys(mapping: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in mapping.items():
        dotted = f"{prefix}.{name}" if prefix else name
        keys += leaf_keys(value, dotted) if isinstance(value, dict) else [dotted]
    return keys


def table_row(markdown: str, key: str) -> list[str]:
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"| `{key}`")]
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_every_params_key_is_in_the_parameter_reference_with_its_declaration_and_stages(reference):
    markdown = reference.parameters_markdown()
    keys = leaf_keys(yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8")))
    assert len(keys) > 100
    missing = [key for key in keys if f"| `{key}`" not in markdown]
    assert not missing, f"not in the parameter reference: {missing}"
    epochs = table_row(markdown, "student.epochs")
    assert epochs[1:4] == ["`int`", "`12`", "> 0"]
    assert epochs[4] == "`student`; then `evaluate`"  # the stage that lists it, then the one downstream
    assert table_row(markdown, "student.kd.mix")[3] == "one of none, loss, label"
    cutoff = table_row(markdown, "evaluate.cutoff")[4]
    assert cutoff.startswith("`distill`, `student`, `evaluate`")
    assert "`extract@*`" in table_row(markdown, "features.batch_size")[4]


def test_every_option_of_every_command_is_in_the_command_reference(reference):
    import argparse

    from iaakd import plan
    from iaakd.cli import COMMANDS, build_parser

    markdown = reference.cli_markdown()
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parsers = {
        **{f"iaakd {name}": commands.choices[name] for name in COMMANDS},
        "iaakd plan": plan.build_parser(),
    }
    for name, parser in parsers.items():
        section = markdown.split(f"## `{name}`\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings or [action.dest]:
                assert f"`{option}`" in section, f"{name}: {option} is not in the command reference"


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    result = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    parameters = (tmp_path / "site" / "reference" / "parameters.html").read_text(encoding="utf-8")
    assert "student.kd.enabled" in parameters and "<!-- generated:" not in parameters
    assert (tmp_path / "site" / "plots" / "kd_comparison.png").is_file()


def test_the_readme_is_a_front_page_whose_links_resolve():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "```sh\nmake repro\nmake test\n```" in readme  # the Quick start contract
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith("http")]
    assert len(local) >= 10
    for link in local:
        assert (REPO_ROOT / link).is_file(), f"README links to {link}, which does not exist"


@pytest.mark.slow
def test_the_scoring_tutorial_block_scored_the_tiny_demo_and_shared_it_as_a_folder(reproduction_run):
    repo, _ = reproduction_run
    with open(repo / "scores.csv", encoding="utf-8") as handle:
        first = list(csv.DictReader(handle))
    with open(repo / "again.csv", encoding="utf-8") as handle:
        again = list(csv.DictReader(handle))
    images = sorted((repo / "data" / "demo" / "images").glob("*.jpg"))
    assert len(first) == len(images) and all(row["error"] == "" for row in first)
    assert [row["path"] for row in again] == [row["path"] for row in first]
    for a, b in zip(first, again, strict=True):
        assert abs(float(a["mean_score"]) - float(b["mean_score"])) <= 2e-4
    record = json.loads((repo / "again.csv.json").read_text(encoding="utf-8"))
    assert record["model"] == "my-student/" and record["data_source"] == "demo"
    card = (repo / "my-student" / "README.md").read_text(encoding="utf-8")
    assert "Warning: trained on the synthetic demo" in card and "| SRCC |" in card
    page = (repo / "page" / "data.js").read_text(encoding="utf-8")
    assert all(row["path"] in page for row in first) and (repo / "page" / "index.html").is_file()
