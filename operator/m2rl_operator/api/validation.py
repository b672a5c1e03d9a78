"""Offline admission: check objects against a CRD's structural schema and CEL rules.

The steps follow the API server's order for a custom resource: unknown fields (kubectl's strict
field validation) and nulls are pruned, defaults are applied, the OpenAPI schema is checked, then
every `x-kubernetes-validations` rule is evaluated with cel-python on the defaulted object
(transition rules only when an old object is given). Each problem is a `Violation` naming the
field path, what rule it broke and, in the user's terms, what is wrong.

What differs from a real API server: no admission webhooks or quotas; CEL rules calling Kubernetes
extension functions are reported as not evaluated (warnings); validation ratcheting of unchanged
fields on update is not modelled (every field is checked).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from m2rl_operator.api import cel
from m2rl_operator.api.base import DNS_1035_LABEL_PATTERN
from m2rl_operator.api.uri import (
    URI_PATTERN,
    WRITABLE_SCHEMES,
    WRITABLE_URI_PATTERN,
    InvalidURIError,
    parse_uri,
)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


@dataclass(frozen=True)
class Violation:
    """One problem with an object.

    path: the field, as Kubernetes prints it (`spec.domains[1].weight`; "" for the whole object).
    message: what is wrong, e.g. `Invalid value: 0: weight must be positive ...`.
    rule: what was broken: `schema:<keyword>` (type, required, enum, minimum, pattern, ...),
      `metadata:<field>`, or the CEL expression of an x-kubernetes-validations rule.
    """

    path: str
    message: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class NotEvaluated:
    """A CEL rule cel-python could not evaluate; the API server will. Never counted as passed."""

    path: str
    rule: str
    reason: str

    def __str__(self) -> str:
        where = self.path or "<object>"
        return f"{where}: rule `{self.rule}` was not evaluated offline: {self.reason}"


@dataclass
class Result:
    """Violations and not-evaluated rules of one object, and the object after defaulting."""

    violations: list[Violation] = field(default_factory=list)
    not_evaluated: list[NotEvaluated] = field(default_factory=list)
    defaulted: Any = None

    @property
    def ok(self) -> bool:
        return not self.violations


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    """A value as Kubernetes prints it in messages: scalars as JSON (shortened), else its type."""
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return f'"array of {len(value)}"'
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + '..."'


def _ident(item: dict[str, Any], keys: list[str]) -> str:
    """The identity of a map-list item: its key fields as JSON."""
    return json.dumps({k: item.get(k) for k in keys}, sort_keys=True, default=str)


def _type_of(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _matches_type(value: Any, type_: str) -> bool:
    if type_ == "object":
        return isinstance(value, dict)
    if type_ == "array":
        return isinstance(value, list)
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _pattern_hint(pattern: str, value: str) -> str | None:
    """A friendlier explanation for patterns users meet often (URIs, resource names)."""
    if pattern == DNS_1035_LABEL_PATTERN:
        return (
            "must start with a lowercase letter and contain only lowercase letters, digits and '-' "
            "(a DNS-1035 label): the operator names Services and pods after it"
        )
    if pattern in (URI_PATTERN, WRITABLE_URI_PATTERN):
        try:
            parse_uri(
                value, schemes=WRITABLE_SCHEMES if pattern == WRITABLE_URI_PATTERN else ("pvc", "hf", "file")
            )
        except InvalidURIError as exc:
            return exc.reason
    return None


class SchemaValidator:
    """Validates values against one CRD version's openAPIV3Schema (structural).

    With `kubernetes_object` (the default) the value is a whole object: its `metadata` is checked
    as ObjectMeta. Without, any JSON value is checked against the schema (e.g. a default).
    """

    def __init__(self, schema: dict[str, Any], *, kubernetes_object: bool = True) -> None:
        self.schema = schema
        self.kubernetes_object = kubernetes_object

    def validate(self, obj: Any, old: Any = None) -> Result:
        """Validate `obj` as a create (old None) or as an update of `old`."""
        result = Result()
        root = self.kubernetes_object and isinstance(obj, dict)
        value = copy.deepcopy(obj)
        _prune(value, self.schema, "", result.violations, root=root)
        _default(value, self.schema)
        if root:
            _check_metadata(value.get("metadata"), result.violations)
            _check_name(value, self.schema, result.violations)
        _check(value, self.schema, "", result.violations, root=root)
        old_value: Any = None
        if old is not None:
            old_value = copy.deepcopy(old)
            _prune(old_value, self.schema, "", [], root=root)
            _default(old_value, self.schema)
        schema_error_paths = [v.path for v in result.violations]
        cel_input = _with_generated_name(value) if root else value
        _check_rules(cel_input, old_value, old is not None, self.schema, "", result, schema_error_paths)
        result.defaulted = value
        return result


def check_value(value: Any, schema: dict[str, Any]) -> list[Violation]:
    """The OpenAPI checks alone (types, bounds, patterns, required, ...) of a value as written: no
    pruning, no defaulting, no CEL. What the API server's schema validator does with a schema
    `default` (k8s.io/apiextensions-apiserver pkg/apiserver/schema/defaulting/validation.go)."""
    out: list[Violation] = []
    _check(value, schema, "", out)
    return out


# ---- pruning ---------------------------------------------------------------------------------------


def _prune(
    value: Any, schema: dict[str, Any], path: str, out: list[Violation], *, root: bool = False
) -> None:
    """Drop nulls and unknown fields (reporting unknown ones, as kubectl's strict validation does)."""
    if isinstance(value, dict):
        props: dict[str, Any] | None = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        for key in list(value):
            sub = (props or {}).get(key) or (additional if isinstance(additional, dict) else None)
            if value[key] is None and not (sub or {}).get("nullable"):
                del value[key]
                continue
            if root and key == "metadata":
                continue  # ObjectMeta, checked by _check_metadata
            if sub is not None:
                _prune(value[key], sub, _join(path, key), out)
            elif not preserve:
                close = difflib.get_close_matches(key, list(props or {}), n=1, cutoff=0.6)
                if close:
                    hint = f"; did you mean {close[0]!r}?"
                else:
                    hint = f" (fields here: {', '.join(props)})" if props else " (this object has no fields)"
                out.append(
                    Violation(_join(path, key), f"unknown field {key!r}{hint}", "schema:unknown-field")
                )
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _prune(item, schema["items"], f"{path}[{i}]", out)


# ---- defaulting ------------------------------------------------------------------------------------


def _default(value: Any, schema: dict[str, Any]) -> None:
    """Apply `default`s of absent properties, then recurse (so defaults of defaults apply)."""
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) or (additional if isinstance(additional, dict) else None)
            if sub is not None:
                _default(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])


