"""Domain mixer: determinism, epochs, weighted proportions and exact resume from a JSON state."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from m2rl_trainer.data import DomainMixer, Prompt


def prompts(domain: str, count: int) -> list[Prompt]:
    return [Prompt(domain, str(i), f"{domain} {i}", str(i), domain) for i in range(count)]


# Sizes chosen so batches of 8 straddle epoch boundaries (23 + 7 = 30 prompts in all).
DOMAINS = {"math": prompts("math", 23), "code": prompts("code", 7)}
WEIGHTS = {"math": 1.0, "code": 3.0}


def keys(batch: list[Prompt]) -> list[tuple[str, str]]:
    return [(p.domain, p.id) for p in batch]


@pytest.mark.parametrize("mode", ["concat_shuffle", "weighted"])
def test_same_seed_same_batches_other_seed_other_batches(mode: str) -> None:
    def run(seed: int) -> list[list[tuple[str, str]]]:
        mixer = DomainMixer(DOMAINS, WEIGHTS, mode, seed=seed)  # type: ignore[arg-type]
        return [keys(mixer.next_batch(8)) for _ in range(10)]

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize("mode", ["concat_shuffle", "weighted"])
def test_resume_from_a_json_state_continues_with_exactly_the_same_prompts(mode: str) -> None:
    straight = DomainMixer(DOMAINS, WEIGHTS, mode, seed=3)  # type: ignore[arg-type]
    expected = [keys(straight.next_batch(8)) for _ in range(10)]

    first = DomainMixer(DOMAINS, WEIGHTS, mode, seed=3)  # type: ignore[arg-type]
    before = [keys(first.next_batch(8)) for _ in range(4)]
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    resumed = DomainMixer(DOMAINS, WEIGHTS, mode, seed=3)  # type: ignore[arg-type]
    resumed.load_state_dict(state)
    after = [keys(resumed.next_batch(8)) for _ in range(6)]

    assert before + after == expected
    assert resumed.state_dict() == straight.state_dict()


def test_concat_shuffle_sees_every_prompt_once_per_epoch_in_a_new_order() -> None:
    mixer = DomainMixer(DOMAINS, mode="concat_shuffle", seed=0)
    drawn = [key for _ in range(15) for key in keys(mixer.next_batch(8))]  # 120 = 4 epochs of 30
    epochs = [drawn[i : i + 30] for i in range(0, 120, 30)]
    everything = {(p.domain, p.id) for group in DOMAINS.values() for p in group}
    for epoch in epochs:
        assert sorted(epoch) == sorted(everything)  # a permutation: each prompt exactly once
    assert len({tuple(epoch) for epoch in epochs}) == 4  # reshuffled every epoch
    assert mixer.epoch == 4
    # Domains are shuffled together, not one block after the other.
    assert {d for d, _ in epochs[0][:10]} == {"math", "code"}


def test_weighted_proportions_follow_the_weights() -> None:
    domains = {"a": prompts("a", 50), "b": prompts("b", 400)}
    mixer = DomainMixer(domains, {"a": 3.0, "b": 1.0}, "weighted", seed=0)
    counts = Counter(p.domain for _ in range(40) for p in mixer.next_batch(100))
    # 4,000 Bernoulli(0.75) draws: standard deviation sqrt(0.75 * 0.25 / 4000) = 0.0068;
    # 0.03 is over 4 standard deviations, so a correct sampler is never this far off.
    assert abs(counts["a"] / 4000 - 0.75) < 0.03


def test_weighted_domain_streams_cycle_through_every_prompt() -> None:
    domains = {"a": prompts("a", 50), "b": prompts("b", 400)}
    mixer = DomainMixer(domains, {"a": 3.0, "b": 1.0}, "weighted", seed=1)
    drawn = [p for _ in range(40) for p in mixer.next_batch(100)]
    # About 3,000 draws of "a" over 50 prompts: a reshuffled cycle gives every prompt the same
    # count, give or take one (independent sampling would spread them by about +-8).
    per_prompt = Counter(p.id for p in drawn if p.domain == "a")
    assert len(per_prompt) == 50
    assert max(per_prompt.values()) - min(per_prompt.values()) <= 1


def test_state_from_other_data_or_settings_is_refused() -> None:
    state = DomainMixer(DOMAINS, WEIGHTS, "weighted", seed=3).state_dict()
    smaller = {"math": DOMAINS["math"][:20], "code": DOMAINS["code"]}
    with pytest.raises(ValueError, match=r"sizes is .* in the checkpoint"):
        DomainMixer(smaller, WEIGHTS, "weighted", seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="seed is 3 in the checkpoint, 4 now"):
        DomainMixer(DOMAINS, WEIGHTS, "weighted", seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match="mode is 'weighted' in the checkpoint"):
        DomainMixer(DOMAINS, WEIGHTS, "concat_shuffle", seed=3).load_state_dict(state)


@pytest.mark.parametrize(
    ("domains", "weights", "message"),
    [
        ({}, None, "at least one domain"),
        ({"a": []}, None, "domain 'a' has no prompts"),
        (DOMAINS, {"math": 1.0}, r"missing \['code'\]"),
        (DOMAINS, {"math": 1.0, "code": 0.0}, "weight of 'code' must be > 0"),
    ],
    ids=["no-domains", "empty-domain", "missing-weight", "zero-weight"],
)
def test_bad_arguments(domains: dict, weights: dict | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DomainMixer(domains, weights, "weighted", seed=0)
