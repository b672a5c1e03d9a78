"""The data that crosses the verifier interface: samples in, results out.

A sample names its verifier type, carries the model's response, the reference (the gold answer,
the tests, the instructions) and optional per-sample options. A result carries the reward, a
verdict from a small fixed vocabulary, details for debugging, and the time the check took.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The verdict vocabulary is closed so dashboards and tests can rely on it.
CORRECT = "correct"
INCORRECT = "incorrect"  # a real answer that is wrong (wrong output, failed assert, runtime error)
NO_ANSWER = "no_answer"  # nothing to check: no \boxed{}, no code block, no letter, empty response
FORMAT_ERROR = "format_error"  # a format gate failed (e.g. no `</think>` when one is required)
TIMEOUT = "timeout"  # the check (or the sandboxed program) ran past its wall-clock or CPU limit
MEMORY_LIMIT = "memory_limit"  # the sandboxed program ran out of its address-space limit
OUTPUT_LIMIT = "output_limit"  # the sandboxed program printed more than its output cap
SANDBOX_ERROR = "sandbox_error"  # the sandbox worker died (e.g. the program killed its parent)
ERROR = "error"  # the verifier itself failed on this input; reported, never a silent 0

VERDICTS: tuple[str, ...] = (
    CORRECT,
    INCORRECT,
    NO_ANSWER,
    FORMAT_ERROR,
    TIMEOUT,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    SANDBOX_ERROR,
    ERROR,
)


class ConfigError(ValueError):
    """A verifier type, option or reference that makes no sense; raised before anything is scored."""


@dataclass(frozen=True)
class Sample:
    """One response to score.

    verifier: registered verifier type ("math", "code", "multiple_choice", "ifeval").
    response: the model's full completion (reasoning included; gates and extraction are options).
    reference: what the response is checked against; its shape depends on the verifier.
    options: per-sample options, merged over the scorer's defaults for that verifier.
    id: echoed in the result so callers can match results to samples; free-form.
    """

    verifier: str
    response: str
    reference: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "sample") -> Sample:
        """Build a sample from JSON; unknown or missing fields are configuration errors."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        allowed = {"verifier", "response", "reference", "options", "id"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        for name in ("verifier", "response", "reference"):
            if name not in raw:
                raise ConfigError(f"{where}: missing field {name!r}")
        if not isinstance(raw["verifier"], str):
            raise ConfigError(f"{where}: 'verifier' must be a string")
        if not isinstance(raw["response"], str):
            raise ConfigError(f"{where}: 'response' must be a string")
        options = raw.get("options")
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}: 'options' must be an object")
        sample_id = raw.get("id")
        if sample_id is not None and not isinstance(sample_id, str | int):
            raise ConfigError(f"{where}: 'id' must be a string or an integer")
        return cls(
            verifier=raw["verifier"],
            response=raw["response"],
            reference=raw["reference"],
            options=dict(options),
            id=None if sample_id is None else str(sample_id),
        )


@dataclass
class Result:
    """The outcome of one check.

    reward: the scalar used by GRPO (0/1 by default; a fraction with fractional scoring options).
    verdict: one of VERDICTS. details: verifier-specific facts (the extracted answer, per-test
    statuses, per-instruction results). time_s: wall-clock seconds spent checking this sample.
    """

    reward: float
    verdict: str
    details: dict[str, Any] = field(default_factory=dict)
    time_s: float = 0.0
    id: str | None = None
    verifier: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "verifier": self.verifier,
            "reward": self.reward,
            "verdict": self.verdict,
            "details": self.details,
            "time_s": round(self.time_s, 6),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Result:
        return cls(
            reward=float(raw["reward"]),
            verdict=str(raw["verdict"]),
            details=dict(raw.get("details") or {}),
            time_s=float(raw.get("time_s", 0.0)),
            id=raw.get("id"),
            verifier=str(raw.get("verifier", "")),
        )
