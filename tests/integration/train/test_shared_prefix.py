"""The update's shared-prefix forward (each prompt once per group) equals a full-sequence forward
per completion: log-probabilities, gradients, and with prompts of different lengths (left padding)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from m2rl_trainer.grpo import policy_loss
from m2rl_trainer.train.batching import micro_batches, shared_prefix_batch, shared_prefix_logprobs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _groups(vocab: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(5, vocab, (n,), generator=generator).tolist()

    shapes = [(6, (3, 5, 1)), (9, (4, 2)), (4, (6, 3, 2, 7))]
    return [
        {
            "prompt": ids(p),
            "completions": [{"ids": ids(n), "old_logprobs": [0.0] * n, "advantage": 0.5} for n in ns],
        }
        for p, ns in shapes
    ]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prefix_equals_one_full_forward_per_completion(
    tiny_model_dir: Path, temperature: float
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    groups = _groups(model.config.vocab_size)

    expected, entropies, total = [], [], torch.zeros(())
    for group in groups:
        for completion in group["completions"]:
            ids = torch.tensor([group["prompt"] + completion["ids"]])
            logits = model(input_ids=ids).logits[0, len(group["prompt"]) - 1 : -1] / temperature
            logprobs = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion["ids"])[:, None])[:, 0]
            entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
            expected.append(logprobs.detach())
            entropies.append(entropy.detach())
            total = total + logprobs.sum() + 0.3 * entropy.sum()
    total.backward()
    reference_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    batch = shared_prefix_batch(groups, pad_id=0, device="cpu")
    # a tiny LM-head chunk (3 rows of the 400-token vocabulary) so that every call spans chunks
    logprobs, entropy = shared_prefix_logprobs(model, batch, temperature, chunk_mib=3 * 400 * 4 / 2**20)
    assert entropy.shape == logprobs.shape == batch["mask"].shape == (9, 7)
    rows = [c for g in groups for c in g["completions"]]
    for i, (completion, want, want_h) in enumerate(zip(rows, expected, entropies, strict=True)):
        n = len(completion["ids"])
        torch.testing.assert_close(logprobs[i, :n], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(entropy[i, :n], want_h, atol=1e-5, rtol=0)
        assert batch["mask"][i].sum() == n and not logprobs[i, n:].any() and not entropy[i, n:].any()
    ((logprobs + 0.3 * entropy) * batch["mask"]).sum().backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_micro_batches_respect_the_size_and_the_token_budget() -> None:
    groups = _groups(400)  # prompts 6, 9, 4 tokens; 3, 2 and 4 completions
    for size, budget in [(5, None), (2, None), (1, None), (64, None), (64, 20), (3, 16), (64, 10_000)]:
        chunks = micro_batches(groups, size, budget)
        pieces = [c["ids"] for chunk in chunks for g in chunk for c in g["completions"]]
        assert sorted(map(tuple, pieces)) == sorted(tuple(c["ids"]) for g in groups for c in g["completions"])
        for chunk in chunks:
            assert sum(len(g["completions"]) for g in chunk) <= size
            padded = len(chunk) * max(len(g["prompt"]) for g in chunk) + sum(
                len(g["completions"]) for g in chunk
            ) * max(len(c["ids"]) for g in chunk for c in g["completions"])
            assert budget is None or padded <= budget, (size, budget, chunk)
    assert len(micro_batches(groups, 64)) == 1
    assert [len(c) for c in micro_batches(groups, 1)] == [1] * 9  # micro_batch_size is honoured
    split = micro_batches(groups, 64, 20)
    assert len(split) > 1 and any(
        len(g["completions"]) < 4 for chunk in split for g in chunk if len(g["prompt"]) == 4
    )


def _loss_gradients(model, chunks, aggregation: str, temperature: float = 0.8) -> dict[str, torch.Tensor]:
    """What `GRPOTrainer._update` does on one rank: micro-batch losses with global normalisers."""
    completions = [c for chunk in chunks for g in chunk for c in g["completions"]]
    num_tokens = float(sum(len(c["ids"]) for c in completions))
    model.zero_grad()
    for chunk in chunks:
        batch = shared_prefix_batch(chunk, pad_id=0, device="cpu")
        logprobs, entropy = shared_prefix_logprobs(model, batch, temperature, chunk_mib=5 * 400 * 4 / 2**20)
        loss, _ = policy_loss(
            logprobs, batch["old_logprobs"], batch["advantages"], batch["mask"],
            clip_low=0.2, clip_high=0.28, aggregation=aggregation, num_tokens=num_tokens,
            num_sequences=float(len(completions)), max_response_tokens=8, entropy=entropy, entropy_coef=0.01,
        )  # fmt: skip
        loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _rl_groups(vocab: int) -> list[dict]:
    groups = _groups(vocab)
    g = torch.Generator().manual_seed(1)
    for group in groups:
        for c in group["completions"]:
            c["old_logprobs"] = (-torch.rand(len(c["ids"]), generator=g) * 6 - 0.5).tolist()
            c["advantage"] = float(torch.randn((), generator=g))
    return groups


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_token_budget_micro_batches_give_the_full_batch_gradient(
    tiny_model_dir: Path, aggregation: str
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    groups = _rl_groups(model.config.vocab_size)
    full = _loss_gradients(model, [groups], aggregation)
    assert any(g.abs().max() > 1e-4 for g in full.values())
    # groups split by the token budget; then one completion per micro-batch (whole-sequence forward)
    for chunks in (micro_batches(groups, 3, max_tokens=20), micro_batches(groups, 1)):
        pieces = {id(g["completions"]) for chunk in chunks for g in chunk}
        assert len(chunks) >= 4 and len(pieces) > len(groups)
        split = _loss_gradients(model, chunks, aggregation)
        for name, grad in full.items():
            torch.testing.assert_close(split[name], grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("transformers_has_cache_flag", [True, False])
def test_gradient_checkpointing_keeps_the_shared_prefix_and_the_gradients(
    tiny_model_dir: Path, transformers_has_cache_flag: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a transformers that has `_can_checkpoint_with_cache` the prompts stay shared (the first
    layer runs for the prompts, the completions, and their recompute); without it (older releases,
    e.g. the GPU image's 5.17?) each completion runs after its own prompt copy: same gradients."""
    from m2rl_trainer.train import batching

    monkeypatch.setattr(batching, "CACHE_UNDER_CHECKPOINTING", transformers_has_cache_flag)
    from m2rl_trainer.train.memory import prepare_policy

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    checkpointed = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prepare_policy(checkpointed, gradient_checkpointing=True)
    assert checkpointed.training and checkpointed.is_gradient_checkpointing
    calls: list[int] = []
    layer = checkpointed.model.layers[0]
    forward = layer.forward
    layer.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    groups = _rl_groups(plain.config.vocab_size)
    want = _loss_gradients(plain, [groups], "token-mean")
    got = _loss_gradients(checkpointed, [groups], "token-mean")
    # shared: prompts once, completions once, the completions' recompute; else whole sequences + recompute
    assert len(calls) == (3 if transformers_has_cache_flag else 2)
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_without_the_read_only_cache_transformers_drops_the_prefix(tiny_model_dir: Path) -> None:
    """Why the adaptation exists: transformers' checkpointed layers drop a writable cache, and the
    completions then attend to themselves only (different log-probabilities)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.gradient_checkpointing_enable({"use_reentrant": False})
    model.train()
    batch = shared_prefix_batch(_groups(model.config.vocab_size), pad_id=0, device="cpu")
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=batch["prompt_ids"],
        attention_mask=batch["prompt_mask"],
        past_key_values=cache,
        use_cache=True,
    )
    assert out.past_key_values is None and cache.get_seq_length() == 0  # nothing was cached
