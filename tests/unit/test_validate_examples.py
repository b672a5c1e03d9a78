"""Every file under examples/ validates; the study's protocol has the study's numbers; the `m2rl
validate` and `m2rl crds` commands print what they find and exit accordingly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from m2rl_operator.api.algorithm import AlgorithmSpec, resolve_algorithm
from m2rl_operator.api.crd import KINDS_BY_NAME
from m2rl_operator.api.offline import validate_path, validator_for
from m2rl_operator.api.uri import parse_uri
from m2rl_operator.api.yaml_io import iter_documents
from m2rl_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.rglob("*.yaml"))
DOCS = [(d.source, d.content) for path in EXAMPLE_FILES for d in iter_documents(path)]


def _objects(folder: Path) -> list[dict[str, Any]]:
    return [content for source, content in DOCS if source.parent == folder]


def test_examples_cover_the_issue():
    names = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLE_FILES}
    assert {"expert-run.yaml", "mixed-run.yaml", "merge.yaml", "eval-suite.yaml"} <= names
    for folder, runs in (("mix-vs-merge", 5), ("m2rl-qwen3-4b", 7), ("quickstart", 6)):
        kinds = [o["kind"] for o in _objects(EXAMPLES / folder)]
        # four experts + one mixed run; the study's protocol adds the agent expert and MT-OPD, the
        # quickstart MT-OPD
        assert kinds.count("RLVRRun") == runs, folder
        assert kinds.count("MergeJob") >= 4 and kinds.count("EvalSuite") == 1, folder
        assert (EXAMPLES / folder / "README.md").exists()


@pytest.mark.parametrize(
    "path", EXAMPLE_FILES, ids=[p.relative_to(EXAMPLES).as_posix() for p in EXAMPLE_FILES]
)
def test_example_file_is_valid_and_commented(path: Path):
    reports = validate_path(path)
    assert reports
    for report in reports:
        assert report.violations == [], [str(v) for v in report.violations]
        assert report.not_evaluated == []
        if report.skipped:  # built-in kinds: the official Kubernetes schema instead
            for source, content in DOCS:
                if source == path:
                    assert kubernetes_validate.validate(content, "1.33", strict=True)
    assert sum("#" in line for line in path.read_text().splitlines()) >= 3, "explain choices"


@pytest.mark.parametrize("folder", ["mix-vs-merge", "m2rl-qwen3-4b"])
def test_pipeline_references_resolve_within_the_folder(folder: str):
    objects = _objects(EXAMPLES / folder)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"} | {"m2rl-data"}
    refs: list[tuple[str, str]] = []
    for o in objects:
        spec = o.get("spec", {})
        teachers = (spec.get("algorithm") or {}).get("teachers", [])
        for item in spec.get("experts", []) + spec.get("models", []) + teachers + [spec.get("base") or {}]:
            if "runRef" in item:
                refs.append(("RLVRRun", item["runRef"]))
            if "mergeRef" in item:
                refs.append(("MergeJob", item["mergeRef"]))
        for uri in _uris(spec):
            parsed = parse_uri(uri)
            assert parsed.scheme == "pvc" and parsed.claim in claims, uri
    assert refs and set(refs) <= names


def _uris(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [
            u
            for k, v in value.items()
            for u in ([v] if k in {"uri", "model"} and isinstance(v, str) else _uris(v))
        ]
    if isinstance(value, list):
        return [u for v in value for u in _uris(v)]
    return []


def test_study_protocol_numbers():
    """examples/m2rl-qwen3-4b carries the study's settings (arXiv:2602.12566)."""
    objects = _objects(EXAMPLES / "m2rl-qwen3-4b")
    runs = {
        o["metadata"]["name"]: validator_for("RLVRRun").validate(o).defaulted["spec"]
        for o in objects
        if o["kind"] == "RLVRRun"
    }
    assert sorted(runs) == [
        "qwen3-4b-agent",
        "qwen3-4b-code",
        "qwen3-4b-if",
        "qwen3-4b-math",
        "qwen3-4b-mixed",
        "qwen3-4b-mt-opd",
        "qwen3-4b-science",
    ]
    opd = runs.pop("qwen3-4b-mt-opd")
    for name, spec in runs.items():
        algo = resolve_algorithm(AlgorithmSpec.model_validate(spec["algorithm"]))
        assert (algo.spec.prompts_per_step, algo.spec.group_size) == (128, 16)
        assert algo.spec.learning_rate == 2e-6 and algo.spec.schedule.type == "constant"
        assert (algo.clip_low, algo.clip_high, algo.kl_coef, algo.spec.entropy_coef) == (0.2, 0.28, 0.0, 0.0)
        assert algo.spec.temperature == 1.0
        assert (algo.spec.max_prompt_tokens, algo.spec.max_response_tokens) == (2048, 32768)
        assert algo.spec.steps == (400 if name.endswith("mixed") else 200)
        assert spec["model"]["uri"] == "pvc://m2rl-data/models/qwen3-4b-sft"
    assert len(runs["qwen3-4b-mixed"]["domains"]) == 4
    assert runs["qwen3-4b-agent"]["agent"]["maxTurns"] == 6  # study: max_num_steps 6

    # MT-OPD (docs/mt-opd.md): lr 1e-6 constant, 256 prompts x 4 samples, 16K tokens, 400 steps,
    # clip 0.2/0.2, no KL or entropy, weight decay 0.1; each domain taught by its own expert.
    algo = resolve_algorithm(AlgorithmSpec.model_validate(opd["algorithm"]))
    assert algo.spec.type == "mt_opd"
    assert (algo.spec.prompts_per_step, algo.spec.group_size, algo.spec.max_response_tokens) == (
        256,
        4,
        16384,
    )
    assert algo.spec.learning_rate == 1e-6 and algo.spec.schedule.type == "constant"
    assert (algo.clip_low, algo.clip_high, algo.kl_coef, algo.spec.entropy_coef) == (0.2, 0.2, 0.0, 0.0)
    assert (algo.spec.weight_decay, algo.spec.steps, algo.dynamic_sampling) == (0.1, 400, False)
    assert {t["domains"][0]: t["runRef"] for t in opd["algorithm"]["teachers"]} == {
        d: f"qwen3-4b-{d}" for d in ("math", "code", "science", "if", "agent")
    }
    assert opd["model"]["uri"] == "pvc://m2rl-data/models/qwen3-4b-sft"

    merges = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "MergeJob"}
    assert {n: m["method"] for n, m in merges.items()} == {
        "qwen3-4b-ties": "mergelm_ties",  # the study's MergeLM variants (docs/merge.md)
        "qwen3-4b-dare": "mergelm_task_arithmetic",
        "qwen3-4b-dare-ties": "mergelm_ties",
        "qwen3-4b-sce": "mergelm_sce",
        "qwen3-4b-ta": "task_arithmetic",
        "qwen3-4b-avg": "linear",
    }
    assert {e["density"] for e in merges["qwen3-4b-ties"]["experts"]} == {0.2}  # 80% trimmed
    assert {e["dareDensity"] for e in merges["qwen3-4b-dare"]["experts"]} == {0.8}  # drop rate 0.2
    assert merges["qwen3-4b-ta"]["parameters"]["lambda"] == 1.0
    assert all(len(m["experts"]) == 4 for m in merges.values())

    (suite,) = [o["spec"] for o in objects if o["kind"] == "EvalSuite"]
    assert [b["name"] for b in suite["benchmarks"]] == [
        "aime24",
        "aime25",
        "lcb-v5",
        "lcb-v6",
        "gpqa-diamond",
        "ifeval",
        "ifbench",
        "mmlu-redux",
    ]
    assert all(b["metrics"] == ["avg@k"] for b in suite["benchmarks"])
    assert len(suite["models"]) == 13  # sft, 4 experts, mixed, MT-OPD, 6 merges
    assert suite["analysis"]["merged"] == ["ties", "dare-ties", "dare", "ta", "sce", "avg"]


