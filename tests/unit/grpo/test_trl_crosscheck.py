"""Cross-check against TRL 1.16's own GRPO code, called directly.

TRL's loss lives in `GRPOTrainer._compute_loss(self, model, inputs)`, a method, not a pure
function; it is called unbound on a stub `self` that carries only the attributes it reads and
returns our fixed log-probabilities and entropies in place of a model forward. TRL's advantage code
is inline in `_generate_and_score_completions` (not callable alone), so its formula is rebuilt from
its `nanstd` helper. Importing TRL takes 10-20 s on 2 cores (it imports vLLM); only this file does.
"""

import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from m2rl_trainer.grpo import group_advantages, policy_loss, selective_log_softmax, token_entropy_from_logits
from tests.unit.grpo import data, reference

pytest.importorskip("trl")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # TRL warns that our vLLM is newer than it was tested with
    from trl.trainer.grpo_trainer import GRPOTrainer
    from trl.trainer.utils import entropy_from_logits, nanstd
    from trl.trainer.utils import selective_log_softmax as trl_selective_log_softmax

MAX_COMPLETION_LENGTH = data.MAX_RESPONSE_TOKENS
# TRL loss type -> (our aggregation, normalisers that make them the same quantity).
LOSS_TYPES = {
    "grpo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "dapo": "token-mean",
}


