"""A trainer's real batch sizes against the service's default limits (4096 samples queued per pool):
a request that can never be admitted is a 413 that says so, and HttpScorer splits batches to fit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from m2rl_trainer.rewards.client import HttpScorer
from m2rl_trainer.rewards.service import ServiceConfig, VerifierService
from tests.integration.rewards.helpers import free_port


@pytest.fixture(scope="module")
def service_url(scorer) -> Iterator[str]:
    """The service with its default limits, in this process, around the session's scorer."""
    config = ServiceConfig(port=free_port())
    assert (config.max_pending_samples, config.max_batch_samples) == (4096, 8192)
    service = VerifierService(config, scorer=scorer)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(service.app())
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, config.host, config.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://{config.host}:{config.port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_a_batch_of_5000_samples(service_url):
    # 5,000 math samples (one request of them was refused with 429 for ever before: more than the
    # 4,096 the python pool queues); every 50th answer is wrong, and goes to math-verify.
    batch = [
        {"id": str(i), "verifier": "math", "response": rf"\boxed{{{i}}}", "reference": str(i + (i % 50 == 0))}
        for i in range(5000)
    ]
    response = httpx.post(f"{service_url}/v1/score", json={"samples": batch}, timeout=60)
    assert response.status_code == 413 and "Retry-After" not in response.headers
    assert response.json()["error"] == (
        "5000 samples for the python_worker pool can never be admitted: it queues at most 4096; "
        "split the batch (GET /health: limits)"
    )
    with HttpScorer(service_url, retry_for_s=30) as client:
        start = time.monotonic()
        results = client.score(batch)
        elapsed = time.monotonic() - start
    assert [r.id for r in results] == [str(i) for i in range(5000)]
    assert [r.reward for r in results] == [0.0 if i % 50 == 0 else 1.0 for i in range(5000)]
    print(f"\n5,000 samples through HttpScorer in {elapsed:.1f} s")
