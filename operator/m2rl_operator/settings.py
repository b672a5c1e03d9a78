"""Operator settings: read once from the environment (the chart sets it), then passed explicitly.

Builders never read the environment: the handlers call `OperatorOptions.from_env()` once at start-up
and hand the result to every builder, so `m2rl render` and the tests build the same manifests from
an options object they construct themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorOptions:
        """Read the variables the chart sets (M2RL_IMAGE_*, M2RL_METRICS_PORT, M2RL_STATUS_INTERVAL_S)."""
        env = os.environ if env is None else env
        defaults = Images()
        images = Images(
            **{
                name: env.get(f"M2RL_IMAGE_{name.upper()}") or getattr(defaults, name)
                for name in ("trainer", "rollout", "verifier", "merge", "eval")
            }
        )
        port = env.get("M2RL_METRICS_PORT", "")  # unset: no endpoint (the chart always sets it)
        return cls(
            images=images,
            status_interval_s=float(env.get("M2RL_STATUS_INTERVAL_S", "30")),
            dependency_retry_s=float(env.get("M2RL_DEPENDENCY_RETRY_S", "30")),
            metrics_port=int(port) if port and port != "0" else None,
        )
