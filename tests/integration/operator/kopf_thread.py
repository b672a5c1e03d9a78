"""Run the operator in its own thread and event loop (against the kmock emulator on the test's loop).

tests/support/kopf_kmock.running_operator runs kopf on the test's loop; kopf then waits 5 s at
exit for every task created since its start, including the emulator's open watch connections.
In a thread of its own kopf only sees its own tasks and stops in well under a second, which keeps
this suite inside the project's time budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import kopf

from tests.support.kopf_kmock import fast_settings, load_handlers


@contextlib.asynccontextmanager
async def operator_thread(
    kmock: Any, modules: Iterable[str], memo: Mapping[str, Any] | None = None, start_timeout_s: float = 15.0
) -> AsyncIterator[None]:
    registry = load_handlers(modules)
    server = str(kmock.url).rstrip("/")

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server, insecure=True)

    settings = fast_settings()
    # No runtime re-discovery of CRDs/namespaces: its retries against the closed session are what
    # kopf would wait 5 s for at exit. The handlers name group, version and plural in full anyway.
    settings.scanning.disabled = True
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
            memo=kopf.Memo(kube_server=server, **dict(memo or {})),
        )
    )

    def run() -> None:
        asyncio.set_event_loop(loop)
        # Stopped by cancellation: kopf then cancels its sub-tasks at once, where a stop flag makes
        # it wait 5 s for them (its discovery retries never finish against a closed session).
        with contextlib.suppress(asyncio.CancelledError):
            try:
                loop.run_until_complete(main)
            except BaseException as error:  # surfaced in the test below
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
        yield
    finally:
        loop.call_soon_threadsafe(main.cancel)
        await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive(), "operator thread did not stop within 15 s"
    assert not [e for e in errors if not isinstance(e, asyncio.CancelledError)], errors
