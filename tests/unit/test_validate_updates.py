"""`m2rl validate --old`: the spec-update contract offline, for each kind. A change to a field the
contract lists is accepted; a change to any other field is refused with a message naming the field;
and `m2rl validate --crds` reports the admission check of CRDs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.api.crd import KINDS_BY_NAME, crd_manifest
from m2rl_operator.cli import main
from tests.unit.test_validate_invalid import BASES, merge_patch

BASE = {"RLVRRun": BASES["rlvrrun"], "MergeJob": BASES["mergejob"], "EvalSuite": BASES["evalsuite"]}

# (kind, patch of a field the contract lets change)
MUTABLE = [
    ("RLVRRun", {"spec": {"suspend": True}}),
    ("RLVRRun", {"spec": {"rollout": {"replicas": 4}}}),
    ("RLVRRun", {"spec": {"verifier": {"replicas": 3}}}),
    ("RLVRRun", {"spec": {"ttlSecondsAfterFinished": 3600}}),
    ("RLVRRun", {"metadata": {"labels": {"team": "rl"}, "annotations": {"note": "x"}}}),
    ("MergeJob", {"spec": {"ttlSecondsAfterFinished": 0}}),
    ("MergeJob", {"metadata": {"labels": {"team": "rl"}}}),
    ("EvalSuite", {"spec": {"ttlSecondsAfterFinished": 60}}),
    ("EvalSuite", {"metadata": {"labels": {"team": "rl"}}}),
]

# (kind, patch of an immutable field, the field path the refusal names)
IMMUTABLE = [
    ("RLVRRun", {"spec": {"model": {"uri": "pvc://models/other"}}}, "spec.model"),
    ("RLVRRun", {"spec": {"mixing": "concat_shuffle"}}, "spec.mixing"),
    ("RLVRRun", {"spec": {"algorithm": {"steps": 200}}}, "spec.algorithm"),
    ("RLVRRun", {"spec": {"trainer": {"gpusPerNode": 4}}}, "spec.trainer"),
    ("RLVRRun", {"spec": {"rollout": {"gpuMemoryUtilization": 0.8}}}, "spec.rollout.gpuMemoryUtilization"),
    ("RLVRRun", {"spec": {"rollout": {"extraArgs": ["--enforce-eager"]}}}, "spec.rollout.extraArgs"),
    ("RLVRRun", {"spec": {"verifier": {"timeoutSeconds": 30}}}, "spec.verifier.timeoutSeconds"),
    ("RLVRRun", {"spec": {"checkpoint": {"everySteps": 10}}}, "spec.checkpoint"),
    ("RLVRRun", {"spec": {"maxRestarts": 9}}, "spec.maxRestarts"),
    ("RLVRRun", {"spec": {"priorityClassName": "high"}}, "spec.priorityClassName"),
    ("MergeJob", {"spec": {"output": {"uri": "pvc://checkpoints/merges/other"}}}, "spec.output"),
    ("MergeJob", {"spec": {"dtype": "float32"}}, "spec.dtype"),
    ("MergeJob", {"spec": {"parameters": {"lambda": 0.5}}}, "spec.parameters"),
    ("MergeJob", {"spec": {"analysis": {"enabled": False}}}, "spec.analysis"),
    ("MergeJob", {"spec": {"queueName": "team-a"}}, "spec.queueName"),
    ("EvalSuite", {"spec": {"sampling": {"seed": 7}}}, "spec.sampling"),
    ("EvalSuite", {"spec": {"worker": {"gpus": 2}}}, "spec.worker"),
    ("EvalSuite", {"spec": {"verifier": {"replicas": 2}}}, "spec.verifier"),
    ("EvalSuite", {"spec": {"models": [{"name": "base", "model": "hf://Qwen/Qwen3-1.7B"}]}}, "spec.models"),
]


def _files(tmp_path: Path, kind: str, patch: dict[str, Any]) -> tuple[Path, Path]:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(BASE[kind]))
    new.write_text(yaml.safe_dump(merge_patch(copy.deepcopy(BASE[kind]), patch)))
    return old, new


@pytest.mark.parametrize(("kind", "patch"), MUTABLE, ids=[f"{k}-{json.dumps(p)}" for k, p in MUTABLE])
def test_a_mutable_change_is_accepted(tmp_path: Path, capsys, kind: str, patch: dict[str, Any]):
    old, new = _files(tmp_path, kind, patch)
    assert main(["validate", "-f", str(new), "--old", str(old), "-o", "json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["violations"] == []


@pytest.mark.parametrize(("kind", "patch", "field"), IMMUTABLE, ids=[f[2] + f"-{f[0]}" for f in IMMUTABLE])
def test_an_immutable_change_is_refused(tmp_path: Path, capsys, kind: str, patch: dict[str, Any], field: str):
    old, new = _files(tmp_path, kind, patch)
    assert main(["validate", "-f", str(new), "--old", str(old), "-o", "json"]) == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert [v["path"] for v in report["violations"]] == [field]
    message = report["violations"][0]["message"]
    assert message.startswith(
        f"Forbidden: {field} cannot change once the {kind} exists: create a new {kind} instead"
    )
    # the same change as a create is valid: only the update is refused
    assert main(["validate", "-f", str(new)]) == 0


def test_contract_lists_what_the_lead_decided():
    assert KINDS_BY_NAME["RLVRRun"].mutable_spec_fields == (
        "suspend", "rollout.replicas", "verifier.replicas", "ttlSecondsAfterFinished",
    )  # fmt: skip
    assert KINDS_BY_NAME["MergeJob"].mutable_spec_fields == ("ttlSecondsAfterFinished",)
    assert KINDS_BY_NAME["EvalSuite"].mutable_spec_fields == ("ttlSecondsAfterFinished",)


# ---- m2rl validate --crds -----------------------------------------------------------------------------


def test_validate_crds_accepts_the_generated_and_shipped_crds(capsys):
    assert main(["validate", "--crds"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(
        "generated: CustomResourceDefinition/rlvrruns.m2rl.io: accepted (Kubernetes 1.28, 1.36, 1.37); "
        "estimated rule cost: total "
    )
    repo = Path(__file__).resolve().parents[2]
    assert main(["validate", "--crds", "-f", str(repo / "crds"), "-q"]) == 0
    assert all(" accepted " in line for line in capsys.readouterr().out.splitlines())


def test_validate_crds_prints_the_api_servers_errors(tmp_path: Path, capsys):
    crd = crd_manifest(KINDS_BY_NAME["EvalSuite"])
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["worker"][
        "default"
    ] = {}
    path = tmp_path / "crd.yaml"
    path.write_text(yaml.safe_dump(crd))
    assert main(["validate", "--crds", "-f", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: CustomResourceDefinition/evalsuites.m2rl.io: rejected",
        "  spec.validation.openAPIV3Schema.properties[spec].properties[worker].default: "
        'Invalid value: "object": '
        "no such key: gpus evaluating rule: tensorParallelSize must not exceed gpus: each "
        "tensor-parallel shard "
        "needs its own GPU",
    ]
    assert main(["validate", "--crds", "-f", str(path), "-o", "json"]) == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["errors"][0]["kubernetes"] == ["1.28", "1.36", "1.37"]


def test_validate_crds_with_no_crd_in_the_files(tmp_path: Path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(BASE["RLVRRun"]))
    assert main(["validate", "--crds", "-f", str(path)]) == 1
    assert "no CustomResourceDefinition found" in capsys.readouterr().err
