"""Which numbers a rerun moved: every number in metrics/*.json of the working tree against git HEAD's.

CI runs the README's first command on another CPU code path, then this: a rerun that moved nothing
simulated nothing (the machine has no faster code path to take away, or the pipeline read a cache), and CI
says so with status 1. Provenance (commits, versions, devices) is not a measurement and is skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SKIPPED = ("provenance",)


def numbers(value, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value, keyed by its dotted path."""
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if key not in SKIPPED:
                found.update(numbers(item, f"{prefix}{key}."))
        return found
    if isinstance(value, list):
        found = {}
        for index, item in enumerate(value):
            found.update(numbers(item, f"{prefix}{index}."))
        return found
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {}
    return {prefix.rstrip("."): float(value)}


def committed(path: Path) -> dict | None:
    shown = subprocess.run(["git", "show", f"HEAD:{path.as_posix()}"], capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def main() -> int:
    moved, compared = [], 0
    for path in sorted(Path("metrics").glob("*.json")):
        before = committed(path)
        if before is None:
            continue
        old, new = numbers(before), numbers(json.loads(path.read_text(encoding="utf-8")))
        for key in sorted(old.keys() & new.keys()):
            compared += 1
            if old[key] != new[key]:
                moved.append(f"{path}:{key} {old[key]:.6g} -> {new[key]:.6g}")
    if not moved:
        print(
            f"error: the rerun moved none of {compared} committed metric values; the other CPU code path "
            "simulated nothing (no faster path to take away, or outputs read from a cache)",
            file=sys.stderr,
        )
        return 1
    print(f"the rerun on another CPU code path moved {len(moved)} of {compared} metric values, for example:")
    for line in moved[:8]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
