"""`fieldPath` of an x-kubernetes-validations rule: is it a path into the schema?

A port of `ValidFieldPath` (k8s.io/apiextensions-apiserver pkg/apiserver/schema/cel/validation.go),
which `pathValid` (pkg/apis/apiextensions/validation/validation.go) calls for every rule with a
fieldPath. The path is walked through the schema's `properties` (or `additionalProperties` for
`['key']` or `.key` on maps): a step into an object that declares neither fails with "does not refer
to a valid field". That is why `.metadata.name` on a root rule fails when the root `metadata`
schema declares no properties.
"""

from __future__ import annotations

import re
from typing import Any

_UNESCAPE = re.compile(r"\\.")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "'": "'", "\\": "\\"}


class FieldPathError(ValueError):
    """The path is not valid; the message is ValidFieldPath's."""


def _tokens(path: str) -> list[str]:
    """The scanner of ValidFieldPath: '.', '[' and ']' alone; quoted strings whole; else identifiers."""
    out: list[str] = []
    i = 0
    while i < len(path):
        if path[i] == "'":
            j = i + 1
            while j < len(path) and not (path[j] == "'" and path[j - 1] != "\\"):
                j += 1
            out.append(path[i : j + 1])  # an unterminated quote runs to the end, as bufio's atEOF does
            i = j + 1
        elif path[i] in ".[]":
            out.append(path[i])
            i += 1
        else:
            j = i
            while j < len(path) and path[j] not in ".[]":
                j += 1
            out.append(path[i:j])
            i = j
    return out


def _unescape(text: str) -> str:
    bad: list[str] = []

    def replace(match: re.Match[str]) -> str:
        char = match.group(0)[1]
        if char not in _ESCAPES:
            bad.append(match.group(0))
            return ""
        return _ESCAPES[char]

    result = _UNESCAPE.sub(replace, text)
    if bad:
        raise FieldPathError(f"invalid string literal: invalid escape char {bad[0]}")
    return result


def valid_field_path(path: str, schema: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(normalized path as field.Path prints it, schema found) or FieldPathError, as ValidFieldPath."""
    tokens = _tokens(path)
    normalized = ""
    node: dict[str, Any] | None = schema
    i = 0

    def step(name: str) -> None:
        nonlocal normalized, node
        assert node is not None
        if node.get("properties"):
            normalized = f"{normalized}.{name}" if normalized else name
            if name not in node["properties"]:
                raise FieldPathError("does not refer to a valid field")
            node = node["properties"][name]
        elif "additionalProperties" in node:
            normalized = f"{normalized}[{name}]"
            additional = node["additionalProperties"]
            node = additional if isinstance(additional, dict) else None
        else:
            raise FieldPathError("does not refer to a valid field")

    while i < len(tokens):
        token = tokens[i]
        if token == "[":
            if i + 1 >= len(tokens):
                raise FieldPathError("unexpected end of JSON path")
            quoted = tokens[i + 1]
            if len(quoted) < 2 or quoted[0] != "'" or quoted[-1] != "'":
                raise FieldPathError(f"expected single quoted string but got {quoted}")
            if node is None:
                raise FieldPathError("does not refer to a valid field")
            step(_unescape(quoted[1:-1]))
            if i + 2 >= len(tokens):
                raise FieldPathError("unexpected end of JSON path")
            if tokens[i + 2] != "]":
                raise FieldPathError(f"expected ] but got {tokens[i + 2]}")
            i += 3
        elif token == ".":
            if i + 1 >= len(tokens):
                raise FieldPathError("unexpected end of JSON path")
            if node is None:
                raise FieldPathError("does not refer to a valid field")
            step(tokens[i + 1])
            i += 2
        else:
            raise FieldPathError(f"expected [ or . but got: {token}")
    return normalized, node
