"""The operator's handlers run by kopf against kmock's Kubernetes emulator (real HTTP + watch).

The test plays the kubelet, the Job controller and Kueue: it patches children's status, creates
the pods a Job would, suspends and unsuspends Jobs as Kueue does. The emulator does no garbage
collection or defaulting (see tests/support/kopf_kmock.py); `collect_garbage` below deletes what
owner references would, and builders are checked for the rest in tests/unit/operator.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from m2rl_operator.settings import LeaderElection, OperatorOptions
from m2rl_trainer.train.metrics import MetricsSink
from m2rl_trainer.utils.processes import free_port
from tests.support.kmock_fast import FastKubernetesEmulator
from tests.support.kopf_kmock import (
    CORE_RESOURCES,
    M2RL_RESOURCES,
    declare_resources,
    eventually,
    running_operator,
)

# uids, resourceVersions and generations as a real API server stamps them (kopf's indexes need uids).
pytestmark = pytest.mark.kmock(cls=FastKubernetesEmulator)
HANDLERS = ["m2rl_operator.handlers"]
NS = "default"
RUNS = "m2rl.io/v1alpha1/rlvrruns"
JOBS = "batch/v1/jobs"
TINY = yaml.safe_load(
    (Path(__file__).parents[2] / "unit" / "operator" / "cases" / "tiny-cpu.yaml").read_text()
)
RUN_CHILDREN = [
    ("v1/configmaps", "tiny-config"),
    ("v1/services", "tiny-verifier"),
    ("networking.k8s.io/v1/networkpolicies", "tiny-verifier"),
    ("apps/v1/deployments", "tiny-verifier"),
    ("v1/services", "tiny-trainer"),
    (JOBS, "tiny-trainer"),
]
LEASES = {"coordination.k8s.io/v1/leases": ("Lease", True, ())}
TEST_AGENT = "test-as-the-cluster"


def tiny_run(name: str = "tiny", *, queue: str | None = None, **spec_changes: Any) -> dict[str, Any]:
    """The tiny CPU run, without Kueue unless `queue` names a LocalQueue."""
    run = copy.deepcopy(TINY)
    run["metadata"] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "generation": 1,
        "resourceVersion": "1",
    }
    del run["spec"]["queueName"]
    if queue:
        run["spec"]["queueName"] = queue
    run["spec"].update(spec_changes)
    return run


def server_mode(replicas: int = 2) -> dict[str, Any]:
    return {"mode": "server", "replicas": replicas, "gpusPerReplica": 0}


@pytest.fixture
def trainer_metrics(tmp_path: Path) -> Any:
    """The trainer's own metrics endpoint (what rank 0 serves on :9400), for the run "tiny"."""
    port = free_port()
    sink = MetricsSink(tmp_path / "metrics.jsonl", port, "tiny")
    yield f"http://127.0.0.1:{port}/metrics", sink
    sink.close()


@pytest.fixture
async def api(kmock: Any) -> AsyncIterator[client.ApiClient]:
    declare_resources(kmock, CORE_RESOURCES | M2RL_RESOURCES | LEASES)
    async with client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/"))) as api_client:
        api_client.user_agent = TEST_AGENT  # the operator's own client says OpenAPI-Generator
        yield api_client


def memo(metrics_url: str = "http://127.0.0.1:9/metrics", **extra: Any) -> dict[str, Any]:
    options = OperatorOptions(
        metrics_port=None, status_interval_s=0.5, dependency_retry_s=0.3, scrape_timeout_s=1, **extra
    )
    return {"options": options, "trainer_metrics_url": lambda namespace, name: metrics_url}


@pytest.fixture(autouse=True)
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Timer intervals are fixed when kopf registers the handlers (module import): 0.5 s here.
    monkeypatch.setenv("M2RL_STATUS_INTERVAL_S", "0.5")


# ---- the test as the cluster ------------------------------------------------------------------------


async def create(api: client.ApiClient, plural: str, obj: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).create_namespaced_custom_object("m2rl.io", "v1alpha1", NS, plural, obj)


async def patch_custom(api: client.ApiClient, plural: str, name: str, patch: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "m2rl.io", "v1alpha1", NS, plural, name, patch, _content_type="application/merge-patch+json"
    )


async def set_job_status(api: client.ApiClient, name: str, status: dict[str, Any]) -> None:
    await client.BatchV1Api(api).patch_namespaced_job_status(name, NS, {"status": status})


async def kueue_sets_suspend(api: client.ApiClient, name: str, suspend: bool) -> None:
    """What Kueue's jobframework reconciler does on admission (false) or eviction (true)."""
    await client.BatchV1Api(api).patch_namespaced_job(name, NS, {"spec": {"suspend": suspend}})


