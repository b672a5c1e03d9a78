"""`HttpScorer`: the verifier service behind the library's `score(samples) -> results` interface.

The trainer picks in-process scoring (`Scorer`) or the service (`HttpScorer`) by configuration;
both return the same `Result`s. A 400 becomes the same ConfigError the library raises.

Batches of any size: the client reads the service's limits from GET /health (samples per request,
samples a pool queues, request bytes) and sends a batch as requests that fit, `max_in_flight` at a
time, each at most half the service's queue so that two in flight never refuse each other. A 429
(the service busy with other clients) is retried with back-off for up to `retry_for_s` per
request, then it is an error (never a silent 0). A 413 means a request can never be admitted: it
is raised at once (RequestTooLarge), as is a single sample larger than the byte limit.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import httpx

from m2rl_trainer.rewards.types import ConfigError, Result, Sample


class ServiceSaturated(RuntimeError):
    """The service kept answering 429 for longer than the client was willing to wait."""


class RequestTooLarge(RuntimeError):
    """The service can never admit this request (413) or this sample (larger than its byte limit)."""


def _as_json(sample: Sample | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(sample, Sample):
        raw = asdict(sample)
        raw["options"] = dict(sample.options)
        return {k: v for k, v in raw.items() if v is not None}
    return dict(sample)


def split_batch(sizes: Sequence[int], max_samples: int, max_bytes: int) -> list[range]:
    """Index ranges of consecutive samples, each at most `max_samples` samples and (counting the
    JSON of each sample plus its comma) `max_bytes` bytes, balanced in count. Pure; `sizes` are the
    samples' encoded lengths."""
    if not sizes:
        return []
    envelope = len('{"samples": []}')
    for index, size in enumerate(sizes):
        if size + 2 + envelope > max_bytes:
            raise RequestTooLarge(
                f"sample {index} is {size} bytes of JSON; the service accepts at most {max_bytes} per request"
            )
    parts = -(-len(sizes) // max_samples)  # at least this many requests; balance them
    target = -(-len(sizes) // parts)
    ranges, start, used = [], 0, envelope
    for index, size in enumerate(sizes):
        if index > start and (index - start >= target or used + size + 2 > max_bytes):
            ranges.append(range(start, index))
            start, used = index, envelope
        used += size + 2
    ranges.append(range(start, len(sizes)))
    return ranges


class HttpScorer:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 600.0,
        retry_for_s: float = 120.0,
        max_in_flight: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for_s = retry_for_s
        self.max_in_flight = max_in_flight
        self._client = httpx.Client(timeout=timeout_s)
        self._limits: dict[str, int] | None = None
        self._lock = threading.Lock()

    def limits(self) -> dict[str, int]:
        """The service's per-request limits (GET /health), read once; {} from a service without them."""
        with self._lock:
            if self._limits is None:
                response = self._client.get(f"{self.base_url}/health")
                limits = response.json().get("limits") if response.status_code in (200, 503) else None
                self._limits = dict(limits) if isinstance(limits, dict) else {}
            return self._limits

    def score(self, samples: Sequence[Sample | Mapping[str, Any]]) -> list[Result]:
        bodies = [json.dumps(_as_json(s)) for s in samples]
        limits = self.limits()
        # Half the queue per request, so `max_in_flight` = 2 requests of ours never refuse each other.
        max_samples = max(
            1, min(limits.get("max_batch_samples", 1 << 30), limits.get("max_pending_samples", 1 << 31) // 2)
        )
        max_bytes = int(limits.get("max_request_bytes", 1 << 62))
        parts = split_batch([len(b.encode()) for b in bodies], max_samples, max_bytes)
        if len(parts) <= 1:
            return self._post(bodies)
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="verifier-request") as pool:
            chunks = list(pool.map(lambda part: self._post([bodies[i] for i in part]), parts))
        return [result for chunk in chunks for result in chunk]

    def _post(self, bodies: list[str]) -> list[Result]:
        content = ('{"samples": [' + ", ".join(bodies) + "]}").encode()
        headers = {"Content-Type": "application/json"}
        give_up = time.monotonic() + self.retry_for_s
        delay = 0.05
        while True:
            response = self._client.post(f"{self.base_url}/v1/score", content=content, headers=headers)
            if response.status_code == 429 and time.monotonic() + delay < give_up:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            break
        if response.status_code == 400:
            raise ConfigError(response.json().get("error", response.text))
        if response.status_code == 413:
            raise RequestTooLarge(_error_text(response))
        if response.status_code == 429:
            raise ServiceSaturated(response.json().get("error", "saturated"))
        response.raise_for_status()
        return [Result.from_dict(r) for r in response.json()["results"]]

    def health(self) -> dict[str, Any]:
        response = self._client.get(f"{self.base_url}/health")
        return dict(response.json())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:  # aiohttp's own 413 (body over max_request_bytes) is plain text
        return response.text
