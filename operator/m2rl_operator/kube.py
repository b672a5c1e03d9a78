"""A small async facade over kubernetes_asyncio for the handlers: children by kind, own kinds by
plural, plain dicts in and out, and retries of conflicts and server errors.

Production builds the ApiClient from the in-cluster service account (or a kubeconfig when run
outside a cluster); tests pass the emulator's URL (`memo.kube_server`).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from m2rl_operator import naming

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"

# kind -> (API class, method suffix): create_namespaced_<suffix>, read_..., patch_..., delete_..., list_...
CHILD_APIS: dict[str, tuple[type[Any], str]] = {
    "ConfigMap": (client.CoreV1Api, "config_map"),
    "Service": (client.CoreV1Api, "service"),
    "PersistentVolumeClaim": (client.CoreV1Api, "persistent_volume_claim"),
    "Job": (client.BatchV1Api, "job"),
    "StatefulSet": (client.AppsV1Api, "stateful_set"),
    "Deployment": (client.AppsV1Api, "deployment"),
    "NetworkPolicy": (client.NetworkingV1Api, "network_policy"),
}


async def make_api_client(server: str | None) -> client.ApiClient:
    """An ApiClient for `server` (tests), else in-cluster config, else the local kubeconfig."""
    if server:
        return client.ApiClient(client.Configuration(host=server))
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


def is_retryable(error: ApiException) -> bool:
    """409 (a concurrent writer won) and 5xx (the API server or a webhook hiccuped) are worth retrying."""
    if isinstance(error, _Final):
        return False
    return error.status == 409 or (error.status or 0) >= 500 or error.status == 429


async def with_retries(
    call: Callable[[], Awaitable[T]], *, attempts: int = 4, base_delay_s: float = 0.2
) -> T:
    """Run `call`, retrying retryable API errors with jittered exponential backoff (0.2, 0.4, 0.8 s)."""
    for attempt in range(attempts):
        try:
            return await call()
        except ApiException as error:
            if not is_retryable(error) or attempt == attempts - 1:
                raise
            await asyncio.sleep(base_delay_s * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


class Kube:
    """Plain-dict CRUD for the operator's children and its own custom resources."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)

    def _method(self, kind: str, verb: str) -> Callable[..., Awaitable[Any]]:
        cls, suffix = CHILD_APIS[kind]
        return getattr(cls(self.api), f"{verb}_namespaced_{suffix}")  # type: ignore[no-any-return]

    def _plain(self, obj: Any) -> dict[str, Any]:
        return self.api.sanitize_for_serialization(obj)  # type: ignore[no-any-return]

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The child, or None when it does not exist."""
        try:
            obj = await with_retries(lambda: self._method(kind, "read")(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return self._plain(obj)

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create the child and return it as the API server stored it; None when it exists already
        (a restart mid-reconcile, or a retry)."""
        namespace = manifest["metadata"]["namespace"]
        try:
            created = await with_retries(lambda: self._create_once(manifest, namespace), attempts=3)
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return self._plain(created)

    async def _create_once(self, manifest: dict[str, Any], namespace: str) -> Any:
        try:
            return await self._method(manifest["kind"], "create")(namespace, manifest)
        except ApiException as error:
            if error.status == 409:  # AlreadyExists is final: not worth retrying
                raise _Final(error) from error
            raise

    async def patch(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        await with_retries(lambda: self._method(kind, "patch")(name, namespace, body))

    async def delete(self, kind: str, namespace: str, name: str, *, propagation: str = "Background") -> None:
        """Delete a child; Foreground keeps it (with a deletionTimestamp) until its pods are gone."""
        try:
            await with_retries(
                lambda: self._method(kind, "delete")(name, namespace, propagation_policy=propagation)
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await with_retries(
                lambda: self.custom.get_namespaced_custom_object(
                    naming.GROUP, naming.VERSION, namespace, naming.PLURALS[kind], name
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(obj)

    async def delete_custom(self, kind: str, namespace: str, name: str) -> None:
        try:
            await with_retries(
                lambda: self.custom.delete_namespaced_custom_object(
                    naming.GROUP, naming.VERSION, namespace, naming.PLURALS[kind], name
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        await with_retries(
            lambda: self.custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                naming.GROUP,
                naming.VERSION,
                namespace,
                naming.PLURALS[kind],
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
            )
        )


def api_message(error: ApiException) -> str:
    """The API server's own message of a refused request (its Status body), else the reason."""
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or f"{error.status} {error.reason}")


def is_refusal(error: ApiException) -> bool:
    """A request the API server (or an admission webhook) refused for good: retrying the same
    object cannot help (400 Bad Request, 403 Forbidden, 404 on a missing namespace, 422 Invalid)."""
    return error.status in (400, 403, 404, 422)


def results_of_pods(pods: list[dict[str, Any]], job_name: str) -> list[dict[str, Any]]:
    """The JSON results of a Job's succeeded pods (their termination messages; see
    m2rl_trainer.utils.results), in completion-index order: one result per completion index (the
    latest pod wins when an index ran twice). A message that is not a JSON object is skipped."""
    by_index: dict[int, tuple[str, dict[str, Any]]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get("job-name") != job_name:
            continue  # the label selector already did this on a real API server
        if (pod.get("status") or {}).get("phase") != "Succeeded":
            continue
        index = int((meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", 0))
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message")
            try:
                result = json.loads(message) if message else None
            except ValueError:
                result = None
            if isinstance(result, dict):
                created = str(meta.get("creationTimestamp") or "")
                if index not in by_index or by_index[index][0] <= created:
                    by_index[index] = (created, result)
    return [by_index[i][1] for i in sorted(by_index)]


class _Final(ApiException):
    """An ApiException that with_retries must not retry (AlreadyExists)."""

    def __init__(self, error: ApiException) -> None:
        super().__init__(status=error.status, reason=error.reason)
        self.status = 409
