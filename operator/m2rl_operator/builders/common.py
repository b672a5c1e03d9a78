"""Pieces shared by the builders: metadata, config, volumes for URIs, Services (pods: pods.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from m2rl_operator import naming
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


def config_map(
    kind: str, owner: str, namespace: str, config: dict[str, Any], extra: dict[str, Any] | None = None
) -> Manifest:
    """The ConfigMap holding the program's config file (trainer.yaml, merge.yaml, eval.yaml), and
    `extra` files (name -> content) next to it."""
    files = {naming.CONFIG_FILE[kind]: config, **(extra or {})}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(naming.config_map(owner), namespace, kind, owner, naming.CONFIG),
        "data": {name: yaml.safe_dump(content, sort_keys=False) for name, content in files.items()},
    }


def dump(model: Any) -> Any:
    """A pydantic model as the camelCase dict the API server stores (unset fields left out)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


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
    name: str,
    namespace: str,
    kind: str,
    owner: str,
    component: str,
    ports: dict[str, int],
    selector: dict[str, str] | None = None,
) -> Manifest:
    """A headless Service that gives each pod a stable DNS name (publishing not-ready pods, so ranks
    can find each other before they pass readiness). `selector` defaults to the component's."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace, kind, owner, component),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector or naming.selector(kind, owner, component),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port} for port_name, port in ports.items()
            ],
        },
    }
