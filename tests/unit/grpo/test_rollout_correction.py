"""Mismatch correction (TIS, MIS) and dual-clip against the plain-Python reference."""

import math

import pytest
import torch

from m2rl_trainer.grpo import AGGREGATIONS, importance_weights, mismatch_sums, policy_loss
from tests.unit.grpo import data, reference

MODES = list(AGGREGATIONS)
ADVANTAGES = data.flat_advantages(reference.advantages(data.REWARDS, scale_by_std=True))
CORRECTIONS = {  # (mode, cap, floor)
    "tis-cap2": ("tis", 2.0, 0.0),
    "tis-cap2-floor0.5": ("tis", 2.0, 0.5),
    "mis-cap2-floor0.5": ("mis", 2.0, 0.5),
    "mis-cap5": ("mis", 5.0, 0.0),
}
CLIP_C = 1.35  # log 1.35 = 0.300: data.DELTAS put one A < 0 token above it (0.35) and one below (0.26)


def reference_weights(seqs, mode, cap, floor):
    rollout = data.rollout_logprobs(seqs)
    return [
        [
            reference.importance_weight(old, r, mode, cap, floor)
            for old, r in zip(s.old_logprobs, rollout[i], strict=True)
        ]
        for i, s in enumerate(seqs)
    ]


def weights_of(batch, mode, cap, floor):
    return importance_weights(batch["old_logprobs"], batch["rollout_logprobs"], mode, cap=cap, floor=floor)


@pytest.mark.parametrize(("mode", "cap", "floor"), CORRECTIONS.values(), ids=CORRECTIONS.keys())
def test_weights_match_reference(mode, cap, floor):
    seqs = data.sequences(ADVANTAGES)
    batch = data.padded_with_rollout(seqs)
    got = weights_of(batch, mode, cap, floor)
    want = reference_weights(seqs, mode, cap, floor)
    for i, row in enumerate(want):
        for t, w in enumerate(row):
            assert got[i, t].item() == pytest.approx(w, rel=1e-12), (i, t)
    assert not got.requires_grad
    # The hand-made gaps land on both sides of each bound (a test that cannot pass by accident).
    flat = [w for row in want for w in row]
    if mode == "tis":
        assert flat.count(cap) >= 3 and (floor == 0 or flat.count(floor) >= 2)
    else:
        assert flat.count(0.0) >= (1 if floor == 0 else 3) and any(1.0 < w < cap for w in flat)


@pytest.mark.parametrize(("mode", "cap", "floor"), CORRECTIONS.values(), ids=CORRECTIONS.keys())
@pytest.mark.parametrize("dual", [None, CLIP_C], ids=["no-dual-clip", "dual-clip"])
@pytest.mark.parametrize("mode_agg", MODES)
def test_weighted_loss_and_gradient_match_reference(mode_agg, dual, mode, cap, floor):
    seqs = data.sequences(ADVANTAGES)
    batch = data.padded_with_rollout(seqs)
    batch["logprobs"].requires_grad_(True)
    weights = reference_weights(seqs, mode, cap, floor)
    args = dict(clip_low=0.2, clip_high=0.28, mode=mode_agg, max_len=data.MAX_RESPONSE_TOKENS, kl_coef=0.04,
                entropy_coef=0.01, clip_ratio_c=dual, weights=weights)  # fmt: skip
    loss, _ = policy_loss(
        batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"],
        clip_low=0.2, clip_high=0.28, aggregation=mode_agg, max_response_tokens=data.MAX_RESPONSE_TOKENS,
        ref_logprobs=batch["ref_logprobs"], kl_coef=0.04, entropy=batch["entropy"], entropy_coef=0.01,
        clip_ratio_c=dual, is_weights=weights_of(batch, mode, cap, floor),
    )  # fmt: skip
    assert loss.item() == pytest.approx(reference.policy_loss(seqs, **args), abs=1e-12)
    loss.backward()
    h = 1e-6
    for i, s in enumerate(seqs):
        for t in range(len(s.logprobs)):
            lp = s.logprobs[t]
            s.logprobs[t] = lp + h
            up = reference.policy_loss(seqs, **args)
            s.logprobs[t] = lp - h
            down = reference.policy_loss(seqs, **args)
            s.logprobs[t] = lp
            assert batch["logprobs"].grad[i, t].item() == pytest.approx((up - down) / (2 * h), abs=1e-7), (
                i,
                t,
            )