class _Accelerator:
    """A single process: gather and reduce are the identity."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_loss(
    batch, loss_type, *, eps_low, eps_high, beta, entropy_coef, accumulation_steps=1, num_items=None
):
    """TRL's `_compute_loss` on the given padded batch; returns (loss, TRL's logged metrics)."""
    b, t = batch["mask"].shape
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        beta=beta,
        args=SimpleNamespace(
            use_bias_correction_kl=False, delta=None, steps_per_generation=accumulation_steps
        ),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        use_vllm=False,
        current_gradient_accumulation_steps=accumulation_steps,
        max_completion_length=MAX_COMPLETION_LENGTH,
        _entropy_bonus_enabled=entropy_coef != 0.0,
        use_adaptive_entropy=False,
        entropy_coef=entropy_coef,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list)},
        accelerator=_Accelerator(),
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (
            batch["logprobs"],
            batch["entropy"],
            None,
        ),
    )
    inputs = {
        "prompt_ids": torch.zeros(b, 1, dtype=torch.long),
        "prompt_mask": torch.ones(b, 1, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": batch["mask"],
        "advantages": batch["advantages"],
        "old_per_token_logps": batch["old_logprobs"],
        "ref_per_token_logps": batch["ref_logprobs"],
        "num_items_in_batch": torch.tensor(
            float(num_items if num_items is not None else batch["mask"].sum())
        ),
    }
    loss = GRPOTrainer._compute_loss(stub, stub.model, inputs)
    return loss, {key: values[-1] for key, values in stub._metrics["train"].items()}


def ours(batch, aggregation, *, eps_low, eps_high, beta, entropy_coef, **globals_):
    return policy_loss(
        batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"],
        clip_low=eps_low, clip_high=eps_high, aggregation=aggregation,
        max_response_tokens=MAX_COMPLETION_LENGTH, ref_logprobs=batch["ref_logprobs"], kl_coef=beta,
        kl_estimator="k3", entropy=batch["entropy"], entropy_coef=entropy_coef, **globals_,
    )  # fmt: skip


def hand_made_batch():
    return data.padded(data.sequences(data.flat_advantages(reference.advantages(data.REWARDS, True))))


SETTINGS = {
    "clip-0.2": dict(eps_low=0.2, eps_high=0.2, beta=0.0, entropy_coef=0.0),
    "clip-higher-kl": dict(eps_low=0.2, eps_high=0.28, beta=0.04, entropy_coef=0.0),
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_policy_loss_equals_trl(loss_type, settings):
    batch = hand_made_batch()
    want, metrics = trl_loss(batch, loss_type, **settings)
    got, stats = ours(batch, LOSS_TYPES[loss_type], **settings)
    assert got.item() == pytest.approx(want.item(), abs=1e-12)
    assert stats["clip_fraction_low"] == pytest.approx(metrics["clip_ratio/low_mean"])
    assert stats["clip_fraction_high"] == pytest.approx(metrics["clip_ratio/high_mean"])
    assert stats["clip_fraction"] == pytest.approx(metrics["clip_ratio/region_mean"])
    assert stats["entropy"] == pytest.approx(metrics["entropy"])
    if settings["beta"]:
        assert stats["kl_ref"] == pytest.approx(metrics["kl"])


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo"])
def test_entropy_bonus_equals_trl_for_token_mean(loss_type):
    settings = dict(eps_low=0.2, eps_high=0.28, beta=0.04, entropy_coef=0.01)
    batch = hand_made_batch()
    want, _ = trl_loss(batch, loss_type, **settings)
    got, _ = ours(batch, "token-mean", **settings)
    assert got.item() == pytest.approx(want.item(), abs=1e-12)


def test_entropy_bonus_differs_from_trl_for_seq_mean_as_documented():
    # TRL takes a token-mean of the entropy whatever the loss type; we aggregate it like the loss (verl).
    settings = dict(eps_low=0.2, eps_high=0.2, beta=0.0, entropy_coef=0.01)
    batch = hand_made_batch()
    want, _ = trl_loss(batch, "grpo", **settings)
    got, _ = ours(batch, "seq-mean-token-mean", **settings)
    seqs = data.sequences([0.0] * 6)
    token_mean = reference.aggregate([s.entropy for s in seqs], "token-mean")
    seq_mean = reference.aggregate([s.entropy for s in seqs], "seq-mean-token-mean")
    assert got.item() == pytest.approx(want.item() + 0.01 * (token_mean - seq_mean), abs=1e-12)
    assert abs(token_mean - seq_mean) > 1e-3


def test_dapo_accumulation_equals_trl_with_num_items_in_batch():
    # TRL's "dapo" divides each micro-batch by the generation batch's token count, as our token-mean
    # does with the global num_tokens: both sum to the full-batch token mean.
    settings = dict(eps_low=0.2, eps_high=0.28, beta=0.04, entropy_coef=0.0)
    batch = hand_made_batch()
    total_tokens = float(batch["mask"].sum())
    full, _ = ours(batch, "token-mean", **settings)
    trl_total = ours_total = 0.0
    for rows in ([0, 1], [2], [3, 4, 5]):
        micro = {key: value[rows] for key, value in batch.items()}
        trl_total += trl_loss(micro, "dapo", accumulation_steps=3, num_items=total_tokens, **settings)[
            0
        ].item()
        ours_total += ours(micro, "token-mean", num_tokens=total_tokens, **settings)[0].item()
    assert trl_total == pytest.approx(full.item(), abs=1e-12)
    assert ours_total == pytest.approx(full.item(), abs=1e-12)


def test_group_advantages_equal_trls_formula():
    # TRL: (r - group mean) / (nanstd(group) + 1e-4), nanstd with Bessel's correction. TRL's
    # correction factor count / (count - 1) is computed in float32 (integer true division), hence 1e-6.
    rewards = torch.tensor(
        [[1.0, 0.0, 0.0, 1.0], [0.2, 0.9, 0.4, 0.4], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64
    )
    trl = (rewards - rewards.mean(dim=1, keepdim=True)) / (nanstd(rewards, dim=1, keepdim=True) + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, scale_by_std=True, eps=1e-4), trl, atol=1e-6, rtol=0)
    assert trl[2].abs().max() == 0.0  # both give a zero-variance group advantage 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selective_log_softmax_and_entropy_equal_trl(dtype):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen, dtype=dtype) * 3
    token_ids = torch.randint(0, 11, (3, 5), generator=gen)
    torch.testing.assert_close(
        selective_log_softmax(logits, token_ids), trl_selective_log_softmax(logits, token_ids)
    )
    torch.testing.assert_close(token_entropy_from_logits(logits), entropy_from_logits(logits))
