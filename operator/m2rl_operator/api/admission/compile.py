"""Compile one x-kubernetes-validations rule as the API server does at CRD admission.

A port of `Compile` / `compileRule` (k8s.io/apiextensions-apiserver
pkg/apiserver/schema/cel/compilation.go): parse and type-check the rule with `self` and `oldSelf`
declared as the schema node's type, require a bool, price it (`EstimateCost`, the `Max` of the
estimate), then the same for the messageExpression (which must give a string). The cardinality of
a rule under unbounded lists and maps (`maxCardinality`) comes from the node's minimum serialized
size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from m2rl_operator.api.admission.cel_ast import CelSyntaxError, parse
from m2rl_operator.api.admission.checker import (
    BOOL,
    STRING,
    CheckError,
    UnsupportedFunction,
    check,
    from_decl,
)
from m2rl_operator.api.admission.cost import SizeEstimator, estimate_cost
from m2rl_operator.api.admission.decl import DeclType
from m2rl_operator.api.admission.fieldpath import FieldPathError, valid_field_path
from m2rl_operator.api.admission.limits import MAX_REQUEST_SIZE_BYTES


@dataclass
class CompilationResult:
    """compilation.go CompilationResult, without the program."""

    error: str | None = None
    error_is_required: bool = False
    unsupported: str | None = None
    """Set when the rule calls a function this check cannot price (never guessed)."""
    uses_old_self: bool = False
    max_cost: int = 0
    max_cardinality: int = 0
    message_expression: bool = False
    message_expression_error: str | None = None
    message_expression_unsupported: str | None = None
    message_expression_max_cost: int = 0
    normalized_field_path: str = ""


def max_cardinality(min_size: int) -> int:
    """maxCardinality: how often a value of this minimum serialized size fits in a request."""
    return MAX_REQUEST_SIZE_BYTES // (min_size + 1)


def _compile(text: str, decl: DeclType) -> tuple[Any, bool]:
    """(checked expression, uses oldSelf); raises CelSyntaxError, CheckError, UnsupportedFunction."""
    self_type = from_decl(decl)
    checked = check(parse(text), {"self": self_type, "oldSelf": self_type})
    return checked, checked.uses_old_self


def compile_rule(rule: dict[str, Any], schema: dict[str, Any], decl: DeclType) -> CompilationResult:
    """compileRule for one entry of x-kubernetes-validations on the node `schema` typed `decl`."""
    result = CompilationResult()
    text = str(rule.get("rule", ""))
    if not text.strip():
        return result
    try:
        checked, result.uses_old_self = _compile(text, decl)
    except CelSyntaxError as exc:
        result.error = f"compilation failed: ERROR: <input>: {exc}"
        return result
    except CheckError as exc:
        result.error = f"compilation failed: ERROR: <input>: {exc}"
        return result
    except UnsupportedFunction as exc:
        result.unsupported = str(exc)
        return result
    if checked.types[checked.root.id] != BOOL:
        result.error = "cel expression must evaluate to a bool"
        return result
    estimator = SizeEstimator(decl)
    result.max_cost = estimate_cost(checked, estimator).max
    result.max_cardinality = max_cardinality(decl.min_serialized_size)
    message_expression = str(rule.get("messageExpression", ""))
    if message_expression:
        result.message_expression = True
        try:
            message, _ = _compile(message_expression, decl)
        except (CelSyntaxError, CheckError) as exc:
            result.message_expression_error = f"messageExpression compilation failed: ERROR: <input>: {exc}"
            return result
        except UnsupportedFunction as exc:
            result.message_expression_unsupported = str(exc)
            return result
        if message.types[message.root.id] != STRING:
            result.message_expression_error = "messageExpression must evaluate to a string"
            return result
        result.message_expression_max_cost = estimate_cost(message, estimator).max
    if rule.get("fieldPath"):
        with contextlib.suppress(FieldPathError):  # reported by the field checks before compilation
            result.normalized_field_path, _ = valid_field_path(str(rule["fieldPath"]), schema)
    return result
