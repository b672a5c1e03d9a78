"""The verifier service: `m2rl-verifier serve`, an aiohttp app around one Scorer.

  POST /v1/score      {"samples": [...]} -> 200 {"results": [...]} (same order, same fields as the
                      library's Result.to_dict()); 400 {"error"} for malformed JSON or a sample that
                      makes no sense; 413 {"error"} for a request that can never be admitted (too
                      many bytes, too many samples, more samples for one pool than it queues);
                      429 {"error"} + Retry-After when saturated
  GET  /v1/verifiers  the registered verifier types with their options (name, type, default, doc)
  GET  /health        200 {"status": "ok", "limits": {...}, pools...} while every pool has a live
                      worker, else 503; `limits` is what one request may hold (client.HttpScorer
                      splits batches to fit)
  GET  /metrics       Prometheus text format

Back-pressure: a request is refused with 429 when the service already processes
`max_inflight_requests` requests, or when the samples it would add to a pool (Python workers or
sandboxes) would push that pool's queue past `max_pending_samples`. The check is per pool, so a
backlog of slow code does not refuse math. A refused request has done no work: retry it. A request
that could not be admitted even by an idle service is refused with 413 at once, never 429: a retry
cannot help it (a trainer's step of 512 prompts x 16 samples is such a request; split it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from m2rl_trainer.rewards.metrics import VerifierMetrics
from m2rl_trainer.rewards.registry import VERIFIERS
from m2rl_trainer.rewards.sandbox import SandboxConfig
from m2rl_trainer.rewards.scorer import Scorer, ScorerConfig
from m2rl_trainer.rewards.types import ConfigError, Sample


@dataclass(frozen=True)
class ServiceConfig:
    """Limits of the HTTP service.

    host / port: where to listen (127.0.0.1 by default; a pod sets 0.0.0.0).
    max_request_bytes: body size limit; larger requests get 413 before being read whole.
    max_batch_samples: samples per request; more is a 413 (split the batch).
    max_inflight_requests: score requests processed at once; one more gets 429.
    max_pending_samples: samples queued or running per pool; a request that would push a pool past it
      gets 429 (retry), one that has more samples for a pool than this gets 413 (split it).
    scorer: the scorer; unlike the library's default, its sandbox runs programs at low priority.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_request_bytes: int = 64 * 1024 * 1024
    max_batch_samples: int = 8192
    max_inflight_requests: int = 64
    max_pending_samples: int = 4096
    # The service runs programs at low priority: hostile code must not slow other requests.
    scorer: ScorerConfig = field(
        default_factory=lambda: ScorerConfig(sandbox=SandboxConfig(low_priority=True))
    )


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class VerifierService:
    def __init__(self, config: ServiceConfig, scorer: Scorer | None = None) -> None:
        self.config = config
        self.metrics = VerifierMetrics(verifiers=VERIFIERS)
        # A scorer passed in (tests, embedding) keeps its own metrics; one made here reports to ours.
        self.scorer = scorer if scorer is not None else Scorer(config.scorer, metrics=self.metrics)
        self._owns_scorer = scorer is None
        self._inflight = 0
        self._reserved: Counter[str] = Counter()  # samples admitted but not yet submitted, per pool

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_bytes)
        app.router.add_post("/v1/score", self._timed("score", self.handle_score))
        app.router.add_get("/v1/verifiers", self._timed("verifiers", self.handle_verifiers))
        app.router.add_get("/health", self._timed("health", self.handle_health))
        app.router.add_get("/metrics", self.handle_metrics)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def _timed(self, endpoint: str, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            start = time.monotonic()
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # e.g. 413 raised by aiohttp while reading the body
                response = exc
                if exc.status == 413:
                    self.metrics.rejected.labels("too_large").inc()
            self.metrics.requests.labels(endpoint, str(response.status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.monotonic() - start)
            if isinstance(response, web.HTTPException):
                raise response
            return response

        return wrapped

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._owns_scorer:
            await asyncio.to_thread(self.scorer.close)

    # --- handlers -----------------------------------------------------------------------------------

    async def handle_score(self, request: web.Request) -> web.Response:
        if self._inflight >= self.config.max_inflight_requests:
            self.metrics.rejected.labels("saturated").inc()
            return _error(
                429, f"saturated: {self._inflight} requests in flight; retry later", **{"Retry-After": "1"}
            )
        self._inflight += 1
        self.metrics.inflight.inc()
        try:
            return await self._score(request)
        finally:
            self._inflight -= 1
            self.metrics.inflight.dec()

    async def _score(self, request: web.Request) -> web.Response:
        body = await request.read()  # raises 413 past client_max_size
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            self.metrics.rejected.labels("invalid").inc()
            return _error(400, f"malformed JSON: {exc}")
        if not isinstance(payload, dict) or not isinstance(payload.get("samples"), list):
            self.metrics.rejected.labels("invalid").inc()
            return _error(400, 'expected a JSON object {"samples": [...]}')
        raw_samples = payload["samples"]
        if len(raw_samples) > self.config.max_batch_samples:
            self.metrics.rejected.labels("too_large").inc()
            return _error(
                413,
                f"{len(raw_samples)} samples exceed the limit of {self.config.max_batch_samples} per "
                "request; split the batch (GET /health: limits)",
            )
        try:
            samples = [Sample.from_dict(s, where=f"samples[{i}]") for i, s in enumerate(raw_samples)]
            prepared = await asyncio.to_thread(self.scorer.prepare, samples)
        except ConfigError as exc:
            self.metrics.rejected.labels("invalid").inc()
            return _error(400, str(exc))
        wanted = Counter(item.spec.executor for item in prepared)
        pending = self.scorer.pending()
        for pool, count in wanted.items():
            if pool in pending and count > self.config.max_pending_samples:
                self.metrics.rejected.labels("too_large").inc()
                return _error(
                    413,
                    f"{count} samples for the {pool} pool can never be admitted: it queues at most "
                    f"{self.config.max_pending_samples}; split the batch (GET /health: limits)",
                )
        # Check and reserve in one step on the event loop, so concurrent requests cannot both pass.
        for pool, count in wanted.items():
            queued = pending.get(pool, 0) + self._reserved[pool]
            if pool in pending and queued + count > self.config.max_pending_samples:
                self.metrics.rejected.labels("saturated").inc()
                return _error(
                    429,
                    f"saturated: {queued} samples pending in the {pool} pool, limit "
                    f"{self.config.max_pending_samples}; retry later",
                    **{"Retry-After": "1"},
                )
        self._reserved.update(wanted)
        try:
            futures = await asyncio.to_thread(self.scorer.submit, prepared)
        finally:
            self._reserved.subtract(wanted)  # submit counted them in the scorer's pending
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        return web.json_response({"results": [r.to_dict() for r in results]})

    async def handle_verifiers(self, request: web.Request) -> web.Response:
        enabled = set(self.scorer.defaults)
        return web.json_response(
            {
                "verifiers": [
                    {**spec.describe(), "enabled": name in enabled} for name, spec in VERIFIERS.items()
                ]
            }
        )

    def limits(self) -> dict[str, int]:
        """What one request may hold; HttpScorer splits batches to fit."""
        return {
            "max_request_bytes": self.config.max_request_bytes,
            "max_batch_samples": self.config.max_batch_samples,
            "max_pending_samples": self.config.max_pending_samples,
            "max_inflight_requests": self.config.max_inflight_requests,
        }

    async def handle_health(self, request: web.Request) -> web.Response:
        health = self.scorer.health()
        healthy = all(p["alive"] > 0 for p in health["pools"].values())
        return web.json_response(
            {"status": "ok" if healthy else "degraded", "limits": self.limits(), **health},
            status=200 if healthy else 503,
        )

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def serve(config: ServiceConfig) -> None:
    """Run the service until SIGINT/SIGTERM (aiohttp's run_app handles both)."""
    service = VerifierService(config)
    print(f"m2rl-verifier: listening on http://{config.host}:{config.port}", flush=True)
    web.run_app(service.app(), host=config.host, port=config.port, print=None, handle_signals=True)
