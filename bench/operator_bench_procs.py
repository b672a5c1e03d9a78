"""The two child processes of bench_operator.py: the emulator and the operator.

Each runs its own event loop in its own interpreter, so neither waits for the other's GIL and each
has its own peak RSS and CPU time. They talk to the driver over a multiprocessing Pipe: the
emulator sends its URL, the operator "ready"; then each answers "progress"/"stats" and stops on
"stop". Only the standard library is imported at module level: spawn re-imports this module in
both children, and the operator's RSS must not include kmock (nor the emulator's, kopf).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAINER_SUFFIX = "-trainer"  # m2rl_operator.naming.trainer(name); the bench checks it at start-up


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50_ms": round(at(0.5) * 1000, 2),
        "p99_ms": round(at(0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "total_s": round(sum(ordered), 2),
    }


def _profiled(profile_dir: str | None, name: str, main: Callable[[], None]) -> None:
    """Run `main`, under cProfile when asked (stats to PROFILE_DIR/NAME.prof and NAME.txt)."""
    if not profile_dir:
        main()
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(main)
    finally:
        out = Path(profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(out / f"{name}.prof")
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
        stats.print_stats(40)
        stats.sort_stats("cumulative").print_stats(40)
        (out / f"{name}.txt").write_text(text.getvalue())


async def _commands(conn: Connection, answer: Callable[[str], Any]) -> None:
    """Answer the driver's commands on this loop until "stop" (answered, then return)."""
    while True:
        try:
            command = await asyncio.to_thread(conn.recv)
        except EOFError:  # the driver died: stop too, do not linger as an orphan
            return
        conn.send(answer(command))
        if command == "stop":
            return


# ---- the emulator ------------------------------------------------------------------------------


def serve_emulator(conn: Connection, profile_dir: str | None, variant: dict[str, bool]) -> None:
    _profiled(profile_dir, "emulator", lambda: asyncio.run(_serve_emulator(conn, variant)))


async def _serve_emulator(conn: Connection, variant: dict[str, bool]) -> None:
    sys.path.insert(0, str(ROOT))
    from kmock import Server
    from kmock._internal import enums

    from tests.support.kmock_fast import FastKubernetesEmulator
    from tests.support.kopf_kmock import CORE_RESOURCES, M2RL_RESOURCES, declare_resources

    job_at: dict[str, float] = {}
    phase_at: dict[str, float] = {}
    ready_at: dict[str, float] = {}  # run -> wall time (time.time) both were first true
    first_phase: dict[str, dict[str, float]] = {}  # phase -> run -> when a run first reported it

    for flag, value in variant.items():  # fast_dispatch, indexed, stamped: all True by default
        setattr(FastKubernetesEmulator, flag, value)
    async with FastKubernetesEmulator() as kmock, Server(kmock):
        declare_resources(kmock, CORE_RESOURCES | M2RL_RESOURCES)

        def track(request: Any) -> None:
            """Readiness as the old in-process poll saw it, stamped at the write that made it."""
            plural, now = request.resource.plural, time.time()
            name = request.name or (request.data.get("metadata") or {}).get("name") or ""
            if plural == "jobs" and request.action == enums.action.CREATE:
                if not name.endswith(TRAINER_SUFFIX):
                    return
                run = name.removesuffix(TRAINER_SUFFIX)
                job_at.setdefault(run, now)
            elif plural == "rlvrruns":
                obj = kmock.objects._objects.get((request.resource, request.namespace, name))
                if obj is None or obj.deleted or not (obj.get("status") or {}).get("phase"):
                    return
                run = name
                phase_at.setdefault(run, now)
                first_phase.setdefault(str(obj["status"]["phase"]), {}).setdefault(run, now)
            else:
                return
            if run in job_at and run in phase_at and run not in ready_at:
                ready_at[run] = now

        kmock.on_write.append(track)

        def answer(command: str) -> Any:
            if command == "progress":
                return len(ready_at)
            if command.startswith("phase "):  # how many runs have reported this phase so far
                return len(first_phase.get(command.split(" ", 1)[1], {}))
            if command == "counts":
                return {"|".join(key): n for key, n in kmock.counts.items()}
            if command in ("stats", "stop"):
                objects: dict[str, int] = {}
                for (res, _, _), obj in kmock.objects.items():
                    if not obj.deleted:
                        objects[str(res.plural)] = objects.get(str(res.plural), 0) + 1
                return {
                    "ready_at": dict(ready_at),
                    "counts": {"|".join(key): n for key, n in kmock.counts.items()},
                    "service": _quantiles(kmock.service_s),
                    "objects": objects,
                    "recorded_requests": len(kmock._requests),
                    **_usage(),
                }
            raise ValueError(command)

        conn.send(str(kmock.url).rstrip("/"))
        await _commands(conn, answer)


# ---- the operator ------------------------------------------------------------------------------


