"""Configuration as data: dataclasses whose fields declare their own constraints.

A field made with :func:`param` carries its allowed values or range in its metadata; a class may declare
rules that tie several fields together (:class:`Rule`, in a ``rules`` class attribute). :func:`build_config`
turns a mapping (a section of params.yaml) into the dataclass and checks all of it, so a mistake ends with
one line naming the key:

    @dataclass(frozen=True)
    class Config:
        epochs: int = param(12, above=0)
        mode: str = param("resize", choices=("resize", "pad_crop"))
        rules: ClassVar = (Rule(lambda c: c.epochs < 100, "{prefix}.epochs={epochs} is too many"),)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING

from iaakd.errors import UserError


def param(
    default: object = MISSING,
    *,
    default_factory: Callable[[], object] | object = MISSING,
    choices: Sequence[object] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    maximum: float | None = None,
    non_empty: bool = False,
) -> typing.Any:
    """A dataclass field with its constraints: ``choices``, ``minimum <= v <= maximum``, ``above < v < below``;
    on a list, each item is checked, and ``non_empty`` asks for at least one."""
    bounds = {"choices": choices, "minimum": minimum, "above": above, "below": below, "maximum": maximum}
    metadata = {key: value for key, value in bounds.items() if value is not None}
    if non_empty:
        metadata["non_empty"] = True
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A constraint across fields: ``holds(config)`` must be true, else ``message`` formatted with the
    config's fields and ``prefix`` (the params section) is the error."""

    holds: Callable[[typing.Any], bool]
    message: str


def check_type(value: object, annotation: object, key: str) -> object:
    """``value`` against a simple annotation (bool, int, float, str, list[X], X | None, a dataclass)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        if value is None and len(options) < len(typing.get_args(annotation)):
            return None
        errors = []
        for option in options:
            try:
                return check_type(value, option, key)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"params: '{key}' must be a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [check_type(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise UserError(f"params: '{key}' must be a mapping, got {value!r}")
        return build_config(annotation, value, key)
    if annotation is bool and not isinstance(value, bool):
        raise UserError(f"params: '{key}' must be true or false, got {value!r}")
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"params: '{key}' must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"params: '{key}' must be a finite number, got {value!r}")
        return float(value)
    if annotation is str and not isinstance(value, str):
        raise UserError(f"params: '{key}' must be a string, got {value!r}")
    return value


def _check_bounds(value: object, metadata: typing.Mapping, key: str) -> None:
    if isinstance(value, list):
        if metadata.get("non_empty") and not value:
            raise UserError(f"params: {key} must not be empty")
        for item in value:
            _check_bounds(item, metadata, key)
        return
    if value is None:
        return
    shown = f"'{value}'" if isinstance(value, str) else value
    if (choices := metadata.get("choices")) is not None and value not in choices:
        raise UserError(f"params: {key}={shown} is not one of {', '.join(map(str, choices))}")
    low, high = metadata.get("minimum", metadata.get("above")), metadata.get("maximum", metadata.get("below"))
    within = (
        (low is None or (value >= low if "minimum" in metadata else value > low))
        and (high is None or (value <= high if "maximum" in metadata else value < high))
    )  # fmt: skip
    if within:
        return
    if low is not None and high is not None:
        brackets = ("[" if "minimum" in metadata else "(", "]" if "maximum" in metadata else ")")
        raise UserError(f"params: {key}={value} must be in {brackets[0]}{low:g}, {high:g}{brackets[1]}")
    if "above" in metadata:
        raise UserError(f"params: {key}={value} must be {'positive' if low == 0 else f'> {low}'}")
    if "minimum" in metadata:
        raise UserError(f"params: {key}={value} is too small (at least {low})")
    raise UserError(f"params: {key}={value} is too large (at most {high})" if "maximum" in metadata
                    else f"params: {key}={value} must be < {high}")  # fmt: skip


def build_config(cls: type, values: dict, prefix: str, ignore: tuple[str, ...] = ()):
    """The dataclass ``cls`` from a params mapping: unknown keys, wrong types, values outside a field's
    declared constraints and broken rules are errors naming the key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields and key not in ignore:
            raise UserError(f"params: unknown key '{prefix}.{key}'; known: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, spec in fields.items():
        if name in values:
            kwargs[name] = check_type(values[name], hints[name], f"{prefix}.{name}")
            _check_bounds(kwargs[name], spec.metadata, f"{prefix}.{name}")
    config = cls(**kwargs)
    for rule in getattr(cls, "rules", ()):
        if not rule.holds(config):
            fields_of = {name: getattr(config, name) for name in fields}
            raise UserError("params: " + rule.message.format(prefix=prefix, **fields_of))
    return config
