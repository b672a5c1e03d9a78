"""Field errors printed as the API server prints them.

The shape and wording follow k8s.io/apimachinery pkg/util/validation/field/errors.go:
`Error.Error()` is "<field>: <ErrorBody>", and `ErrorBody` is the type ("Invalid value",
"Forbidden", ...), then the bad value for the types that carry one, then ": <detail>".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# ErrorType.String() in field/errors.go
INVALID = "Invalid value"
REQUIRED = "Required value"
FORBIDDEN = "Forbidden"
NOT_SUPPORTED = "Unsupported value"
DUPLICATE = "Duplicate value"
INTERNAL = "Internal error"

_NO_VALUE_TYPES = {REQUIRED, FORBIDDEN, INTERNAL}


class _Omit:
    """field.OmitValueType: the error carries no value (CEL rule failures on objects and lists)."""

    def __repr__(self) -> str:
        return "<omitted>"


OMIT = _Omit()


@dataclass(frozen=True)
class FieldError:
    """One field.Error: type, field path (`spec.validation.openAPIV3Schema...`), bad value, detail."""

    type: str
    field: str
    detail: str = ""
    value: Any = OMIT

    def body(self) -> str:
        """field.Error.ErrorBody()."""
        if self.type in _NO_VALUE_TYPES or self.value is OMIT:
            text = self.type
        else:
            text = f"{self.type}: {_format_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def _format_value(value: Any) -> str:
    # Go prints int64/float64/bool with %v, strings with %q, anything else as a Go literal (%#v);
    # JSON stands in for the latter (the API server's struct dumps are not reproduced).
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(value)
    return json.dumps(value, sort_keys=True, default=str)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(INVALID, field, detail, value)


def required(field: str, detail: str) -> FieldError:
    return FieldError(REQUIRED, field, detail)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(FORBIDDEN, field, detail)


def not_supported(field: str, value: Any, supported: list[str]) -> FieldError:
    # field.NotSupported: detail "supported values: "a", "b"" (each quoted, sorted by the caller)
    return FieldError(
        NOT_SUPPORTED, field, "supported values: " + ", ".join(f'"{s}"' for s in supported), value
    )


def internal(field: str, detail: str) -> FieldError:
    return FieldError(INTERNAL, field, detail)


# ---- field.Path ------------------------------------------------------------------------------------


def child(path: str, name: str) -> str:
    """field.Path.Child: `a.b`."""
    return f"{path}.{name}" if path else name


def key(path: str, name: str) -> str:
    """field.Path.Key: `a[b]`."""
    return f"{path}[{name}]"


def index(path: str, i: int) -> str:
    """field.Path.Index: `a[0]`."""
    return f"{path}[{i}]"
