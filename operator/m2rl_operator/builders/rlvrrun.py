"""RLVRRun -> ConfigMap, checkpoint PVC, trainer (headless Service + Indexed Job), rollout (headless
Service + StatefulSet of vLLM servers), verifier (Deployment + Service + deny-egress NetworkPolicy).

Pure functions: no client, no environment, no logging. The handler adopts (owner references) and
applies what these return.
"""

from __future__ import annotations

from typing import Any

from m2rl_operator import naming
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.builders.common import (
    Manifest,
    claim_volumes,
    config_map,
    config_volume,
    container_extras,
    headless_service,
    local_path,
    metadata,
    pod_placement,
    resources,
    shm_volume,
)
from m2rl_operator.builders.trainer_config import build_trainer_config, run_output_uri
from m2rl_operator.settings import OperatorOptions

KIND = "RLVRRun"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def build_config_map(spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions) -> Manifest:
    return config_map(
        KIND, name, namespace, build_trainer_config(spec, name=name, namespace=namespace, options=options)
    )


def build_checkpoint_claim(spec: RLVRRunSpec, *, name: str, namespace: str) -> Manifest | None:
    """The run's own claim when spec.checkpoint.uri is unset (ReadWriteMany: trainer writes, rollout
    servers reload weights from it, merges and evaluations read it)."""
    if spec.checkpoint.uri:
        return None
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": spec.checkpoint.size}},
    }
    if spec.checkpoint.storage_class_name:
        claim["storageClassName"] = spec.checkpoint.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(naming.checkpoints_claim(name), namespace, KIND, name, naming.CHECKPOINTS),
        "spec": claim,
    }


def _output_claim(name: str, spec: RLVRRunSpec) -> list[str]:
    uri = run_output_uri(name, spec)
    return [uri.removeprefix("pvc://").split("/", 1)[0]] if uri.startswith("pvc://") else []


def build_trainer_service(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions
) -> Manifest:
    ports = {"master": options.ports.master, "metrics": options.ports.trainer_metrics}
    if spec.rollout.mode == "server" and spec.rollout.weight_sync == "nccl":
        ports["nccl"] = options.ports.nccl_weight_sync
    return headless_service(naming.trainer(name), namespace, KIND, name, naming.TRAINER, ports)


ATTEMPT_ANNOTATION = "m2rl.io/attempt"


def build_trainer_job(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions, attempt: int = 0
) -> Manifest:
    """Indexed Job, one pod per node; torchrun inside. `attempt` counts restarts after failures (the
    trainer resumes from the latest checkpoint by itself); it is kept in an annotation."""
    t = spec.trainer
    nproc = max(t.gpus_per_node, 1)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    shm_vol, shm_mount = shm_volume(options)
    uris = [spec.model.uri, *(d.dataset.uri for d in spec.domains), run_output_uri(name, spec)]
    claim_vols, claim_mounts = claim_volumes(uris, _output_claim(name, spec), options)
    env = [
        {"name": "MASTER_ADDR", "value": naming.trainer_host(name, namespace)},
        {"name": "MASTER_PORT", "value": str(options.ports.master)},
        {"name": "NNODES", "value": str(t.nodes)},
        {"name": "NPROC_PER_NODE", "value": str(nproc)},
        {"name": "WORLD_SIZE", "value": str(t.nodes * nproc)},
        {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
        *container_extras(t).get("env", []),
    ]
    container: dict[str, Any] = {
        "name": "trainer",
        "image": t.image or options.images.trainer,
        "command": ["torchrun"],
        "args": [
            "--nnodes",
            "$(NNODES)",
            "--nproc_per_node",
            "$(NPROC_PER_NODE)",
            "--node_rank",
            "$(NODE_RANK)",
            "--master_addr",
            "$(MASTER_ADDR)",
            "--master_port",
            "$(MASTER_PORT)",
            "-m",
            "m2rl_trainer.cli",
            "--config",
            f"{options.config_dir}/{naming.CONFIG_FILE[KIND]}",
        ],
        "env": env,
        "ports": [
            {"name": "master", "containerPort": options.ports.master},
            {"name": "metrics", "containerPort": options.ports.trainer_metrics},
        ],
        "volumeMounts": [config_mount, shm_mount, *claim_mounts],
    }
    if res := resources(t, t.gpus_per_node):
        container["resources"] = res
    pod_labels = naming.labels(KIND, name, naming.TRAINER, spec.queue_name)
    meta = metadata(naming.trainer(name), namespace, KIND, name, naming.TRAINER, spec.queue_name)
    meta["annotations"] = {ATTEMPT_ANNOTATION: str(attempt)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completionMode": "Indexed",
            "completions": t.nodes,
            "parallelism": t.nodes,
            # The operator restarts the whole Job (all ranks, from the latest checkpoint) up to
            # spec.maxRestarts: one lost rank breaks the collective, so pod-level retries do not help.
            "backoffLimit": 0,
            "suspend": spec.suspend,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "subdomain": naming.trainer(name),
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [config_vol, shm_vol, *claim_vols],
                    **pod_placement(t, spec.priority_class_name),
                },
            },
        },
    }


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures}


def build_rollout_service(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions
) -> Manifest:
    return headless_service(
        naming.rollout(name), namespace, KIND, name, naming.ROLLOUT, {"http": options.ports.rollout}
    )


