"""The environment service: `python -m m2rl_trainer.agent serve`, an aiohttp app around one Environment.

NeMo Gym's resource-server routes (nemo_gym/base_resources_server.py; the workplace assistant adds a
catch-all `POST /{path}` per tool), so a NeMo Gym agent can talk to it too:

  POST /seed_session   {} -> 200 {"session_id": ID}, and the cookie `m2rl_session=ID`
  POST /<tool name>    the call's arguments (a JSON object) -> 200 {"output": RESULT}; the session is
                       the `X-Session-Id` header or the cookie. A failing call is still 200: its
                       output is the error the model reads. No or unknown session: 400.
  POST /verify         {"response": {"output": [ITEMS]}, "ground_truth": CALLS, ...} (NeMo Gym's
                       verify request; the M2RL study's agent sends {"output": [ITEMS], ...}) -> 200
                       the request with "reward" (1.0 or 0.0) and "details" added. ITEMS of type
                       "function_call" ({"name", "arguments": JSON string}) are the episode's calls;
                       other items are ignored, and so is a call whose arguments are not a JSON
                       object (it could not have run). Stateless: no session is read.
  POST /end_session    forget the session (an extension; NeMo Gym keeps sessions until it stops)
  GET  /v1/tools       the tools' schemas
  GET  /health         200 {"status": "ok", "sessions": N}
  GET  /metrics        Prometheus text format

Sandboxing: the service runs only this package's tool code on its own tables, reads its data once at
start and writes nothing, so it runs as non-root on a read-only root filesystem with no network
egress, like the verifier (the operator's pod spec does that).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from m2rl_trainer.agent.environment import Environment, SessionError, parse_ground_truth
from m2rl_trainer.agent.toolcall import ToolCall, parse_arguments

SESSION_COOKIE = "m2rl_session"
SESSION_HEADER = "X-Session-Id"
_RESERVED = ("seed_session", "end_session", "verify", "health", "metrics")


@dataclass(frozen=True)
class ServiceConfig:
    """host / port: where to listen (127.0.0.1 by default; a pod sets 0.0.0.0).
    max_request_bytes: body size limit (413 above)."""

    host: str = "127.0.0.1"
    port: int = 8090
    max_request_bytes: int = 4 * 1024 * 1024


class EnvironmentMetrics:
    """Names follow Prometheus' conventions, counters written out with `_total` as exposed (as the
    verifier's, rewards/metrics.py)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "m2rl_agent_env_requests_total",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "m2rl_agent_env_request_duration_seconds", "HTTP request latency.", ["endpoint"], registry=r
        )
        self.tool_calls = Counter(
            "m2rl_agent_env_tool_calls_total", "Tool calls by tool.", ["tool"], registry=r
        )
        self.episodes = Counter(
            "m2rl_agent_env_verified_episodes_total", "Verified episodes by reward.", ["reward"], registry=r
        )
        self.sessions = Gauge("m2rl_agent_env_sessions", "Sessions currently kept.", registry=r)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = await request.read()  # 413 past client_max_size
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"malformed JSON: {error}"}), content_type="application/json"
        ) from None
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "expected a JSON object"}), content_type="application/json"
        )
    return payload


def predicted_calls(output: Any) -> list[ToolCall]:
    """The episode's calls among Responses-API output items (see the module docstring)."""
    if not isinstance(output, list):
        raise ValueError("output: must be a list of Responses-API output items")
    calls = []
    for item in output:
        if (
            not isinstance(item, Mapping)
            or item.get("type") != "function_call"
            or not isinstance(item.get("name"), str)
        ):
            continue
        try:
            calls.append(ToolCall(item["name"], parse_arguments(item.get("arguments", {}), "output")))
        except ValueError:
            continue  # as NeMo Gym's replay, which skips a call whose arguments do not load
    return calls


class EnvironmentService:
    def __init__(self, environment: Environment, config: ServiceConfig = ServiceConfig()) -> None:
        self.environment = environment
        self.config = config
        self.metrics = EnvironmentMetrics()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_bytes)
        app.router.add_post("/seed_session", self._timed("seed_session", self.handle_seed))
        app.router.add_post("/end_session", self._timed("end_session", self.handle_end))
        app.router.add_post("/verify", self._timed("verify", self.handle_verify))
        app.router.add_get("/v1/tools", self._timed("tools", self.handle_tools))
        app.router.add_get("/health", self._timed("health", self.handle_health))
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_post("/{tool}", self._timed("tool", self.handle_tool))
        return app

    def _timed(
        self, endpoint: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            start = time.monotonic()
            try:
                response = await handler(request)
            except web.HTTPException as error:
                response = error
            self.metrics.requests.labels(endpoint, str(response.status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.monotonic() - start)
            if isinstance(response, web.HTTPException):
                raise response
            return response

        return wrapped

    def _session_count(self) -> int:
        count = getattr(self.environment, "session_count", None)
        return int(count()) if callable(count) else 0

    async def handle_seed(self, request: web.Request) -> web.Response:
        await _json_object(request)  # NeMo Gym sends the run request; nothing in it is needed
        session = self.environment.seed_session()
        self.metrics.sessions.set(self._session_count())
        response = web.json_response({"session_id": session})
        response.set_cookie(SESSION_COOKIE, session, httponly=True)
        return response

    def _session(self, request: web.Request) -> str | None:
        return request.headers.get(SESSION_HEADER) or request.cookies.get(SESSION_COOKIE)

    async def handle_end(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        session = self._session(request) or payload.get("session_id")
        if isinstance(session, str):
            self.environment.end_session(session)
        self.metrics.sessions.set(self._session_count())
        return web.json_response({})

    async def handle_tool(self, request: web.Request) -> web.Response:
        name = request.match_info["tool"]
        arguments = await _json_object(request)
        session = self._session(request)
        if session is None:
            return _error(400, f"no session: send the {SESSION_HEADER} header or the {SESSION_COOKIE} cookie "
                          "from POST /seed_session")  # fmt: skip
        try:
            output = self.environment.call(session, name, arguments)
        except SessionError as error:
            return _error(400, str(error))
        self.metrics.tool_calls.labels(name if name not in _RESERVED else "_").inc()
        return web.json_response({"output": output})

    async def handle_verify(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        response = payload.get("response")
        output = response.get("output") if isinstance(response, Mapping) else payload.get("output")
        try:
            calls = predicted_calls(output)
            truth = parse_ground_truth(payload.get("ground_truth"), "ground_truth")
        except ValueError as error:
            return _error(400, str(error))
        verdict = self.environment.verify(calls, truth)
        self.metrics.episodes.labels(f"{verdict.reward:g}").inc()
        return web.json_response({**payload, **verdict.to_dict()})

    async def handle_tools(self, request: web.Request) -> web.Response:
        return web.json_response({"tools": self.environment.tools()})

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": self._session_count()})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def serve(environment: Environment, config: ServiceConfig) -> None:
    """Run the service until SIGINT/SIGTERM (aiohttp's run_app handles both)."""
    service = EnvironmentService(environment, config)
    print(f"m2rl agent environment: listening on http://{config.host}:{config.port}", flush=True)
    web.run_app(service.app(), host=config.host, port=config.port, print=None, handle_signals=True)
