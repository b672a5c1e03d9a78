"""The offline admission engine behaves like the API server: pruning, defaulting, typed CEL values,
transition rules on updates only, and honest reports of rules cel-python cannot evaluate."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from m2rl_operator.api.offline import validate_object, validate_path, validator_for
from m2rl_operator.api.validation import SchemaValidator
from m2rl_operator.api.yaml_io import KubeYAMLLoader, loads_all

RUN: dict[str, Any] = {
    "apiVersion": "m2rl.io/v1alpha1",
    "kind": "RLVRRun",
    "metadata": {"name": "run"},
    "spec": {
        "model": {"uri": "pvc://models/tiny"},
        "domains": [
            {"name": "math", "dataset": {"uri": "pvc://data/math.jsonl"}, "verifier": {"type": "math"}}
        ],
        "algorithm": {"steps": 10},
    },
}


def run(**spec_changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(RUN)
    obj["spec"].update(spec_changes)
    return obj


def messages(obj: Any, old: Any = None) -> list[str]:
    violations, _, _ = validate_object(obj, old)
    return [str(v) for v in violations]


def test_defaults_are_applied_recursively():
    result = validator_for("RLVRRun").validate(RUN)
    assert result.ok
    spec = result.defaulted["spec"]
    assert spec["trainer"]["gpusPerNode"] == 8
    assert spec["trainer"]["deepspeed"] == {"zeroStage": 3, "offloadOptimizer": False, "offloadParams": False}
    assert spec["algorithm"]["groupSize"] == 16
    assert spec["algorithm"]["schedule"] == {"type": "constant", "warmupSteps": 0, "minRatio": 0.0}
    assert spec["domains"][0]["weight"] == 1.0
    assert spec["domains"][0]["dataset"]["fields"] == {"prompt": "prompt", "answer": "answer"}
    assert spec["checkpoint"]["size"] == "200Gi"
    assert "clipHigh" not in spec["algorithm"]  # preset-dependent fields stay unset
    assert RUN["spec"].get("trainer") is None  # the input is not modified


def test_rules_see_presets_of_the_algorithm_type():
    # dapo's clipHigh is 0.28: clipLow 0.25 is fine; grpo's is 0.2: the same clipLow is not.
    assert messages(run(algorithm={"steps": 10, "type": "dapo", "clipLow": 0.25})) == []
    assert messages(run(algorithm={"steps": 10, "type": "grpo", "clipLow": 0.25})) == [
        "spec.algorithm.clipHigh: Invalid value: (unset): clipHigh must be greater than or equal to "
        "clipLow, after unset fields take the preset of `type` (clipLow 0.2; clipHigh 0.28 for dapo, "
        "else 0.2): clip-higher widens the upper bound of the ratio, it never narrows it"
    ]


def test_numbers_are_typed_by_the_schema():
    """An integer in a `number` field is a CEL double (as on the API server), so `self > 0.0` works."""
    domain = {
        "name": "math",
        "dataset": {"uri": "pvc://d/m.jsonl"},
        "verifier": {"type": "math"},
        "weight": 3,
    }
    assert messages(run(domains=[domain])) == []
    assert messages(run(algorithm={"steps": 10, "clipLow": 0, "clipHigh": 1})) == []


def test_nulls_are_pruned_and_then_defaulted():
    result = validator_for("RLVRRun").validate(run(trainer=None, suspend=None))
    assert result.ok
    assert result.defaulted["spec"]["trainer"]["nodes"] == 1
    assert result.defaulted["spec"]["suspend"] is False


def test_quantities_accept_integers_and_strings():
    resources = {"requests": {"cpu": 8, "memory": "64Gi"}, "limits": {"cpu": "8500m"}}
    assert messages(run(trainer={"resources": resources})) == []
    assert messages(run(trainer={"resources": {"limits": {"cpu": True}}})) == [
        "spec.trainer.resources.limits[cpu]: Invalid value: true: must be an integer or a string"
    ]


def test_transition_rules_run_on_updates_only():
    changed = run(model={"uri": "pvc://models/other"})
    assert messages(changed) == []
    assert messages(changed, old=RUN) == [
        "spec.model: Forbidden: spec.model cannot change once the RLVRRun exists: create a new RLVRRun "
        "instead (only spec.suspend, spec.rollout.replicas, spec.verifier.replicas and "
        "spec.ttlSecondsAfterFinished can change)"
    ]
    # The mutable fields may change; unchanged immutable fields pass after defaulting on both sides.
    mutable = run(suspend=True, rollout={"replicas": 4}, verifier={"replicas": 2}, ttlSecondsAfterFinished=60)
    assert messages(mutable, old=RUN) == []


def test_optional_fields_cannot_be_added_or_removed():
    """A transition rule on an optional field would not run when either side lacks it, so the
    rule sits on the parent and compares presence too."""
    merge = {
        "apiVersion": "m2rl.io/v1alpha1",
        "kind": "MergeJob",
        "metadata": {"name": "avg"},
        "spec": {
            "method": "nuslerp",
            "experts": [{"runRef": "a"}, {"runRef": "b"}],
            "output": {"uri": "pvc://c/avg"},
        },
    }
    with_base = copy.deepcopy(merge)
    with_base["spec"]["base"] = {"model": "pvc://models/base"}
    refused = (
        "spec.base: Forbidden: spec.base cannot change once the MergeJob exists: create a new MergeJob "
        "instead (only spec.ttlSecondsAfterFinished can change)"
    )
    assert messages(with_base, old=merge) == [refused]  # added
    assert messages(merge, old=with_base) == [refused]  # removed
    changed = copy.deepcopy(with_base)
    changed["spec"]["base"] = {"model": "pvc://models/other"}
    assert messages(changed, old=with_base) == [refused]  # changed
    assert messages(with_base, old=with_base) == []


LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "size": {
                        "type": "integer",
                        "x-kubernetes-validations": [
                            {"rule": "self >= oldSelf", "message": "size may only grow"}
                        ],
                    },
                },
            },
        },
        "atomic": {
            "type": "array",
            "items": {
                "type": "integer",
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "never evaluated: atomic items do not correlate"}
                ],
            },
        },
    },
}


def test_map_list_items_correlate_by_key_and_atomic_items_do_not():
    validator = SchemaValidator(LIST_SCHEMA, kubernetes_object=False)
    old = {"items": [{"name": "a", "size": 2}, {"name": "b", "size": 5}], "atomic": [1, 2]}
    reordered = {
        "items": [{"name": "b", "size": 6}, {"name": "a", "size": 2}, {"name": "c", "size": 0}],
        "atomic": [9],
    }
    assert validator.validate(reordered, old).violations == []
    shrunk = {"items": [{"name": "b", "size": 4}]}
    assert [str(v) for v in validator.validate(shrunk, old).violations] == [
        "items[0].size: Invalid value: 4: size may only grow"
    ]
    duplicate = {"items": [{"name": "a"}, {"name": "a"}]}
    assert [str(v) for v in validator.validate(duplicate).violations] == [
        'items[1]: Duplicate value: {"name": "a"}'
    ]


def test_extension_functions_are_reported_as_not_evaluated():
    schema = {
        "type": "object",
        "properties": {
            "xs": {
                "type": "array",
                "items": {"type": "integer"},
                "x-kubernetes-validations": [{"rule": "self.isSorted()", "message": "xs must be sorted"}],
            }
        },
    }
    result = SchemaValidator(schema, kubernetes_object=False).validate({"xs": [3, 1]})
    assert result.violations == []  # neither passed nor failed: not evaluated
    (skipped,) = result.not_evaluated
    assert skipped.path == "xs"
    assert "isSorted()" in str(skipped) and "Kubernetes CEL extension" in str(skipped)
    assert "the API server checks it at admission" in str(skipped)


def test_runtime_errors_fail_the_rule_with_the_reason():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.b > 1", "message": "b must exceed 1"}],
    }
    (violation,) = SchemaValidator(schema, kubernetes_object=False).validate({"a": 1}).violations
    assert (
        str(violation)
        == 'Invalid value: "object": b must exceed 1 (no such key: b evaluating rule: self.b > 1)'
    )


def test_message_expression_falls_back_to_message():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.a < 3", "message": "a is too big", "messageExpression": "'a is ' + self.nope"},
            {
                "rule": "self.a < 2",
                "message": "unused",
                "messageExpression": "'a=' + string(self.a) + ' >= 2'",
            },
        ],
    }
    result = SchemaValidator(schema, kubernetes_object=False).validate({"a": 5})
    assert [v.message for v in result.violations] == [
        'Invalid value: "object": a is too big',
        'Invalid value: "object": a=5 >= 2',
    ]


def test_unknown_fields_suggest_the_closest_name():
    assert messages(run(rollouts={"replicas": 2})) == [
        "spec.rollouts: unknown field 'rollouts'; did you mean 'rollout'?"
    ]
    assert messages(run(zzz=1))[0].startswith("spec.zzz: unknown field 'zzz' (fields here: queueName, ")


def test_metadata_is_checked_as_object_meta():
    obj = copy.deepcopy(RUN)
    obj["metadata"] = {"labels": {"team": "rl"}, "owner": "me"}
    assert messages(obj) == [
        "metadata.owner: unknown field 'owner' in ObjectMeta",
        "metadata.name: Required value: name or generateName is required",
    ]


def test_generate_name_is_checked_with_a_generated_suffix():
    obj = copy.deepcopy(RUN)
    obj["metadata"] = {"generateName": "sweep-"}
    assert messages(obj) == []
    obj["metadata"] = {"generateName": "a-very-long-prefix-for-a-hyperparam-sweep-"}  # 42 + 5 chars
    assert messages(obj) == ["metadata.name: Too long: must have at most 40 characters (has 47)"]


def test_kubectl_style_floats_in_yaml():
    text = "learningRate: 2e-6\nother: 1.5e+3\nplain: 1e3\nversion: '2e-6'\n"
    assert yaml.safe_load(text)["learningRate"] == "2e-6"  # why the project has its own loader
    assert loads_all(text) == [{"learningRate": 2e-6, "other": 1500.0, "plain": 1000.0, "version": "2e-6"}]
    assert yaml.load("flag: yes", Loader=KubeYAMLLoader) == {"flag": True}  # like kubectl (YAML 1.1 booleans)


def test_validate_path_reports_files_lists_and_skips(tmp_path: Path):
    (tmp_path / "list.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [RUN, RUN]})
    )
    (tmp_path / "broken.yml").write_text("kind: [unclosed\n")
    (tmp_path / "pvc.yaml").write_text("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\n")
    (tmp_path / "notes.txt").write_text("not yaml")
    reports = validate_path(tmp_path)
    by_source = {(r.source.rsplit("/", 1)[-1], r.identity): r for r in reports}
    assert set(by_source) == {
        ("broken.yml", "<file>"),
        ("list.yaml", "RLVRRun/run"),
        ("pvc.yaml", "PersistentVolumeClaim/c"),
    }
    assert len([r for r in reports if r.identity == "RLVRRun/run"]) == 2
    assert by_source[("broken.yml", "<file>")].violations[0].rule == "yaml"
    assert by_source[("pvc.yaml", "PersistentVolumeClaim/c")].skipped == (
        "v1 PersistentVolumeClaim is not an m2rl.io kind; not checked offline"
    )
    (missing,) = validate_path(tmp_path / "nope.yaml")
    assert str(missing.violations[0]) == "no such file or directory"


def test_non_objects_are_rejected():
    assert messages(["a"]) == ["expected a Kubernetes object (a mapping), got list"]
    assert messages({"kind": "RLVRRun"}) == ["apiVersion: Required value"]
