"""Writes a preset's values into params.yaml, so that every value is visible where DVC tracks it.

    python scripts/apply_preset.py presets/paper.yaml [--params params.yaml]

Every key of the preset must already exist in params.yaml (a typo is an error, never a new key).
Comments in params.yaml are not kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from iaakd.errors import UserError
from iaakd.stages.params_file import read_params


def merge(params: dict, preset: dict, prefix: str = "") -> None:
    for key, value in preset.items():
        name = f"{prefix}{key}"
        if key not in params:
            raise KeyError(name)
        if isinstance(value, dict):
            merge(params[key], value, name + ".")
        else:
            params[key] = value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("preset", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    try:  # read as DVC reads YAML (1e-4 a number), so the written file says what DVC will read
        params, preset = read_params(args.params), read_params(args.preset)
        merge(params, preset)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyError as error:
        print(f"error: {args.preset}: key {error.args[0]} is not in {args.params}", file=sys.stderr)
        sys.exit(1)
    args.params.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    print(f"{args.params}: {args.preset} applied")


if __name__ == "__main__":
    main()