# ---- OpenAPI checks --------------------------------------------------------------------------------


def _check(
    value: Any, schema: dict[str, Any], path: str, out: list[Violation], *, root: bool = False
) -> None:
    type_ = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
            out.append(
                Violation(
                    path, f"Invalid value: {_show(value)}: must be an integer or a string", "schema:type"
                )
            )
            return
    elif type_ and not _matches_type(value, type_):
        out.append(
            Violation(
                path,
                f"Invalid value: {_show(value)}: must be of type {type_}, got {_type_of(value)}",
                "schema:type",
            )
        )
        return

    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        out.append(
            Violation(
                path, f"Unsupported value: {_show(value)}: supported values: {supported}", "schema:enum"
            )
        )

    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, schema, path, out)
    if isinstance(value, str):
        _check_string(value, schema, path, out)
    if isinstance(value, dict):
        _check_object(value, schema, path, out, root=root)
    if isinstance(value, list):
        _check_array(value, schema, path, out)


def _check_number(value: float, schema: dict[str, Any], path: str, out: list[Violation]) -> None:
    if "minimum" in schema:
        low = schema["minimum"]
        if schema.get("exclusiveMinimum") and not value > low:
            out.append(
                Violation(
                    path, f"Invalid value: {_show(value)}: must be greater than {low}", "schema:minimum"
                )
            )
        elif value < low:
            out.append(
                Violation(
                    path,
                    f"Invalid value: {_show(value)}: must be greater than or equal to {low}",
                    "schema:minimum",
                )
            )
    if "maximum" in schema:
        high = schema["maximum"]
        if schema.get("exclusiveMaximum") and not value < high:
            out.append(
                Violation(path, f"Invalid value: {_show(value)}: must be less than {high}", "schema:maximum")
            )
        elif value > high:
            out.append(
                Violation(
                    path,
                    f"Invalid value: {_show(value)}: must be less than or equal to {high}",
                    "schema:maximum",
                )
            )


