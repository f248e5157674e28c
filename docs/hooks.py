"""MkDocs hooks (mkdocs.yml ``hooks``): the generated reference pages, and the result plots the pages show.

A page holding ``<!-- generated:NAME -->`` gets that generated Markdown in its place (docs/reference_pages.py);
results/plots/*.png are served as ``plots/*.png`` beside results.md, which shows results/REPORT.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
from reference_pages import ROOT, cli_markdown, parameters_markdown  # noqa: E402

GENERATED = {"parameters": parameters_markdown, "cli": cli_markdown}


def on_files(files, config):
    for plot in sorted((ROOT / "results" / "plots").glob("*.png")):
        files.append(File.generated(config, f"plots/{plot.name}", abs_src_path=str(plot)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    for name, generate in GENERATED.items():
        marker = f"<!-- generated:{name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    """The docstrings' Sphinx roles (``:meth:`x```) shown as the code they name."""
    return re.sub(r":(?:meth|mod|class|func|attr|data|exc):(<code>)", r"\1", html)
