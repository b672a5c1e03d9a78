"""The m2rl CRDs pass the admission check in every form they ship in, with a wide margin under the
API server's cost limits; every custom resource of examples/ and of the golden-manifest cases passes
admission against them; the update contract covers every spec field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.api.admission import SUPPORTED_PROFILES, check_crd, crds_in
from m2rl_operator.api.admission.decl import escape
from m2rl_operator.api.admission.limits import STATIC_ESTIMATED_COST_LIMIT, STATIC_ESTIMATED_CRD_COST_LIMIT
from m2rl_operator.api.crd import KINDS, chart_crd_texts, crd_manifests, object_schema
from m2rl_operator.api.offline import validate_object
from m2rl_operator.api.schema import walk
from m2rl_operator.api.yaml_io import iter_documents
from tests.support.paths import REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "unit" / "operator"


def _chart_crds() -> list[tuple[str, dict[str, Any]]]:
    """The chart's CRD templates with the Helm directives (crds.enabled, crds.keep) taken out."""
    out = []
    for name, text in chart_crd_texts().items():
        lines = [
            line
            for line in text.splitlines()
            if not line.strip().startswith("{{") and "helm.sh/resource-policy" not in line
        ]
        out.append((f"chart:{name}", yaml.safe_load("\n".join(lines))))
    return out


SHIPPED = [
    *[(f"generated:{c['metadata']['name']}", c) for c in crd_manifests()],
    *[(f"file:{Path(src).name}", c) for src, c in crds_in(REPO_ROOT / "crds")],
    *_chart_crds(),
]


def test_every_shipped_form_is_there():
    assert len(SHIPPED) == 9
    generated = {c["metadata"]["name"]: c for _, c in SHIPPED[:3]}
    for label, crd in SHIPPED[3:]:
        assert crd == generated[crd["metadata"]["name"]], label  # files and chart carry the same CRDs


@pytest.mark.parametrize(("label", "crd"), SHIPPED, ids=[s[0] for s in SHIPPED])
def test_shipped_crd_is_accepted_by_every_profile(label: str, crd: dict[str, Any]):
    report = check_crd(crd)
    assert [r.profile for r in report.reports] == list(SUPPORTED_PROFILES)
    assert report.lines() == []


@pytest.mark.parametrize("crd", crd_manifests(), ids=[k.kind for k in KINDS])
def test_cost_margin_is_wide(crd: dict[str, Any]):
    """Measured: largest rule 629,185 (MergeJob, Kubernetes 1.28: `method` unbounded) and largest
    total 12.6M. A tenfold margin keeps estimates from releases this port does not model apart
    (cel-go 0.16/0.17 of Kubernetes 1.28/1.29 price the functions our rules use the same way)."""
    report = check_crd(crd)
    largest = report.largest()
    assert largest is not None
    assert largest.cost <= STATIC_ESTIMATED_COST_LIMIT // 10, largest
    assert report.total_cost <= STATIC_ESTIMATED_CRD_COST_LIMIT // 5


def test_rules_compile_on_every_node_that_has_them():
    """No rule is skipped: each appears in the cost table of every profile (compiled and priced)."""
    for crd in crd_manifests():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        rules = [r for _, node in walk(schema) for r in node.get("x-kubernetes-validations", [])]
        expected = len(rules) + sum("messageExpression" in r for r in rules)
        for report in check_crd(crd).reports:
            assert len(report.costs) == expected > 10


def test_property_names_need_no_cel_escaping():
    """CEL keywords as property names resolve differently across Kubernetes versions; ours are plain."""
    for kind in KINDS:
        for path, _ in walk(object_schema(kind)):
            name = path.rsplit(".", 1)[-1].removesuffix("[]")
            if name and name != "*":
                assert escape(name) == name, path


def _custom_resources(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc.label, doc.content)
        for doc in iter_documents(path)
        if isinstance(doc.content, dict) and str(doc.content.get("apiVersion", "")).startswith("m2rl.io/")
    ]


RESOURCES = _custom_resources(REPO_ROOT / "examples") + _custom_resources(GOLDEN / "cases")


def test_resources_cover_examples_and_golden_cases():
    assert len(RESOURCES) >= 25
    assert any("tiny-cpu" in label for label, _ in RESOURCES)


@pytest.mark.parametrize(
    ("label", "obj"), RESOURCES, ids=[str(Path(r[0]).relative_to(REPO_ROOT)) for r in RESOURCES]
)
def test_example_and_golden_case_resources_pass_admission(label: str, obj: dict[str, Any]):
    violations, not_evaluated, skipped = validate_object(obj)
    assert (violations, not_evaluated, skipped) == ([], [], None), label


def test_golden_manifests_are_built_in_kinds():
    """The golden manifests are the children the operator creates (checked against the official
    Kubernetes schemas in tests/unit/operator/test_builders.py); none is a custom resource."""
    kinds = {(doc.content["apiVersion"], doc.content["kind"]) for doc in iter_documents(GOLDEN / "golden")}
    assert kinds and not any(api.startswith("m2rl.io/") for api, _ in kinds)


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_every_spec_field_outside_the_contract_is_immutable(kind):
    """Walk the spec: a field is mutable (listed), on the way to a mutable field (its siblings then
    carry the rules), or guarded by a transition rule (on itself, or on its parent for optional fields)."""
    spec = object_schema(kind)["properties"]["spec"]
    unguarded = []

    def visit(node: dict[str, Any], relative: str) -> None:
        parent_rules = " ".join(
            r["rule"] for r in node.get("x-kubernetes-validations", []) if "oldSelf" in r["rule"]
        )
        for name, sub in node.get("properties", {}).items():
            path = f"{relative}.{name}" if relative else name
            if path in kind.mutable_spec_fields:
                assert not any("oldSelf" in r["rule"] for r in sub.get("x-kubernetes-validations", [])), path
                continue
            if any(m.startswith(path + ".") for m in kind.mutable_spec_fields):
                visit(sub, path)
                continue
            own = any(r["rule"] == "self == oldSelf" for r in sub.get("x-kubernetes-validations", []))
            if not (own or f"has(oldSelf.{name})" in parent_rules):
                unguarded.append(path)

    visit(spec, "")
    assert unguarded == []
    assert len(spec["properties"]) >= 7
