"""The generated CRDs: committed files current, structural, fully documented, and accepted by the
official Kubernetes schema of CustomResourceDefinition."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from m2rl_operator.api import cel
from m2rl_operator.api.crd import (
    CATEGORY,
    KINDS,
    chart_crd_texts,
    crd_file_texts,
    crd_manifests,
    object_schema,
)
from m2rl_operator.api.docs import api_markdown
from m2rl_operator.api.schema import walk
from m2rl_operator.api.validation import SchemaValidator

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "run `.venv/bin/m2rl crds --out crds --chart charts/m2rl --docs docs/api.md`"
# Oldest Kubernetes the chart supports (CEL fieldPath/reason/messageExpression) and a current one.
KUBE_VERSIONS = ["1.29", "1.33"]

SCHEMAS = {k.kind: object_schema(k) for k in KINDS}
KIND_IDS = [k.kind for k in KINDS]


def _nodes(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return walk(SCHEMAS[kind])


# ---- the committed files are what the models generate ------------------------------------------------


def test_crds_directory_is_current():
    for name, text in crd_file_texts().items():
        path = REPO / "crds" / name
        assert path.exists(), f"{path} is missing: {REGENERATE}"
        assert path.read_text() == text, f"{path} is stale: {REGENERATE}"
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(crd_file_texts())


def test_chart_crd_templates_are_current():
    directory = REPO / "charts" / "m2rl" / "templates" / "crds"
    for name, text in chart_crd_texts().items():
        assert (directory / name).read_text() == text, f"{directory / name} is stale: {REGENERATE}"
    assert sorted(p.name for p in directory.glob("*.yaml")) == sorted(chart_crd_texts())


def test_api_docs_are_current():
    assert (REPO / "docs" / "api.md").read_text() == api_markdown(), f"docs/api.md is stale: {REGENERATE}"


def test_docs_list_every_spec_field():
    text = api_markdown()
    for kind in KIND_IDS:
        for path, _ in _nodes(kind):
            if path.startswith(".spec.") and ".*" not in path and not path.endswith("[]"):
                assert f"| `{path[1:]}` |" in text, f"{kind} {path} missing from docs/api.md"


# ---- shape of the CRDs ------------------------------------------------------------------------------


@pytest.mark.parametrize("crd", crd_manifests(), ids=KIND_IDS)
def test_crd_metadata(crd):
    spec = crd["spec"]
    assert spec["group"] == "m2rl.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == [CATEGORY]
    assert spec["names"]["shortNames"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.m2rl.io"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Phase" in names and names[-1] == "Age"


@pytest.mark.parametrize("crd", crd_manifests(), ids=KIND_IDS)
def test_printer_columns_point_at_schema_fields(crd):
    version = crd["spec"]["versions"][0]
    paths = {p for p, _ in walk(version["schema"]["openAPIV3Schema"])}
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        assert column["jsonPath"] in paths, column


@pytest.mark.parametrize("crd", crd_manifests(), ids=KIND_IDS)
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_is_valid_for_kubernetes(crd, version):
    assert kubernetes_validate.validate(crd, version, strict=True) == version


@pytest.mark.parametrize("kind", KIND_IDS)
def test_schema_is_structural(kind):
    """The rules of https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
    custom-resource-definitions/#specifying-a-structural-schema that a generator can break."""
    for path, node in _nodes(kind):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "$defs"} & set(node), path
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties", True) is not False, path
        assert node.get("exclusiveMinimum", False) in (True, False), f"{path}: numeric exclusiveMinimum"
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            items = node["items"]
            for key in keys:
                assert key in items.get("required", []) or "default" in items["properties"][key], (path, key)


@pytest.mark.parametrize("kind", KIND_IDS)
def test_every_field_is_documented_starting_with_its_name(kind):
    """kubectl explain completeness: every property has a description, jobset style."""
    undocumented, misnamed = [], []
    for path, node in _nodes(kind):
        if not path or path.endswith("[]") or path.endswith(".*") or path == ".metadata":
            continue  # the root metadata schema may carry nothing but name constraints (see crd.py)
        description = node.get("description", "")
        if not description.strip():
            undocumented.append(path)
            continue
        name = path.rsplit(".", 1)[-1]
        if path.count(".") > 1 and description.split()[0] != name:
            misnamed.append(f"{path}: {description[:40]!r}")
    assert undocumented == []
    assert misnamed == []


