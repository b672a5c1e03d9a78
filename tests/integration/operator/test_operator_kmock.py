"""The operator's handlers run by kopf against kmock's Kubernetes emulator (real HTTP + watch).

The test plays the kubelet and the Job controller: it patches children's status subresources and
checks the custom resources' status, conditions and children. The emulator does no garbage
collection or defaulting (see tests/support/kopf_kmock.py); builders are checked for those aspects
in tests/unit/operator.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from m2rl_operator.settings import OperatorOptions
from m2rl_trainer.train.metrics import MetricsSink
from m2rl_trainer.utils.processes import free_port
from tests.support.kopf_kmock import (
    CORE_RESOURCES,
    M2RL_RESOURCES,
    declare_resources,
    eventually,
    running_operator,
)

HANDLERS = ["m2rl_operator.handlers"]
NS = "default"
RUNS = "m2rl.io/v1alpha1/rlvrruns"
TINY = yaml.safe_load(
    (Path(__file__).parents[2] / "unit" / "operator" / "cases" / "tiny-cpu.yaml").read_text()
)
RUN_CHILDREN = [
    ("v1/configmaps", "tiny-config"),
    ("v1/services", "tiny-verifier"),
    ("networking.k8s.io/v1/networkpolicies", "tiny-verifier"),
    ("apps/v1/deployments", "tiny-verifier"),
    ("v1/services", "tiny-trainer"),
    ("batch/v1/jobs", "tiny-trainer"),
]


def tiny_run(name: str = "tiny", **spec_changes: Any) -> dict[str, Any]:
    run = copy.deepcopy(TINY)
    run["metadata"] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "generation": 1,
        "resourceVersion": "1",
    }
    run["spec"].update(spec_changes)
    return run


@pytest.fixture
def trainer_metrics(tmp_path: Path) -> Any:
    """The trainer's own metrics endpoint (what rank 0 serves on :9400), for the run "tiny"."""
    port = free_port()
    sink = MetricsSink(tmp_path / "metrics.jsonl", port, "tiny")
    yield f"http://127.0.0.1:{port}/metrics", sink
    sink.close()


@pytest.fixture
async def api(kmock: Any) -> AsyncIterator[client.ApiClient]:
    declare_resources(kmock, CORE_RESOURCES | M2RL_RESOURCES)
    async with client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/"))) as api_client:
        yield api_client


def memo(metrics_url: str = "http://127.0.0.1:9/metrics") -> dict[str, Any]:
    options = OperatorOptions(
        metrics_port=None, status_interval_s=0.5, dependency_retry_s=0.3, scrape_timeout_s=1
    )
    return {"options": options, "trainer_metrics_url": lambda namespace, name: metrics_url}


@pytest.fixture(autouse=True)
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Timer intervals are fixed when kopf registers the handlers (module import): 0.5 s here.
    monkeypatch.setenv("M2RL_STATUS_INTERVAL_S", "0.5")


async def create(api: client.ApiClient, plural: str, obj: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).create_namespaced_custom_object("m2rl.io", "v1alpha1", NS, plural, obj)


async def patch_custom(api: client.ApiClient, plural: str, name: str, patch: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "m2rl.io", "v1alpha1", NS, plural, name, patch, _content_type="application/merge-patch+json"
    )


async def set_job_status(api: client.ApiClient, name: str, status: dict[str, Any]) -> None:
    await client.BatchV1Api(api).patch_namespaced_job_status(name, NS, {"status": status})