def _check_string(value: str, schema: dict[str, Any], path: str, out: list[Violation]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        out.append(
            Violation(
                path,
                f"Invalid value: {_show(value)}: must be at least {schema['minLength']} characters long",
                "schema:minLength",
            )
        )
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        out.append(
            Violation(
                path,
                f"Too long: must have at most {schema['maxLength']} characters (has {len(value)})",
                "schema:maxLength",
            )
        )
    pattern = schema.get("pattern")
    if pattern and re.search(pattern, value) is None:
        hint = _pattern_hint(pattern, value)
        detail = hint if hint else f"must match the regular expression {pattern!r}"
        out.append(Violation(path, f"Invalid value: {_show(value)}: {detail}", "schema:pattern"))
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            out.append(
                Violation(
                    path, f"Invalid value: {_show(value)}: must be an RFC 3339 date-time", "schema:format"
                )
            )


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, out: list[Violation], *, root: bool
) -> None:
    for key in schema.get("required", []):
        if key not in value:
            out.append(Violation(_join(path, key), "Required value", "schema:required"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        out.append(
            Violation(
                path,
                f"Too many: {len(value)}: must have at most {schema['maxProperties']} entries",
                "schema:maxProperties",
            )
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        out.append(
            Violation(
                path,
                f"Too few: {len(value)}: must have at least {schema['minProperties']} entries",
                "schema:minProperties",
            )
        )
    props: dict[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if root and key == "metadata":
            continue
        if key in props:
            _check(item, props[key], _join(path, key), out)
        elif isinstance(additional, dict):
            _check(item, additional, f"{path}[{key}]" if path else key, out)


def _check_array(value: list[Any], schema: dict[str, Any], path: str, out: list[Violation]) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        out.append(
            Violation(
                path,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                "schema:maxItems",
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        out.append(
            Violation(
                path,
                f"Invalid value: {len(value)} items: must have at least {schema['minItems']} items",
                "schema:minItems",
            )
        )
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _check(item, items, f"{path}[{i}]", out)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            ident = _ident(item, keys)
            if ident in seen:
                out.append(Violation(f"{path}[{i}]", f"Duplicate value: {ident}", "schema:list-map-keys"))
            seen.setdefault(ident, i)
    elif list_type == "set":
        shown = [json.dumps(v, sort_keys=True, default=str) for v in value]
        for i, text in enumerate(shown):
            if text in shown[:i]:
                out.append(Violation(f"{path}[{i}]", f"Duplicate value: {text}", "schema:list-set"))


# ---- metadata --------------------------------------------------------------------------------------


def _check_metadata(meta: Any, out: list[Violation]) -> None:
    if not isinstance(meta, dict):
        out.append(Violation("metadata", "Required value: an object with at least a name", "metadata:name"))
        return
    for key in meta:
        if key not in _OBJECT_META_FIELDS:
            out.append(
                Violation(f"metadata.{key}", f"unknown field {key!r} in ObjectMeta", "schema:unknown-field")
            )
    name, generate = meta.get("name"), meta.get("generateName")
    if not name and not generate:
        out.append(
            Violation("metadata.name", "Required value: name or generateName is required", "metadata:name")
        )
    if name is not None and (not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        out.append(
            Violation(
                "metadata.name",
                f"Invalid value: {_show(name)}: must be a lowercase RFC 1123 subdomain "
                "(lowercase letters, digits, '-' and '.'; at most 253 characters)",
                "metadata:name",
            )
        )
    namespace = meta.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace)
    ):
        out.append(
            Violation(
                "metadata.namespace",
                f"Invalid value: {_show(namespace)}: must be a lowercase RFC 1123 label",
                "metadata:namespace",
            )
        )
    for kind in ("labels", "annotations"):
        entries = meta.get(kind)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            out.append(
                Violation(f"metadata.{kind}", "Invalid value: must be a map of strings", f"metadata:{kind}")
            )
            continue
        for key, val in entries.items():
            problem = _qualified_name_problem(str(key))
            if problem:
                out.append(
                    Violation(
                        f"metadata.{kind}", f"Invalid value: {_show(key)}: {problem}", f"metadata:{kind}"
                    )
                )
            if not isinstance(val, str):
                out.append(
                    Violation(
                        f"metadata.{kind}[{key}]",
                        f"Invalid value: {_show(val)}: must be a string",
                        f"metadata:{kind}",
                    )
                )
            elif kind == "labels" and (len(val) > 63 or not _LABEL_VALUE.match(val)):
                out.append(
                    Violation(
                        f"metadata.labels[{key}]",
                        f"Invalid value: {_show(val)}: a label value has at most 63 "
                        "characters: letters, digits, '-', '_' and '.', starting and ending alphanumerically",
                        "metadata:labels",
                    )
                )


def _check_name(obj: dict[str, Any], schema: dict[str, Any], out: list[Violation]) -> None:
    """The CRD's own constraints on metadata.name (the only metadata a CRD schema may restrict),
    applied to the name the API server would store: generateName plus 5 characters."""
    if any(v.path == "metadata.name" for v in out):
        return  # not even valid ObjectMeta
    name_schema = schema.get("properties", {}).get("metadata", {}).get("properties", {}).get("name")
    name = _with_generated_name(obj).get("metadata", {}).get("name")
    if isinstance(name_schema, dict) and isinstance(name, str):
        _check_string(name, name_schema, "metadata.name", out)


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "the prefix before '/' must be a DNS subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            "a key name has at most 63 characters: letters, digits, '-', '_' and '.', "
            "starting and ending alphanumerically"
        )
    return None


def _with_generated_name(value: Any) -> Any:
    """The object as CEL sees it: the API server generates metadata.name from generateName first."""
    meta = value.get("metadata") if isinstance(value, dict) else None
    if isinstance(meta, dict) and not meta.get("name") and isinstance(meta.get("generateName"), str):
        generated = copy.copy(value)
        generated["metadata"] = {**meta, "name": meta["generateName"] + "xxxxx"}
        return generated
    return value


# ---- CEL -------------------------------------------------------------------------------------------


def _has_error_within(path: str, error_paths: list[str]) -> bool:
    if not path:
        return bool(error_paths)
    return any(p == path or p.startswith(path + ".") or p.startswith(path + "[") for p in error_paths)


def _rule_path(path: str, field_path: str | None) -> str:
    if not field_path:
        return path
    relative = field_path.lstrip(".")
    return f"{path}.{relative}" if path else relative


def _lookup(value: Any, field_path: str | None) -> tuple[bool, Any]:
    """The value at a simple relative field path (`.a.b`), if present."""
    if not field_path:
        return True, value
    for part in field_path.lstrip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _check_rules(
    value: Any,
    old: Any,
    has_old: bool,
    schema: dict[str, Any],
    path: str,
    result: Result,
    error_paths: list[str],
) -> None:
    rules = schema.get("x-kubernetes-validations") or []
    if rules:
        self_cel = cel.to_cel(value, schema)
        old_cel = cel.to_cel(old, schema) if has_old else None
        for entry in rules:
            rule: str = entry["rule"]
            transition = "oldSelf" in rule
            if transition and not has_old:
                continue  # transition rules run on updates only, as on the API server
            try:
                outcome = cel.check_rule(rule, self_cel, old_cel, has_old=transition)
            except cel.RuleNotEvaluated as exc:
                result.not_evaluated.append(NotEvaluated(path, rule, str(exc)))
                continue
            if outcome.passed:
                continue
            if outcome.error and _has_error_within(path, error_paths):
                continue  # a consequence of a schema error already reported inside this value
            message = entry.get("message") or f"failed rule: {rule}"
            if entry.get("messageExpression"):
                message = (
                    cel.message_from_expression(
                        entry["messageExpression"], self_cel, old_cel, has_old=transition
                    )
                    or message
                )
            if outcome.error:
                message = f"{message} ({outcome.error} evaluating rule: {rule})"
            target = _rule_path(path, entry.get("fieldPath"))
            found, shown = _lookup(value, entry.get("fieldPath"))
            reason = entry.get("reason", "FieldValueInvalid")
            if reason == "FieldValueForbidden":
                text = f"Forbidden: {message}"
            elif reason == "FieldValueRequired":
                text = f"Required value: {message}"
            elif reason == "FieldValueDuplicate":
                text = f"Duplicate value: {message}"
            else:
                text = f"Invalid value: {_show(shown) if found else '(unset)'}: {message}"
            result.violations.append(Violation(target, text, rule))

    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) or (additional if isinstance(additional, dict) else None)
            if sub is None:
                continue
            old_has = has_old and isinstance(old, dict) and key in old
            child_path = _join(path, key) if key in props else (f"{path}[{key}]" if path else key)
            _check_rules(item, old[key] if old_has else None, old_has, sub, child_path, result, error_paths)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        correlated = _correlate(value, old if has_old else None, schema)
        for i, item in enumerate(value):
            old_item = correlated.get(i)
            _check_rules(
                item,
                old_item[1] if old_item else None,
                old_item is not None,
                items,
                f"{path}[{i}]",
                result,
                error_paths,
            )


def _correlate(value: list[Any], old: Any, schema: dict[str, Any]) -> dict[int, tuple[bool, Any]]:
    """Map new list indices to their old items: by keys for map lists, by value for sets.

    Items of atomic lists do not correlate, so transition rules inside them do not run.
    """
    if not isinstance(old, list):
        return {}
    list_type = schema.get("x-kubernetes-list-type")
    out: dict[int, tuple[bool, Any]] = {}
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        by_key = {_ident(o, keys): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(value):
            if isinstance(item, dict):
                ident = _ident(item, keys)
                if ident in by_key:
                    out[i] = (True, by_key[ident])
    elif list_type == "set":
        for i, item in enumerate(value):
            if item in old:
                out[i] = (True, item)
    return out
