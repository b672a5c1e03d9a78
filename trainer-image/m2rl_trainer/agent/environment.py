"""A tool environment's interface (NeMo Gym's resource-server shape) and the built-in workplace.

NeMo Gym's resource servers (nemo_gym/base_resources_server.py) have three operations, which an
episode uses in order: seed a session (`POST /seed_session`: a fresh world for one episode), execute
tool calls in it (`POST /<tool name>` with the arguments as the body), and verify at the end
(`POST /verify`: the reward). `Environment` is that interface in Python; `WorkplaceEnvironment`
runs it in-process, `client.HttpEnvironment` talks to the service (service.py) that wraps one.

Stateless between episodes: every session starts from a fresh copy of the initial tables, and
verification looks at no session at all. As NeMo Gym's `workplace_assistant` does (`utils.is_correct`),
it replays the episode's calls and the task's ground-truth calls on two fresh workplaces and gives
reward 1 when the compared tables end equal, else 0; a call that fails during the replay changes
nothing, as it changed nothing during the episode.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from m2rl_trainer.agent.toolcall import ToolCall, parse_arguments
from m2rl_trainer.agent.workplace import TOOLS, WorkplaceData, WorkplaceState, call_tool, differences, schemas


class SessionError(RuntimeError):
    """The environment cannot serve a request: unknown (or forgotten) session, unreachable service."""


@dataclass(frozen=True)
class Verdict:
    """The end of an episode: reward 1.0 (the final state is the expected one) or 0.0, and why."""

    reward: float
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"reward": self.reward, "details": self.details}


@runtime_checkable
class Environment(Protocol):
    def tools(self) -> list[dict[str, Any]]:
        """The tools' Responses-API schemas."""
        ...

    def seed_session(self) -> str:
        """A new session on a fresh world; returns its id."""
        ...

    def call(self, session: str, name: str, arguments: Mapping[str, Any]) -> Any:
        """Execute one call in the session; the result, or an error string meant for the model."""
        ...

    def verify(self, calls: Sequence[ToolCall], ground_truth: Sequence[ToolCall]) -> Verdict:
        """The reward of an episode that made `calls`, for a task solved by `ground_truth`."""
        ...

    def end_session(self, session: str) -> None:
        """Forget the session (unknown ids are ignored)."""
        ...

    def close(self) -> None: ...


def parse_ground_truth(raw: Any, where: str) -> list[ToolCall]:
    """A task's reference calls: a list (or a JSON string of one, as NeMo Gym accepts) of
    {"name", "arguments"} with arguments an object or a JSON string of one; every name must be a
    workplace tool. ValueError names `where` and the item."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(raw, list):
        raise ValueError(f"{where}: must be a list of tool calls, got {type(raw).__name__}")
    calls = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValueError(f"{at}: a tool call needs a string 'name'")
        if item["name"] not in TOOLS:
            raise ValueError(f"{at}.name: unknown workplace tool {item['name']!r}")
        calls.append(ToolCall(item["name"], parse_arguments(item.get("arguments", {}), f"{at}.arguments")))
    return calls


@dataclass(frozen=True)
class WorkplaceSettings:
    """max_sessions: sessions kept at once; seeding one more forgets the least recently used (an
    episode that lost its session gets an error, not a silent fresh world)."""

    max_sessions: int = 4096


class WorkplaceEnvironment:
    """The workplace assistant in-process; thread-safe (the service and rollout threads share one)."""

    def __init__(self, data: WorkplaceData, settings: WorkplaceSettings = WorkplaceSettings()) -> None:
        self.data = data
        self.settings = settings
        # session id -> (its workplace, a lock: one call at a time per session; others run freely)
        self._sessions: OrderedDict[str, tuple[WorkplaceState, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def tools(self) -> list[dict[str, Any]]:
        return schemas()

    def seed_session(self) -> str:
        session = secrets.token_hex(16)
        state = self.data.fresh_state()
        with self._lock:
            self._sessions[session] = (state, threading.Lock())
            while len(self._sessions) > self.settings.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def call(self, session: str, name: str, arguments: Mapping[str, Any]) -> Any:
        with self._lock:
            found = self._sessions.get(session)
            if found is None:
                raise SessionError(f"unknown session {session!r}: seed a session first (POST /seed_session)")
            self._sessions.move_to_end(session)
        state, lock = found
        with lock:
            return call_tool(state, name, arguments)

    def replay(self, calls: Sequence[ToolCall]) -> WorkplaceState:
        state = self.data.fresh_state()
        for c in calls:
            call_tool(state, c.name, c.arguments)
        return state

    def verify(self, calls: Sequence[ToolCall], ground_truth: Sequence[ToolCall]) -> Verdict:
        found = differences(self.replay(ground_truth), self.replay(calls))
        return Verdict(0.0 if found else 1.0, found)

    def end_session(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()


@dataclass(frozen=True)
class EnvironmentSpec:
    """One entry of ENVIRONMENTS: how to build the environment from an optional data directory."""

    name: str
    summary: str
    build: Callable[[Path | None], Environment]


def _workplace(data_dir: Path | None) -> Environment:
    from m2rl_trainer.agent.workplace.tiny import tiny_workplace

    return WorkplaceEnvironment(WorkplaceData.load(data_dir) if data_dir is not None else tiny_workplace())


ENVIRONMENTS: dict[str, EnvironmentSpec] = {
    "workplace_assistant": EnvironmentSpec(
        "workplace_assistant",
        "NeMo Gym's workplace assistant: email, calendar, analytics, project and CRM tools over CSV tables",
        _workplace,
    )
}


def get_environment(name: str) -> EnvironmentSpec:
    spec = ENVIRONMENTS.get(name)
    if spec is None:
        raise ValueError(f"unknown environment {name!r}; known: {sorted(ENVIRONMENTS)}")
    return spec
