"""Verifiable rewards: math, sandboxed code, multiple choice and instruction following.

Library use (training and evaluation call the same functions):

    from m2rl_trainer.rewards import Scorer
    with Scorer({"verifiers": {"math": {"require_think_close": True}, "code": {}}}) as scorer:
        results = scorer.score([{"verifier": "math", "response": "... \\\\boxed{4}", "reference": "4"}])

Each verifier is also a pure function `verify(response, reference, options) -> Result` in its
module (math_verifier, code_verifier, multiple_choice, ifeval_verifier), registered by name in
`registry.VERIFIERS`. The same scorer serves HTTP (`m2rl-verifier serve`, see service.py) and
files (`m2rl-verifier score FILE.jsonl`); `client.HttpScorer` has the same `score` interface.
"""

from m2rl_trainer.rewards.registry import VERIFIERS, get_verifier
from m2rl_trainer.rewards.scorer import Scorer, ScorerConfig, score
from m2rl_trainer.rewards.types import VERDICTS, ConfigError, Result, Sample

__all__ = [
    "VERDICTS",
    "VERIFIERS",
    "ConfigError",
    "Result",
    "Sample",
    "Scorer",
    "ScorerConfig",
    "get_verifier",
    "score",
]