@pytest.mark.parametrize(
    ("source", "content"),
    [d for d in DOCS if d[1].get("apiVersion", "").startswith("m2rl.io/")],
    ids=lambda d: d.name if isinstance(d, Path) else "",
)
def test_example_specs_parse_into_the_models(source: Path, content: dict[str, Any]):
    kind = KINDS_BY_NAME[content["kind"]]
    defaulted = validator_for(kind.kind).validate(content).defaulted
    model = kind.spec.model_validate(defaulted["spec"])
    # Round trip: the model's Kubernetes form is the defaulted spec.
    assert model.to_dict() == defaulted["spec"]


# ---- the commands ----------------------------------------------------------------------------------

INVALID_RUN = """\
apiVersion: m2rl.io/v1alpha1
kind: RLVRRun
metadata: {name: bad}
spec:
  model: {uri: "s3://bucket/model"}
  domains: [{name: math, dataset: {uri: pvc://d/m.jsonl}, verifier: {type: math}, weight: 0}]
  algorithm: {steps: 10, groupSize: 1}
"""


def test_validate_command_on_examples(capsys):
    assert main(["validate", "-f", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    claims = sum(content.get("kind") == "PersistentVolumeClaim" for _, content in DOCS)  # not m2rl.io kinds
    summary = f"{len(DOCS) - claims} checked, 0 invalid (0 violations), {claims} skipped"
    assert out.strip().splitlines()[-1] == summary
    assert "examples/mix-vs-merge/30-merges.yaml#1: MergeJob/merge-dare: valid" in out.replace(
        str(REPO) + "/", ""
    )


def test_validate_command_prints_every_violation_with_its_path(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID_RUN)
    assert main(["validate", "-f", str(bad), "-f", str(EXAMPLES / "expert-run.yaml"), "-q"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{bad}: RLVRRun/bad: invalid, 3 violations"
    assert lines[1].startswith('  spec.model.uri: Invalid value: "s3://bucket/model": unknown scheme s3://')
    assert lines[2].startswith("  spec.domains[0].weight: Invalid value: 0: weight must be positive")
    assert lines[3].startswith("  spec.algorithm.groupSize: Invalid value: 1: groupSize must be at least 2")
    assert lines[-1] == "2 checked, 1 invalid (3 violations), 0 skipped"


def test_validate_command_json_and_updates(tmp_path: Path, capsys):
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text((EXAMPLES / "expert-run.yaml").read_text())
    new.write_text(old.read_text().replace("steps: 200", "steps: 300"))
    assert main(["validate", "-f", str(new), "--old", str(old), "-o", "json"]) == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert report["object"] == "RLVRRun/math-expert" and report["ok"] is False
    assert report["violations"] == [
        {
            "path": "spec.algorithm",
            "message": "Forbidden: spec.algorithm cannot change once the RLVRRun exists: create a new "
            "RLVRRun instead (only spec.suspend, spec.rollout.replicas, spec.verifier.replicas and "
            "spec.ttlSecondsAfterFinished can change)",
            "rule": "self == oldSelf",
        }
    ]


def test_crds_command_checks_and_writes(tmp_path: Path, capsys):
    assert (
        main(
            [
                "crds",
                "--out",
                str(REPO / "crds"),
                "--chart",
                str(REPO / "charts" / "m2rl"),
                "--docs",
                str(REPO / "docs" / "api.md"),
                "--check",
            ]
        )
        == 0
    )
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 1
    assert "stale:" in capsys.readouterr().out
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m2rl.io_evalsuites.yaml",
        "m2rl.io_mergejobs.yaml",
        "m2rl.io_rlvrruns.yaml",
    ]
    crd = yaml.safe_load((tmp_path / "m2rl.io_rlvrruns.yaml").read_text())
    assert crd["metadata"]["name"] == "rlvrruns.m2rl.io"


def test_console_script_runs(tmp_path: Path):
    """The installed `m2rl` entry point, as users call it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID_RUN)
    script = Path(sys.executable).parent / "m2rl"
    done = subprocess.run(
        [str(script), "validate", "-f", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "spec.algorithm.groupSize: Invalid value: 1" in done.stdout
    usage = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "validate" in usage.stdout and "crds" in usage.stdout
