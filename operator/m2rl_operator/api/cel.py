"""Evaluate `x-kubernetes-validations` rules offline with cel-python, as the API server would.

Two Kubernetes behaviours matter for equal results: values are typed by the schema, not by the
JSON they came from (an integral `1.0` in a `number` field is a CEL double, so `self.weight > 0.0`
works), and a rule reading `oldSelf` runs only on updates. cel-python implements standard CEL but
not Kubernetes' extension libraries (`isSorted`, `quantity`, `url`, `ip`, `format`, string
extensions, ...): a rule that calls one is reported as *not evaluated*, naming the function, never
as passed or failed.

One cel-python quirk shapes how rules are written: inside a nested macro, an error on the right
of `||` is not absorbed by a true left side (cel-go absorbs it), so rules guard optional fields
with `has(x) ? ... : true` rather than `!has(x) || ...` there.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

# Kubernetes' CEL libraries beyond standard CEL (k8s.io/apiserver/pkg/cel/library and cel-go ext).
KUBERNETES_EXTENSION_FUNCTIONS = frozenset(
    {
        "isSorted",
        "sum",
        "min",
        "max",
        "indexOf",
        "lastIndexOf",
        "find",
        "findAll",
        "url",
        "isURL",
        "getScheme",
        "getHost",
        "getHostname",
        "getPort",
        "getEscapedPath",
        "getQuery",
        "ip",
        "isIP",
        "cidr",
        "isCIDR",
        "quantity",
        "isQuantity",
        "format",
        "charAt",
        "lowerAscii",
        "upperAscii",
        "replace",
        "split",
        "substring",
        "trim",
        "join",
        "quote",
        "reverse",
        "sets.contains",
        "sets.equivalent",
        "sets.intersects",
        "authorizer",
        "optional",
        "orValue",
        "hasValue",
        "value",
        "semver",
        "isSemver",
        "strings.quote",
    }
)


class RuleNotEvaluated(Exception):
    """cel-python cannot evaluate the rule (an extension function, or a parse it does not know)."""


@dataclass(frozen=True)
class Outcome:
    """The result of one rule: passed, or failed with the message to show."""

    passed: bool
    error: str | None = None
    """Set when evaluation failed at run time (e.g. a missing key): the API server rejects that too."""


_ENV = celpy.Environment()


@functools.lru_cache(maxsize=1024)
def _program(expression: str) -> Any:
    try:
        ast = _ENV.compile(expression)
    except CELParseError as exc:
        raise RuleNotEvaluated(f"cel-python cannot parse it ({str(exc).splitlines()[0]})") from exc
    return _ENV.program(ast)


def evaluate(expression: str, bindings: dict[str, Any]) -> Any:
    """Evaluate a CEL expression over already converted values; raise RuleNotEvaluated or return.

    Runtime errors other than unknown functions come back as a CELEvalError instance.
    """
    program = _program(expression)
    try:
        return program.evaluate(bindings)
    except CELEvalError as exc:
        missing = _undeclared_name(exc)
        if missing is not None:
            if missing in KUBERNETES_EXTENSION_FUNCTIONS:
                raise RuleNotEvaluated(
                    f"it calls {missing}(), a Kubernetes CEL extension that cel-python does not implement; "
                    "the API server checks it at admission"
                ) from exc
            raise RuleNotEvaluated(f"cel-python does not know the name {missing!r}") from exc
        return exc


def check_rule(rule: str, self_value: Any, old_value: Any = None, *, has_old: bool = False) -> Outcome:
    """Evaluate a validation rule; `self_value`/`old_value` must come from `to_cel`."""
    bindings: dict[str, Any] = {"self": self_value}
    if has_old:
        bindings["oldSelf"] = old_value
    result = evaluate(rule, bindings)
    if isinstance(result, CELEvalError):
        return Outcome(False, error=_short_error(result))
    if not isinstance(result, celtypes.BoolType | bool):
        return Outcome(False, error=f"rule returned {type(result).__name__}, not a bool")
    return Outcome(bool(result))


def message_from_expression(
    expression: str, self_value: Any, old_value: Any = None, *, has_old: bool = False
) -> str | None:
    """Evaluate a messageExpression; None when it fails or is not a string (the caller falls back)."""
    bindings: dict[str, Any] = {"self": self_value}
    if has_old:
        bindings["oldSelf"] = old_value
    try:
        result = evaluate(expression, bindings)
    except RuleNotEvaluated:
        return None
    return str(result) if isinstance(result, str) else None


def to_cel(value: Any, schema: dict[str, Any] | None) -> Any:
    """Convert a JSON value to CEL, typed by its structural schema like the API server does."""
    if value is None:
        return None
    schema = schema or {}
    type_ = schema.get("type")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = (
            schema.get("additionalProperties")
            if isinstance(schema.get("additionalProperties"), dict)
            else None
        )
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v, props.get(k, extra)) for k, v in value.items()}
        )
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        return celtypes.ListType([to_cel(v, items) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float) and type_ == "number":
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str) and type_ == "string" and schema.get("format") == "date-time":
        try:
            return celtypes.TimestampType(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return celtypes.StringType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    return json_to_cel(value)


def _undeclared_name(exc: CELEvalError) -> str | None:
    args = exc.args
    if len(args) >= 3 and args[1] is KeyError and str(args[0]).startswith("undeclared reference to"):
        detail = args[2]
        if isinstance(detail, tuple) and detail:
            return str(detail[0])
    return None


def _short_error(exc: CELEvalError) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    # cel-go propagates the first operand's error through `||`, `&&` and comparisons; cel-python
    # wraps both operands' errors into "no matching overload": report the first missing key, as
    # the API server does ("no such key: x").
    missing = re.search(r"no such member in mapping: \\?'([^'\\]*)", repr(exc.args))
    if missing:
        return "no such key: " + missing.group(1)
    if "no matching overload" in text:
        return "no matching overload (mixed types in the rule)"
    return text.split(" (in activation")[0]
