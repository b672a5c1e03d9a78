"""Multiple-choice letter extraction: data/mc_cases.jsonl plus option and reference checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2rl_trainer.rewards.registry import get_verifier
from m2rl_trainer.rewards.types import ConfigError

CASES = [
    json.loads(line) for line in (Path(__file__).parent / "data" / "mc_cases.jsonl").read_text().splitlines()
]
SPEC = get_verifier("multiple_choice")


@pytest.mark.parametrize("case", CASES, ids=[f"{c['id']}:{c['response'][:30]}" for c in CASES])
def test_extraction_case(case):
    result = SPEC.verify(case["response"], case["reference"], SPEC.parse_options(case.get("options")))
    assert result.details.get("extracted") == case["extracted"], result.details
    assert result.verdict == case["expected"]


def test_cases_cover_every_pattern_family():
    patterns = set()
    for case in CASES:
        result = SPEC.verify(case["response"], case["reference"], SPEC.parse_options(case.get("options")))
        patterns.add(result.details.get("pattern"))
    assert {"pattern1", "pattern2", "pattern3", "pattern4", "last_letter"} <= patterns


@pytest.mark.parametrize(
    ("reference", "num_choices"),
    [("E", 4), ("", 4), ("AB", 10), (3, 4), ("K", 10)],
    ids=["out-of-range", "empty", "two-letters", "number", "past-J"],
)
def test_reference_outside_the_options_is_a_config_error(reference, num_choices):
    with pytest.raises(ConfigError, match="multiple_choice reference"):
        SPEC.check_reference(reference, SPEC.parse_options({"num_choices": num_choices}))


@pytest.mark.parametrize("num_choices", [1, 11])
def test_num_choices_range(num_choices):
    with pytest.raises(ConfigError, match="num_choices"):
        SPEC.parse_options({"num_choices": num_choices})