def run_operator(
    conn: Connection,
    server: str,
    profile_dir: str | None,
    log_path: str,
    overrides: dict[str, Any],
    experiments: list[str],
) -> None:
    _profiled(
        profile_dir,
        "operator",
        lambda: asyncio.run(_run_operator(conn, server, log_path, overrides, experiments)),
    )


# ---- operator-side changes, tried here without editing the operator (--operator-experiment) ------


def _no_trust_env(handlers: Any) -> None:
    """kubernetes_asyncio's session has trust_env=True: two thread-pool hops per API call (a
    ~/.netrc read and a proxy lookup). Off here, as an operator could do after make_api_client."""
    make = handlers.make_api_client

    async def make_api_client(server: str | None) -> Any:
        api = await make(server)
        api.rest_client.pool_manager._trust_env = False  # private: no public switch in 33.x
        return api

    handlers.make_api_client = make_api_client


def _raw_get(handlers: Any) -> None:
    """Kube.get without the typed-model round trip (JSON -> V1Job -> dict): plain JSON."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from m2rl_operator import kube

    async def get(self: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        async def once() -> dict[str, Any] | None:
            response = await self._method(kind, "read")(name, namespace, _preload_content=False)
            async with response:
                if response.status == 404:
                    return None
                if response.status >= 300:
                    raise ApiException(status=response.status, reason=response.reason)
                return await response.json()  # type: ignore[no-any-return]

        return await kube.with_retries(once)

    kube.Kube.get = get  # type: ignore[method-assign]


def _c_yaml(handlers: Any) -> None:
    """yaml.safe_dump (pure Python) -> the same dump with libyaml's CSafeDumper."""
    import yaml

    def safe_dump(data: Any, stream: Any = None, **kwargs: Any) -> Any:
        return yaml.dump(data, stream, Dumper=yaml.CSafeDumper, **kwargs)

    yaml.safe_dump = safe_dump


EXPERIMENTS: dict[str, Callable[[Any], None]] = {
    "no-trust-env": _no_trust_env,
    "raw-get": _raw_get,
    "c-yaml": _c_yaml,
}


async def _run_operator(
    conn: Connection, server: str, log_path: str, overrides: dict[str, Any], experiments: list[str]
) -> None:
    sys.path.insert(0, str(ROOT))
    import logging

    import kopf

    from m2rl_operator.settings import OperatorOptions
    from tests.support.kopf_kmock import load_handlers

    # As `kopf run` does: INFO logs (and, through them, kopf's INFO Events), here to a file.
    kopf.configure(verbose=False)
    log = open(log_path, "a")  # noqa: SIM115 - lives as long as the process
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(log)

    registry = load_handlers(["m2rl_operator.handlers"])
    handlers = sys.modules["m2rl_operator.handlers"]
    calls: dict[str, list[float]] = {}

    def timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """Count and time a reconcile entry point as the handlers call it (module globals)."""

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                key = label + (":timer" if kwargs.get("scrape_progress") else "")
                calls.setdefault(key, []).append(time.perf_counter() - start)

        return wrapper

    handlers.ensure_run = timed("ensure_run", handlers.ensure_run)  # type: ignore[attr-defined]
    handlers.refresh_run = timed("refresh_run", handlers.refresh_run)  # type: ignore[attr-defined]
    for name in experiments:
        EXPERIMENTS[name](handlers)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server, insecure=True)

    # kopf's defaults, as in production: the handlers' startup sets the watch and request timeouts
    # (300/330/30/60 s). CRD/namespace scanning is off: the emulator serves no CRDs.
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    for dotted, value in overrides.items():  # e.g. {"queueing.worker_limit": 50}
        section, _, attr = dotted.partition(".")
        setattr(getattr(settings, section), attr, value)

    ready = threading.Event()
    memo = kopf.Memo(
        kube_server=server,
        options=OperatorOptions(metrics_port=None),
        trainer_metrics_url=lambda ns, name: "http://127.0.0.1:9/",  # never scraped: no Job runs
    )
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            clusterwide=True,
            standalone=True,
            ready_flag=ready,
            memo=memo,
        )
    )
    started = await asyncio.to_thread(ready.wait, 60)
    lags: list[float] = []
    monitor = asyncio.create_task(_loop_lag(lags))
    conn.send("ready" if started else "not started")

    def answer(command: str) -> Any:
        if command in ("stats", "stop"):
            return {
                "reconciles": {label: _quantiles(values) for label, values in calls.items()},
                "event_loop_lag": _quantiles(lags),
                "tasks": len(asyncio.all_tasks()),
                **_usage(),
            }
        raise ValueError(command)

    await _commands(conn, answer)
    monitor.cancel()
    task.cancel()
    await asyncio.gather(task, monitor, return_exceptions=True)


async def _loop_lag(lags: list[float], interval_s: float = 0.1) -> None:
    """How late a 0.1 s sleep wakes up: the time any ready callback waits for the loop (CPU/GIL)."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval_s)
        lags.append(loop.time() - start - interval_s)
