"""Run kopf operator modules against kmock's KubernetesEmulator (real HTTP, watch streams).

Facts this relies on (kopf 1.45, kmock 0.8; see shared ENVIRONMENT.md): kopf must run
`clusterwide=True` (in namespaced mode kmock answers `GET /api/v1/namespaces` with a 500); the
emulator merges patches as plain dicts and does no garbage collection, defaulting or schema
validation, so tests that need those check them elsewhere (builders, CRD validation).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

# plural path -> kind, scope, subresources: what the operator's children and its own kinds need.
CORE_RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "v1/namespaces": ("Namespace", False, ()),
    "v1/events": ("Event", True, ()),
    "v1/configmaps": ("ConfigMap", True, ()),
    "v1/services": ("Service", True, ("status",)),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True, ("status",)),
    "v1/pods": ("Pod", True, ("status",)),
    "batch/v1/jobs": ("Job", True, ("status",)),
    "apps/v1/statefulsets": ("StatefulSet", True, ("status", "scale")),
    "apps/v1/deployments": ("Deployment", True, ("status", "scale")),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True, ()),
}
M2RL_RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "m2rl.io/v1alpha1/rlvrruns": ("RLVRRun", True, ("status",)),
    "m2rl.io/v1alpha1/mergejobs": ("MergeJob", True, ("status",)),
    "m2rl.io/v1alpha1/evalsuites": ("EvalSuite", True, ("status",)),
}
VERBS = ["list", "watch", "get", "create", "patch", "update", "delete"]


def declare_resources(kmock: Any, resources: Mapping[str, tuple[str, bool, tuple[str, ...]]]) -> None:
    """Make the emulator serve discovery, list, watch and CRUD for these resources."""
    for path, (kind, namespaced, subresources) in resources.items():
        kmock.resources[path] = {
            "kind": kind,
            "namespaced": namespaced,
            "verbs": VERBS,
            "subresources": list(subresources),
        }


def fast_settings() -> kopf.OperatorSettings:
    """Settings for tests: bounded watches (kopf's defaults can hang silently), quick retries."""
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10  # seconds the server keeps a watch open
    settings.watching.client_timeout = 15  # seconds before the client gives up on a silent watch
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 10
    settings.batching.idle_timeout = 0.1
    settings.batching.batch_window = 0.05
    settings.posting.level = 20  # INFO events are posted as Kubernetes Events
    settings.background.cancellation_polling = 0.2  # a deleted object's timer, checked again soon
    return settings


def load_handlers(modules: Iterable[str]) -> kopf.OperatorRegistry:
    """Import (or re-import) handler modules into a fresh registry, so tests do not share handlers."""
    registry = kopf.OperatorRegistry()
    previous = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        for name in modules:
            if name in sys.modules:
                importlib.reload(sys.modules[name])
            else:
                importlib.import_module(name)
    finally:
        kopf.set_default_registry(previous)
    return registry


@dataclass
class RunningOperator:
    """Handle of a running operator: `memo` as the handlers see it."""

    memo: kopf.Memo


@contextlib.asynccontextmanager
async def running_operator(
    kmock: Any, modules: Iterable[str], memo: Mapping[str, Any] | None = None, start_timeout_s: float = 15.0
) -> AsyncIterator[RunningOperator]:
    """Run kopf with the given handler modules against `kmock` until the block exits.

    kopf runs in a thread and event loop of its own (the emulator stays on the test's loop): on
    the test's loop kopf would wait 5 s at exit for every task created since its start, the
    emulator's open watch connections included; alone, it stops in well under a second.
    """
    registry = load_handlers(modules)
    server = str(kmock.url).rstrip("/")

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server, insecure=True)

    settings = fast_settings()
    # No runtime re-discovery of CRDs/namespaces: its retries against the closed session are what
    # kopf would wait 5 s for at exit. Handlers name group, version and plural in full anyway.
    settings.scanning.disabled = True
    operator_memo = kopf.Memo(kube_server=server, **dict(memo or {}))
    ready_flag = threading.Event()
    errors: list[BaseException] = []
    loop = asyncio.new_event_loop()
    main = loop.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            clusterwide=True,
            standalone=True,
            ready_flag=ready_flag,
            memo=operator_memo,
        )
    )

    def run() -> None:
        asyncio.set_event_loop(loop)
        # Stopped by cancellation: kopf then cancels its sub-tasks at once, where a stop flag makes
        # it wait 5 s for them (its discovery retries never finish against a closed session).
        with contextlib.suppress(asyncio.CancelledError):
            try:
                loop.run_until_complete(main)
            except BaseException as error:  # surfaced to the test below
                errors.append(error)
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    try:
        started = await asyncio.to_thread(ready_flag.wait, start_timeout_s)
        assert started, f"operator did not start within {start_timeout_s} s: {errors}"
        yield RunningOperator(memo=operator_memo)
    finally:
        loop.call_soon_threadsafe(main.cancel)
        await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive(), "operator thread did not stop within 15 s"
    assert not [e for e in errors if not isinstance(e, asyncio.CancelledError)], errors


async def eventually(check: Any, timeout_s: float = 10.0, interval_s: float = 0.1) -> Any:
    """Call `check()` until it returns a truthy value (then return it) or raise after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last_error: BaseException | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            value = check()
            if value:
                return value
        except (KeyError, AssertionError, LookupError) as error:
            last_error = error
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s (last error: {last_error!r})")
