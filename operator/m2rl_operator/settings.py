"""Operator settings: read once from the environment (the chart sets it), then passed explicitly.

Builders never read the environment: the handlers call `OperatorOptions.from_env()` once at start-up
and hand the result to every builder, so `m2rl render` and the tests build the same manifests from
an options object they construct themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_IMAGE = "ghcr.io/m2rl/trainer:0.1.0"


@dataclass(frozen=True)
class Images:
    """Default images of the pods the operator creates; a resource's own `image` field wins."""

    trainer: str = DEFAULT_IMAGE
    rollout: str = DEFAULT_IMAGE
    verifier: str = DEFAULT_IMAGE
    merge: str = DEFAULT_IMAGE
    eval: str = DEFAULT_IMAGE


@dataclass(frozen=True)
class Ports:
    """Container ports of the children (fixed: the trainer config and probes refer to them)."""

    master: int = 29500  # torchrun rendezvous on trainer rank 0
    nccl_weight_sync: int = 29600  # trainer rank 0 -> vLLM weight broadcast (the trainer's default)
    trainer_metrics: int = 9400  # m2rl_train_* gauges (metrics.prometheus_port)
    rollout: int = 8000  # vLLM OpenAI server
    verifier: int = 8080  # m2rl-verifier serve
    environment: int = 8090  # python -m m2rl_trainer.agent serve (agent domains' tool environment)


@dataclass(frozen=True)
class Requests:
    """CPU and memory requests of one container (Kubernetes quantities)."""

    cpu: str
    memory: str


@dataclass(frozen=True)
class DefaultRequests:
    """Requests of a component's main container where its spec sets none (per key: a spec that
    sets only cpu still gets the default memory; a key with a limit but no request is left to
    Kubernetes, which then requests the limit). Without them a GPU pod is BestEffort: first to be
    evicted under node memory pressure, and the scheduler packs it onto nodes without the host
    memory that loading and sharding a model needs."""

    cpu_per_gpu: int = 4
    """CPU cores per GPU of the trainer, rollout and evaluation pods (data loading, tokenization,
    the NCCL proxy threads)."""
    memory_per_gpu_gi: int = 32
    """GiB of host memory per GPU (pinned buffers, safetensors loading, ZeRO offload staging)."""
    cpu_only: Requests = field(default_factory=lambda: Requests("1", "4Gi"))
    """A component without GPUs (CPU trainer or vLLM, the merge pod, CPU evaluation)."""
    verifier: Requests = field(default_factory=lambda: Requests("1", "2Gi"))
    """A verifier pod (math, IFEval and sandbox workers)."""

    def for_gpus(self, gpus: int) -> Requests:
        if gpus <= 0:
            return self.cpu_only
        return Requests(str(self.cpu_per_gpu * gpus), f"{self.memory_per_gpu_gi * gpus}Gi")


@dataclass(frozen=True)
class LeaderElection:
    """A coordination.k8s.io Lease held by the one active operator replica (client-go's
    leaderelection defaults: 15 s lease, 10 s renew deadline, 2 s retry)."""

    enabled: bool = False
    lease_name: str = "m2rl-operator"
    namespace: str = ""
    """The Lease's namespace: the operator's own (POD_NAMESPACE)."""
    identity: str = ""
    """This replica's name in the Lease (POD_NAME)."""
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    standby_health_port: int | None = None
    """Port on which a standby answers /healthz (kopf's liveness port: its own server starts only
    with the watches, after the Lease is held)."""


@dataclass(frozen=True)
class OperatorOptions:
    """Everything the builders and handlers need besides the resource itself."""

    images: Images = field(default_factory=Images)
    ports: Ports = field(default_factory=Ports)
    pvc_root: str = "/mnt/pvc"
    """Each PersistentVolumeClaim a pod needs is mounted at PVC_ROOT/CLAIM, so pvc://CLAIM/PATH is
    the file PVC_ROOT/CLAIM/PATH in every pod (models, datasets, checkpoints alike)."""
    config_dir: str = "/etc/m2rl"
    """Where the ConfigMap with trainer.yaml / merge.yaml / eval.yaml is mounted."""
    shm_size: str = "16Gi"
    """Size limit of the memory-backed /dev/shm of trainer and rollout pods (NCCL, DataLoader
    workers); Docker's 64 MiB default is too small for either."""
    status_interval_s: float = 30.0
    """Seconds between status refreshes (children's state, training progress scraped from the
    trainer's metrics endpoint): progress shows in `kubectl get rlvrrun` within this interval."""
    scrape_timeout_s: float = 5.0
    """Timeout of one scrape of the trainer's metrics endpoint."""
    dependency_retry_s: float = 30.0
    """Seconds between checks of the references of a waiting MergeJob or EvalSuite."""
    metrics_port: int | None = 9090
    """Port of the operator's own /metrics; None: no endpoint (tests, `m2rl render`)."""
    default_requests: DefaultRequests = field(default_factory=DefaultRequests)
    """CPU/memory requests of containers whose spec sets none."""
    metrics_from: tuple[dict[str, Any], ...] = ()
    """NetworkPolicy peers (e.g. Prometheus' namespace) also allowed to reach the verifier's and
    the rollout servers' HTTP port, which serves their /metrics. Empty: only the run's trainer."""
    leader_election: LeaderElection = field(default_factory=LeaderElection)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorOptions:
        """Read the variables the chart sets (M2RL_IMAGE_*, M2RL_METRICS_PORT, M2RL_STATUS_INTERVAL_S,
        M2RL_METRICS_FROM, M2RL_LEADER_ELECTION with POD_NAME and POD_NAMESPACE)."""
        env = os.environ if env is None else env
        defaults = Images()
        images = Images(
            **{
                name: env.get(f"M2RL_IMAGE_{name.upper()}") or getattr(defaults, name)
                for name in ("trainer", "rollout", "verifier", "merge", "eval")
            }
        )
        port = env.get("M2RL_METRICS_PORT", "")  # unset: no endpoint (the chart always sets it)
        metrics_from = json.loads(env.get("M2RL_METRICS_FROM") or "[]")
        if not isinstance(metrics_from, list) or not all(isinstance(p, dict) for p in metrics_from):
            raise ValueError("M2RL_METRICS_FROM must be a JSON list of NetworkPolicy peer objects")
        election = LeaderElection(
            enabled=env.get("M2RL_LEADER_ELECTION", "").lower() == "true",
            lease_name=env.get("M2RL_LEASE_NAME") or LeaderElection.lease_name,
            namespace=env.get("POD_NAMESPACE", ""),
            identity=env.get("POD_NAME", ""),
            standby_health_port=int(env["M2RL_HEALTH_PORT"]) if env.get("M2RL_HEALTH_PORT") else None,
        )
        if election.enabled and not (election.namespace and election.identity):
            raise ValueError(
                "M2RL_LEADER_ELECTION=true needs POD_NAME and POD_NAMESPACE (the chart sets them)"
            )
        return cls(
            images=images,
            status_interval_s=float(env.get("M2RL_STATUS_INTERVAL_S", "30")),
            dependency_retry_s=float(env.get("M2RL_DEPENDENCY_RETRY_S", "30")),
            metrics_port=int(port) if port and port != "0" else None,
            metrics_from=tuple(metrics_from),
            leader_election=election,
        )
