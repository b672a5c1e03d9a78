"""The update's shared-prefix forward (each prompt once per group) equals a full-sequence forward
per completion: log-probabilities, gradients, and with prompts of different lengths (left padding)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

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

    expected, total = [], torch.zeros(())
    for group in groups:
        for completion in group["completions"]:
            ids = torch.tensor([group["prompt"] + completion["ids"]])
            logits = model(input_ids=ids).logits[0, len(group["prompt"]) - 1 : -1] / temperature
            logprobs = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion["ids"])[:, None])[:, 0]
            expected.append(logprobs.detach())
            total = total + logprobs.sum()
    total.backward()
    reference_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    batch = shared_prefix_batch(groups, pad_id=0, device="cpu")
    logprobs, logits = shared_prefix_logprobs(model, batch, temperature)
    assert logits.shape[:2] == logprobs.shape == batch["mask"].shape == (9, 7)
    rows = [c for g in groups for c in g["completions"]]
    for i, (completion, want) in enumerate(zip(rows, expected, strict=True)):
        n = len(completion["ids"])
        torch.testing.assert_close(logprobs[i, :n], want, atol=1e-5, rtol=0)
        assert batch["mask"][i].sum() == n
    (logprobs * batch["mask"]).sum().backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_micro_batches_keep_groups_whole_and_respect_the_size() -> None:
    groups = _groups(400)  # 3, 2 and 4 completions
    chunks = micro_batches(groups, 5)
    assert sorted(len(g["completions"]) for chunk in chunks for g in chunk) == [2, 3, 4]
    assert all(sum(len(g["completions"]) for g in chunk) <= 5 for chunk in chunks if len(chunk) > 1)
    assert [len(chunk) for chunk in micro_batches(groups, 2)] == [1, 1, 1]  # a group larger than the size
    assert len(micro_batches(groups, 64)) == 1
