"""A minimal operator for the foundation's kopf-against-kmock smoke test: on create of an RLVRRun it
creates an owned ConfigMap through the Kubernetes API and reports it in status."""

from typing import Any

import kopf
from kubernetes_asyncio import client


@kopf.on.create("m2rl.io", "v1alpha1", "rlvrruns")
async def create_config(
    body: kopf.Body, spec: kopf.Spec, name: str, namespace: str, memo: kopf.Memo, **_: Any
) -> dict[str, str]:
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config"},
        "data": {"steps": str(spec.get("algorithm", {}).get("steps", 0))},
    }
    kopf.adopt(config_map, owner=body)
    async with client.ApiClient(client.Configuration(host=memo.kube_server)) as api:
        await client.CoreV1Api(api).create_namespaced_config_map(namespace, config_map)
    return {"configMap": config_map["metadata"]["name"]}