async def create_pod(
    kmock: Any, api: client.ApiClient, job: str, index: int, *, phase: str = "Running", result: Any = None
) -> str:
    """A pod of `job` as the Job controller makes it (the template's labels, job-name, the
    completion index), with the status the kubelet reports (`result`: its termination message)."""
    template = kmock.objects[JOBS, NS, job]["spec"]["template"]
    name = f"{job}-{index}-x{len(list(kmock.objects.keys()))}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {**template["metadata"]["labels"], "job-name": job},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "creationTimestamp": "2026-11-22T03:00:00Z",
        },
        "spec": {"containers": [{"name": "main", "image": "m2rl"}]},
    }
    await client.CoreV1Api(api).create_namespaced_pod(NS, pod)
    state = (
        {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(result)}}
        if phase == "Succeeded"
        else {"running": {}}
    )
    status = {
        "phase": phase,
        "containerStatuses": [
            {"name": "main", "image": "m2rl", "imageID": "m2rl@sha256:0", "ready": phase == "Running",
             "restartCount": 0, "state": state}
        ],
    }  # fmt: skip
    await client.CoreV1Api(api).patch_namespaced_pod_status(name, NS, {"status": status})
    return name


async def collect_garbage(kmock: Any, api: client.ApiClient, owner_uid: str) -> list[str]:
    """Kubernetes' garbage collector for one deleted owner: delete every object whose owner
    references name it (kmock has no garbage collector). Returns what it deleted."""
    deleted = []
    for (resource, namespace, name), obj in list(kmock.objects.items()):
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        if obj.deleted or owner_uid not in [r["uid"] for r in refs]:
            continue
        path = f"/{'api' if resource.group == '' else 'apis/' + resource.group}/{resource.version}"
        await api.call_api(f"{path}/namespaces/{namespace}/{resource.plural}/{name}", "DELETE")
        deleted.append(f"{resource.plural}/{name}")
    return sorted(deleted)


def exists(kmock: Any, resource: str, name: str) -> bool:
    """Whether the emulator holds the object, not deleted (its `in` does not take string resource keys)."""
    try:
        return not kmock.objects[resource, NS, name].deleted
    except KeyError:
        return False


def obj(kmock: Any, resource: str, name: str) -> dict[str, Any]:
    return kmock.objects[resource, NS, name]


def status_of(kmock: Any, plural: str, name: str) -> dict[str, Any]:
    return kmock.objects[f"m2rl.io/v1alpha1/{plural}", NS, name].get("status") or {}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def condition_message(status: dict[str, Any], type_: str) -> str:
    return next(c["message"] for c in status.get("conditions") or [] if c["type"] == type_)


async def phase_is(kmock: Any, plural: str, name: str, phase: str, timeout_s: float = 10.0) -> dict[str, Any]:
    return await eventually(  # type: ignore[no-any-return]
        lambda: status_of(kmock, plural, name).get("phase") == phase and status_of(kmock, plural, name),
        timeout_s=timeout_s,
    )


def job_writes(kmock: Any, name: str) -> list[Any]:
    """PATCH/PUT requests of the Job (not its status) that the operator sent (not the test)."""
    return [
        r
        for r in list(kmock)
        if r.method.name in ("PATCH", "PUT")
        and r.url.path.endswith(f"/jobs/{name}")
        and r.headers.get("User-Agent") != TEST_AGENT
    ]


COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}], "failed": 1}
DISRUPTED = {
    "conditions": [
        {
            "type": "Failed",
            "status": "True",
            "reason": "PodFailurePolicy",
            "message": "Pod default/tiny-trainer-0-abc has condition DisruptionTarget "
            "matching FailJob rule at index 0",
        }
    ],
    "failed": 1,
}


# ---- RLVRRun ---------------------------------------------------------------------------------------


