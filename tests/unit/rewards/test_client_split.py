"""How HttpScorer splits a batch to the service's limits (pure)."""

from __future__ import annotations

import pytest

from m2rl_trainer.rewards.client import RequestTooLarge, split_batch


def test_split_by_count_is_balanced_and_in_order():
    parts = split_batch([10] * 5000, max_samples=2048, max_bytes=1 << 30)
    assert [len(p) for p in parts] == [1667, 1667, 1666]
    assert [i for p in parts for i in p] == list(range(5000))
    assert split_batch([10] * 3, max_samples=2048, max_bytes=1 << 30) == [range(0, 3)]
    assert split_batch([], max_samples=4, max_bytes=100) == []


def test_split_by_bytes():
    # '{"samples": []}' is 15 bytes; each sample adds its JSON and ", ": 15 + 2 * 42 = 99 fits
    assert split_batch([40, 40, 40, 40], max_samples=100, max_bytes=100) == [range(0, 2), range(2, 4)]
    assert split_batch([20, 20, 20, 20], max_samples=100, max_bytes=100) == [range(0, 3), range(3, 4)]


def test_a_sample_larger_than_any_request_is_an_error_naming_it():
    with pytest.raises(
        RequestTooLarge, match="sample 1 is 500 bytes of JSON; the service accepts at most 100"
    ):
        split_batch([10, 500], max_samples=10, max_bytes=100)
