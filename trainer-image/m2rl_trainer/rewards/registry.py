"""The one table of verifier types, keyed by the name a sample's `verifier` field carries.

Each entry names its module's pure `verify(response, reference, options)` function, its options
dataclass, its reference check and where it runs:
  inline         in the caller's thread (microseconds of regex work: multiple choice)
  python_worker  in a warm worker process with a wall-clock limit (math-verify, IFEval)
  sandbox        in a warm bubblewrap sandbox (code)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.rewards import code_verifier, ifeval_verifier, math_verifier, multiple_choice
from m2rl_trainer.rewards.options import CommonOptions, describe_options, parse_options
from m2rl_trainer.rewards.types import ConfigError, Result

INLINE, PYTHON_WORKER, SANDBOX = "inline", "python_worker", "sandbox"


def _no_warm_up() -> None:
    pass


def _warm_math() -> None:
    math_verifier.equivalent("1/2", "0.5", math_verifier.MathOptions())  # imports sympy & math-verify


@dataclass(frozen=True)
class VerifierSpec:
    name: str
    summary: str
    options_type: type[CommonOptions]
    check_reference: Callable[[Any, Any], None]
    verify: Callable[..., Result]
    executor: str
    warm_up: Callable[[], None] = _no_warm_up
    # Decides the easy cases in the caller's process (None: not decided, use the executor).
    quick_verdict: Callable[..., Result | None] | None = None

    def parse_options(self, raw: Mapping[str, Any] | None) -> Any:
        return parse_options(self.options_type, raw, self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "executor": self.executor,
            "options": describe_options(self.options_type),
        }


VERIFIERS: dict[str, VerifierSpec] = {
    spec.name: spec
    for spec in (
        VerifierSpec(
            math_verifier.NAME,
            "final answer (\\boxed{}, 'Answer:') checked for equivalence by math-verify",
            math_verifier.MathOptions,
            math_verifier.check_reference,
            math_verifier.verify,
            PYTHON_WORKER,
            _warm_math,
            math_verifier.quick_verdict,
        ),
        VerifierSpec(
            code_verifier.NAME,
            "last fenced Python block run against stdin/stdout, call or assert tests in a bubblewrap sandbox",
            code_verifier.CodeOptions,
            code_verifier.check_reference,
            code_verifier.verify,
            SANDBOX,
        ),
        VerifierSpec(
            multiple_choice.NAME,
            "answer letter (A-J) extracted and compared with the reference letter",
            multiple_choice.MultipleChoiceOptions,
            multiple_choice.check_reference,
            multiple_choice.verify,
            INLINE,
        ),
        VerifierSpec(
            ifeval_verifier.NAME,
            "IFEval instructions checked strict or loose (if-verifiable)",
            ifeval_verifier.IFEvalOptions,
            ifeval_verifier.check_reference,
            ifeval_verifier.verify,
            PYTHON_WORKER,
            ifeval_verifier.warm_up,
        ),
    )
}


def get_verifier(name: str) -> VerifierSpec:
    """The registered verifier `name`; an unknown name is an error that repeats it."""
    spec = VERIFIERS.get(name)
    if spec is None:
        raise ConfigError(f"unknown verifier {name!r}; known verifiers: {sorted(VERIFIERS)}")
    return spec