async def test_run_lifecycle_children_status_progress_success_and_scale_down(
    kmock: Any, api: Any, trainer_metrics: Any
) -> None:
    url, trainer = trainer_metrics
    async with running_operator(kmock, HANDLERS, memo(url)):
        await create(
            api, "rlvrruns", tiny_run(rollout=server_mode(2), checkpoint={"everySteps": 10, "keep": 0})
        )
        for plural, name in [*RUN_CHILDREN, ("apps/v1/statefulsets", "tiny-rollout"),
                             ("networking.k8s.io/v1/networkpolicies", "tiny-rollout")]:  # fmt: skip
            child = await eventually(lambda p=plural, n=name: kmock.objects[p, NS, n])
            (owner,) = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
                "RLVRRun", "tiny", "uid-tiny", True,
            )  # fmt: skip
        # The checkpoint claim it created is not owned: it outlives the run.
        claim = await eventually(lambda: kmock.objects["v1/persistentvolumeclaims", NS, "tiny-checkpoints"])
        assert "ownerReferences" not in claim["metadata"]
        assert claim["metadata"]["annotations"] == {"m2rl.io/keep-on-delete": "true"}
        assert obj(kmock, "apps/v1/statefulsets", "tiny-rollout")["spec"]["replicas"] == 2
        status = await eventually(
            lambda: (
                conditions(status_of(kmock, "rlvrruns", "tiny")).get("Created", ("", ""))[0] == "True"
                and status_of(kmock, "rlvrruns", "tiny")
            )
        )
        assert status["phase"] == "Pending"
        counts = (status["totalSteps"], status["restarts"], status["attempt"], status["observedGeneration"])
        assert counts == (
            20, 0, 0, 1,
        )  # fmt: skip
        assert "Queued" not in conditions(status)  # no Kueue

        # The kubelet reports: verifier and rollout ready, trainer running at step 12 with rewards.
        await client.AppsV1Api(api).patch_namespaced_deployment_status(
            "tiny-verifier", NS, {"status": {"readyReplicas": 1}}
        )
        await client.AppsV1Api(api).patch_namespaced_stateful_set_status(
            "tiny-rollout", NS, {"status": {"replicas": 2, "readyReplicas": 2}}
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
        assert conditions(status)["RolloutReady"] == ("True", "ReplicasReady")
        assert status["domains"] == [{"name": "arith", "reward": 0.25, "accuracy": 0.5}]
        assert status["latestCheckpoint"] == {
            "uri": "pvc://tiny-checkpoints/tiny/checkpoints/step-000010/model",
            "step": 10,
        }

        await set_job_status(api, "tiny-trainer", COMPLETE)
        status = await phase_is(kmock, "rlvrruns", "tiny", "Succeeded")
        assert status["finalModel"] == "pvc://tiny-checkpoints/tiny/checkpoints/step-000020/model"
        assert status["step"] == 20
        assert conditions(status)["Succeeded"] == ("True", "TrainingComplete")
        assert "completionTime" in status
        # Compute freed at once: rollout servers and verifier scaled to zero.
        await eventually(lambda: obj(kmock, "apps/v1/statefulsets", "tiny-rollout")["spec"]["replicas"] == 0)
        await eventually(lambda: obj(kmock, "apps/v1/deployments", "tiny-verifier")["spec"]["replicas"] == 0)
    # Server-side label selectors: the API server was asked only for the operator's children.
    watches = {
        r.url.path.rsplit("/", 1)[-1]: r.params.get("labelSelector")
        for r in list(kmock)
        if r.params.get("watch") == "true"
    }
    for plural in ("jobs", "statefulsets", "deployments", "pods"):
        assert watches[plural] == "app.kubernetes.io/managed-by=m2rl-operator", plural
    assert not {"configmaps", "services", "networkpolicies"} & set(watches)  # created, never read
    assert [r.params.get("fieldSelector") for r in list(kmock) if r.url.path.endswith("/events")
            and r.params.get("watch") == "true"][:1] == ["reason=FailedCreate"]  # fmt: skip


async def test_suspend_deletes_the_trainer_and_resume_recreates_it(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        await patch_custom(api, "rlvrruns", "tiny", {"spec": {"suspend": True}})
        await eventually(lambda: not exists(kmock, JOBS, "tiny-trainer"))
        deletes = [
            r for r in list(kmock) if r.method.name == "DELETE" and r.url.path.endswith("/jobs/tiny-trainer")
        ]
        assert [r.params.get("propagationPolicy") for r in deletes] == ["Foreground"]
        await eventually(lambda: obj(kmock, "apps/v1/deployments", "tiny-verifier")["spec"]["replicas"] == 0)
        status = await phase_is(kmock, "rlvrruns", "tiny", "Suspended")
        assert conditions(status)["Suspended"] == ("True", "SpecSuspend")
        assert conditions(status)["Created"] == ("True", "ChildrenCreated")
        await patch_custom(api, "rlvrruns", "tiny", {"spec": {"suspend": False}})
        job = await eventually(
            lambda: exists(kmock, JOBS, "tiny-trainer") and obj(kmock, JOBS, "tiny-trainer")
        )
        assert "suspend" not in job["spec"]  # not Kueue's: created running
        await eventually(lambda: obj(kmock, "apps/v1/deployments", "tiny-verifier")["spec"]["replicas"] == 1)
        await phase_is(kmock, "rlvrruns", "tiny", "Pending")
        assert job_writes(kmock, "tiny-trainer") == []  # the operator never writes a Job's spec


async def test_kueue_owns_suspend_and_gates_rollout_and_verifier(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(queue="gpu-queue", rollout=server_mode(2)))
        job = await eventually(lambda: obj(kmock, JOBS, "tiny-trainer"))
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        for resource, name in (
            ("apps/v1/statefulsets", "tiny-rollout"),
            ("apps/v1/deployments", "tiny-verifier"),
        ):
            child = await eventually(lambda r=resource, n=name: obj(kmock, r, n))
            assert child["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
            assert child["spec"]["replicas"] == 0  # nothing holds GPUs before the trainer is admitted
        status = await phase_is(kmock, "rlvrruns", "tiny", "Queued")
        assert conditions(status)["Queued"] == ("True", "AwaitingAdmission")

        await kueue_sets_suspend(api, "tiny-trainer", False)  # admitted
        await eventually(lambda: obj(kmock, "apps/v1/statefulsets", "tiny-rollout")["spec"]["replicas"] == 2)
        await eventually(lambda: obj(kmock, "apps/v1/deployments", "tiny-verifier")["spec"]["replicas"] == 1)
        status = await phase_is(kmock, "rlvrruns", "tiny", "Pending")
        assert conditions(status)["Queued"] == ("False", "Admitted")

        # Kueue evicts it (preemption): the operator scales down and never unsuspends the Job,
        # not on refresh, not on a spec update.
        await kueue_sets_suspend(api, "tiny-trainer", True)
        await phase_is(kmock, "rlvrruns", "tiny", "Queued")
        await eventually(lambda: obj(kmock, "apps/v1/statefulsets", "tiny-rollout")["spec"]["replicas"] == 0)
        await patch_custom(api, "rlvrruns", "tiny", {"spec": {"verifier": {"replicas": 2, "concurrency": 2}}})
        await asyncio.sleep(1.5)  # three status refreshes
        assert obj(kmock, JOBS, "tiny-trainer")["spec"]["suspend"] is True
        assert obj(kmock, "apps/v1/deployments", "tiny-verifier")["spec"]["replicas"] == 0
        assert job_writes(kmock, "tiny-trainer") == []

        # Re-admitted with the updated spec: the StatefulSet comes back from zero, the verifier at 2.
        await client.AppsV1Api(api).patch_namespaced_stateful_set_status(
            "tiny-rollout", NS, {"status": {"replicas": 0}}
        )
        await kueue_sets_suspend(api, "tiny-trainer", False)
        await eventually(lambda: obj(kmock, "apps/v1/deployments", "tiny-verifier")["spec"]["replicas"] == 2)
        await eventually(lambda: obj(kmock, "apps/v1/statefulsets", "tiny-rollout")["spec"]["replicas"] == 2)


async def test_restarts_wait_for_old_pods_disruptions_are_not_counted(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(maxRestarts=1))
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        pod = await create_pod(kmock, api, "tiny-trainer", 0)
        await set_job_status(api, "tiny-trainer", FAILED)
        # The failed Job is deleted in the foreground; the Service now selects attempt 1 only; no new
        # Job while a pod of attempt 0 is left.
        await eventually(lambda: not exists(kmock, JOBS, "tiny-trainer"))
        status = await eventually(
            lambda: (
                (s := status_of(kmock, "rlvrruns", "tiny")).get("attempt") == 1
                and conditions(s).get("Training", ("", ""))[1] == "Restarting"
                and s
            )
        )
        assert status["restarts"] == 1
        assert condition_message(status, "Training") == (
            "waiting for 1 trainer pod(s) of an earlier attempt to terminate"
        )
        assert obj(kmock, "v1/services", "tiny-trainer")["spec"]["selector"]["m2rl.io/attempt"] == "1"
        await asyncio.sleep(1.0)  # two status refreshes
        assert not exists(kmock, JOBS, "tiny-trainer")
        await client.CoreV1Api(api).delete_namespaced_pod(pod, NS)
        job = await eventually(
            lambda: exists(kmock, JOBS, "tiny-trainer") and obj(kmock, JOBS, "tiny-trainer")
        )
        assert job["metadata"]["labels"]["m2rl.io/attempt"] == "1"
        assert job["spec"]["template"]["metadata"]["labels"]["m2rl.io/attempt"] == "1"

        # A disruption (node drain: the pod's DisruptionTarget condition) restarts, not counted.
        await set_job_status(api, "tiny-trainer", DISRUPTED)
        await eventually(
            lambda: (
                exists(kmock, JOBS, "tiny-trainer")
                and obj(kmock, JOBS, "tiny-trainer")["metadata"]["labels"]["m2rl.io/attempt"] == "2"
            )
        )
        assert (
            status_of(kmock, "rlvrruns", "tiny")["restarts"],
            status_of(kmock, "rlvrruns", "tiny")["attempt"],
        ) == (1, 2)

        # A second failure exceeds maxRestarts 1: Failed, nothing recreated.
        await set_job_status(api, "tiny-trainer", FAILED)
        status = await phase_is(kmock, "rlvrruns", "tiny", "Failed")
        assert conditions(status)["Failed"] == ("True", "TrainerFailed")
        assert status["restarts"] == 1
        assert obj(kmock, JOBS, "tiny-trainer")["metadata"]["labels"]["m2rl.io/attempt"] == "2"


async def test_deadline_is_final_and_pod_creation_failures_reach_status(kmock: Any, api: Any) -> None:
    # The API server refuses the NetworkPolicy (an admission webhook): Created False, with its message.
    kmock["post /apis/networking.k8s.io/v1/namespaces/default/networkpolicies"][:1] << 403 << {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": 'admission webhook "policy.example" denied the request: no egress rules allowed',
    }  # fmt: skip
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(activeDeadlineSeconds=3600))
        status = await eventually(
            lambda: (
                conditions(s := status_of(kmock, "rlvrruns", "tiny")).get("Created", ("", ""))[1]
                == "CreateFailed"
                and s
            )
        )
        assert condition_message(status, "Created") == (
            'NetworkPolicy/tiny-verifier: admission webhook "policy.example" denied the request: '
            "no egress rules allowed"
        )
        # The next refresh creates it: the condition clears.
        await eventually(lambda: conditions(status_of(kmock, "rlvrruns", "tiny"))["Created"][0] == "True")
        job = obj(kmock, JOBS, "tiny-trainer")
        assert job["spec"]["activeDeadlineSeconds"] == 3600

        # The Job controller cannot create pods (Pod Security admission): its FailedCreate Event.
        message = (
            'pods "tiny-trainer-0-x" is forbidden: violates PodSecurity "restricted:latest": '
            'runAsNonRoot != true (pod or container "trainer" must set securityContext.runAsNonRoot=true)'
        )
        event = {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "tiny-trainer.1", "namespace": NS},
            "involvedObject": {"kind": "Job", "namespace": NS, "name": "tiny-trainer",
                               "uid": job["metadata"]["uid"], "apiVersion": "batch/v1"},
            "reason": "FailedCreate", "message": f"Error creating: {message}", "type": "Warning",
            "lastTimestamp": "2026-11-22T03:00:00Z",
        }  # fmt: skip
        await client.CoreV1Api(api).create_namespaced_event(NS, event)
        status = await eventually(
            lambda: (
                conditions(s := status_of(kmock, "rlvrruns", "tiny")).get("ReplicaFailure", ("",))[0]
                == "True"
                and s
            )
        )
        assert conditions(status)["ReplicaFailure"] == ("True", "FailedCreate")
        assert condition_message(status, "ReplicaFailure") == f"Job/tiny-trainer: Error creating: {message}"
        await set_job_status(api, "tiny-trainer", {"active": 1})  # pods after all: cleared
        await eventually(
            lambda: conditions(status_of(kmock, "rlvrruns", "tiny"))["ReplicaFailure"][0] == "False"
        )

        # Past activeDeadlineSeconds: Failed for good (maxRestarts 3 notwithstanding).
        await set_job_status(
            api, "tiny-trainer",
            {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                             "message": "Job was active longer than specified deadline"}]},
        )  # fmt: skip
        status = await phase_is(kmock, "rlvrruns", "tiny", "Failed")
        assert conditions(status)["Failed"] == ("True", "DeadlineExceeded")
        assert status["restarts"] == 0
        assert exists(kmock, JOBS, "tiny-trainer")


