"""Gradient accumulation: micro-batches with the full batch's normalisers add up to the full batch.

A tiny linear "model" (logits = features @ W) produces the log-probabilities and entropies, so the
check is on parameter gradients, as the trainer accumulates them. Each micro-batch is trimmed to its
own longest response, as a trainer that pads per micro-batch does: this is what breaks
seq-mean-token-sum-norm unless `max_response_tokens` is passed explicitly.
"""

import pytest
import torch

from m2rl_trainer.grpo import (
    AGGREGATIONS,
    normalisers,
    policy_loss,
    selective_log_softmax,
    token_entropy_from_logits,
)
from tests.unit.grpo import data, reference

MODES = list(AGGREGATIONS)
SPLITS = {"2-micro-batches": [[0, 1, 2], [3, 4, 5]], "3-uneven-micro-batches": [[0, 1], [2], [3, 4, 5]]}
VOCAB, HIDDEN = 7, 4


def tiny_model(dtype):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(HIDDEN, VOCAB, generator=gen, dtype=dtype)
    seqs = data.sequences(data.flat_advantages(reference.advantages(data.REWARDS, scale_by_std=True)))
    batch = data.padded(seqs, dtype=dtype)
    features = torch.randn(*batch["mask"].shape, HIDDEN, generator=gen, dtype=dtype)  # [B, T, H]
    tokens = torch.randint(0, VOCAB, batch["mask"].shape, generator=gen)  # [B, T]
    # The sampling policy: the model's own log-probs shifted by data.DELTAS, so the ratios fall in
    # every clip region.
    with torch.no_grad():
        start = selective_log_softmax(features @ weight, tokens)
    batch["old_logprobs"] = start - (batch["logprobs"] - batch["old_logprobs"])
    return weight, features, tokens, batch


def micro_loss(weight, features, tokens, batch, rows, mode, **globals_):
    idx = torch.tensor(rows)
    mask = batch["mask"][idx]
    width = int(mask.sum(-1).max())  # trimmed to this micro-batch's longest response
    logits = features[idx, :width] @ weight  # [b, width, V]
    loss, _ = policy_loss(
        selective_log_softmax(logits, tokens[idx, :width]),
        batch["old_logprobs"][idx, :width],
        batch["advantages"][idx],
        mask[:, :width],
        clip_low=0.2,
        clip_high=0.28,
        aggregation=mode,
        ref_logprobs=batch["old_logprobs"][idx, :width] - 0.1,
        kl_coef=0.05,
        entropy=token_entropy_from_logits(logits),
        entropy_coef=0.01,
        **globals_,
    )
    return loss


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)], ids=["fp64", "fp32"]
)
@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize("mode", MODES)
def test_micro_batches_with_global_normalisers_equal_full_batch(mode, split, dtype, atol):
    weight, features, tokens, batch = tiny_model(dtype)
    num_tokens, num_sequences = normalisers(batch["mask"])
    globals_ = dict(
        num_tokens=num_tokens, num_sequences=num_sequences, max_response_tokens=data.MAX_RESPONSE_TOKENS
    )

    full_w = weight.clone().requires_grad_(True)
    full = micro_loss(full_w, features, tokens, batch, list(range(6)), mode, **globals_)
    full.backward()

    acc_w = weight.clone().requires_grad_(True)
    total = 0.0
    for rows in split:
        loss = micro_loss(acc_w, features, tokens, batch, rows, mode, **globals_)
        loss.backward()  # gradients accumulate in acc_w.grad
        total += loss.item()

    assert total == pytest.approx(full.item(), abs=atol)
    assert full_w.grad is not None and acc_w.grad is not None
    assert full_w.grad.abs().max() > 1e-3  # a real gradient, not two zeros
    torch.testing.assert_close(acc_w.grad, full_w.grad, atol=atol, rtol=0)


@pytest.mark.parametrize(
    ("mode", "globals_"),
    [
        ("token-mean", {}),  # per-micro-batch token counts (TRL's "bnpo" averaged over accumulation)
        (
            "seq-mean-token-sum-norm",
            {"num_sequences": 6.0},
        ),  # max length defaults to each micro-batch's width
    ],
    ids=["token-mean-local-counts", "sum-norm-local-width"],
)
def test_local_normalisers_do_not_add_up(mode, globals_):
    # The control that shows the test above can fail: local counts weight micro-batches unequally.
    weight, features, tokens, batch = tiny_model(torch.float64)
    full = micro_loss(weight, features, tokens, batch, list(range(6)), mode, **globals_)
    split = SPLITS["3-uneven-micro-batches"]
    parts = [micro_loss(weight, features, tokens, batch, rows, mode, **globals_).item() for rows in split]
    averaged = sum(parts) / len(parts) if mode == "token-mean" else sum(parts)
    assert abs(averaged - full.item()) > 1e-3
