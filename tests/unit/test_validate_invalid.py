"""The invalid corpus (tests/unit/invalid_resources/cases.yaml): every case must be rejected offline,
on the field it names, by the rule it names, with a message in the user's terms."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.api.offline import validate_object

DATA = Path(__file__).parent / "invalid_resources"
BASES: dict[str, dict[str, Any]] = yaml.safe_load((DATA / "bases.yaml").read_text())
CASES: list[dict[str, Any]] = yaml.safe_load((DATA / "cases.yaml").read_text())


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _rule_matches(expected: str, actual: str) -> bool:
    return (
        expected == actual
        if ":" in expected and expected.split(":")[0] in {"schema", "metadata"}
        else (expected in actual)
    )


def test_corpus_is_large_and_ids_are_unique():
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids), "duplicate case ids"
    for case in CASES:
        assert {"id", "base", "patch", "rule", "path", "message"} <= set(case), case["id"]
        assert case["base"] in BASES, case["id"]


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_are_valid(name):
    violations, not_evaluated, skipped = validate_object(BASES[name])
    assert skipped is None
    assert violations == []
    assert not_evaluated == []


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_invalid_resource_is_rejected(case):
    base = BASES[case["base"]]
    obj = merge_patch(base, case["patch"])
    old = base if case.get("update") else None
    violations, not_evaluated, skipped = validate_object(obj, old)

    assert skipped is None
    assert not_evaluated == []
    matching = [v for v in violations if _rule_matches(case["rule"], v.rule)]
    assert matching, f"rule {case['rule']!r} not reported; got: {[str(v) for v in violations]}"
    on_path = [v for v in matching if v.path == case["path"]]
    assert on_path, f"rule reported on {[v.path for v in matching]}, expected {case['path']}"
    line = str(on_path[0])
    assert line.startswith(case["path"] + ": "), line
    assert case["message"] in line, f"{case['message']!r} not in {line!r}"

    allowed = [case["rule"], *case.get("also", [])]
    unexpected = [str(v) for v in violations if not any(_rule_matches(a, v.rule) for a in allowed)]
    assert unexpected == [], "the case breaks more rules than it names"


def test_update_cases_are_valid_as_creates():
    """Transition rules (self == oldSelf) run only on updates, as on the API server."""
    updates = [c for c in CASES if c.get("update")]
    assert len(updates) >= 5
    for case in updates:
        violations, _, _ = validate_object(merge_patch(BASES[case["base"]], case["patch"]))
        assert violations == [], case["id"]