async def test_mutable_fields_take_effect_and_invalid_spec_clears(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(rollout=server_mode(1)))
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        config = obj(kmock, "v1/configmaps", "tiny-config")["data"]["trainer.yaml"]
        assert yaml.safe_load(config)["rollout"]["server_urls"] == [
            "http://tiny-rollout-0.tiny-rollout.default.svc:8000"
        ]
        # More rollout servers and verifiers: scaled; the trainer (which reads its config once) is
        # restarted with the new server list, not counted as a failure.
        await patch_custom(
            api, "rlvrruns", "tiny",
            {"spec": {"rollout": {**server_mode(2)}, "verifier": {"replicas": 3, "concurrency": 2}}},
        )  # fmt: skip
        await eventually(lambda: obj(kmock, "apps/v1/statefulsets", "tiny-rollout")["spec"]["replicas"] == 2)
        await eventually(lambda: obj(kmock, "apps/v1/deployments", "tiny-verifier")["spec"]["replicas"] == 3)

        def server_urls() -> list[str]:
            config = obj(kmock, "v1/configmaps", "tiny-config")["data"]["trainer.yaml"]
            return yaml.safe_load(config)["rollout"]["server_urls"]  # type: ignore[no-any-return]

        await eventually(lambda: len(server_urls()) == 2)
        job = await eventually(
            lambda: (
                exists(kmock, JOBS, "tiny-trainer")
                and obj(kmock, JOBS, "tiny-trainer")["metadata"]["labels"]["m2rl.io/attempt"] == "1"
                and obj(kmock, JOBS, "tiny-trainer")
            )
        )
        assert (
            status_of(kmock, "rlvrruns", "tiny")["restarts"],
            status_of(kmock, "rlvrruns", "tiny")["attempt"],
        ) == (0, 1)
        assert job["metadata"]["annotations"]["m2rl.io/config-hash"] != ""

    bad = tiny_run("fixme")
    bad["spec"]["domains"][0]["dataset"]["uri"] = "hf://org/data"
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", bad)
        status = await phase_is(kmock, "rlvrruns", "fixme", "Failed")
        assert conditions(status) == {"Failed": ("True", "InvalidSpec")}
        assert not exists(kmock, JOBS, "fixme-trainer")
        await patch_custom(api, "rlvrruns", "fixme", {"spec": {"domains": TINY["spec"]["domains"]}})
        await eventually(lambda: exists(kmock, JOBS, "fixme-trainer"))
        status = await phase_is(kmock, "rlvrruns", "fixme", "Pending")
        assert conditions(status)["Failed"] == ("False", "NotFailed")


