"""params.yaml read as DVC reads it, and ``-S key=value`` applied with DVC's own code.

DVC reads params.yaml as YAML 1.2 (ruamel.yaml), where ``1e-4`` is a number; PyYAML's YAML 1.1 reads it as the
string ``'1e-4'``. The stages read it the same way as DVC, so a value that ``dvc exp run -S`` or ``dvc params
diff`` takes as a number is a number here too. A syntax error is one line naming the file, line and column.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from iaakd.errors import UserError, first_line


def read_params(path: Path) -> dict:
    """``path`` as a dict, read as DVC reads it; one line naming the place of a syntax error."""
    if not path.is_file():
        raise UserError(f"params file not found: {path} (run from the repository root)")
    try:
        params = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8")) or {}
    except MarkedYAMLError as error:
        mark = error.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML: {error.problem or error.context}") from None
    except (YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid YAML: {first_line(error)}") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return params


def with_overrides(params: dict, assignments: Sequence[str]) -> dict:
    """A copy of ``params`` with ``-S key=value`` assignments applied exactly as ``dvc exp run -S`` applies them
    (DVC's own code, its Hydra override parser: ``1e-4`` a float, ``[a,b]`` a list, an unknown key refused),
    through a params file of its own: ``params`` and params.yaml are never written."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides
    from omegaconf.errors import OmegaConfBaseException

    for assignment in assignments:
        key, separator, _ = assignment.partition("=")
        if not separator or not key.strip():
            raise UserError(f"-S {assignment}: expected key=value")
        if not key.startswith(("+", "~")) and not _has_key(
            params, key
        ):  # DVC's own words: "Could not override"
            raise UserError(f"-S {assignment}: params.yaml has no key '{key}'")
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "params.yaml"
        with open(copy, "w", encoding="utf-8") as handle:
            YAML(typ="safe", pure=True).dump(params, handle)
        for assignment in assignments:
            try:
                apply_overrides(copy, [assignment])
            except (InvalidArgumentError, OmegaConfBaseException) as error:
                cause = error.__cause__ if error.__cause__ is not None else error
                raise UserError(f"-S {assignment}: {first_line(cause)}") from None
        return read_params(copy)


def _has_key(params: dict, dotted: str) -> bool:
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
