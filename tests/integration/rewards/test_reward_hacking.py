"""The reward-hacking corpus (reward_hacks.py) against every test style: no attempt is rewarded, the
honest control passes everything, and the host stays quick whatever the program returns."""

from __future__ import annotations

import time

import pytest

from tests.integration.rewards.reward_hacks import HACKS, HONEST, TESTS

# Short limits: several attempts are meant to hang or to be stopped.
OPTIONS = {"timeout_s": 1.0, "max_wall_factor": 2.0, "memory_mb": 256, "scoring": "fraction"}


def _sample(code: str, style: str) -> dict:
    return {
        "id": style,
        "verifier": "code",
        "response": f"```python\n{code}\n```",
        "reference": {"tests": [TESTS[style]]},
        "options": OPTIONS,
    }


def test_the_honest_control_passes_every_style(scorer):
    results = scorer.score([_sample(HONEST, style) for style in TESTS])
    assert {r.id: r.verdict for r in results} == dict.fromkeys(TESTS, "correct")


@pytest.mark.usefixtures("clean_sandboxes")
def test_no_hack_is_rewarded_in_any_style(scorer):
    samples = [
        {**_sample(hack.code, style), "id": f"{hack.name}/{style}"} for hack in HACKS for style in TESTS
    ]
    start = time.monotonic()
    results = scorer.score(samples)
    elapsed = time.monotonic() - start
    rewarded = {r.id: (r.verdict, r.details["tests"][0]) for r in results if r.reward > 0}
    assert rewarded == {}, rewarded
    # bounded work per run: hangs end at the run's limits, not at the host's grace period
    assert elapsed < 2.0 * len(samples), elapsed
    assert len(HACKS) >= 20 and len({h.category for h in HACKS}) >= 12