async def test_outputs_survive_deletion_and_ttl(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(checkpoint={"everySteps": 10}, ttlSecondsAfterFinished=0))
        await create(api, "rlvrruns", tiny_run("owned", checkpoint={"everySteps": 10, "deleteWithRun": True}))
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer") and exists(kmock, JOBS, "owned-trainer"))
        await set_job_status(api, "tiny-trainer", COMPLETE)
        # Deleted by the operator after its TTL (no finalizer of ours holds it).
        await eventually(lambda: not exists(kmock, RUNS, "tiny"), timeout_s=20)
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "m2rl.io", "v1alpha1", NS, "rlvrruns", "owned"
    )
    gone = await collect_garbage(kmock, api, "uid-tiny")
    assert gone == [
        "configmaps/tiny-config", "deployments/tiny-verifier", "jobs/tiny-trainer",
        "networkpolicies/tiny-verifier",
        "services/tiny-trainer", "services/tiny-verifier",
    ]  # fmt: skip
    assert exists(kmock, "v1/persistentvolumeclaims", "tiny-checkpoints")  # checkpoints and final model kept
    assert "persistentvolumeclaims/owned-checkpoints" in await collect_garbage(kmock, api, "uid-owned")


async def test_operator_restart_mid_reconcile_creates_no_duplicates(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
    # As if the operator died after creating only part of the children:
    await client.BatchV1Api(api).delete_namespaced_job("tiny-trainer", NS)
    await client.CoreV1Api(api).delete_namespaced_service("tiny-trainer", NS)
    async with running_operator(kmock, HANDLERS, memo()):
        await eventually(
            lambda: exists(kmock, JOBS, "tiny-trainer") and exists(kmock, "v1/services", "tiny-trainer")
        )
    owned = [
        (o["kind"], key[2])
        for key, o in kmock.objects.items()
        if not o.deleted
        and [r["uid"] for r in o.get("metadata", {}).get("ownerReferences", [])] == ["uid-tiny"]
    ]
    kinds = {
        "v1/configmaps": "ConfigMap",
        "v1/services": "Service",
        JOBS: "Job",
        "networking.k8s.io/v1/networkpolicies": "NetworkPolicy",
        "apps/v1/deployments": "Deployment",
    }
    assert sorted(owned) == sorted((kinds[plural], name) for plural, name in RUN_CHILDREN)


async def test_injected_500_and_409_answers_are_retried(kmock: Any, api: Any) -> None:
    # The first two Job creations answer 500, the first status patch of the run 409: the operator
    # retries with backoff and still converges to exactly one trainer Job and a status.
    kmock["post /apis/batch/v1/namespaces/default/jobs"][:2] << 500
    kmock["patch /apis/m2rl.io/v1alpha1/namespaces/default/rlvrruns/tiny/status"][:1] << 409
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run())
        job = await eventually(lambda: kmock.objects[JOBS, NS, "tiny-trainer"])
        assert job["metadata"]["annotations"]["m2rl.io/attempt"] == "0"
        status = await eventually(
            lambda: (
                conditions(s := status_of(kmock, "rlvrruns", "tiny")).get("Created", ("", ""))[0] == "True"
                and s.get("phase") == "Pending"
                and s
            )
        )
        assert conditions(status)["Created"] == ("True", "ChildrenCreated")
    # More than one attempt reached the server: the first answered 500, a later one created the Job.
    job_posts = kmock["post /apis/batch/v1/namespaces/default/jobs"]
    assert len(list(job_posts)) >= 2


