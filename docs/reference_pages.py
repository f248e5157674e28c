"""The reference pages, generated from the code at build time (docs/hooks.py), so they cannot drift from it:

- **parameters**: every key of params.yaml with its type, default and allowed values as the configuration
  dataclasses declare them (``iaakd.config.param``), its comment in params.yaml, and the stages that list it
  in dvc.yaml (they rerun when it changes), with the stages downstream of those;
- **commands**: every ``iaakd`` subcommand and option from its argparse parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import typing
from pathlib import Path

import yaml
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
# params.yaml's sections, and the dataclass the stage that reads each builds from it (module, class)
SECTIONS = {
    "data": ("iaakd.stages.dataset", "DataConfig"),
    "data.demo": ("iaakd.data.demo", "DemoConfig"),
    "split": ("iaakd.data.splits", "SplitConfig"),
    "features": ("iaakd.extract", "ExtractConfig"),
    "unlabeled": ("iaakd.data.pool", "PoolConfig"),
    "task": ("iaakd.tasks", "Task"),
    "distiller": ("iaakd.teacher", "DistillerConfig"),
    "student": ("iaakd.student.config", "StudentConfig"),
    "pretrain": ("iaakd.pretraining.train", "PretrainConfig"),
    "align": ("iaakd.align", "AlignConfig"),
    "evaluate": ("iaakd.stages.evaluate", "EvaluateConfig"),
}
BOUNDS = {"minimum": ">= {}", "above": "> {}", "below": "< {}", "maximum": "<= {}"}


@dataclasses.dataclass(frozen=True)
class Key:
    name: str  # dotted, as dvc exp run -S takes it
    value: object  # in params.yaml
    comment: str  # params.yaml's, first line
    type: str
    default: str
    allowed: str
    declared: str  # the class that declares it, or where it is read


def params_keys(path: Path = ROOT / "params.yaml") -> list[Key]:
    """Every leaf key of params.yaml (a mapping is a section; a list is a value), in file order."""
    loaded = YAML().load(path.read_text(encoding="utf-8"))
    keys: list[Key] = []

    def walk(mapping, prefix: str) -> None:
        for name, value in mapping.items():
            dotted = f"{prefix}.{name}" if prefix else name
            if hasattr(value, "items"):
                walk(value, dotted)
            else:
                keys.append(describe(dotted, _plain(value), _comment(mapping, name)))

    walk(loaded, "")
    return keys


def _plain(value: object) -> object:
    return [_plain(item) for item in value] if isinstance(value, list) else value


def _comment(mapping, name: str) -> str:
    tokens = mapping.ca.items.get(name) or []
    for token in tokens:
        if token is not None and hasattr(token, "value"):
            return token.value.strip().splitlines()[0].lstrip("# ").strip()
    return ""


def describe(dotted: str, value: object, comment: str) -> Key:
    """A key's declaration: the dataclass field that holds it (type, default, constraints), else its value."""
    field, owner = _field(dotted)
    if field is None:
        return Key(dotted, value, comment, type(value).__name__ if value is not None else "—", _show(value),
                   "", "read by its stage directly")  # fmt: skip
    hints = typing.get_type_hints(owner)
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    allowed = (
        [f"one of {', '.join(map(_show, field.metadata['choices']))}"] if "choices" in field.metadata else []
    )
    allowed += [rule.format(field.metadata[name]) for name, rule in BOUNDS.items() if name in field.metadata]
    if field.metadata.get("non_empty"):
        allowed.append("not empty")
    return Key(dotted, value, comment, _type_name(hints[field.name]), _show(default), "; ".join(allowed),
               f"{owner.__module__}.{owner.__qualname__}")  # fmt: skip


