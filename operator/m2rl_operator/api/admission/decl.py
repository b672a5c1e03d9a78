"""CEL declaration types of a structural schema, with the size bounds the cost estimator reads.

A port of `SchemaDeclType` (k8s.io/apiserver pkg/cel/common/schemas.go) and of the object-meta
handling at the root of a custom resource (`WithTypeAndObjectMeta`, k8s.io/apiextensions-apiserver
pkg/apiserver/schema/cel/model/schemas.go), plus the `DeclType` constructors and their
`MinSerializedSize` (k8s.io/apiserver pkg/cel/types.go).

`max_elements` is what the API server's size estimator returns for a value of the type: the
number of characters of a string (maxLength x 4, as maxLength counts code points and the
estimator bytes), bytes of a byte string, items of a list, entries of a map. Unbounded values
are bounded by the request size (3 MiB), which is what makes rules over unbounded strings and
lists expensive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from m2rl_operator.api.admission.limits import (
    DNS1123_SUBDOMAIN_MAX_LENGTH,
    JSON_DATE_SIZE,
    MAX_DATETIME_SIZE_JSON,
    MAX_DURATION_SIZE_JSON,
    MAX_REQUEST_SIZE_BYTES,
    MIN_BOOL_SIZE,
    MIN_DATETIME_SIZE_JSON,
    MIN_DURATION_SIZE_JSON,
    MIN_NUMBER_SIZE,
    MIN_STRING_SIZE,
)


@dataclass(frozen=True)
class Profile:
    """The Kubernetes-version-dependent parts of the estimate (all else is the same from 1.28 on).

    enum_bounds_strings: a string with an `enum` and no maxLength is as long as its longest value
      (apiserver commit 140ffa083, Kubernetes 1.29+); before, it was unbounded.
    metadata_name_max_length: Kubernetes 1.37+ bounds `self.metadata.name` at 253 characters (or
      the schema's smaller maxLength; apiextensions-apiserver commit 1f3023483); before, the
      root's metadata.name and generateName were unbounded strings unless the schema declared
      kind, apiVersion, metadata.name and metadata.generateName itself.
    """

    name: str
    enum_bounds_strings: bool
    metadata_name_max_length: int | None


KUBE_1_28 = Profile("1.28", enum_bounds_strings=False, metadata_name_max_length=None)
KUBE_1_36 = Profile("1.36", enum_bounds_strings=True, metadata_name_max_length=None)
KUBE_1_37 = Profile("1.37", enum_bounds_strings=True, metadata_name_max_length=DNS1123_SUBDOMAIN_MAX_LENGTH)
SUPPORTED_PROFILES = (KUBE_1_28, KUBE_1_36, KUBE_1_37)
"""Every profile the admission check runs: a CRD passes only if all of them accept it."""


@dataclass(eq=False)
class DeclField:
    name: str
    type: DeclType
    required: bool


@dataclass(eq=False)
class DeclType:
    """apiservercel.DeclType: kind (`object`, `list`, `map`, `string`, `bytes`, `int`, `uint`,
    `double`, `bool`, `timestamp`, `duration`, `dyn`), fields / element / key types, bounds."""

    kind: str
    max_elements: int = 0
    min_serialized_size: int = 0
    fields: dict[str, DeclField] = field(default_factory=dict)
    elem: DeclType | None = None
    key: DeclType | None = None
    name: str = ""
    """object types: a name unique per schema node (the API server's generated selfType names)."""


def _simple(kind: str, min_size: int) -> DeclType:
    return DeclType(kind, min_serialized_size=min_size)


# The shared simple types of pkg/cel/types.go; their MaxElements is 0.
STRING = _simple("string", MIN_STRING_SIZE)
INT = _simple("int", MIN_NUMBER_SIZE)
DOUBLE = _simple("double", MIN_NUMBER_SIZE)
BOOL = _simple("bool", MIN_BOOL_SIZE)

_RESERVED = frozenset(
    {
        "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
        "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip
_EXPAND = re.compile(r"(__|[-./]|[^a-zA-Z0-9-./_])")
_VALID = re.compile(r"^[A-Za-z0-9_./-]*$")


def escape(name: str) -> str | None:
    """apiservercel.Escape: the CEL field name of a property, or None when it cannot be escaped."""
    if not name or name[0].isdigit():
        return None
    if name in _RESERVED:
        return f"__{name}__"
    if not _VALID.match(name):
        return None
    if "__" not in name and not re.search(r"[-./]", name):
        return name

    def replace(match: re.Match[str]) -> str:
        return {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}[match.group(0)]

    return _EXPAND.sub(replace, name)


def _max_request_string() -> int:
    return MAX_REQUEST_SIZE_BYTES - 2  # "" around the string


def _string_max(schema: dict[str, Any], profile: Profile) -> int:
    """estimateMaxElementsFromMaxLength / estimateMaxStringEnumLength / estimateMaxStringLengthPerRequest."""
    if "maxLength" in schema:
        return max(0, int(schema["maxLength"])) * 4
    if schema.get("enum") and profile.enum_bounds_strings:
        return max((len(v) for v in schema["enum"] if isinstance(v, str)), default=0)
    fmt = schema.get("format")
    if fmt == "duration":
        return MAX_DURATION_SIZE_JSON
    if fmt == "date":
        return JSON_DATE_SIZE
    if fmt == "date-time":
        return MAX_DATETIME_SIZE_JSON
    return _max_request_string()


def schema_decl_type(
    schema: dict[str, Any] | None, is_resource_root: bool, profile: Profile, *, path: str = "self"
) -> DeclType | None:
    """SchemaDeclType: None for schemas CEL does not see (e.g. untyped preserve-unknown-fields)."""
    if schema is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        dyn = DeclType("dyn", min_serialized_size=1)
        dyn.max_elements = (
            max(0, int(schema["maxLength"])) * 4 if "maxLength" in schema else _max_request_string()
        )
        return dyn
    if is_resource_root:
        schema = with_type_and_object_meta(schema, profile)
    type_ = schema.get("type")
    if type_ == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            return None
        elem = schema_decl_type(items, bool(items.get("x-kubernetes-embedded-resource")), profile, path=path)
        if elem is None:
            return None
        if "maxItems" in schema:
            max_items = max(0, int(schema["maxItems"]))
        else:
            max_items = (MAX_REQUEST_SIZE_BYTES - 2) // (elem.min_serialized_size + 1)
        return DeclType("list", max_items, 2, elem=elem)
    if type_ == "object":
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            value = schema_decl_type(
                additional, bool(additional.get("x-kubernetes-embedded-resource")), profile, path=path
            )
            if value is None:
                return None
            if "maxProperties" in schema:
                max_props = max(0, int(schema["maxProperties"]))
            else:
                max_props = (MAX_REQUEST_SIZE_BYTES - 2) // (value.min_serialized_size + 6)
            return DeclType("map", max_props, 2, elem=value, key=STRING)
        required = set(schema.get("required", []))
        fields: dict[str, DeclField] = {}
        min_size = 2
        for name, prop in (schema.get("properties") or {}).items():
            ftype = schema_decl_type(
                prop, bool(prop.get("x-kubernetes-embedded-resource")), profile, path=f"{path}.{name}"
            )
            if ftype is None:
                continue
            escaped = escape(name)
            if escaped is not None:
                fields[escaped] = DeclField(escaped, ftype, name in required)
            if name in required and "default" not in prop:
                min_size += len(name) + ftype.min_serialized_size + 4
        return DeclType("object", 0, min_size, fields=fields, name=path)
    if type_ == "string":
        fmt = schema.get("format")
        if fmt == "byte":
            bytes_max = max(0, int(schema["maxLength"])) if "maxLength" in schema else _max_request_string()
            return DeclType("bytes", bytes_max, MIN_STRING_SIZE)
        if fmt == "duration":
            return DeclType("duration", MAX_DURATION_SIZE_JSON, MIN_DURATION_SIZE_JSON)
        if fmt == "date":
            return DeclType("timestamp", JSON_DATE_SIZE, JSON_DATE_SIZE)
        if fmt == "date-time":
            return DeclType("timestamp", MAX_DATETIME_SIZE_JSON, MIN_DATETIME_SIZE_JSON)
        return DeclType("string", _string_max(schema, profile), MIN_STRING_SIZE)
    if type_ == "boolean":
        return BOOL
    if type_ == "number":
        return DOUBLE
    if type_ == "integer":
        return INT
    return None


def with_type_and_object_meta(schema: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """WithTypeAndObjectMeta: `apiVersion`, `kind`, `metadata.name` and `metadata.generateName` are
    always visible to root rules, typed as strings."""
    props = schema.get("properties") or {}
    meta = props.get("metadata") or {}
    meta_props = meta.get("properties") or {}
    if (
        props
        and props.get("kind", {}).get("type") == "string"
        and props.get("apiVersion", {}).get("type") == "string"
        and meta.get("type") == "object"
        and meta_props
        and meta_props.get("name", {}).get("type") == "string"
        and meta_props.get("generateName", {}).get("type") == "string"
    ):
        return schema
    plain: dict[str, Any] = {"type": "string"}
    if profile.metadata_name_max_length is None:
        name, generate_name = plain, plain
    else:
        name = _capped(meta_props.get("name", {}), profile.metadata_name_max_length)
        generate_name = _capped(meta_props.get("generateName", {}), profile.metadata_name_max_length - 1)
    result = dict(schema)
    result["properties"] = {
        **props,
        "kind": plain,
        "apiVersion": plain,
        "metadata": {"type": "object", "properties": {"name": name, "generateName": generate_name}},
    }
    return result


def _capped(existing: dict[str, Any], max_length: int) -> dict[str, Any]:
    """cappedLengthStringType."""
    if "maxLength" in existing and existing["maxLength"] < max_length:
        max_length = existing["maxLength"]
    return {"type": "string", "maxLength": max_length}


def walk_decl(root: DeclType, path: list[str]) -> DeclType | None:
    """The type at a cost-estimator path below the root (`@items`, `@values`, `@keys`, or fields)."""
    node: DeclType | None = root
    for step in path:
        if node is None:
            return None
        if step in ("@items", "@values"):
            node = node.elem
        elif step == "@keys":
            node = node.key
        else:
            found = node.fields.get(step)
            node = found.type if found is not None else None
    return node
