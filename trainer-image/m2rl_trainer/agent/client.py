"""`HttpEnvironment`: the environment service (service.py) behind the `Environment` interface.

The rollout picks the in-process environment or the service by configuration; both give the same
observations and rewards. Connection failures and 5xx answers are retried with back-off for up to
`retry_for_s` (the study's agent retries five times with exponential back-off); a 400 (unknown
session, bad ground truth) is an error at once. Thread-safe: one httpx client serves the rollout's
threads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from m2rl_trainer.agent.environment import SessionError, Verdict
from m2rl_trainer.agent.service import SESSION_HEADER
from m2rl_trainer.agent.toolcall import ToolCall


class HttpEnvironment:
    def __init__(self, base_url: str, *, timeout_s: float = 60.0, retry_for_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for_s = retry_for_s
        self._client = httpx.Client(timeout=timeout_s)

    def _post(self, path: str, body: Mapping[str, Any], session: str | None = None) -> Any:
        headers = {SESSION_HEADER: session} if session else None
        give_up = time.monotonic() + self.retry_for_s
        delay = 0.1
        while True:
            try:
                response = self._client.post(f"{self.base_url}{path}", json=dict(body), headers=headers)
                if response.status_code < 500:
                    break
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            if time.monotonic() + delay >= give_up:
                raise SessionError(f"environment service {self.base_url}{path}: {problem}")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        if response.status_code == 400:
            raise SessionError(f"environment service {self.base_url}{path}: {response.json().get('error')}")
        response.raise_for_status()
        return response.json()

    def tools(self) -> list[dict[str, Any]]:
        response = self._client.get(f"{self.base_url}/v1/tools")
        response.raise_for_status()
        return list(response.json()["tools"])

    def seed_session(self) -> str:
        return str(self._post("/seed_session", {})["session_id"])

    def call(self, session: str, name: str, arguments: Mapping[str, Any]) -> Any:
        return self._post(f"/{name}", arguments, session)["output"]

    def verify(self, calls: Sequence[ToolCall], ground_truth: Sequence[ToolCall]) -> Verdict:
        body = {
            "response": {"output": [c.to_function_call(f"call_{i}") for i, c in enumerate(calls)]},
            "ground_truth": [{"name": c.name, "arguments": c.arguments} for c in ground_truth],
        }
        answer = self._post("/verify", body)
        return Verdict(float(answer["reward"]), list(answer.get("details", [])))

    def end_session(self, session: str) -> None:
        self._post("/end_session", {}, session)

    def close(self) -> None:
        self._client.close()
