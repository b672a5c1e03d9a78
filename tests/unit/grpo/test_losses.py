"""policy_loss, its gradient and statistics, and the per-token helpers, against the reference."""

import math

import pytest
import torch

from m2rl_trainer.grpo import AGGREGATIONS, policy_loss, selective_log_softmax, token_entropy_from_logits
from tests.unit.grpo import data, reference

MODES = list(AGGREGATIONS)
ADVANTAGES = data.flat_advantages(reference.advantages(data.REWARDS, scale_by_std=True))
# (kl_coef, kl_estimator, entropy_coef): the loss terms switched on.
TERMS = {
    "clip-only": (0.0, "k3", 0.0),
    "kl-k1": (0.1, "k1", 0.0),
    "kl-k2": (0.1, "k2", 0.0),
    "kl-k3": (0.04, "k3", 0.0),
    "entropy": (0.0, "k3", 0.01),
    "kl-k3-and-entropy": (0.04, "k3", 0.01),
}
CLIPS = {"symmetric-0.2": (0.2, 0.2), "clip-higher-0.28": (0.2, 0.28)}


def run(batch, mode, clip, terms, **globals_):
    kl_coef, kl_estimator, entropy_coef = terms
    return policy_loss(
        batch["logprobs"],
        batch["old_logprobs"],
        batch["advantages"],
        batch["mask"],
        clip_low=clip[0],
        clip_high=clip[1],
        aggregation=mode,
        ref_logprobs=batch["ref_logprobs"],
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
        entropy=batch["entropy"],
        entropy_coef=entropy_coef,
        **globals_,
    )


def reference_loss(seqs, mode, clip, terms, **globals_):
    kl_coef, kl_estimator, entropy_coef = terms
    return reference.policy_loss(
        seqs,
        clip_low=clip[0],
        clip_high=clip[1],
        mode=mode,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
        entropy_coef=entropy_coef,
        **globals_,
    )


@pytest.mark.parametrize("clip", CLIPS.values(), ids=CLIPS.keys())
@pytest.mark.parametrize("terms", TERMS.values(), ids=TERMS.keys())
@pytest.mark.parametrize("mode", MODES)
def test_loss_matches_reference(mode, terms, clip):
    seqs = data.sequences(ADVANTAGES)
    loss, _ = run(data.padded(seqs), mode, clip, terms, max_response_tokens=data.MAX_RESPONSE_TOKENS)
    want = reference_loss(seqs, mode, clip, terms, max_len=data.MAX_RESPONSE_TOKENS)
    assert loss.item() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("terms", TERMS.values(), ids=TERMS.keys())
@pytest.mark.parametrize("mode", MODES)
def test_gradient_matches_finite_differences_of_reference(mode, terms):
    # d loss / d logprob_t by central differences of the plain-Python loss (h = 1e-6; every ratio is
    # at least 0.002 from a clip edge, see data.py), against autograd through the padded tensors.
    seqs = data.sequences(ADVANTAGES)
    batch = data.padded(seqs)
    batch["logprobs"].requires_grad_(True)
    batch["entropy"].requires_grad_(True)
    clip = CLIPS["clip-higher-0.28"]
    loss, _ = run(batch, mode, clip, terms, max_response_tokens=data.MAX_RESPONSE_TOKENS)
    loss.backward()
    h = 1e-6
    for i, s in enumerate(seqs):
        for t in range(len(s.logprobs)):
            lp = s.logprobs[t]
            s.logprobs[t] = lp + h
            up = reference_loss(seqs, mode, clip, terms, max_len=data.MAX_RESPONSE_TOKENS)
            s.logprobs[t] = lp - h
            down = reference_loss(seqs, mode, clip, terms, max_len=data.MAX_RESPONSE_TOKENS)
            s.logprobs[t] = lp
            assert batch["logprobs"].grad[i, t].item() == pytest.approx((up - down) / (2 * h), abs=1e-7), (
                i,
                t,
            )
    assert batch["logprobs"].grad[batch["mask"] == 0].abs().max() == 0.0  # padding gets nothing
    entropy_grad = batch["entropy"].grad
    if terms[2] == 0:
        assert entropy_grad is None
    else:  # the bonus pushes every valid token's entropy up, and only those
        assert entropy_grad is not None and torch.equal(entropy_grad < 0, batch["mask"] > 0)


# ratio r = exp(delta); eps_low 0.2, eps_high 0.28: edges at r = 0.8 and 1.28.
EDGES = {
    # name: (delta, advantage, clipped?)
    "A+ just-below-high-edge": (math.log(1.28) - 1e-4, 1.0, False),
    "A+ just-above-high-edge": (math.log(1.28) + 1e-4, 1.0, True),
    "A+ far-below-low-edge": (math.log(0.5), 1.0, False),  # a positive advantage is never clipped low
    "A- just-above-low-edge": (math.log(0.8) + 1e-4, -1.0, False),
    "A- just-below-low-edge": (math.log(0.8) - 1e-4, -1.0, True),
    "A- far-above-high-edge": (math.log(3.0), -1.0, False),  # no dual-clip: the loss keeps growing
}


@pytest.mark.parametrize(("delta", "advantage", "clipped"), EDGES.values(), ids=EDGES.keys())
def test_clip_at_both_edges(delta, advantage, clipped):
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    logprobs = (old + delta).requires_grad_(True)
    loss, stats = policy_loss(
        logprobs, old, torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 1),
        clip_low=0.2, clip_high=0.28, aggregation="token-mean",
    )  # fmt: skip
    loss.backward()
    r = math.exp(delta)
    assert logprobs.grad is not None
    if clipped:  # the constant clipped term is active: no gradient, loss at the edge
        edge = 1.28 if advantage > 0 else 0.8
        assert loss.item() == pytest.approx(-edge * advantage, abs=1e-12)
        assert logprobs.grad.item() == 0.0
        assert stats["clip_fraction"] == 1.0
        assert stats["clip_fraction_high" if advantage > 0 else "clip_fraction_low"] == 1.0
    else:  # d(-r A)/d logprob = -r A
        assert loss.item() == pytest.approx(-r * advantage, abs=1e-12)
        assert logprobs.grad.item() == pytest.approx(-r * advantage, abs=1e-12)
        assert stats["clip_fraction"] == 0.0


