"""The README's result sections and results/REPORT.md are generated from the committed results: they must
say what the result files say."""

import subprocess
import sys

from conftest import REPO_ROOT


def test_readme_and_report_match_the_committed_results():
    result = subprocess.run(
        [sys.executable, "scripts/report.py", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, "README.md or results/REPORT.md is stale: run `python scripts/report.py`"