async def create_finished_pod(api: client.ApiClient, job: str, index: int, result: dict[str, Any]) -> None:
    """A succeeded pod of `job` whose container left `result` as its termination message (as the
    kubelet reports it)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-{index}-x",
            "namespace": NS,
            "labels": {"job-name": job},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "creationTimestamp": "2026-11-22T03:00:00Z",
        },
        "spec": {"containers": [{"name": "main", "image": "m2rl"}]},
    }
    await client.CoreV1Api(api).create_namespaced_pod(NS, pod)
    terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(result)}
    status = {
        "phase": "Succeeded",
        "containerStatuses": [
            {
                "name": "main",
                "image": "m2rl",
                "imageID": "m2rl@sha256:0",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }
    await client.CoreV1Api(api).patch_namespaced_pod_status(f"{job}-{index}-x", NS, {"status": status})


def exists(kmock: Any, resource: str, name: str) -> bool:
    """Whether the emulator holds the object, not deleted (its `in` does not take string resource keys)."""
    try:
        return not kmock.objects[resource, NS, name].deleted
    except KeyError:
        return False


def status_of(kmock: Any, plural: str, name: str) -> dict[str, Any]:
    return kmock.objects[f"m2rl.io/v1alpha1/{plural}", NS, name].get("status") or {}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}], "failed": 1}


async def test_run_lifecycle_children_status_progress_and_success(
    kmock: Any, api: Any, trainer_metrics: Any
) -> None:
    url, trainer = trainer_metrics
    async with running_operator(kmock, HANDLERS, memo(url)):
        await create(api, "rlvrruns", tiny_run())
        for plural, name in RUN_CHILDREN:
            child = await eventually(lambda p=plural, n=name: kmock.objects[p, NS, n])
            (owner,) = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
                "RLVRRun",
                "tiny",
                "uid-tiny",
                True,
            )
        # colocated mode: no rollout StatefulSet; the checkpoint claim is given by uri: no PVC.
        assert not exists(kmock, "apps/v1/statefulsets", "tiny-rollout")
        # A timer refresh may have published Pending before the Job existed: wait for convergence.
        status = await eventually(
            lambda: (
                status_of(kmock, "rlvrruns", "tiny").get("phase") == "Pending"
                and conditions(status_of(kmock, "rlvrruns", "tiny")).get("Created", ("", ""))[0] == "True"
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert conditions(status) == {
            "Created": ("True", "ChildrenCreated"),
            "VerifierReady": ("False", "ReplicasNotReady"),
            "Training": ("False", "TrainerPending"),
            "Suspended": ("False", "NotSuspended"),
            "Succeeded": ("False", "NotComplete"),
            "Failed": ("False", "NotFailed"),
        }
        assert (status["totalSteps"], status["restarts"], status["observedGeneration"]) == (20, 0, 1)

        # The kubelet reports: verifier ready, trainer running at step 12 with rewards.
        await client.AppsV1Api(api).patch_namespaced_deployment_status(
            "tiny-verifier", NS, {"status": {"readyReplicas": 1}}
        )
        trainer.log({"step": 12, "per_domain": {"arith": {"reward": 0.25, "accuracy": 0.5}}})
        trainer.checkpoint_written(10)
        await set_job_status(api, "tiny-trainer", {"active": 1})
        status = await eventually(
            lambda: (
                status_of(kmock, "rlvrruns", "tiny").get("step") == 12
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert status["phase"] == "Running"
        assert conditions(status)["Training"] == ("True", "TrainerRunning")
        assert conditions(status)["VerifierReady"] == ("True", "ReplicasReady")
        assert status["domains"] == [{"name": "arith", "reward": 0.25, "accuracy": 0.5}]
        assert status["latestCheckpoint"] == {
            "uri": "pvc://checkpoints/runs/tiny/checkpoints/step-000010/model",
            "step": 10,
        }

        await set_job_status(api, "tiny-trainer", COMPLETE)
        status = await eventually(
            lambda: (
                status_of(kmock, "rlvrruns", "tiny").get("phase") == "Succeeded"
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert status["finalModel"] == "pvc://checkpoints/runs/tiny/checkpoints/step-000020/model"
        assert status["step"] == 20
        assert conditions(status)["Succeeded"] == ("True", "TrainingComplete")
        assert "completionTime" in status


async def test_suspend_and_resume(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
        await patch_custom(
            api, "rlvrruns", "tiny", {"spec": {"suspend": True}, "metadata": {"generation": 2}}
        )
        await eventually(
            lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"]["spec"]["suspend"] is True
        )
        await eventually(
            lambda: kmock.objects["apps/v1/deployments", NS, "tiny-verifier"]["spec"]["replicas"] == 0
        )
        status = await eventually(
            lambda: (
                status_of(kmock, "rlvrruns", "tiny").get("phase") == "Suspended"
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert conditions(status)["Suspended"] == ("True", "SpecSuspend")
        await patch_custom(api, "rlvrruns", "tiny", {"spec": {"suspend": False}})
        await eventually(
            lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"]["spec"]["suspend"] is False
        )
        await eventually(
            lambda: kmock.objects["apps/v1/deployments", NS, "tiny-verifier"]["spec"]["replicas"] == 1
        )
        await eventually(lambda: status_of(kmock, "rlvrruns", "tiny").get("phase") == "Pending")


async def test_trainer_failure_is_retried_then_fails(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(maxRestarts=1))
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
        await set_job_status(api, "tiny-trainer", FAILED)
        # Restarted: a fresh Job (attempt 1), restarts counted.
        job = await eventually(
            lambda: (
                kmock.objects["batch/v1/jobs", NS, "tiny-trainer"]["metadata"]["annotations"][
                    "m2rl.io/attempt"
                ]
                == "1"
                and kmock.objects["batch/v1/jobs", NS, "tiny-trainer"]
            )
        )
        assert not (job.get("status") or {}).get("conditions")
        await eventually(lambda: status_of(kmock, "rlvrruns", "tiny").get("restarts") == 1)
        await set_job_status(api, "tiny-trainer", FAILED)
        status = await eventually(
            lambda: (
                status_of(kmock, "rlvrruns", "tiny").get("phase") == "Failed"
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert conditions(status)["Failed"] == ("True", "TrainerFailed")
        assert status["restarts"] == 1
        assert (
            kmock.objects["batch/v1/jobs", NS, "tiny-trainer"]["metadata"]["annotations"]["m2rl.io/attempt"]
            == "1"
        )


async def test_invalid_spec_fails_permanently_without_children(kmock: Any, api: Any) -> None:
    run = tiny_run()
    run["spec"]["domains"][0]["dataset"]["uri"] = "hf://org/data"
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", run)
        status = await eventually(
            lambda: (
                status_of(kmock, "rlvrruns", "tiny").get("phase") == "Failed"
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert conditions(status) == {"Failed": ("True", "InvalidSpec")}
        assert not exists(kmock, "batch/v1/jobs", "tiny-trainer")


async def test_operator_restart_mid_reconcile_creates_no_duplicates(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
    # As if the operator died after creating only part of the children:
    await client.BatchV1Api(api).delete_namespaced_job("tiny-trainer", NS)
    await client.CoreV1Api(api).delete_namespaced_service("tiny-trainer", NS)
    async with running_operator(kmock, HANDLERS, memo()):
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
    owned = [
        (obj["kind"], key[2])
        for key, obj in kmock.objects.items()
        if [o["uid"] for o in obj.get("metadata", {}).get("ownerReferences", [])] == ["uid-tiny"]
    ]
    kinds = {
        "v1/configmaps": "ConfigMap",
        "v1/services": "Service",
        "batch/v1/jobs": "Job",
        "networking.k8s.io/v1/networkpolicies": "NetworkPolicy",
        "apps/v1/deployments": "Deployment",
    }
    assert sorted(owned) == sorted((kinds[plural], name) for plural, name in RUN_CHILDREN)


MERGE = {
    "apiVersion": "m2rl.io/v1alpha1",
    "kind": "MergeJob",
    "metadata": {"name": "avg", "namespace": NS, "uid": "uid-avg", "generation": 1, "resourceVersion": "1"},
    "spec": {
        "method": "task_arithmetic",
        "base": {"runRef": "tiny"},
        "experts": [{"runRef": "tiny"}, {"name": "other", "model": "pvc://checkpoints/other"}],
        "output": {"uri": "pvc://checkpoints/merges/avg"},
    },
}
EVAL = {
    "apiVersion": "m2rl.io/v1alpha1",
    "kind": "EvalSuite",
    "metadata": {"name": "ev", "namespace": NS, "uid": "uid-ev", "generation": 1, "resourceVersion": "1"},
    "spec": {
        "models": [{"name": "base", "model": "file:///models/tiny"}, {"name": "merged", "mergeRef": "avg"}],
        "benchmarks": [
            {
                "name": "arith",
                "dataset": {"uri": "pvc://datasets/arith/test.jsonl"},
                "verifier": {"type": "math"},
            }
        ],
        "worker": {"gpus": 0},
    },
}


async def test_merge_and_eval_wait_for_dependencies(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "mergejobs", copy.deepcopy(MERGE))
        await create(api, "evalsuites", copy.deepcopy(EVAL))
        status = await eventually(
            lambda: (
                status_of(kmock, "mergejobs", "avg").get("phase") == "Waiting"
                and status_of(kmock, "mergejobs", "avg")
            )
        )
        assert status["waitingFor"] == ["RLVRRun/tiny"]
        assert conditions(status) == {"WaitingForDependencies": ("True", "Waiting")}
        status = await eventually(
            lambda: (
                status_of(kmock, "evalsuites", "ev").get("phase") == "Waiting"
                and status_of(kmock, "evalsuites", "ev")
            )
        )
        assert status["waitingFor"] == ["MergeJob/avg"]

        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
        await set_job_status(api, "tiny-trainer", COMPLETE)
        job = await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "avg-merge"], timeout_s=15)
        assert job["metadata"]["ownerReferences"][0]["name"] == "avg"
        merge_config = yaml.safe_load(kmock.objects["v1/configmaps", NS, "avg-config"]["data"]["merge.yaml"])
        assert merge_config == {
            "merge_method": "task_arithmetic",
            "base_model": "/models/tiny",
            "models": [
                {
                    "model": "/mnt/pvc/checkpoints/runs/tiny/checkpoints/step-000020/model",
                    "parameters": {"weight": 1.0},  # mergekit requires one; the API's unset means 1
                },
                {"model": "/mnt/pvc/checkpoints/other", "parameters": {"weight": 1.0}},
            ],
            "dtype": "bfloat16",
        }
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert (container["command"], container["args"]) == (
            ["m2rl-merge"],
            ["--config", "/etc/m2rl/merge.yaml", "--output", "/mnt/pvc/checkpoints/merges/avg",
             "--expert-names", "tiny,other", "--eta", "0.001", "--projection-dims", "256"],
        )  # fmt: skip
        assert not exists(kmock, "batch/v1/jobs", "ev-eval")
        analysis = {
            "taskVectorNorms": {"tiny": 1.5, "other": 0.5},
            "pairwiseCosine": [{"first": "tiny", "second": "other", "cosine": 0.25}],
            "signConflictFraction": 0.125,
            "reportFile": "m2rl-analysis/report.json",
        }
        await create_finished_pod(api, "avg-merge", 0, {"analysis": analysis})
        await create_finished_pod(api, "unrelated-job", 0, {"analysis": {"taskVectorNorms": {}}})
        await set_job_status(api, "avg-merge", COMPLETE)
        status = await eventually(
            lambda: (
                status_of(kmock, "mergejobs", "avg").get("phase") == "Succeeded"
                and status_of(kmock, "mergejobs", "avg")
            )
        )
        assert status["outputModel"] == "pvc://checkpoints/merges/avg"
        assert status["analysis"] == {
            "taskVectorNorms": {"tiny": 1.5, "other": 0.5},
            "pairwiseCosine": [{"first": "tiny", "second": "other", "cosine": 0.25}],
            "signConflictFraction": 0.125,
            "reportUri": "pvc://checkpoints/merges/avg/m2rl-analysis/report.json",
        }
        assert conditions(status) == {
            "WaitingForDependencies": ("False", "DependenciesReady"),
            "Succeeded": ("True", "MergeComplete"),
            "Failed": ("False", "NotFailed"),
        }
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "ev-eval"], timeout_s=15)
        # Index 1 (model "merged") finishes first; the table fills as pods report.
        row = {"model": "merged", "cells": [[40, 0.75]]}  # prompts, avg@k (the default metric)
        await create_finished_pod(api, "ev-eval", 1, row)
        await set_job_status(api, "ev-eval", {"active": 1, "succeeded": 1})
        status = await eventually(
            lambda: (
                status_of(kmock, "evalsuites", "ev").get("cellsSucceeded") == 1
                and status_of(kmock, "evalsuites", "ev").get("phase") == "Running"
                and status_of(kmock, "evalsuites", "ev")
            )
        )
        assert [(c["model"], c["benchmark"], c["phase"]) for c in status["results"]] == [
            ("base", "arith", "Running"),
            ("merged", "arith", "Succeeded"),
        ]
        assert status["results"][1]["metrics"] == {"avg@k": 0.75}
        assert status["results"][1]["prompts"] == 40
        row = {"model": "base", "cells": [[40, 0.5]]}
        await create_finished_pod(api, "ev-eval", 0, row)
        await set_job_status(api, "ev-eval", COMPLETE)
        status = await eventually(
            lambda: (
                status_of(kmock, "evalsuites", "ev").get("phase") == "Succeeded"
                and status_of(kmock, "evalsuites", "ev")
            )
        )
        assert status["cellsTotal"] == 2
        assert status["cellsSucceeded"] == 2
        assert {c["model"]: c["metrics"]["avg@k"] for c in status["results"]} == {"base": 0.5, "merged": 0.75}


async def test_failed_dependency_fails_the_merge(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(maxRestarts=0))
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
        await set_job_status(api, "tiny-trainer", FAILED)
        await eventually(lambda: status_of(kmock, "rlvrruns", "tiny").get("phase") == "Failed")
        await create(api, "mergejobs", copy.deepcopy(MERGE))
        status = await eventually(
            lambda: (
                status_of(kmock, "mergejobs", "avg").get("phase") == "Failed"
                and status_of(kmock, "mergejobs", "avg")
            )
        )
        assert conditions(status) == {"WaitingForDependencies": ("False", "DependencyFailed")}
        assert not exists(kmock, "batch/v1/jobs", "avg-merge")


async def test_injected_500_and_409_answers_are_retried(kmock: Any, api: Any) -> None:
    # The first two Job creations answer 500, the first status patch of the run 409: the operator
    # retries with backoff and still converges to exactly one trainer Job and a status.
    kmock["post /apis/batch/v1/namespaces/default/jobs"][:2] << 500
    kmock["patch /apis/m2rl.io/v1alpha1/namespaces/default/rlvrruns/tiny/status"][:1] << 409
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run())
        job = await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
        assert job["metadata"]["annotations"] == {"m2rl.io/attempt": "0"}
        # A status refresh may land while the Job is still being retried (Pending, Creating): wait
        # for the state the operator converges to.
        status = await eventually(
            lambda: (
                status_of(kmock, "rlvrruns", "tiny").get("phase") == "Pending"
                and conditions(status_of(kmock, "rlvrruns", "tiny")).get("Created", ("", ""))[0] == "True"
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert conditions(status)["Created"] == ("True", "ChildrenCreated")
    # Three attempts reached the server: two answered 500, the third created the Job.
    job_posts = kmock["post /apis/batch/v1/namespaces/default/jobs"]
    assert len(list(job_posts)) >= 3


async def test_finished_run_is_deleted_after_its_ttl(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(ttlSecondsAfterFinished=0))
        await eventually(lambda: kmock.objects["batch/v1/jobs", NS, "tiny-trainer"])
        await set_job_status(api, "tiny-trainer", COMPLETE)
        # Deleted by the operator (no finalizer of ours holds it; kopf's timer finalizer is released).
        await eventually(lambda: not exists(kmock, RUNS, "tiny"), timeout_s=20)