def _field(dotted: str):
    """The dataclass field declaring ``dotted``, and its class; (None, None) where no dataclass does."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        section = ".".join(parts[:cut])
        if section not in SECTIONS:
            continue
        module, name = SECTIONS[section]
        owner = getattr(importlib.import_module(module), name)
        for part in parts[cut:]:
            fields = {field.name: field for field in dataclasses.fields(owner)}
            if part not in fields:
                return None, None
            field = fields[part]
            hint = typing.get_type_hints(owner)[part]
            if part != parts[-1]:
                if not dataclasses.is_dataclass(hint):
                    return None, None
                owner = hint
        return field, owner
    return None, None


def _type_name(hint: object) -> str:
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    return text.replace("typing.", "").replace(" | ", " or ")


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def stages(dvc_file: Path = ROOT / "dvc.yaml", params_file: Path = ROOT / "params.yaml") -> dict[str, dict]:
    """dvc.yaml's stages, ``foreach`` expanded over params.yaml's lists: name -> params, deps, outs."""
    pipeline = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    expanded: dict[str, dict] = {}
    for name, stage in pipeline["stages"].items():
        if "foreach" not in stage:
            expanded[name] = stage
            continue
        items = params
        for part in stage["foreach"].strip("${}").split("."):
            items = items[part]
        for item in items:
            text = yaml.safe_dump(stage["do"]).replace("${item}", str(item))
            expanded[f"{name}@{item}"] = yaml.safe_load(text)
    return expanded


def _paths(entries: list | None) -> list[str]:
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries or []]


def rerun_by(key: str, pipeline: dict[str, dict]) -> tuple[list[str], list[str]]:
    """The stages that list ``key`` (or a section above it) in dvc.yaml, and the stages downstream of them."""
    listed = []
    for name, stage in pipeline.items():
        for entry in stage.get("params") or []:
            names = [entry] if isinstance(entry, str) else [k for keys in entry.values() for k in keys]
            if any(key == listed_key or key.startswith(listed_key + ".") for listed_key in names):
                listed.append(name)
                break
    downstream, frontier = [], list(listed)
    while frontier:
        outs = _paths(pipeline[frontier.pop()].get("outs"))
        for name, stage in pipeline.items():
            if name in listed or name in downstream:
                continue
            if any(
                dep == out or dep.startswith(out.rstrip("/") + "/")
                for dep in _paths(stage.get("deps"))
                for out in outs
            ):
                downstream.append(name)
                frontier.append(name)
    order = list(pipeline)
    return sorted(listed, key=order.index), sorted(downstream, key=order.index)


def parameters_markdown() -> str:
    pipeline = stages()
    sections: dict[str, list[Key]] = {}
    for key in params_keys():
        sections.setdefault(key.name.split(".")[0], []).append(key)
    lines = [
        f"Every key of `params.yaml` ({sum(map(len, sections.values()))} in all), generated from the configuration "
        "dataclasses (type, default, allowed values), `params.yaml` (the value and its comment) and `dvc.yaml` "
        "(the stages that list the key rerun when it changes, and then the stages downstream whose inputs "
        "change). Set any of them for one experiment with `dvc exp run -S key=value`; "
        "`python -m iaakd.stages.check_params -S key=value` checks a value without running anything.",
        "",
    ]
    for section, keys in sections.items():
        lines += [
            f"## `{section}`",
            "",
            "| key | type | default | allowed | reruns |",
            "|---|---|---|---|---|",
        ]
        for key in keys:
            listed, downstream = rerun_by(key.name, pipeline)
            if key.name == "features.backbones":
                reruns = "defines the `extract@` and `extract_pool@` stages (one each)"
            else:
                reruns = ", ".join(f"`{name}`" for name in _families(listed)) or "none (no stage lists it)"
                if downstream:
                    reruns += f"; then {', '.join(f'`{name}`' for name in _families(downstream))}"
            name = f"`{key.name}`" + (f"<br>{_escape(key.comment)}" if key.comment else "")
            default = f"`{key.default}`"
            if _show(key.value) != key.default:
                default += f"<br>params.yaml: `{_show(key.value)}`"
            lines.append(f"| {name} | `{key.type}` | {default} | {key.allowed or '—'} | {reruns} |")
        lines.append("")
    return "\n".join(lines)


def _families(names: list[str]) -> list[str]:
    """``extract@a``, ``extract@b`` as ``extract@*``: one entry per foreach stage."""
    shown: list[str] = []
    for name in names:
        family = name.split("@")[0] + "@*" if "@" in name else name
        if family not in shown:
            shown.append(family)
    return shown


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """``iaakd``'s subcommands, theirs (``iaakd weights fetch``) and ``plan``, each with its own parser."""
    from iaakd import plan
    from iaakd.cli import build_parser

    parsers: dict[str, argparse.ArgumentParser] = {}

    def add(prefix: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    if name != "plan":
                        parsers[f"{prefix} {name}"] = child
                        add(f"{prefix} {name}", child)

    add("iaakd", build_parser())
    parsers["iaakd plan"] = plan.build_parser()
    return parsers


def cli_markdown() -> str:
    lines = [
        "Every command and option, generated from the commands' own argument parsers. `iaakd-score` and "
        "`python -m iaakd score` are `iaakd score`; `python -m iaakd.plan` is `iaakd plan`. Exit status: 0 "
        "done; 1 bad usage or input, one line `error: ...`; 2 (`score`, `explain`) some files could not be "
        "read, their rows say why.",
        "",
    ]
    for name, parser in command_parsers().items():
        parser.prog = name
        description = (parser.description or "").strip().split("\n\n")[0]
        lines += [f"## `{name}`", "", _escape(" ".join(description.split())), "", "```text",
                  parser.format_usage().strip(), "```", "", "| argument | default | what it is |", "|---|---|---|"]  # fmt: skip
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            shown = ", ".join(f"`{option}`" for option in action.option_strings) or f"`{action.dest}`"
            if action.choices and not isinstance(action.choices, dict):
                shown += " {" + ", ".join(map(str, action.choices)) + "}"
            elif action.metavar:
                shown += f" `{action.metavar}`"
            default = (
                ""
                if action.default is None or action.default is False or action.default == argparse.SUPPRESS
                else f"`{action.default}`"
            )
            lines.append(f"| {shown} | {default} | {_escape(' '.join((action.help or '').split()))} |")
        lines.append("")
    return "\n".join(lines)