async def test_leader_election_one_replica_acts_and_a_standby_takes_over(kmock: Any, api: Any) -> None:
    election = dict(
        enabled=True, namespace=NS, retry_period_s=0.2, renew_deadline_s=1.0, lease_duration_s=2.0
    )
    lost: list[str] = []
    health = free_port()
    first = memo(leader_election=LeaderElection(identity="replica-a", **election))
    second = memo(
        leader_election=LeaderElection(identity="replica-b", standby_health_port=health, **election)
    )
    first["on_leadership_lost"] = lambda: lost.append("a")  # not SIGTERM: this is the test's process
    second["on_leadership_lost"] = lambda: lost.append("b")
    async with running_operator(kmock, HANDLERS, first):
        lease = await eventually(lambda: obj(kmock, "coordination.k8s.io/v1/leases", "m2rl-operator"))
        assert lease["spec"]["holderIdentity"] == "replica-a"
        standby = running_operator(kmock, HANDLERS, second, start_timeout_s=30)
        entered = asyncio.ensure_future(standby.__aenter__())
        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        await asyncio.sleep(1.0)
        assert not entered.done()  # replica-b waits: no watches, no handlers
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{health}/healthz") as reply,
        ):
            assert (reply.status, await reply.json()) == (200, {"standby": True})  # its liveness probe
    # replica-a stops and releases the Lease: replica-b leads and reconciles.
    await entered
    try:
        assert (
            obj(kmock, "coordination.k8s.io/v1/leases", "m2rl-operator")["spec"]["holderIdentity"]
            == "replica-b"
        )
        await create(api, "rlvrruns", tiny_run("second"))
        await eventually(lambda: exists(kmock, JOBS, "second-trainer"))
    finally:
        await standby.__aexit__(None, None, None)
    assert lost == []


# ---- MergeJob and EvalSuite ------------------------------------------------------------------------

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
        "output": {"uri": "pvc://results/ev"},
    },
}