@pytest.mark.parametrize("clip", CLIPS.values(), ids=CLIPS.keys())
def test_statistics_match_reference(clip):
    seqs = data.sequences(ADVANTAGES)
    _, stats = run(data.padded(seqs), "token-mean", clip, TERMS["kl-k3-and-entropy"])
    low, high = reference.clip_fractions(seqs, *clip)
    tokens = [(s, t) for s in seqs for t in range(len(s.logprobs))]
    ratios = [math.exp(s.logprobs[t] - s.old_logprobs[t]) for s, t in tokens]
    assert stats["num_tokens"] == len(tokens) == 20
    assert stats["clip_fraction_low"] == pytest.approx(low)
    assert stats["clip_fraction_high"] == pytest.approx(high)
    assert stats["clip_fraction"] == pytest.approx(low + high)
    assert stats["ratio_mean"] == pytest.approx(sum(ratios) / 20)
    assert stats["ratio_max"] == pytest.approx(max(ratios))
    assert stats["approx_kl"] == pytest.approx(sum(s.old_logprobs[t] - s.logprobs[t] for s, t in tokens) / 20)
    assert stats["kl_ref"] == pytest.approx(
        sum(reference.kl(s.logprobs[t], s.ref_logprobs[t], "k3") for s, t in tokens) / 20
    )
    assert stats["entropy"] == pytest.approx(sum(s.entropy[t] for s, t in tokens) / 20)


def test_clip_fractions_of_the_hand_made_batch():
    # data.py puts 4 of 20 tokens above r = 1.2 with A > 0 (2 of them above 1.28) and 1 below 0.8 with A < 0.
    seqs = data.sequences(ADVANTAGES)
    _, grpo = run(data.padded(seqs), "token-mean", CLIPS["symmetric-0.2"], TERMS["clip-only"])
    _, dapo = run(data.padded(seqs), "token-mean", CLIPS["clip-higher-0.28"], TERMS["clip-only"])
    assert (grpo["clip_fraction_high"], grpo["clip_fraction_low"]) == (
        pytest.approx(4 / 20),
        pytest.approx(1 / 20),
    )
    assert (dapo["clip_fraction_high"], dapo["clip_fraction_low"]) == (
        pytest.approx(2 / 20),
        pytest.approx(1 / 20),
    )


def test_per_token_advantages_equal_broadcast_sequence_advantages():
    batch = data.padded(data.sequences(ADVANTAGES))
    per_token = batch["advantages"].unsqueeze(-1).expand_as(batch["mask"]).clone()
    args = dict(clip_low=0.2, clip_high=0.28, aggregation="seq-mean-token-mean")
    by_sequence, _ = policy_loss(
        batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"], **args
    )
    by_token, _ = policy_loss(batch["logprobs"], batch["old_logprobs"], per_token, batch["mask"], **args)
    assert by_token.item() == by_sequence.item()


def test_reference_logprobs_without_kl_coef_are_only_measured():
    batch = data.padded(data.sequences(ADVANTAGES))
    with_ref, stats = run(batch, "token-mean", CLIPS["symmetric-0.2"], (0.0, "k3", 0.0))
    batch.pop("ref_logprobs")
    without, _ = policy_loss(
        batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"],
        clip_low=0.2, clip_high=0.2, aggregation="token-mean",
    )  # fmt: skip
    assert with_ref.item() == without.item()
    assert stats["kl_ref"] > 0


def test_kl_coef_without_reference_is_an_error():
    batch = data.padded(data.sequences(ADVANTAGES))
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(
            batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"],
            clip_low=0.2, clip_high=0.2, aggregation="token-mean", kl_coef=0.1,
        )  # fmt: skip


LOGITS = [  # [B=2, T=2, V=4]
    [[2.0, -1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]],
    [[-3.0, 4.0, 1.0, 0.2], [10.0, -10.0, 0.0, 1.0]],
]
TOKEN_IDS = [[0, 3], [1, 2]]


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 0.05)]
)
def test_selective_log_softmax_matches_direct(dtype, tol):
    got = selective_log_softmax(torch.tensor(LOGITS, dtype=dtype), torch.tensor(TOKEN_IDS))
    assert got.shape == (2, 2)
    for b in range(2):
        for t in range(2):
            assert got[b, t].item() == pytest.approx(
                reference.log_softmax_at(LOGITS[b][t], TOKEN_IDS[b][t]), abs=tol
            )


def test_token_entropy_matches_direct_and_is_differentiable():
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    got = token_entropy_from_logits(logits)
    for b in range(2):
        for t in range(2):
            assert got[b, t].item() == pytest.approx(reference.entropy(LOGITS[b][t]), abs=1e-12)
    assert got[0, 1].item() == pytest.approx(math.log(4))  # uniform over 4 tokens
    got.sum().backward()
    assert logits.grad is not None and logits.grad[0, 1].abs().max() < 1e-12  # the maximum: zero gradient


def test_token_entropy_upcasts_bfloat16():
    got = token_entropy_from_logits(torch.tensor(LOGITS, dtype=torch.bfloat16))
    assert got.dtype == torch.float32
    assert got[1, 0].item() == pytest.approx(reference.entropy(LOGITS[1][0]), abs=0.02)
