"""`HttpScorer`: the verifier service behind the library's `score(samples) -> results` interface.

The trainer picks in-process scoring (`Scorer`) or the service (`HttpScorer`) by configuration;
both return the same `Result`s. A 400 becomes the same ConfigError the library raises; a 429 is
retried with back-off for up to `retry_for_s`, after which it is an error (never a silent 0).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import httpx

from m2rl_trainer.rewards.types import ConfigError, Result, Sample


class ServiceSaturated(RuntimeError):
    """The service kept answering 429 for longer than the client was willing to wait."""


def _as_json(sample: Sample | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(sample, Sample):
        raw = asdict(sample)
        raw["options"] = dict(sample.options)
        return {k: v for k, v in raw.items() if v is not None}
    return dict(sample)


class HttpScorer:
    def __init__(self, base_url: str, *, timeout_s: float = 600.0, retry_for_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for_s = retry_for_s
        self._client = httpx.Client(timeout=timeout_s)

    def score(self, samples: Sequence[Sample | Mapping[str, Any]]) -> list[Result]:
        body = {"samples": [_as_json(s) for s in samples]}
        give_up = time.monotonic() + self.retry_for_s
        delay = 0.05
        while True:
            response = self._client.post(f"{self.base_url}/v1/score", json=body)
            if response.status_code == 429 and time.monotonic() + delay < give_up:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            break
        if response.status_code == 400:
            raise ConfigError(response.json().get("error", response.text))
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
