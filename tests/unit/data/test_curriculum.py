"""The quickstart's four-domain curriculum: every reference answer passes the real verifier, every
reference a wrong answer fails it, splits are disjoint and the same for the same seed."""

from __future__ import annotations

import pytest

from m2rl_trainer.data.toy_tasks import (
    DOMAINS,
    VERIFIER,
    VERIFIER_OPTIONS,
    curriculum_corpus,
    curriculum_splits,
    toy_splits,
)
from m2rl_trainer.rewards import Sample, Scorer

# A plausible wrong answer per domain: the verifier must say no.
WRONG = {
    "math": " \\boxed{99}",
    "code": " ```python\ndef f(x):\n    return 0\n```",
    "science": " Z",  # not one of A-F
    "if": " THE ZEBRA WALKED AROUND THE BIG FIELD",  # no lowercase, long, no JSON, quotes, ending, keyword
}


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    with Scorer(
        {"verifiers": {v: {} for v in VERIFIER.values()}, "python_workers": 1, "sandbox_workers": 1}
    ) as s:
        yield s


@pytest.mark.parametrize("domain", DOMAINS)
def test_reference_completions_pass_and_wrong_ones_fail(domain: str, scorer: Scorer) -> None:
    sft, train, heldout = curriculum_splits(domain, 20, 20, 20, seed=3)
    rows = [*sft, *train, *heldout]
    options = VERIFIER_OPTIONS.get(domain, {})
    right = scorer.score([Sample(VERIFIER[domain], r["completion"], r["answer"], options) for r in rows])
    assert [r.reward for r in right] == [1.0] * len(rows), [
        (row["prompt"], row["completion"], r.details)
        for row, r in zip(rows, right, strict=True)
        if r.reward != 1.0
    ]
    wrong = scorer.score([Sample(VERIFIER[domain], WRONG[domain], r["answer"], options) for r in rows])
    assert [r.reward for r in wrong] == [0.0] * len(rows)


@pytest.mark.parametrize("domain", DOMAINS)
def test_splits_are_disjoint_and_deterministic(domain: str) -> None:
    sft, train, heldout = curriculum_splits(domain, 100, 200, 100, seed=0)
    prompts = [r["prompt"] for r in (*sft, *train, *heldout)]
    assert len(set(prompts)) == len(prompts) == 400
    assert [r["id"] for r in heldout][:2] == [f"{domain}-300", f"{domain}-301"]
    assert (sft, train, heldout) == curriculum_splits(domain, 100, 200, 100, seed=0)
    assert curriculum_splits(domain, 100, 200, 100, seed=1)[2] != heldout
    # More warm-up rows leave the first ones (and so the other domains' files) unchanged.
    assert curriculum_splits(domain, 150, 200, 100, seed=0)[0][:100] == sft


def test_errors_name_the_domain() -> None:
    with pytest.raises(ValueError, match="curriculum domain 'history' is unknown"):
        curriculum_splits("history", 1, 1, 1)
    with pytest.raises(ValueError, match="curriculum domain 'if' has fewer than 1800 distinct"):
        curriculum_splits("if", 0, 1800, 0)  # 20 topics x 89 instruction sets
    with pytest.raises(ValueError, match="toy task 'max4' is unknown"):
        toy_splits("max4", 1, 1)


def test_the_corpus_holds_prompts_and_answers() -> None:
    (row,) = curriculum_splits("math", 1, 0, 0)[0]
    assert curriculum_corpus([row]) == [row["prompt"] + row["completion"]]
    assert row["completion"] == f" \\boxed{{{row['answer']}}}"
