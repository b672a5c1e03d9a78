"""Benchmark metrics against hand-computed values."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from m2rl_operator.api.evalsuite import METRIC_PATTERN as API_METRIC_PATTERN
from m2rl_trainer.eval.metrics import (
    METRIC_PATTERN,
    Metric,
    avg_at,
    compute_metrics,
    maj_at,
    majority_reward,
    parse_metric,
    pass_at,
    pass_at_k,
)


def test_the_metric_pattern_is_the_apis() -> None:
    assert METRIC_PATTERN.pattern == API_METRIC_PATTERN


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 1, 1 / 4),  # pass@1 = c / n
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
        (4, 0, 4, 0.0),
        (4, 1, 4, 1.0),  # every 4-subset of 4 holds the correct one
        (5, 3, 3, 1.0),  # n - c = 2 < k: always a pass
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5) = 11/12
        (16, 1, 8, 1 - 6435 / 12870),  # 1 - C(15,8)/C(16,8) = 1/2
    ],
    ids=["n4c1k1", "n4c1k2", "n4c2k2", "none-right", "one-in-all", "n-c<k", "n10c3k5", "n16c1k8"],
)
def test_pass_at_k_by_hand(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_binomial_formula_everywhere() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_stays_accurate_for_large_n() -> None:
    # C(1024, 512) overflows a float; the product form does not.
    exact = 1 - Fraction(math.comb(1000, 512), math.comb(1024, 512))
    assert pass_at_k(1024, 24, 512) == pytest.approx(float(exact), rel=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, 1, 5), (4, 1, 0), (4, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match=f"n={n}, c={c}, k={k}"):
        pass_at_k(n, c, k)


REWARDS = [
    [1.0, 0.0, 0.0, 1.0],  # c = 2
    [0.0, 0.0, 0.0, 0.0],  # c = 0
    [1.0, 1.0, 1.0, 0.0],  # c = 3
]


def test_avg_is_the_mean_of_all_samples() -> None:
    assert avg_at(REWARDS) == pytest.approx(5 / 12)


def test_pass_averages_the_unbiased_estimate_over_prompts() -> None:
    # per prompt pass@2 with n = 4: 1 - C(2,2)/6 = 5/6, 0, 1 - C(1,2)/6 = 1
    assert pass_at(REWARDS, 2) == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert pass_at(REWARDS, 1) == pytest.approx(avg_at(REWARDS))  # binary rewards: pass@1 = avg
    assert pass_at(REWARDS, 4) == pytest.approx(2 / 3)


def test_partial_credit_counts_in_avg_but_is_not_a_pass() -> None:
    rewards = [[0.5, 0.5], [1.0, 0.25]]
    assert avg_at(rewards) == pytest.approx(2.25 / 4)
    assert pass_at(rewards, 2) == pytest.approx(0.5)  # only the 1.0 is correct


@pytest.mark.parametrize(
    ("rewards", "answers", "expected"),
    [
        ([1.0, 1.0, 0.0], ["7", "7", "3"], 1.0),
        ([0.0, 0.0, 1.0], ["3", "3", "7"], 0.0),  # the majority is wrong although one sample is right
        ([1.0, 0.0], ["7", "3"], 0.5),  # tie: expectation of a random tie-break
        ([1.0, 0.0, 0.0, 0.0], ["7", "3", "5", None], 1 / 3),  # three-way tie; None does not vote
        ([0.0, 1.0, 0.0], [None, "7", None], 1.0),  # the only answer wins
        ([0.0, 0.0], [None, "  "], 0.0),  # no answer at all
        ([1.0, 1.0, 0.0], [" 7", "7 ", "3"], 1.0),  # whitespace does not split votes
    ],
    ids=["majority-right", "majority-wrong", "tie", "three-way-tie", "single-vote", "no-votes", "strip"],
)
def test_majority_reward(rewards: list[float], answers: list[str | None], expected: float) -> None:
    assert majority_reward(rewards, answers) == pytest.approx(expected)


def test_maj_uses_the_first_n_samples() -> None:
    rewards = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]
    answers = [["7", "3", "3", "3"], ["3", "7", "7", "7"]]
    assert maj_at(rewards, answers, 4) == pytest.approx((0 + 1) / 2)
    assert maj_at(rewards, answers, 2) == pytest.approx((0.5 + 0.5) / 2)  # two ties
    assert maj_at(rewards, answers, 1) == pytest.approx((1 + 0) / 2)  # maj@1 = the first sample


def test_compute_metrics_keys_are_the_names_as_written() -> None:
    answers = [["7", "3", "3", "7"], ["1", "2", "2", "1"], ["9", "9", "9", "4"]]
    metrics = compute_metrics(["avg@k", "pass@k", "pass@2", "maj@k", "avg@2"], REWARDS, answers)
    assert metrics == pytest.approx(
        {
            "avg@k": 5 / 12,
            "pass@k": 2 / 3,  # k = 4
            "pass@2": (5 / 6 + 0 + 1) / 3,
            "maj@k": (0.5 + 0 + 1) / 3,  # 7/3 tie (1, 0), all wrong, 9 wins (1)
            "avg@2": 5 / 12,  # every avg@N uses all k samples
        }
    )
    assert list(metrics) == ["avg@k", "pass@k", "pass@2", "maj@k", "avg@2"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("avg@k", Metric("avg", None)), ("pass@16", Metric("pass", 16)), ("maj@1", Metric("maj", 1))],
)
def test_parse_metric(name: str, expected: Metric) -> None:
    assert parse_metric(name) == expected


@pytest.mark.parametrize("name", ["avg@0", "pass@01", "top@1", "pass@", "avg@K", "pass@k "])
def test_parse_metric_rejects_names_outside_the_pattern(name: str) -> None:
    with pytest.raises(ValueError, match=f"unknown metric {name!r}"):
        parse_metric(name)


def test_metrics_need_enough_and_equal_samples() -> None:
    with pytest.raises(ValueError, match="pass@8 needs at least 8 samples per prompt, got 4"):
        compute_metrics(["pass@8"], REWARDS)
    with pytest.raises(ValueError, match="same, non-zero number of samples"):
        avg_at([[1.0, 0.0], [1.0]])
    with pytest.raises(ValueError, match="extracted answer"):
        compute_metrics(["maj@k"], REWARDS)
