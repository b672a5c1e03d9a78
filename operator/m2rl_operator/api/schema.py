"""Turn a pydantic model's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Kubernetes accepts a subset of OpenAPI v3.0 for CRDs ("structural schemas"): every node has a
`type` (except int-or-string and preserve-unknown-fields nodes), no `$ref`, no `anyOf`/`oneOf` of
types, no `additionalProperties: false`, and `exclusiveMinimum` is a boolean next to `minimum`.
This module rewrites what pydantic emits into that subset and fails loudly on anything it cannot
express, so a model change that would produce an invalid CRD breaks generation, not admission.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

# Keys a structural schema node may carry, in the order they are written; anything else from
# pydantic is dropped (_DROPPED) or rejected.
_ORDER = (
    "type",
    "format",
    "description",
    "default",
    "enum",
    "pattern",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "nullable",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "x-kubernetes-validations",
)
_KEPT = set(_ORDER)
_DROPPED = {"title", "$defs", "examples"}


class SchemaConversionError(ValueError):
    """The model uses a construct that a structural schema cannot express."""


class _KubernetesJsonSchema(GenerateJsonSchema):
    """Pydantic's generator, plus defaults from default factories.

    A factory that builds a sub-model becomes that sub-model with all its defaults filled in, not
    `default: {}`: when a CRD is created the API server evaluates the x-kubernetes-validations
    rules of each node on its `default` exactly as written, without applying the nested defaults
    (apiextensions-apiserver pkg/apiserver/schema/defaulting/validation.go `validate`), so a rule
    reading `self.replicas` fails on `{}` with "no such key". The stored object is the same either
    way: nested defaults would have filled in the same values.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True, exclude_none=True)
            return value
        return schema.get("default", NoDefault)


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of `model` (validation mode, by alias, descriptions from docstrings)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_KubernetesJsonSchema)
    return to_structural(raw, raw.get("$defs", {}), path=model.__name__)


def to_structural(node: dict[str, Any], defs: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Convert one JSON Schema node (recursively) to a structural schema node."""
    node = _resolve(node, defs, path)
    if "const" in node:  # a one-value Literal: OpenAPI 3.0 has no `const`, an enum of one says it
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key not in _KEPT:
            raise SchemaConversionError(f"{path}: unsupported JSON Schema keyword {key!r}")
        out[key] = copy.deepcopy(value)

    if "default" in out and out["default"] is None:
        del out["default"]
    # JSON Schema 2020 numeric exclusive bounds -> OpenAPI 3.0 boolean form.
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in out and not isinstance(out[bound], bool):
            out[plain] = out.pop(bound)
            out[bound] = True

    if "properties" in out:
        out["properties"] = {
            name: to_structural(sub, defs, path=f"{path}.{name}") for name, sub in out["properties"].items()
        }
        out.setdefault("type", "object")
    additional = out.get("additionalProperties")
    if additional is False:
        del out["additionalProperties"]
    elif additional is True:
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(additional, dict):
        if "properties" in out:
            raise SchemaConversionError(f"{path}: properties and additionalProperties together")
        out["additionalProperties"] = to_structural(additional, defs, path=f"{path}.*")
    if "items" in out:
        out["items"] = to_structural(out["items"], defs, path=f"{path}[]")
    if "enum" in out and "type" not in out:
        out["type"] = _enum_type(out["enum"], path)
    if "required" in out:
        out["required"] = list(out["required"])

    if "description" in out:
        out["description"] = reflow(out["description"])

    if "type" not in out and not (
        out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise SchemaConversionError(f"{path}: no type")
    if isinstance(out.get("type"), list):
        raise SchemaConversionError(f"{path}: a union of types {out['type']} is not structural")
    return {key: out[key] for key in _ORDER if key in out}


def reflow(text: str) -> str:
    """Join a docstring's wrapped lines into paragraphs (blank lines separate paragraphs)."""
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Inline $ref / single-member allOf and unwrap Optional (anyOf [X, null]).

    Sibling keys of the reference (the field's description, default, rules) win over the target's.
    """
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        target = _resolve(defs[name], defs, path)
        node = _merge(target, node, path)
    if "allOf" in node:
        members = node.pop("allOf")
        if len(members) != 1:
            raise SchemaConversionError(f"{path}: allOf with {len(members)} members")
        node = _merge(_resolve(members[0], defs, path), node, path)
    if "anyOf" in node or "oneOf" in node:
        members = node.pop("anyOf", None) or node.pop("oneOf")
        non_null = [m for m in members if m != {"type": "null"}]
        if len(non_null) != 1:
            raise SchemaConversionError(
                f"{path}: a union of {len(non_null)} types; use one type, or x-kubernetes-int-or-string"
            )
        node = _merge(_resolve(non_null[0], defs, path), node, path)
    return node


def _merge(target: dict[str, Any], overrides: dict[str, Any], path: str) -> dict[str, Any]:
    merged = dict(target)
    for key, value in overrides.items():
        if key == "x-kubernetes-validations" and key in merged:
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _enum_type(values: list[Any], path: str) -> str:
    kinds = {type(v) for v in values}
    if kinds == {str}:
        return "string"
    if kinds == {bool}:
        return "boolean"
    if kinds <= {int}:
        return "integer"
    raise SchemaConversionError(f"{path}: enum of mixed types {sorted(k.__name__ for k in kinds)}")


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every node of a structural schema with its path (`.spec.domains[].name`), parents first."""
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes.extend(walk(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        nodes.extend(walk(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        nodes.extend(walk(schema["additionalProperties"], f"{path}.*"))
    return nodes
