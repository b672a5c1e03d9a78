"""Verifier options declared as data: each field carries its doc and its constraints.

Options are frozen dataclasses whose fields are made with `opt(...)`. `parse_options` turns a
JSON mapping into such a dataclass and rejects, with a message naming the verifier and the field,
anything that makes no sense: an unknown key, a wrong type, a value outside its range or choices.
That check runs when a scorer is configured and when a batch arrives, before anything is scored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from m2rl_trainer.rewards.types import ConfigError

T = TypeVar("T")


def opt(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """A documented option field; `choices` also applies to each element of a tuple option."""
    return dataclasses.field(
        default=default, metadata={"doc": doc, "choices": choices, "min": min, "max": max}
    )


@dataclasses.dataclass(frozen=True)
class CommonOptions:
    """Options every verifier has: the study's format gate for reasoning models."""

    require_think_close: bool = opt(
        False,
        "Format gate of the M2RL study for reasoning models: reward 0 (verdict format_error) when the "
        "response has no `</think>`.",
    )
    strip_think: bool = opt(
        True,
        "Check only the text after the last `</think>` (the final answer, not the reasoning).",
    )


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check `value` against a field's type hint; returns (ok, value converted to the hint)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, converted = _type_ok(value, arm)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            return False, value
        converted = []
        for item in value:
            ok, item_value = _type_ok(item, item_hint)
            if not ok:
                return False, value
            converted.append(item_value)
        return True, tuple(converted)
    raise TypeError(f"unsupported option type {hint!r}")  # a programming error, not a user error


_JSON_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def _type_name(hint: Any) -> str:
    """The JSON spelling of a type hint: 'integer or null', 'list of string'."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(hint))
    if origin is tuple:
        return "list of " + _type_name(typing.get_args(hint)[0])
    return _JSON_NAMES.get(hint, str(hint))


def parse_options(cls: type[T], raw: Mapping[str, Any] | None, verifier: str) -> T:
    """Validate `raw` against the option dataclass `cls`; raises ConfigError naming the problem."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"verifier {verifier!r}: unknown option(s) {unknown}; valid options: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        field = fields[name]
        ok, converted = _type_ok(value, hints[name])
        if not ok:
            raise ConfigError(
                f"verifier {verifier!r}: option {name!r} must be {_type_name(hints[name])}, got {value!r}"
            )
        meta = field.metadata
        choices = meta.get("choices")
        if choices is not None:
            items = converted if isinstance(converted, tuple) else (converted,)
            bad = [item for item in items if item not in choices]
            if bad:
                raise ConfigError(
                    f"verifier {verifier!r}: option {name!r} has invalid value(s) {bad}; "
                    f"choices: {list(choices)}"
                )
        if isinstance(converted, int | float) and not isinstance(converted, bool):
            low, high = meta.get("min"), meta.get("max")
            if low is not None and converted < low:
                raise ConfigError(f"verifier {verifier!r}: option {name!r} must be >= {low}, got {value!r}")
            if high is not None and converted > high:
                raise ConfigError(f"verifier {verifier!r}: option {name!r} must be <= {high}, got {value!r}")
        values[name] = converted
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise ConfigError(f"verifier {verifier!r}: {problem}")
    return instance


def describe_options(cls: type) -> list[dict[str, Any]]:
    """The option table of a verifier (name, type, default, doc, constraints) for docs and /v1/verifiers."""
    hints = typing.get_type_hints(cls)
    table = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        row: dict[str, Any] = {
            "name": field.name,
            "type": _type_name(hints[field.name]),
            "default": list(field.default) if isinstance(field.default, tuple) else field.default,
            "doc": meta.get("doc", ""),
        }
        for key in ("choices", "min", "max"):
            if meta.get(key) is not None:
                row[key] = list(meta[key]) if key == "choices" else meta[key]
        table.append(row)
    return table


def options_to_dict(options: Any) -> dict[str, Any]:
    """JSON form of an options instance (tuples as lists), e.g. to send it to a worker process."""
    return {
        f.name: list(v) if isinstance(v := getattr(options, f.name), tuple) else v
        for f in dataclasses.fields(options)
    }