async def test_merge_and_eval_wait_for_dependencies_and_are_not_re_resolved(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "mergejobs", copy.deepcopy(MERGE))
        await create(api, "evalsuites", copy.deepcopy(EVAL))
        status = await phase_is(kmock, "mergejobs", "avg", "Waiting")
        assert status["waitingFor"] == ["RLVRRun/tiny"]
        assert conditions(status) == {"WaitingForDependencies": ("True", "Waiting")}
        status = await phase_is(kmock, "evalsuites", "ev", "Waiting")
        assert status["waitingFor"] == ["MergeJob/avg"]

        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        await set_job_status(api, "tiny-trainer", COMPLETE)
        job = await eventually(lambda: kmock.objects[JOBS, NS, "avg-merge"], timeout_s=15)
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
        assert not exists(kmock, JOBS, "ev-eval")
        analysis = {
            "taskVectorNorms": {"tiny": 1.5, "other": 0.5},
            "pairwiseCosine": [{"first": "tiny", "second": "other", "cosine": 0.25}],
            "signConflictFraction": 0.125,
            "reportFile": "m2rl-analysis/report.json",
        }
        await create_pod(kmock, api, "avg-merge", 0, phase="Succeeded", result={"analysis": analysis})
        await set_job_status(api, "avg-merge", COMPLETE)
        status = await phase_is(kmock, "mergejobs", "avg", "Succeeded")
        assert status["outputModel"] == "pvc://checkpoints/merges/avg"
        assert status["analysis"] == {
            "taskVectorNorms": {"tiny": 1.5, "other": 0.5},
            "pairwiseCosine": [{"first": "tiny", "second": "other", "cosine": 0.25}],
            "signConflictFraction": 0.125,
            "reportUri": "pvc://checkpoints/merges/avg/m2rl-analysis/report.json",
        }
        assert conditions(status) == {
            "WaitingForDependencies": ("False", "DependenciesReady"),
            "Created": ("True", "ChildrenCreated"),
            "ReplicaFailure": ("False", "PodsCreated"),
            "Succeeded": ("True", "MergeComplete"),
            "Failed": ("False", "NotFailed"),
        }
        job = await eventually(lambda: kmock.objects[JOBS, NS, "ev-eval"], timeout_s=15)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"][-2:] == ["--output", "/mnt/pvc/results/ev"]  # outputs written, kept
        mounts = {
            m["mountPath"]: m["readOnly"]
            for m in container["volumeMounts"]
            if m["mountPath"].startswith("/mnt")
        }
        assert mounts == {"/mnt/pvc/datasets": True, "/mnt/pvc/results": False, "/mnt/pvc/checkpoints": True}
        # Index 1 (model "merged") finishes first; the table fills as pods report.
        await create_pod(
            kmock, api, "ev-eval", 1, phase="Succeeded", result={"model": "merged", "cells": [[40, 0.75]]}
        )
        await set_job_status(api, "ev-eval", {"active": 1, "succeeded": 1})
        status = await eventually(
            lambda: (
                (s := status_of(kmock, "evalsuites", "ev")).get("cellsSucceeded") == 1
                and s.get("phase") == "Running"
                and s
            )
        )
        assert [(c["model"], c["benchmark"], c["phase"]) for c in status["results"]] == [
            ("base", "arith", "Running"),
            ("merged", "arith", "Succeeded"),
        ]
        assert status["results"][1]["metrics"] == {"avg@k": 0.75}
        assert status["results"][1]["prompts"] == 40
        await create_pod(
            kmock, api, "ev-eval", 0, phase="Succeeded", result={"model": "base", "cells": [[40, 0.5]]}
        )
        await set_job_status(api, "ev-eval", COMPLETE)
        status = await phase_is(kmock, "evalsuites", "ev", "Succeeded")
        assert (status["cellsTotal"], status["cellsSucceeded"]) == (2, 2)
        assert {c["model"]: c["metrics"]["avg@k"] for c in status["results"]} == {"base": 0.5, "merged": 0.75}

    # The run is deleted (say, by its TTL); an operator restart resumes the finished merge without
    # resolving its references again: it stays Succeeded.
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "m2rl.io", "v1alpha1", NS, "rlvrruns", "tiny"
    )
    async with running_operator(kmock, HANDLERS, memo()):
        await asyncio.sleep(1.0)
        assert status_of(kmock, "mergejobs", "avg")["phase"] == "Succeeded"
        assert status_of(kmock, "evalsuites", "ev")["phase"] == "Succeeded"


async def test_failed_dependency_fails_the_merge(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(maxRestarts=0))
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        await set_job_status(api, "tiny-trainer", FAILED)
        await phase_is(kmock, "rlvrruns", "tiny", "Failed")
        await create(api, "mergejobs", copy.deepcopy(MERGE))
        status = await phase_is(kmock, "mergejobs", "avg", "Failed")
        assert conditions(status) == {"WaitingForDependencies": ("False", "DependencyFailed")}
        assert not exists(kmock, JOBS, "avg-merge")


# ---- MT-OPD and agent domains ----------------------------------------------------------------------


def student_run() -> dict[str, Any]:
    """An MT-OPD run whose arith teacher is the RLVRRun "tiny" (server mode: its own vLLM
    StatefulSet) and whose agent domain is taught by a model on a volume."""
    run = tiny_run("student", rollout=server_mode(1), teacherServers={"gpusPerReplica": 0})
    spec = run["spec"]
    spec["domains"].append(
        {
            "name": "agent",
            "dataset": {"uri": "pvc://datasets/blend/train.jsonl", "format": "nemotron"},
            "verifier": {"type": "agent"},
        }
    )
    spec["algorithm"].update(
        type="mt_opd",
        teachers=[
            {"domains": ["arith"], "runRef": "tiny"},
            {"domains": ["agent"], "model": "pvc://models/agent-expert"},
        ],
    )
    spec["agent"] = {"maxTurns": 4}
    spec["checkpoint"]["uri"] = "pvc://checkpoints/runs/student"
    return run


