"""The registry table, option parsing, sample parsing: the configuration-time errors."""

from __future__ import annotations

import importlib

import pytest

from m2rl_trainer.rewards.options import describe_options
from m2rl_trainer.rewards.registry import VERIFIERS, get_verifier
from m2rl_trainer.rewards.types import ConfigError, Result, Sample


def test_registry_has_the_four_verifiers_each_with_a_pure_verify():
    assert sorted(VERIFIERS) == ["code", "ifeval", "math", "multiple_choice"]
    modules = {
        "math": "math_verifier",
        "code": "code_verifier",
        "multiple_choice": "multiple_choice",
        "ifeval": "ifeval_verifier",
    }
    for name, spec in VERIFIERS.items():
        module = importlib.import_module(spec.verify.__module__)
        assert spec.verify.__module__ == f"m2rl_trainer.rewards.{modules[name]}"  # one module per verifier
        assert name == module.NAME
        assert module.verify is spec.verify and module.check_reference is spec.check_reference
        assert spec.parse_options({}) is not None  # defaults are valid


def test_unknown_verifier_repeats_the_name():
    with pytest.raises(ConfigError, match="unknown verifier 'chemistry'") as info:
        get_verifier("chemistry")
    assert "['code', 'ifeval', 'math', 'multiple_choice']" in str(info.value)


def test_every_option_is_documented():
    for spec in VERIFIERS.values():
        for row in describe_options(spec.options_type):
            assert row["doc"], (spec.name, row["name"])
            assert row["type"] in (
                "boolean",
                "integer",
                "number",
                "string",
                "list of string",
                "string or null",
                "integer or null",
                "number or null",
            ), row


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "expected a JSON object"),
        ({"verifier": "math", "response": "x"}, "missing field 'reference'"),
        ({"verifier": "math", "response": 3, "reference": "1"}, "'response' must be a string"),
        ({"verifier": "math", "response": "x", "reference": "1", "extra": 1}, "unknown field(s) ['extra']"),
        (
            {"verifier": "math", "response": "x", "reference": "1", "options": []},
            "'options' must be an object",
        ),
        ({"verifier": "math", "response": "x", "reference": "1", "id": 1.5}, "'id' must be a string"),
    ],
    ids=[
        "not-object",
        "missing-reference",
        "response-not-string",
        "unknown-field",
        "options-not-object",
        "bad-id",
    ],
)
def test_sample_parsing_errors(raw, message):
    with pytest.raises(ConfigError) as info:
        Sample.from_dict(raw, where="line 3")
    assert message in str(info.value) and "line 3" in str(info.value)


def test_result_round_trips_through_json_form():
    result = Result(1.0, "correct", {"extracted": "4"}, 0.5, "s1", "math")
    assert Result.from_dict(result.to_dict()) == result
