"""The API server's checks of a CRD's openAPIV3Schema, in its order and with its messages.

`validate_validation` is `validateCustomResourceDefinitionValidation`
(k8s.io/apiextensions-apiserver pkg/apis/apiextensions/validation/validation.go):

1. with the status subresource, only some keywords at the root, and type object;
2. `nullable` forbidden at the root;
3. the structural-schema invariants (`ValidateStructural`, pkg/apiserver/schema/validation.go):
   types everywhere, no additionalProperties at the root, and at the root `metadata` may only
   restrict `name` and `generateName` (nothing else, not even a description);
4. if structural: every `default` validated as written (`ValidateDefaults`,
   pkg/apiserver/schema/defaulting/validation.go): pruned, valid against its schema node, and every
   x-kubernetes-validations rule of that node and below evaluated on it, without nested defaults;
5. the OpenAPI checks of each node (`ValidateCustomResourceDefinitionOpenAPISchema`): forbidden
   keywords, list and map types, and for each rule: message, reason, fieldPath (`ValidFieldPath`),
   CEL compilation and estimated cost times cardinality against `StaticEstimatedCostLimit`
   (validation.go `getExpressionCost`, cel_validation.go `CELSchemaContext`);
6. the sum of all rule costs against `StaticEstimatedCRDCostLimit`.

Junctors (allOf, anyOf, oneOf, not) and embedded resources are not modelled: a schema that uses
them is refused (`NOT_CHECKED`), never passed on a guess.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from m2rl_operator.api import cel as celeval
from m2rl_operator.api.admission.compile import CompilationResult, compile_rule
from m2rl_operator.api.admission.decl import DeclType, Profile, schema_decl_type
from m2rl_operator.api.admission.errors import (
    FORBIDDEN,
    INVALID,
    OMIT,
    REQUIRED,
    FieldError,
    child,
    forbidden,
    index,
    internal,
    invalid,
    key,
    not_supported,
    required,
)
from m2rl_operator.api.admission.fieldpath import FieldPathError, valid_field_path
from m2rl_operator.api.admission.limits import (
    STATIC_ESTIMATED_COST_LIMIT,
    STATIC_ESTIMATED_CRD_COST_LIMIT,
    UINT64_MAX,
)
from m2rl_operator.api.validation import check_value

NOT_CHECKED = "Not checked offline"
"""Error type of what this check does not model (never the API server's): the CRD is refused."""

_OPENAPI_V3_TYPES = ["array", "boolean", "integer", "number", "object", "string"]
_SUPPORTED_REASONS = ["FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"]
_META_FIELDS = ("metadata", "kind", "apiVersion")
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")

# allowedFieldsAtRootSchema, as JSON keywords, in the Go struct's field order (JSONSchemaProps).
_ROOT_FIELDS_GO = ["Description", "Type", "Format", "Title", "Maximum", "ExclusiveMaximum", "Minimum",
                   "ExclusiveMinimum", "MaxLength", "MinLength", "Pattern", "MaxItems", "MinItems",
                   "UniqueItems", "MultipleOf", "Required", "Items", "Properties", "ExternalDocs",
                   "Example", "XPreserveUnknownFields", "XValidations"]  # fmt: skip
_ROOT_KEYWORDS = {
    "description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "multipleOf", "required",
    "items", "properties", "externalDocs", "example", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
}  # fmt: skip
# JSONSchemaProps keywords in Go field order, for "stop at the first non-allowed field".
_GO_FIELD_ORDER = [
    "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
    "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required", "items",
    "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties", "patternProperties",
    "dependencies", "additionalItems", "definitions", "externalDocs", "example", "nullable",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
    "x-kubernetes-validations",
]  # fmt: skip
_KNOWN_KEYWORDS = set(_GO_FIELD_ORDER)


@dataclass(frozen=True)
class Options:
    """validationOptions; the defaults are those of creating an apiextensions.k8s.io/v1 CRD."""

    allow_defaults: bool = True
    require_structural_schema: bool = True
    require_valid_property_type: bool = True
    require_pruned_defaults: bool = True
    require_atomic_set_type: bool = True
    require_map_list_keys_map_set_validation: bool = True


@dataclass(frozen=True)
class RuleCost:
    """The estimated cost of one rule (times its cardinality) or messageExpression."""

    path: str
    cost: int


@dataclass
class SchemaResult:
    errors: list[FieldError] = field(default_factory=list)
    costs: list[RuleCost] = field(default_factory=list)
    total_cost: int = 0


def validate_validation(
    schema: dict[str, Any] | None,
    path: str,
    *,
    status_enabled: bool,
    profile: Profile,
    options: Options | None = None,
) -> SchemaResult:
    """validateCustomResourceDefinitionValidation for the `openAPIV3Schema` at `path.openAPIV3Schema`."""
    options = options or Options()
    result = SchemaResult()
    if schema is None:
        return result
    root_path = child(path, "openAPIV3Schema")
    errors = result.errors

    if status_enabled:
        for name in _ordered_keys(schema):
            if _is_zero(schema[name]):
                continue
            if name == "type":
                if schema["type"] != "object":
                    errors.append(
                        invalid(
                            child(path, "openAPIV3Schema.type"),
                            schema["type"],
                            'only "object" is allowed as the type at the root of the schema if the '
                            "status subresource is enabled",
                        )
                    )
                    break
                continue
            if name not in _ROOT_KEYWORDS:
                errors.append(
                    invalid(
                        root_path,
                        OMIT,
                        f"only [{' '.join(_ROOT_FIELDS_GO)}] fields are allowed at the root of the schema "
                        "if the status subresource is enabled",
                    )
                )
                break
    if schema.get("nullable"):
        errors.append(
            forbidden(child(path, "openAPIV3Schema.nullable"), "nullable cannot be true at the root")
        )

    total = _TotalCost()
    cel_root: _CelContext | None = None
    init_errors: list[FieldError] = []
    if options.require_structural_schema:
        problem = _new_structural_error(schema)
        unmodelled = _unmodelled(schema, root_path)
        if problem is not None:
            init_errors.append(invalid(root_path, "", problem))
        elif unmodelled:
            errors.extend(unmodelled)
        elif structural := _validate_structural(schema, root_path):
            errors.extend(structural)
        elif default_errors := _validate_defaults(schema, root_path, options):
            errors.extend(default_errors)
        else:
            cel_root = _CelContext(
                schema, None, bool(schema.get("x-kubernetes-validations")), 1, total, profile
            )

    schema_errors, cel_errors = _openapi(schema, root_path, _Ssv.root(options), True, options, cel_root)
    errors.extend(schema_errors + cel_errors)
    if not errors and init_errors:
        errors.extend(init_errors)

    if cel_root is not None and total.total > STATIC_ESTIMATED_CRD_COST_LIMIT:
        for expensive_path, _ in total.most_expensive:
            errors.append(
                forbidden(
                    expensive_path,
                    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 "
                    "schema",
                )
            )
        errors.append(
            forbidden(
                root_path,
                cost_error_message(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    total.total,
                    STATIC_ESTIMATED_CRD_COST_LIMIT,
                ),
            )
        )
    result.costs = total.costs
    result.total_cost = total.total
    return result


def cost_error_message(name: str, cost: int, limit: int) -> str:
    """getCostErrorMessage."""
    factor = cost / limit
    if factor > 100.0:
        text = "more than 100x"
    elif factor < 1.5:
        text = f"{factor:f}x"
    else:
        text = f"{factor:.1f}x"
    return (
        f"{name} exceeds budget by factor of {text} (try simplifying the rule, or adding maxItems, "
        "maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )


def _ordered_keys(schema: dict[str, Any]) -> list[str]:
    order = {k: i for i, k in enumerate(_GO_FIELD_ORDER)}
    return sorted(schema, key=lambda k: order.get(k, len(order)))


def _is_zero(value: Any) -> bool:
    """Go's zero value for a decoded field: false, "", and absent or empty slices and maps."""
    return value is None or value is False or value == "" or value == [] or value == {}


# ---- NewStructural and ValidateStructural ------------------------------------------------------------


def _new_structural_error(schema: dict[str, Any]) -> str | None:
    """NewStructural's conversion errors (validateUnsupportedFields, items as an array, ...)."""
    for name, keyword in (
        ("id", "id"),
        ("schema", "$schema"),
        ("$ref", "$ref"),
        ("patternProperties", "patternProperties"),
        ("dependencies", "dependencies"),
        ("additionalItems", "additionalItems"),
        ("definitions", "definitions"),
    ):
        if not _is_zero(schema.get(keyword)):
            return f"OpenAPIV3Schema '{name}' is not supported"
    if isinstance(schema.get("items"), list):
        return "OpenAPIV3Schema 'items' must be a schema, but is an array"
    if schema.get("x-kubernetes-preserve-unknown-fields") is False:
        return "internal error: 'x-kubernetes-preserve-unknown-fields' must be true or undefined"
    for sub in _children(schema):
        problem = _new_structural_error(sub)
        if problem is not None:
            return problem
    return None


def _children(schema: dict[str, Any]) -> list[dict[str, Any]]:
    out = [p for p in (schema.get("properties") or {}).values() if isinstance(p, dict)]
    for name in ("items", "additionalProperties"):
        if isinstance(schema.get(name), dict):
            out.append(schema[name])
    return out


def _unmodelled(schema: dict[str, Any], path: str) -> list[FieldError]:
    """Refuse what this port does not implement rather than accept it unchecked."""
    out: list[FieldError] = []
    for name in sorted(set(schema) - _KNOWN_KEYWORDS):
        out.append(FieldError(NOT_CHECKED, child(path, name), f"unknown schema keyword {name!r}"))
    for junctor in _JUNCTORS:
        if junctor in schema:
            out.append(
                FieldError(NOT_CHECKED, child(path, junctor), f"{junctor} is not modelled by this check")
            )
    if schema.get("x-kubernetes-embedded-resource"):
        out.append(
            FieldError(
                NOT_CHECKED,
                child(path, "x-kubernetes-embedded-resource"),
                "embedded resources are not modelled by this check",
            )
        )
    for name, sub in (schema.get("properties") or {}).items():
        out.extend(_unmodelled(sub, key(child(path, "properties"), name)))
    if isinstance(schema.get("items"), dict):
        out.extend(_unmodelled(schema["items"], child(path, "items")))
    if isinstance(schema.get("additionalProperties"), dict):
        out.extend(_unmodelled(schema["additionalProperties"], child(path, "additionalProperties")))
    return out


_ROOT, _ITEM, _FIELD = "root", "item", "field"


def _validate_structural(schema: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateStructural: the invariants, errors sorted by their text as the Go code sorts them."""
    errors = _invariants(schema, _ROOT, path)
    return sorted(errors, key=str)


def _invariants(s: dict[str, Any], level: str, path: str) -> list[FieldError]:
    """validateStructuralInvariants."""
    out: list[FieldError] = []
    type_ = s.get("type", "")
    if type_ == "array" and "items" not in s:
        out.append(required(child(path, "items"), "must be specified"))
    if isinstance(s.get("items"), dict):
        out.extend(_invariants(s["items"], _ITEM, child(path, "items")))
    for name, sub in (s.get("properties") or {}).items():
        out.extend(_invariants(sub, _FIELD, key(child(path, "properties"), name)))
    if "additionalProperties" in s:
        if level == _ROOT:
            out.append(forbidden(child(path, "additionalProperties"), "must not be used at the root"))
        if isinstance(s["additionalProperties"], dict):
            out.extend(_invariants(s["additionalProperties"], _FIELD, child(path, "additionalProperties")))
    int_or_string = bool(s.get("x-kubernetes-int-or-string"))
    preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
    if int_or_string and preserve:
        out.append(
            invalid(
                child(path, "x-kubernetes-preserve-unknown-fields"),
                True,
                "must be false if x-kubernetes-int-or-string is true",
            )
        )
    pattern = s.get("pattern")
    if pattern:
        try:
            re.compile(pattern)  # Go's RE2 and Python's re agree on the patterns schemas use
        except re.error as exc:
            out.append(
                invalid(
                    child(path, "pattern"),
                    pattern,
                    f"must be a valid regular expression, but isn't: {exc}",
                )
            )
    if not type_ and not int_or_string and not preserve:
        where = {
            _ROOT: "must not be empty at the root",
            _ITEM: "must not be empty for specified array items",
            _FIELD: "must not be empty for specified object fields",
        }[level]
        out.append(required(child(path, "type"), where))
    if level == _ROOT and type_ and type_ != "object":
        out.append(invalid(child(path, "type"), type_, "must be object at the root"))
    props = s.get("properties") or {}
    check_metadata = level == _ROOT
    for meta_field in ("kind", "apiVersion"):
        if meta_field in props and check_metadata and props[meta_field].get("type", "") != "string":
            out.append(
                invalid(
                    key(child(path, "properties"), meta_field) + ".type",
                    props[meta_field].get("type", ""),
                    "must be string",
                )
            )
    if "metadata" in props:
        out.extend(
            _metadata_invariants(
                props["metadata"], check_metadata, level, key(child(path, "properties"), "metadata")
            )
        )
    return out


def _metadata_invariants(
    meta: dict[str, Any], check_metadata: bool, level: str, path: str
) -> list[FieldError]:
    """validateStructuralMetadataInvariants: at the root, metadata may only restrict name and
    generateName. Everything else, a description included, is forbidden."""
    out: list[FieldError] = []
    if check_metadata and meta.get("type", "") != "object":
        out.append(invalid(child(path, "type"), meta.get("type", ""), "must be object"))
    if level == _ROOT:
        rest = {k: v for k, v in meta.items() if not _is_zero(v) and k not in ("type", "default")}
        props = rest.get("properties")
        if isinstance(props, dict) and props and set(props) <= {"name", "generateName"}:
            del rest["properties"]
        if rest:
            out.append(
                forbidden(
                    path,
                    "must not specify anything other than name and generateName, but metadata is "
                    "implicitly specified",
                )
            )
    return out


# ---- ValidateDefaults ---------------------------------------------------------------------------------


def _validate_defaults(schema: dict[str, Any], path: str, options: Options) -> list[FieldError]:
    """ValidateDefaults: each default, as written, against its own node (no nested defaults)."""
    errors: list[FieldError] = []
    _defaults_walk(schema, path, schema, inside_meta=False, options=options, errors=errors)
    return errors


def _defaults_walk(
    s: dict[str, Any],
    path: str,
    root: dict[str, Any],
    *,
    inside_meta: bool,
    options: Options,
    errors: list[FieldError],
) -> None:
    if "default" in s and not inside_meta:
        # Defaults inside metadata are forbidden by the OpenAPI checks at the root (and embedded
        # resources are refused), so the metadata coercion branch of the Go code is not needed.
        default = s["default"]
        default_path = child(path, "default")
        if options.require_pruned_defaults and _pruned(default, s) != default:
            errors.append(invalid(default_path, default, "must not have unknown fields"))
        violations = check_value(default, s)
        if violations:
            for v in violations:
                where = default_path + (("." + v.path) if v.path and not v.path.startswith("[") else v.path)
                errors.append(FieldError(INVALID, where, v.message.removeprefix("Invalid value: ")))
        else:
            errors.extend(evaluate_rules_on_default(s, default, default_path))
    if isinstance(s.get("items"), dict):
        _defaults_walk(
            s["items"],
            child(path, "items"),
            root,
            inside_meta=inside_meta,
            options=options,
            errors=errors,
        )
    for name, sub in (s.get("properties") or {}).items():
        sub_inside = inside_meta or (s is root and name in _META_FIELDS)
        _defaults_walk(
            sub,
            key(child(path, "properties"), name),
            root,
            inside_meta=sub_inside,
            options=options,
            errors=errors,
        )
    # additionalProperties are not followed: defaults are forbidden there (ValidateDefaults).


def _pruned(value: Any, schema: dict[str, Any]) -> Any:
    """pruning.Prune: drop fields the schema does not declare (unless it preserves unknown fields)."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            if k in props:
                out[k] = _pruned(v, props[k])
            elif isinstance(additional, dict):
                out[k] = _pruned(v, additional)
            elif schema.get("x-kubernetes-preserve-unknown-fields") or additional is True:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_pruned(v, schema["items"]) for v in value]
    return copy.deepcopy(value)


def evaluate_rules_on_default(schema: dict[str, Any], value: Any, path: str) -> list[FieldError]:
    """The CEL part of ValidateDefaults: `celValidator.Validate(..., default, default, ...)`, then,
    with CRD validation ratcheting (Kubernetes 1.30+), again with no old object; the first pass
    reports runtime errors (an unchanged value ratchets failed rules into warnings), the second
    the failed rules. Transition rules see oldSelf = the default in the first pass and do not
    run in the second."""
    first = _validate_cel(schema, value, value, path, ratchet=True)
    if first:
        return first
    return _validate_cel(schema, value, None, path, ratchet=False)


def _validate_cel(
    schema: dict[str, Any], value: Any, old: Any, path: str, *, ratchet: bool
) -> list[FieldError]:
    """cel.Validator.validate: the node's rules, then its present children (Child / Index / Key)."""
    errors: list[FieldError] = []
    if value is None:
        return errors
    rules = schema.get("x-kubernetes-validations") or []
    if rules:
        self_value = celeval.to_cel(value, schema)
        old_value = celeval.to_cel(old, schema) if old is not None else None
        for rule in rules:
            text = str(rule.get("rule", ""))
            if not text.strip():
                continue
            uses_old = "oldSelf" in text
            if uses_old and old is None:
                continue
            try:
                outcome = celeval.check_rule(text, self_value, old_value, has_old=uses_old)
            except celeval.RuleNotEvaluated as exc:
                errors.append(
                    FieldError(NOT_CHECKED, path, f"rule {text!r} was not evaluated on the default: {exc}")
                )
                continue
            if outcome.error is not None:
                errors.append(
                    invalid(
                        path,
                        schema.get("type", ""),
                        f"{outcome.error} evaluating rule: {_rule_error_string(rule)}",
                    )
                )
                continue
            if outcome.passed or (ratchet and not uses_old):
                continue  # an unchanged value: the API server turns this failure into a warning
            detail = None
            if rule.get("messageExpression"):
                detail = celeval.message_from_expression(
                    rule["messageExpression"], self_value, old_value, has_old=uses_old
                )
            if not detail:
                detail = _rule_error_string(rule) if rule.get("message") else f"failed rule: {text.strip()}"
            where = path
            if rule.get("fieldPath"):
                try:
                    normalized, _ = valid_field_path(str(rule["fieldPath"]), schema)
                    where = child(path, normalized)
                except FieldPathError:
                    pass
            shown = OMIT if schema.get("type") in ("object", "array") else value
            errors.append(_for_reason(where, shown, detail, rule.get("reason")))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for k, v in value.items():
            old_v = old.get(k) if isinstance(old, dict) else None
            if k in props:
                errors.extend(_validate_cel(props[k], v, old_v, child(path, k), ratchet=ratchet))
            elif isinstance(additional, dict):
                errors.extend(_validate_cel(additional, v, old_v, key(path, k), ratchet=ratchet))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        correlate = schema.get("x-kubernetes-list-type") == "map" and isinstance(old, list)
        for i, item in enumerate(value):
            old_item = old[i] if correlate and i < len(old) and old[i] == item else None
            errors.extend(_validate_cel(schema["items"], item, old_item, index(path, i), ratchet=ratchet))
    return errors


def _rule_error_string(rule: dict[str, Any]) -> str:
    """ruleErrorString."""
    return str(rule.get("message", "")).strip() or str(rule.get("rule", "")).strip()


def _for_reason(path: str, value: Any, detail: str, reason: str | None) -> FieldError:
    """fieldErrorForReason."""
    if reason == "FieldValueForbidden":
        return forbidden(path, detail)
    if reason == "FieldValueRequired":
        return required(path, detail)
    if reason == "FieldValueDuplicate":
        return FieldError("Duplicate value", path, "", value)
    return invalid(path, value, detail)


# ---- ValidateCustomResourceDefinitionOpenAPISchema -------------------------------------------------


@dataclass(frozen=True)
class _Ssv:
    """specStandardValidatorV3: what the walk knows about where it is."""

    options: Options
    allow_defaults: bool
    disallow_reason: str = ""
    inside_resource_meta: bool = False
    uncorrelatable_path: str | None = None

    @classmethod
    def root(cls, options: Options) -> _Ssv:
        return cls(options, allow_defaults=options.allow_defaults)

    def with_forbidden_defaults(self, reason: str) -> _Ssv:
        return dataclasses.replace(self, allow_defaults=False, disallow_reason=reason)

    def with_inside_resource_meta(self) -> _Ssv:
        return dataclasses.replace(self, inside_resource_meta=True)

    def with_forbid_old_self(self, path: str) -> _Ssv:
        """The highest uncorrelatable ancestor wins."""
        if self.uncorrelatable_path is not None:
            return self
        return dataclasses.replace(self, uncorrelatable_path=path)

    def validate(self, s: dict[str, Any], path: str) -> list[FieldError]:
        out: list[FieldError] = []
        type_ = s.get("type", "")
        if self.options.require_valid_property_type and type_ and type_ not in _OPENAPI_V3_TYPES:
            out.append(not_supported(child(path, "type"), type_, _OPENAPI_V3_TYPES))
        if "default" in s and s["default"] is not None and not self.allow_defaults:
            detail = "must not be set" + (f" {self.disallow_reason}" if self.disallow_reason else "")
            out.append(forbidden(child(path, "default"), detail))
        for keyword, message in (
            ("id", "id is not supported"),
            ("additionalItems", "additionalItems is not supported"),
            ("patternProperties", "patternProperties is not supported"),
            ("definitions", "definitions is not supported"),
            ("dependencies", "dependencies is not supported"),
            ("$ref", "$ref is not supported"),
        ):
            if not _is_zero(s.get(keyword)):
                out.append(forbidden(child(path, keyword), message))
        if type_ == "null":
            out.append(
                forbidden(child(path, "type"), "type cannot be set to null, use nullable as an alternative")
            )
        if isinstance(s.get("items"), list) and s["items"]:
            out.append(forbidden(child(path, "items"), "items must be a schema object and not an array"))
        if self.inside_resource_meta and s.get("x-kubernetes-embedded-resource"):
            out.append(
                forbidden(
                    child(path, "x-kubernetes-embedded-resource"), "must not be used inside of resource meta"
                )
            )
        return out


class _TotalCost:
    """TotalCost (cel_validation.go): the sum, and the four most expensive rules above 1%."""

    def __init__(self) -> None:
        self.total = 0
        self.most_expensive: list[tuple[str, int]] = []
        self.costs: list[RuleCost] = []

    def observe(self, path: str, cost: int) -> None:
        self.costs.append(RuleCost(path, cost))
        self.total = UINT64_MAX if UINT64_MAX - self.total < cost else self.total + cost
        if cost < STATIC_ESTIMATED_CRD_COST_LIMIT // 100:
            return
        self.most_expensive.append((path, cost))
        self.most_expensive.sort(key=lambda item: -item[1])
        del self.most_expensive[4:]


@dataclass
class _CelContext:
    """CELSchemaContext: whether rules are in scope, the node's cardinality, the shared total."""

    schema: dict[str, Any]
    parent: _CelContext | None
    in_rule_scope: bool
    max_cardinality: int | None
    total: _TotalCost
    profile: Profile
    _decl: DeclType | None = None

    def decl(self) -> DeclType | None:
        if not self.in_rule_scope:
            return None
        if self._decl is None:
            is_root = self.parent is None or bool(self.schema.get("x-kubernetes-embedded-resource"))
            self._decl = schema_decl_type(self.schema, is_root, self.profile)
        return self._decl

    def child_context(self, sub: dict[str, Any]) -> _CelContext:
        """childContext: cardinality times the parent's maxItems / maxProperties (1 for objects)."""
        card: int | None = None
        if self.max_cardinality is not None:
            factor = _max_elements(self.schema)
            if factor is not None:
                card = _mul(self.max_cardinality, factor)
        scope = self.in_rule_scope or bool(sub.get("x-kubernetes-validations"))
        return _CelContext(sub, self, scope, card, self.total, self.profile)


def _mul(x: int, y: int) -> int:
    """multiplyWithOverflowGuard."""
    if x == 0:
        return 0
    return UINT64_MAX if UINT64_MAX // x < y else x * y


def _max_elements(schema: dict[str, Any]) -> int | None:
    """extractMaxElements."""
    type_ = schema.get("type", "")
    if type_ == "object":
        if "additionalProperties" in schema:
            return max(0, int(schema["maxProperties"])) if "maxProperties" in schema else None
        return 1
    if type_ == "array":
        return max(0, int(schema["maxItems"])) if "maxItems" in schema else None
    return 1


def _openapi(
    s: dict[str, Any],
    path: str,
    ssv: _Ssv,
    is_root: bool,
    options: Options,
    ctx: _CelContext | None,
) -> tuple[list[FieldError], list[FieldError]]:
    """ValidateCustomResourceDefinitionOpenAPISchema: (schema errors, CEL errors)."""
    schema_errors: list[FieldError] = []
    cel_errors: list[FieldError] = []
    schema_errors.extend(ssv.validate(s, path))
    if s.get("uniqueItems"):
        schema_errors.append(
            forbidden(
                child(path, "uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    additional = s.get("additionalProperties")
    if additional is not None:
        if s.get("properties") and (additional is False or isinstance(additional, dict)):
            schema_errors.append(
                forbidden(
                    child(path, "additionalProperties"),
                    "additionalProperties and properties are mutual exclusive",
                )
            )
        if isinstance(additional, dict):
            sub_ssv = ssv
            if ssv.inside_resource_meta:
                sub_ssv = ssv.with_forbidden_defaults(
                    "inside additionalProperties applying to object metadata"
                )
            child_ctx = ctx.child_context(additional) if ctx is not None else None
            e1, e2 = _openapi(
                additional, child(path, "additionalProperties"), sub_ssv, False, options, child_ctx
            )
            schema_errors += e1
            cel_errors += e2
    for name, sub in (s.get("properties") or {}).items():
        sub_ssv = ssv
        map_type = s.get("x-kubernetes-map-type")
        if map_type not in (None, "granular", "atomic"):
            sub_ssv = sub_ssv.with_forbid_old_self(path)
        if (is_root or s.get("x-kubernetes-embedded-resource")) and name in _META_FIELDS:
            sub_ssv = sub_ssv.with_inside_resource_meta()
            if is_root:
                sub_ssv = sub_ssv.with_forbidden_defaults(f"in top-level {name}")
        child_ctx = ctx.child_context(sub) if ctx is not None else None
        e1, e2 = _openapi(sub, key(child(path, "properties"), name), sub_ssv, False, options, child_ctx)
        schema_errors += e1
        cel_errors += e2
    items = s.get("items")
    if isinstance(items, dict):
        sub_ssv = ssv
        if s.get("x-kubernetes-list-type") != "map":
            sub_ssv = sub_ssv.with_forbid_old_self(path)
        child_ctx = ctx.child_context(items) if ctx is not None else None
        e1, e2 = _openapi(items, child(path, "items"), sub_ssv, False, options, child_ctx)
        schema_errors += e1
        cel_errors += e2
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        schema_errors.append(
            invalid(child(path, "x-kubernetes-preserve-unknown-fields"), False, "must be true or undefined")
        )
    schema_errors.extend(_list_and_map_types(s, path, options))
    rules = s.get("x-kubernetes-validations") or []
    if rules:
        schema_errors.extend(_rule_fields(s, path, rules))
        if not schema_errors and ctx is not None:
            cel_errors.extend(_compile_rules(s, path, rules, ssv, ctx))
    return schema_errors, cel_errors


def _list_and_map_types(s: dict[str, Any], path: str, options: Options) -> list[FieldError]:
    out: list[FieldError] = []
    type_ = s.get("type", "")
    map_type = s.get("x-kubernetes-map-type")
    list_type = s.get("x-kubernetes-list-type")
    keys = s.get("x-kubernetes-list-map-keys") or []
    items = s.get("items") if isinstance(s.get("items"), dict) else None
    if map_type is not None and type_ != "object":
        if not type_:
            out.append(required(child(path, "type"), "must be object if x-kubernetes-map-type is specified"))
        else:
            out.append(
                invalid(child(path, "type"), type_, "must be object if x-kubernetes-map-type is specified")
            )
    if map_type is not None and map_type not in ("atomic", "granular"):
        out.append(not_supported(child(path, "x-kubernetes-map-type"), map_type, ["atomic", "granular"]))
    if list_type is not None and type_ != "array":
        if not type_:
            out.append(required(child(path, "type"), "must be array if x-kubernetes-list-type is specified"))
        else:
            out.append(
                invalid(child(path, "type"), type_, "must be array if x-kubernetes-list-type is specified")
            )
    elif options.require_atomic_set_type and list_type == "set" and items is not None:
        if items.get("type") == "array" and items.get("x-kubernetes-list-type") not in (None, "atomic"):
            out.append(
                invalid(
                    child(child(path, "items"), "x-kubernetes-list-type"),
                    items.get("x-kubernetes-list-type"),
                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                )
            )
        if items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            out.append(
                invalid(
                    child(child(path, "items"), "x-kubernetes-map-type"),
                    list_type,
                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                )
            )
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        out.append(not_supported(child(path, "x-kubernetes-list-type"), list_type, ["atomic", "set", "map"]))
    if keys:
        if list_type is None:
            out.append(
                required(
                    child(path, "x-kubernetes-list-type"),
                    "must be map if x-kubernetes-list-map-keys is non-empty",
                )
            )
        elif list_type != "map":
            out.append(
                invalid(
                    child(path, "x-kubernetes-list-type"),
                    list_type,
                    "must be map if x-kubernetes-list-map-keys is non-empty",
                )
            )
    if list_type == "map":
        if not keys:
            out.append(
                required(
                    child(path, "x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                )
            )
        if "items" not in s:
            out.append(required(child(path, "items"), "must have a schema if x-kubernetes-list-type is map"))
        elif not isinstance(s["items"], dict):
            out.append(
                invalid(
                    child(path, "items"),
                    s["items"],
                    "must only have a single schema if x-kubernetes-list-type is map",
                )
            )
        if items is not None and items.get("type", "") != "object":
            out.append(
                invalid(
                    child(child(path, "items"), "type"),
                    items.get("type", ""),
                    "must be object if parent array's x-kubernetes-list-type is map",
                )
            )
        if items is not None and items.get("type") == "object":
            seen: set[str] = set()
            for k in keys:
                prop = (items.get("properties") or {}).get(k)
                if prop is not None:
                    if prop.get("type") in ("array", "object"):
                        out.append(
                            invalid(
                                key(child(child(path, "items"), "properties"), k) + ".type",
                                items.get("type"),
                                "must be a scalar type if parent array's x-kubernetes-list-type is map",
                            )
                        )
                else:
                    out.append(
                        invalid(
                            child(path, "x-kubernetes-list-map-keys"),
                            keys,
                            "entries must all be names of item properties",
                        )
                    )
                if k in seen:
                    out.append(
                        invalid(
                            child(path, "x-kubernetes-list-map-keys"),
                            keys,
                            "must not contain duplicate entries",
                        )
                    )
                seen.add(k)
    if options.require_map_list_keys_map_set_validation and items is not None and list_type in ("set", "map"):
        if items.get("nullable"):
            out.append(
                forbidden(
                    child(child(path, "items"), "nullable"),
                    f"cannot be nullable when x-kubernetes-list-type is {list_type}",
                )
            )
        if list_type == "map":
            required_keys = set(items.get("required") or [])
            for k in keys:
                prop = (items.get("properties") or {}).get(k)
                if prop is None:
                    continue
                prop_path = key(child(child(path, "items"), "properties"), k)
                if k not in required_keys and prop.get("default") is None:
                    out.append(
                        required(
                            child(prop_path, "default"),
                            "this property is in x-kubernetes-list-map-keys, so it must have a default or be "
                            "a "
                            "required property",
                        )
                    )
                if prop.get("nullable"):
                    out.append(
                        forbidden(
                            child(prop_path, "nullable"),
                            "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                        )
                    )
    return out


_NEWLINES = re.compile(r"[\n\r]+")


def _rule_fields(s: dict[str, Any], path: str, rules: list[dict[str, Any]]) -> list[FieldError]:
    """The per-rule field checks that precede compilation."""
    out: list[FieldError] = []
    for i, rule in enumerate(rules):
        rule_path = index(child(path, "x-kubernetes-validations"), i)
        text = str(rule.get("rule", ""))
        message = str(rule.get("message", ""))
        trimmed_rule, trimmed_message = text.strip(), message.strip()
        if not trimmed_rule:
            out.append(required(child(rule_path, "rule"), "rule is not specified"))
        elif message and not trimmed_message:
            out.append(invalid(child(rule_path, "message"), message, "must be non-empty if specified"))
        elif _NEWLINES.search(trimmed_message):
            out.append(invalid(child(rule_path, "message"), message, "must not contain line breaks"))
        elif _NEWLINES.search(trimmed_rule) and not trimmed_message:
            out.append(
                required(
                    child(rule_path, "message"), "message must be specified if rule contains line breaks"
                )
            )
        message_expression = rule.get("messageExpression")
        if message_expression is not None and str(message_expression) and not str(message_expression).strip():
            out.append(
                required(
                    child(rule_path, "messageExpression"), "messageExpression must be non-empty if specified"
                )
            )
        reason = rule.get("reason")
        if reason is not None and reason not in _SUPPORTED_REASONS:
            out.append(not_supported(child(rule_path, "reason"), reason, _SUPPORTED_REASONS))
        field_path = rule.get("fieldPath")
        if field_path is not None:
            field_path = str(field_path)
            if field_path and not field_path.strip():
                out.append(
                    invalid(child(rule_path, "fieldPath"), field_path, "must be non-empty if specified")
                )
            if _NEWLINES.search(field_path):
                out.append(invalid(child(rule_path, "fieldPath"), field_path, "must not contain line breaks"))
            if field_path:
                try:
                    valid_field_path(field_path, s)
                except FieldPathError:
                    out.append(invalid(child(rule_path, "fieldPath"), field_path, "must be a valid path"))
    return out


def _compile_rules(
    s: dict[str, Any], path: str, rules: list[dict[str, Any]], ssv: _Ssv, ctx: _CelContext
) -> list[FieldError]:
    out: list[FieldError] = []
    decl = ctx.decl()
    if decl is None:
        return [
            internal(
                child(path, "x-kubernetes-validations"),
                "internal error: failed to retrieve type information for x-kubernetes-validations",
            )
        ]
    for i, rule in enumerate(rules):
        rule_path = index(child(path, "x-kubernetes-validations"), i)
        cr = compile_rule(rule, s, decl)
        cost = _expression_cost(cr, ctx)
        if cost > STATIC_ESTIMATED_COST_LIMIT:
            out.append(
                forbidden(
                    child(rule_path, "rule"),
                    cost_error_message("estimated rule cost", cost, STATIC_ESTIMATED_COST_LIMIT),
                )
            )
        ctx.total.observe(child(rule_path, "rule"), cost)
        if cr.unsupported is not None:
            out.append(FieldError(NOT_CHECKED, child(rule_path, "rule"), cr.unsupported))
        if cr.error is not None:
            if cr.error_is_required:
                out.append(required(child(rule_path, "rule"), cr.error))
            else:
                out.append(invalid(child(rule_path, "rule"), rule, cr.error))
        if cr.message_expression_error is not None:
            out.append(invalid(child(rule_path, "messageExpression"), rule, cr.message_expression_error))
        elif cr.message_expression_unsupported is not None:
            out.append(
                FieldError(
                    NOT_CHECKED, child(rule_path, "messageExpression"), cr.message_expression_unsupported
                )
            )
        elif cr.message_expression:
            if cr.message_expression_max_cost > STATIC_ESTIMATED_COST_LIMIT:
                out.append(
                    forbidden(
                        child(rule_path, "messageExpression"),
                        cost_error_message(
                            "estimated messageExpression cost",
                            cr.message_expression_max_cost,
                            STATIC_ESTIMATED_COST_LIMIT,
                        ),
                    )
                )
            ctx.total.observe(child(rule_path, "messageExpression"), cr.message_expression_max_cost)
        if cr.uses_old_self:
            if ssv.uncorrelatable_path is not None:
                out.append(
                    invalid(
                        child(rule_path, "rule"),
                        rule.get("rule"),
                        f"oldSelf cannot be used on the uncorrelatable portion of the schema within "
                        f"{ssv.uncorrelatable_path}",
                    )
                )
        elif rule.get("optionalOldSelf") is not None:
            out.append(
                invalid(
                    child(rule_path, "optionalOldSelf"),
                    rule["optionalOldSelf"],
                    "may not be set if oldSelf is not used in rule",
                )
            )
    return out


def _expression_cost(cr: CompilationResult, ctx: _CelContext) -> int:
    """getExpressionCost: the rule's cost times the node's cardinality (or, under unbounded lists
    and maps, times how often the node fits in a request)."""
    factor = ctx.max_cardinality if ctx.max_cardinality is not None else cr.max_cardinality
    return _mul(cr.max_cost, factor)


__all__ = [
    "FORBIDDEN",
    "INVALID",
    "NOT_CHECKED",
    "REQUIRED",
    "Options",
    "RuleCost",
    "SchemaResult",
    "cost_error_message",
    "evaluate_rules_on_default",
    "validate_validation",
]