def test_dual_clip_bounds_a_negative_advantage_token():
    # A = -1, ratio e^3 = 20: without dual-clip the loss is 20 and its gradient 20; with c = 3 the
    # loss is 3 and the gradient 0 (verl's clip_ratio_c default).
    old = torch.tensor([[-4.0]], dtype=torch.float64)
    for c, want_loss, want_grad, dual in ((None, math.exp(3.0), math.exp(3.0), None), (3.0, 3.0, 0.0, 1.0)):
        logprobs = (old + 3.0).requires_grad_(True)
        loss, stats = policy_loss(
            logprobs, old, torch.tensor([-1.0], dtype=torch.float64), torch.ones(1, 1),
            clip_low=0.2, clip_high=0.28, aggregation="token-mean", clip_ratio_c=c,
        )  # fmt: skip
        loss.backward()
        assert loss.item() == pytest.approx(want_loss, rel=1e-12)
        assert logprobs.grad.item() == pytest.approx(want_grad, abs=1e-12)
        assert stats.get("dual_clip_ratio") == dual


def test_dual_clip_statistic_matches_reference():
    seqs = data.sequences(ADVANTAGES)
    _, stats = policy_loss(
        *(data.padded_with_rollout(seqs)[k] for k in ("logprobs", "old_logprobs", "advantages", "mask")),
        clip_low=0.2, clip_high=0.28, aggregation="token-mean", clip_ratio_c=CLIP_C,
    )  # fmt: skip
    bounded = sum(
        1
        for s in seqs
        for lp, old in zip(s.logprobs, s.old_logprobs, strict=True)
        if s.advantage < 0 and math.exp(lp - old) > CLIP_C
    )
    assert bounded == 1
    assert stats["dual_clip_ratio"] == pytest.approx(bounded / 20)


def test_clip_ratio_c_must_exceed_one():
    batch = data.padded_with_rollout(data.sequences(ADVANTAGES))
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        policy_loss(batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"],
                    clip_low=0.2, clip_high=0.2, aggregation="token-mean", clip_ratio_c=1.0)  # fmt: skip


@pytest.mark.parametrize(("mode", "cap", "floor"), [*CORRECTIONS.values(), ("none", 2.0, 0.0)])
def test_mismatch_sums_match_reference(mode, cap, floor):
    seqs = data.sequences(ADVANTAGES)
    batch = data.padded_with_rollout(seqs)
    got = mismatch_sums(
        batch["old_logprobs"], batch["rollout_logprobs"], batch["mask"], mode, cap=cap, floor=floor
    )
    gaps = [m for row in data.MISMATCH for m in row]  # log(p_trainer / p_rollout) per valid token
    rhos = [math.exp(min(m, 20.0)) for m in gaps]  # the safety bound caps the one gap of 25
    assert got["tokens"].item() == 20
    assert got["kl"].item() == pytest.approx(sum(-min(m, 20.0) for m in gaps), rel=1e-12)
    assert got["k3_kl"].item() == pytest.approx(sum(r - 1 - math.log(r) for r in rhos), rel=1e-12)
    assert got["ratio_max"].item() == pytest.approx(math.exp(20.0), rel=1e-12)
    if mode == "none":
        assert got["corrected"].item() == 0 and got["weight"].item() == 20
        return
    weights = [w for row in reference_weights(seqs, mode, cap, floor) for w in row]
    changed = sum(1 for w, r in zip(weights, rhos, strict=True) if abs(w - r) > 1e-9 * r)
    assert got["corrected"].item() == changed > 0
    assert got["weight"].item() == pytest.approx(sum(weights), rel=1e-12)


def test_unknown_mode_is_an_error():
    batch = data.padded_with_rollout(data.sequences(ADVANTAGES))
    with pytest.raises(ValueError, match="'icepop'"):
        weights_of(batch, "icepop", 2.0, 0.0)
