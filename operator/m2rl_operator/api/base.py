"""The base of every API model, and helpers that attach Kubernetes schema markers to models.

Models are pydantic v2 classes with snake_case attributes and camelCase aliases (the Kubernetes
spelling). Field documentation lives in attribute docstrings that start with the camelCase field
name (jobset style); pydantic turns them into schema descriptions, which become the CRD's
`description`s and `kubectl explain` output.

CEL rules are attached as data (`Rule`) to a model (`model_rules`) or a field (`field_rules`):
the CRD generator copies them to `x-kubernetes-validations`, and the offline validator evaluates
the same rules with cel-python, so admission and `m2rl validate` cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "m2rl.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds that keep the API server's CEL cost estimator under its limit: every list a rule
# iterates needs maxItems, every string a rule compares needs maxLength.
NAME_MAX_LENGTH = 63
DNS_1035_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1035 label (starts with a letter): what Services and the resources' own names must be."""
URI_MAX_LENGTH = 512
SHORT_TEXT_MAX_LENGTH = 256
MAX_LIST_ITEMS = 64


@dataclass(frozen=True)
class Rule:
    """One CEL rule (`x-kubernetes-validations` entry).

    `rule` is standard CEL over `self` (and `oldSelf` for transition rules); `message` says in the
    user's terms what is wrong; `field_path` (a relative JSONPath like `.clipHigh`) names the
    field the error is reported on, so `kubectl` and `m2rl validate` point at it.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    message_expression: str | None = None
    """A CEL expression giving the message (e.g. naming the offending value); `message` is the
    fallback when it fails, as on the API server."""

    @property
    def is_transition(self) -> bool:
        """Whether the rule reads `oldSelf` (evaluated on updates only, like the API server does)."""
        return "oldSelf" in self.rule

    def to_schema(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            entry["messageExpression"] = self.message_expression
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


def model_rules(*rules: Rule) -> ConfigDict:
    """A `model_config` (merged with the base's) whose rules are evaluated with `self` = the object."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [r.to_schema() for r in rules]})


def field_rules(*rules: Rule, **extra: Any) -> dict[str, Any]:
    """`json_schema_extra` for a `Field(...)`: rules evaluated with `self` = the field's value."""
    out: dict[str, Any] = dict(extra)
    if rules:
        out["x-kubernetes-validations"] = [r.to_schema() for r in rules]
    return out


def immutable(field: str, why: str) -> Rule:
    """A transition rule that forbids changing a field once it is set (`self == oldSelf`)."""
    return Rule(
        rule="self == oldSelf",
        message=f"{field} is immutable once set: {why}",
        reason="FieldValueForbidden",
    )


def exactly_one(fields: list[str], what: str) -> Rule:
    """A rule requiring exactly one of `fields` (optional properties of the object) to be set."""
    terms = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)
    names = ", ".join(f"`{f}`" for f in fields)
    return Rule(rule=f"{terms} == 1", message=f"{what} must set exactly one of {names}")


def cel_list(values: list[str] | tuple[str, ...]) -> str:
    """A CEL list literal of strings: ['a', 'b']."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def english_list(values: list[str] | tuple[str, ...], conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(values)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


class ApiModel(BaseModel):
    """Base of all spec and status models: camelCase aliases, docstring descriptions, no extras."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        regex_engine="python-re",
    )

    def to_dict(self) -> dict[str, Any]:
        """The Kubernetes (camelCase) form without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