def build_rollout_statefulset(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions
) -> Manifest:
    r = spec.rollout
    port = options.ports.rollout
    args = [
        "--model", local_path(spec.model.uri, options),
        "--served-model-name", name,
        "--host", "0.0.0.0",
        "--port", str(port),
        "--dtype", spec.model.dtype,
        "--max-model-len", str(spec.algorithm.max_prompt_tokens + spec.algorithm.max_response_tokens),
        "--seed", str(spec.algorithm.seed),
    ]  # fmt: skip
    if r.gpus_per_replica > 0:
        args += ["--tensor-parallel-size", str(r.tensor_parallel_size)]
        args += ["--gpu-memory-utilization", str(r.gpu_memory_utilization)]
        if r.gpus_per_replica // r.tensor_parallel_size > 1:
            args += ["--data-parallel-size", str(r.gpus_per_replica // r.tensor_parallel_size)]
    args += list(r.extra_args or [])
    env: list[dict[str, Any]] = []
    if r.weight_sync == "filesystem":
        # reload_weights over /collective_rpc is a dev-mode endpoint of vLLM's OpenAI server.
        env.append({"name": "VLLM_SERVER_DEV_MODE", "value": "1"})
    env += container_extras(r).get("env", [])
    shm_vol, shm_mount = shm_volume(options)
    claim_vols, claim_mounts = claim_volumes([spec.model.uri, run_output_uri(name, spec)], [], options)
    container: dict[str, Any] = {
        "name": "vllm",
        "image": r.image or options.images.rollout,
        "command": ["python", "-m", "vllm.entrypoints.openai.api_server"],
        "args": args,
        "ports": [{"name": "http", "containerPort": port}],
        # Loading a large model (and compiling CUDA graphs) takes minutes: 60 x 10 s before liveness applies.
        "startupProbe": _probe("/health", port, 10, 60),
        "readinessProbe": _probe("/health", port, 10, 3),
        "livenessProbe": _probe("/health", port, 30, 3),
        "volumeMounts": [shm_mount, *claim_mounts],
    }
    if env:
        container["env"] = env
    if res := resources(r, r.gpus_per_replica):
        container["resources"] = res
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(naming.rollout(name), namespace, KIND, name, naming.ROLLOUT),
        "spec": {
            "serviceName": naming.rollout(name),
            "replicas": 0 if spec.suspend else r.replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": naming.selector(KIND, name, naming.ROLLOUT)},
            "template": {
                "metadata": {"labels": naming.labels(KIND, name, naming.ROLLOUT)},
                "spec": {
                    "containers": [container],
                    "volumes": [shm_vol, *claim_vols],
                    **pod_placement(r, spec.priority_class_name),
                },
            },
        },
    }


def build_verifier_deployment(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions
) -> Manifest:
    return verifier_deployment(
        KIND, name, namespace, spec.verifier, spec.suspend, spec.priority_class_name, options
    )


def verifier_deployment(
    kind: str,
    owner: str,
    namespace: str,
    v: Any,
    suspend: bool,
    priority_class_name: str | None,
    options: OperatorOptions,
) -> Manifest:
    """The sandboxed verifier: non-root, read-only root filesystem, no service-account token."""
    port = options.ports.verifier
    container: dict[str, Any] = {
        "name": "verifier",
        "image": v.image or options.images.verifier,
        "command": ["m2rl-verifier", "serve"],
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--python-workers",
            str(v.concurrency),
            "--sandbox-workers",
            str(v.concurrency),
        ],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": _probe("/health", port, 10, 3),
        "livenessProbe": _probe("/health", port, 30, 3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **container_extras(v),
    }
    if res := resources(v, 0):
        container["resources"] = res
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        **pod_placement(v, priority_class_name),
    }
    if v.runtime_class_name:
        pod["runtimeClassName"] = v.runtime_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(naming.verifier(owner), namespace, kind, owner, naming.VERIFIER),
        "spec": {
            "replicas": 0 if suspend else v.replicas,
            "selector": {"matchLabels": naming.selector(kind, owner, naming.VERIFIER)},
            "template": {"metadata": {"labels": naming.labels(kind, owner, naming.VERIFIER)}, "spec": pod},
        },
    }


def verifier_service(kind: str, owner: str, namespace: str, options: OperatorOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(naming.verifier(owner), namespace, kind, owner, naming.VERIFIER),
        "spec": {
            "selector": naming.selector(kind, owner, naming.VERIFIER),
            "ports": [{"name": "http", "port": options.ports.verifier, "targetPort": options.ports.verifier}],
        },
    }


def verifier_network_policy(kind: str, owner: str, namespace: str) -> Manifest:
    """Deny all egress of the verifier pods (model-written code must not reach the network)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(naming.verifier(owner), namespace, kind, owner, naming.VERIFIER),
        "spec": {
            "podSelector": {"matchLabels": naming.selector(kind, owner, naming.VERIFIER)},
            "policyTypes": ["Egress"],
            "egress": [],
        },
    }


def build_rlvrrun(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions, attempt: int = 0
) -> list[Manifest]:
    """Every child of an RLVRRun, in creation order (config and storage before the pods using them)."""
    children: list[Manifest] = [build_config_map(spec, name=name, namespace=namespace, options=options)]
    if claim := build_checkpoint_claim(spec, name=name, namespace=namespace):
        children.append(claim)
    children.append(verifier_service(KIND, name, namespace, options))
    children.append(verifier_network_policy(KIND, name, namespace))
    children.append(build_verifier_deployment(spec, name=name, namespace=namespace, options=options))
    if spec.rollout.mode == "server":
        children.append(build_rollout_service(spec, name=name, namespace=namespace, options=options))
        children.append(build_rollout_statefulset(spec, name=name, namespace=namespace, options=options))
    children.append(build_trainer_service(spec, name=name, namespace=namespace, options=options))
    children.append(build_trainer_job(spec, name=name, namespace=namespace, options=options, attempt=attempt))
    return children
