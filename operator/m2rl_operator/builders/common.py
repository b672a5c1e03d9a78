"""Pieces shared by the builders: metadata, pod placement options, volumes for URIs."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml

from m2rl_operator import naming
from m2rl_operator.api.common import PodOptions
from m2rl_operator.api.uri import ParsedURI, parse_uri
from m2rl_operator.settings import OperatorOptions

Manifest = dict[str, Any]


def metadata(
    name: str, namespace: str, kind: str, owner: str, component: str, queue_name: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": naming.labels(kind, owner, component, queue_name),
    }


def config_map(kind: str, owner: str, namespace: str, config: dict[str, Any]) -> Manifest:
    """The ConfigMap holding the program's config file (trainer.yaml, merge.yaml, eval.yaml)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(naming.config_map(owner), namespace, kind, owner, naming.CONFIG),
        "data": {naming.CONFIG_FILE[kind]: yaml.safe_dump(config, sort_keys=False)},
    }


def worker_job(
    kind: str,
    owner: str,
    namespace: str,
    *,
    job_name: str,
    component: str,
    worker: PodOptions,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    job_spec: dict[str, Any],
    queue_name: str | None,
    priority_class_name: str | None,
) -> Manifest:
    """A Job of one container that reports its result in the termination message (merge, eval).

    `job_spec` holds the Job-level fields (completions, retries); the pod template is built here.
    """
    container = {
        **container,
        # The summary is the termination message (m2rl_trainer.utils.results); a pod that fails
        # before writing one shows the tail of its log there instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job_name, namespace, kind, owner, component, queue_name),
        "spec": {
            **job_spec,
            "template": {
                "metadata": {"labels": naming.labels(kind, owner, component, queue_name)},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                    **pod_placement(worker, priority_class_name),
                },
            },
        },
    }


def dump(model: Any) -> Any:
    """A pydantic model as the camelCase dict the API server stores (unset fields left out)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def container_extras(pod: PodOptions) -> dict[str, Any]:
    """The container fields a PodOptions sets: resources (without GPUs) and env."""
    extras: dict[str, Any] = {}
    if pod.env:
        extras["env"] = [dump(e) for e in pod.env]
    return extras


def resources(pod: PodOptions, gpus: int) -> dict[str, Any]:
    """Requests/limits from the spec, with `nvidia.com/gpu` set from the component's GPU count."""
    result: dict[str, Any] = copy.deepcopy(dump(pod.resources)) if pod.resources else {}
    if gpus > 0:
        result.setdefault("limits", {})["nvidia.com/gpu"] = gpus
        result.setdefault("requests", {})["nvidia.com/gpu"] = gpus
    return result


def pod_placement(pod: PodOptions, priority_class_name: str | None) -> dict[str, Any]:
    """Pod-level fields: nodeSelector, tolerations, priorityClassName."""
    spec: dict[str, Any] = {}
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        spec["tolerations"] = [dump(t) for t in pod.tolerations]
    if priority_class_name:
        spec["priorityClassName"] = priority_class_name
    return spec


def local_path(uri: str | ParsedURI, options: OperatorOptions) -> str:
    """Where a pvc:// or file:// URI is in a pod; hf:// becomes the Hub id ORG/NAME."""
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    path = parsed.local_path(options.pvc_root)
    return parsed.repo if path is None else path


def claim_volumes(
    uris: Iterable[str | ParsedURI], writable: Iterable[str], options: OperatorOptions
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for every claim named by pvc:// URIs: claim C at PVC_ROOT/C.

    Claims in `writable` are mounted read-write, the others read-only. Sorted by claim name so the
    output is stable whatever the order of the URIs.
    """
    claims: set[str] = set()
    for uri in uris:
        parsed = parse_uri(uri) if isinstance(uri, str) else uri
        if parsed.scheme == "pvc":
            claims.add(parsed.claim)
    writable_set = set(writable)
    claims |= writable_set
    volumes, mounts = [], []
    for index, claim in enumerate(sorted(claims)):
        volume = f"pvc-{index}"
        volumes.append(
            {
                "name": volume,
                "persistentVolumeClaim": {"claimName": claim, "readOnly": claim not in writable_set},
            }
        )
        mounts.append(
            {
                "name": volume,
                "mountPath": f"{options.pvc_root}/{claim}",
                "readOnly": claim not in writable_set,
            }
        )
    return volumes, mounts


def config_volume(config_map_name: str, options: OperatorOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": "config", "configMap": {"name": config_map_name}}
    mount = {"name": "config", "mountPath": options.config_dir, "readOnly": True}
    return volume, mount


def shm_volume(options: OperatorOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": options.shm_size}}
    return volume, {"name": "shm", "mountPath": "/dev/shm"}


def headless_service(
    name: str, namespace: str, kind: str, owner: str, component: str, ports: dict[str, int]
) -> Manifest:
    """A headless Service that gives each pod a stable DNS name (publishing not-ready pods, so ranks
    can find each other before they pass readiness)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace, kind, owner, component),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": naming.selector(kind, owner, component),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port} for port_name, port in ports.items()
            ],
        },
    }