@pytest.mark.parametrize("kind", KIND_IDS)
def test_spec_fields_say_what_unset_means(kind):
    """Optional spec fields without a schema default must say what leaving them unset does."""
    vague = []
    for path, node in _nodes(kind):
        if not path.startswith(".spec.") or path.endswith("[]") or path.endswith(".*"):
            continue
        parent_path, _, name = path.rpartition(".")
        parent = (
            dict(_nodes(kind))[parent_path.removesuffix("[]")] if not parent_path.endswith("[]") else None
        )
        if parent_path.endswith("[]"):
            parent = dict(_nodes(kind))[parent_path]
        required = name in (parent or {}).get("required", [])
        if required or "default" in node:
            continue
        text = node["description"].lower()
        if not any(word in text for word in ("unset", "default", "required", "exactly one", "ignored")):
            vague.append(path)
    assert vague == []


@pytest.mark.parametrize("kind", KIND_IDS)
def test_lists_strings_and_maps_are_bounded(kind):
    """CEL's cost estimator on the API server needs bounds on what rules iterate and compare."""
    unbounded = []
    for path, node in _nodes(kind):
        if not path.startswith((".spec", ".status")):
            continue  # apiVersion, kind, metadata: bounded by the API server itself
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(path)
        if node.get("type") == "string" and not ({"maxLength", "enum", "format"} & set(node)):
            unbounded.append(path)
        free_form = node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node
        if (isinstance(node.get("additionalProperties"), dict) or free_form) and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


@pytest.mark.parametrize("kind", KIND_IDS)
def test_defaults_are_valid_against_their_own_schema(kind):
    checked = 0
    for path, node in _nodes(kind):
        if "default" in node:
            result = SchemaValidator(node, kubernetes_object=False).validate(node["default"])
            assert result.violations == [], f"{path}: default {node['default']!r}: {result.violations}"
            checked += 1
    assert checked >= 5


def _rules(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(path, rule) for path, node in _nodes(kind) for rule in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize("kind", KIND_IDS)
def test_cel_rules_are_standard_cel_with_messages(kind):
    """Every rule compiles in cel-python and calls no Kubernetes extension function, so the
    offline validator evaluates all of them (none is skipped)."""
    rules = _rules(kind)
    assert rules
    for path, rule in rules:
        assert rule["message"] and not rule["message"].endswith("."), (path, rule)
        for expression in (rule["rule"], rule.get("messageExpression")):
            if expression:
                cel._program(expression)  # raises RuleNotEvaluated when cel-python cannot parse it
                called = set(re.findall(r"\.?([A-Za-z_][A-Za-z0-9_]*)\(", expression))
                assert not called & cel.KUBERNETES_EXTENSION_FUNCTIONS, (path, expression)
        if "fieldPath" in rule:
            assert re.fullmatch(r"(\.[A-Za-z][A-Za-z0-9]*)+", rule["fieldPath"]), rule


def test_rule_counts_cover_the_issue():
    """The cross-field rules the API promises exist: group size, clip, exactly one reference,
    unique names, positive weights, immutability."""
    all_rules = [r["rule"] for kind in KIND_IDS for _, r in _rules(kind)]
    assert any(r == "self >= 2" for r in all_rules)
    assert any(">= (has(self.clipLow)" in r for r in all_rules)
    assert sum("(has(self.runRef) ? 1 : 0)" in r for r in all_rules) >= 2
    assert sum("exists_one" in r for r in all_rules) >= 4
    assert sum(r == "self > 0.0" for r in all_rules) >= 2
    assert sum(r == "self == oldSelf" for r in all_rules) >= 10


def test_crd_files_are_plain_yaml():
    for path in (REPO / "crds").glob("*.yaml"):
        (crd,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert crd["kind"] == "CustomResourceDefinition"