async def test_mt_opd_run_waits_for_its_teachers_then_serves_them(kmock: Any, api: Any) -> None:
    teacher_sets = ("student-teacher-0", "student-teacher-1")
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", student_run())
        status = await phase_is(kmock, "rlvrruns", "student", "Waiting")
        assert status["waitingFor"] == ["RLVRRun/tiny"]
        assert conditions(status) == {"WaitingForDependencies": ("True", "Waiting")}
        assert not exists(kmock, "v1/configmaps", "student-config")  # nothing is created while it waits
        assert not exists(kmock, JOBS, "student-trainer")

        await create(api, "rlvrruns", tiny_run())
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        await set_job_status(api, "tiny-trainer", COMPLETE)
        await phase_is(kmock, "rlvrruns", "tiny", "Succeeded")

        # The expert succeeded: the student starts, each teacher behind its own vLLM servers.
        job = await eventually(lambda: exists(kmock, JOBS, "student-trainer"), timeout_s=15)
        status = await eventually(
            lambda: (s := status_of(kmock, "rlvrruns", "student")).get("teacherModels") and s
        )
        assert status["teacherModels"] == [
            "pvc://checkpoints/runs/tiny/checkpoints/step-000020/model",
            "pvc://models/agent-expert",
        ]
        assert status["waitingFor"] == []
        assert conditions(status)["WaitingForDependencies"] == ("False", "DependenciesReady")
        for index, name in enumerate(teacher_sets):
            sts = obj(kmock, "apps/v1/statefulsets", name)
            assert sts["metadata"]["ownerReferences"][0]["name"] == "student"
            assert sts["spec"]["replicas"] == 1
            assert sts["spec"]["selector"]["matchLabels"]["m2rl.io/teacher"] == str(index)
            (container,) = sts["spec"]["template"]["spec"]["containers"]
            args = container["args"]
            assert args[args.index("--served-model-name") + 1] == name
            assert exists(kmock, "v1/services", name)
        (container,) = obj(kmock, "apps/v1/statefulsets", teacher_sets[0])["spec"]["template"]["spec"][
            "containers"
        ]
        assert container["args"][1] == "/mnt/pvc/checkpoints/runs/tiny/checkpoints/step-000020/model"
        environment = obj(kmock, "apps/v1/deployments", "student-environment")
        assert environment["spec"]["replicas"] == 1
        config = yaml.safe_load(obj(kmock, "v1/configmaps", "student-config")["data"]["trainer.yaml"])
        assert config["algorithm"]["name"] == "mt-opd"
        assert config["algorithm"]["teachers"] == [
            {
                "domains": ["arith"],
                "server_urls": ["http://student-teacher-0-0.student-teacher-0.default.svc:8000"],
                "served_model_name": "student-teacher-0",
            },
            {
                "domains": ["agent"],
                "server_urls": ["http://student-teacher-1-0.student-teacher-1.default.svc:8000"],
                "served_model_name": "student-teacher-1",
            },
        ]
        assert config["agent"]["environment_url"] == "http://student-environment.default.svc:8090"

        # Readiness reaches the status; the end of the run scales teachers and environment to zero.
        for name in teacher_sets:
            await client.AppsV1Api(api).patch_namespaced_stateful_set_status(
                name, NS, {"status": {"replicas": 1, "readyReplicas": 1}}
            )
        await client.AppsV1Api(api).patch_namespaced_deployment_status(
            "student-environment", NS, {"status": {"readyReplicas": 1}}
        )
        status = await eventually(
            lambda: (
                conditions(s := status_of(kmock, "rlvrruns", "student")).get("TeachersReady", ("",))[0]
                == "True"
                and conditions(s).get("EnvironmentReady", ("",))[0] == "True"
                and s
            )
        )
        assert condition_message(status, "TeachersReady") == "2/2 teacher vLLM servers ready"
        await set_job_status(api, "student-trainer", COMPLETE)
        await phase_is(kmock, "rlvrruns", "student", "Succeeded")
        for name in teacher_sets:
            await eventually(lambda n=name: obj(kmock, "apps/v1/statefulsets", n)["spec"]["replicas"] == 0)
        await eventually(
            lambda: obj(kmock, "apps/v1/deployments", "student-environment")["spec"]["replicas"] == 0
        )
        assert job


async def test_mt_opd_run_fails_when_a_teacher_run_failed(kmock: Any, api: Any) -> None:
    async with running_operator(kmock, HANDLERS, memo()):
        await create(api, "rlvrruns", tiny_run(maxRestarts=0))
        await eventually(lambda: exists(kmock, JOBS, "tiny-trainer"))
        await set_job_status(api, "tiny-trainer", FAILED)
        await phase_is(kmock, "rlvrruns", "tiny", "Failed")
        await create(api, "rlvrruns", student_run())
        status = await phase_is(kmock, "rlvrruns", "student", "Failed")
        assert conditions(status) == {"WaitingForDependencies": ("False", "DependencyFailed")}
        assert "completionTime" in status
        await asyncio.sleep(1.0)  # two status timers later: still nothing created, still Failed
        assert not exists(kmock, "v1/configmaps", "student-config")
        assert status_of(kmock, "rlvrruns", "student")["phase"] == "Failed"
