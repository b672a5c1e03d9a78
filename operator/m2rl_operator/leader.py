"""Leader election over a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Why not kopf's peering: it is a pause signal, not an election. Every operator writes its own
keep-alive into a shared KopfPeering object; one that sees a live peer of higher priority pauses,
and peers of the *same* priority all pause ("Possibly conflicting operators": kopf
_core/engines/peering.py process_peering_event). Two replicas of one Deployment have the same
priority, so both would stop; with different priorities the pause follows a watch event, with no
compare-and-swap, so both act until each has seen the other. A Lease written with the
resourceVersion it was read at (optimistic concurrency: 409 if another wrote it since) lets exactly
one replica hold it.

How it runs: the startup handler calls `lead`, which returns once this replica holds the Lease; kopf
starts its watches only after the startup handlers (a standby watches and caches nothing). While it
waits, a standby answers the liveness probe itself (kopf's health endpoint starts with the
watches). The leader renews every retry period; if it cannot renew within the renew deadline it
calls `on_lost` (by default SIGTERM to itself: kopf stops, the pod restarts as a standby), before the
Lease can expire for the others (lease duration > renew deadline). On shutdown it releases the Lease
(holder cleared), so a standby takes over at its next retry.

Timing (client-go's defaults): lease 15 s, renew deadline 10 s, retry 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from m2rl_operator.settings import LeaderElection

log = logging.getLogger(__name__)
MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime


def _now() -> str:
    return datetime.now(UTC).strftime(MICRO)


def _terminate() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class Elector:
    """One candidate for one Lease (client-go tryAcquireOrRenew, with a local observation clock:
    a holder's Lease counts as expired when it has not changed for leaseDuration seconds of *our*
    time, so clock skew between nodes does not matter)."""

    def __init__(self, api: client.ApiClient, config: LeaderElection) -> None:
        self.api = client.CoordinationV1Api(api)
        self.config = config
        self.observed: dict[str, Any] | None = None  # the Lease spec last seen
        self.observed_at = 0.0  # monotonic time it was first seen so
        self.leading = False
        self.renewer: asyncio.Task[None] | None = None

    async def try_acquire_or_renew(self) -> bool:
        name, namespace, me = self.config.lease_name, self.config.namespace, self.config.identity
        try:
            lease = await self.api.read_namespaced_lease(name, namespace)
        except ApiException as error:
            if error.status != 404:
                log.warning("reading Lease %s/%s: %s", namespace, name, error.reason)
                return False
            body = {
                "metadata": {"name": name, "namespace": namespace},
                "spec": self._spec(me, acquire=_now(), transitions=0),
            }
            try:
                await self.api.create_namespaced_lease(namespace, body)
            except ApiException:
                return False  # another candidate created it first
            self._observe(body["spec"])
            return True
        spec = self.api.api_client.sanitize_for_serialization(lease.spec) or {}
        if spec != self.observed:
            self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration_s)
        if holder and holder != me and time.monotonic() < self.observed_at + duration:
            return False  # held by another, not expired
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == me:
            new = self._spec(me, acquire=spec.get("acquireTime") or _now(), transitions=transitions)
        else:
            new = self._spec(me, acquire=_now(), transitions=transitions + 1)
        try:
            await self._write(lease.metadata.resource_version, new)
        except ApiException:
            return False  # 409: someone else wrote it since we read it
        self._observe(new)
        return True

    async def _write(self, resource_version: str, spec: dict[str, Any]) -> None:
        """A merge patch that carries the resourceVersion it was computed from: the API server
        applies it only if the Lease did not change since (409 Conflict otherwise), as an update
        (PUT) would."""
        body = {"metadata": {"resourceVersion": resource_version}, "spec": spec}
        await self.api.patch_namespaced_lease(  # type: ignore[call-arg]
            self.config.lease_name, self.config.namespace, body, _content_type="application/merge-patch+json"
        )

    def _spec(self, holder: str, *, acquire: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": holder,
            "leaseDurationSeconds": int(self.config.lease_duration_s),
            "acquireTime": acquire,
            "renewTime": _now(),
            "leaseTransitions": transitions,
        }

    def _observe(self, spec: dict[str, Any]) -> None:
        self.observed, self.observed_at = spec, time.monotonic()

    async def acquire(self) -> None:
        while not await self.try_acquire_or_renew():
            await asyncio.sleep(self.config.retry_period_s)
        self.leading = True
        log.info("%s holds Lease %s/%s", self.config.identity, self.config.namespace, self.config.lease_name)

    async def renew(self, on_lost: Callable[[], None]) -> None:
        """Renew until a renewal fails for a whole renew deadline, then call `on_lost`."""
        deadline = time.monotonic() + self.config.renew_deadline_s
        while self.leading:
            await asyncio.sleep(self.config.retry_period_s)
            try:
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), self.config.retry_period_s)
            except (TimeoutError, ApiException, OSError):
                renewed = False
            if renewed:
                deadline = time.monotonic() + self.config.renew_deadline_s
            elif time.monotonic() > deadline:
                self.leading = False
                log.error("lost Lease %s/%s: stopping", self.config.namespace, self.config.lease_name)
                on_lost()
                return

    async def release(self) -> None:
        """Clear the holder (client-go release: holder "", lease duration 1 s)."""
        if not self.leading:
            return
        self.leading = False
        if self.renewer is not None:
            self.renewer.cancel()
        with contextlib.suppress(ApiException):
            lease = await self.api.read_namespaced_lease(self.config.lease_name, self.config.namespace)
            spec = self.api.api_client.sanitize_for_serialization(lease.spec) or {}
            if spec.get("holderIdentity") != self.config.identity:
                return
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_now())
            await self._write(lease.metadata.resource_version, spec)


async def _standby_health(port: int | None) -> web.AppRunner | None:
    """Answer /healthz while waiting (the chart's liveness probe), on kopf's health port."""
    if not port:
        return None

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def lead(
    api: client.ApiClient, config: LeaderElection, on_lost: Callable[[], None] | None = None
) -> Elector:
    """Wait until this replica leads; keep renewing in the background. Returns the elector (for
    `release` at shutdown)."""
    elector = Elector(api, config)
    health = await _standby_health(config.standby_health_port)
    try:
        await elector.acquire()
    finally:
        if health is not None:
            await health.cleanup()  # kopf's own health endpoint takes the port from here on
    elector.renewer = asyncio.create_task(elector.renew(on_lost or _terminate))
    return elector
