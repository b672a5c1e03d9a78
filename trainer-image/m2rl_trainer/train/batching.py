"""Micro-batches for the policy update, with each prompt computed once for its whole group.

A GRPO group is one prompt and its n completions. A plain forward pass over n full sequences
computes the prompt n times; here the prompt runs once, its keys/values (and their gradient) are
shared by the group's completions through the KV cache, and only the completions run per sample.
With prompts as long as the responses that halves the update's work. The result equals a
full-sequence forward per completion (tested to 1e-6 on log-probabilities and gradients).

Groups are plain dicts: {"prompt": [ids], "completions": [{"ids", "old_logprobs", "advantage"}]}.
"""

from __future__ import annotations

from typing import Any

import torch

from m2rl_trainer.grpo import selective_log_softmax

Group = dict[str, Any]


def micro_batches(groups: list[Group], micro_batch_size: int) -> list[list[Group]]:
    """Whole groups per micro-batch, up to `micro_batch_size` completions (at least one group).

    Groups are sorted by length first, so little of each micro-batch is padding; the loss
    normalisers are global, so the grouping leaves the gradient unchanged.
    """
    ordered = sorted(groups, key=lambda g: (len(g["prompt"]), max(len(c["ids"]) for c in g["completions"])))
    chunks: list[list[Group]] = []
    size = 0
    for group in ordered:
        if chunks and size + len(group["completions"]) <= micro_batch_size:
            chunks[-1].append(group)
            size += len(group["completions"])
        else:
            chunks.append([group])
            size = len(group["completions"])
    return chunks


def shared_prefix_batch(
    groups: list[Group], pad_id: int, device: torch.device | str
) -> dict[str, torch.Tensor]:
    """Tensors for `shared_prefix_logprobs`: prompts left-padded [G, P], completions right-padded
    [B, R] with the index of their prompt (`owner`). Positions count real tokens only, as the
    rollout engine's did. `mask` marks response tokens; `old_logprobs` and `advantages` align."""
    width = max(len(g["prompt"]) for g in groups)
    completions = [c for g in groups for c in g["completions"]]
    length = max(len(c["ids"]) for c in completions)
    prompt_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(groups), width), dtype=torch.long)
    for i, g in enumerate(groups):
        prompt_ids[i, width - len(g["prompt"]) :] = torch.tensor(g["prompt"])
        prompt_mask[i, width - len(g["prompt"]) :] = 1
    owner = torch.tensor([i for i, g in enumerate(groups) for _ in g["completions"]])
    ids = torch.full((len(completions), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(completions), length))
    old = torch.zeros((len(completions), length))
    for i, c in enumerate(completions):
        n = len(c["ids"])
        ids[i, :n] = torch.tensor(c["ids"])
        mask[i, :n] = 1.0
        old[i, :n] = torch.tensor(c["old_logprobs"], dtype=torch.float32)
    prompt_lengths = prompt_mask.sum(1)
    tensors = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "prompt_positions": (prompt_mask.cumsum(1) - 1).clamp(min=0),
        "owner": owner,
        "ids": ids,
        "attention": torch.cat([prompt_mask[owner], mask.long()], 1),
        "positions": prompt_lengths[owner][:, None] + torch.arange(length)[None],
        "mask": mask,
        "old_logprobs": old,
        "advantages": torch.tensor([float(c["advantage"]) for c in completions]),
    }
    return {name: tensor.to(device) for name, tensor in tensors.items()}


def shared_prefix_logprobs(
    model: Any, batch: dict[str, torch.Tensor], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(response token) [B, R], logits / T [B, R, V]) under `model` (a causal LM, or a
    DeepSpeed engine wrapping one): the prompts run once, their keys/values are copied to each
    completion of the group, then the completions run on top of them."""
    prefix = model(
        input_ids=batch["prompt_ids"],
        attention_mask=batch["prompt_mask"],
        position_ids=batch["prompt_positions"],
        use_cache=True,
        logits_to_keep=1,  # the prompt's last position predicts the first response token
    )
    cache = prefix.past_key_values
    cache.reorder_cache(batch["owner"])  # one copy of the prompt's keys/values per completion
    rest = model(
        input_ids=batch["ids"],
        attention_mask=batch["attention"],
        position_ids=batch["positions"],
        past_key_values=cache,
        use_cache=True,
    )
    logits = torch.cat([prefix.logits[batch["owner"], -1:], rest.logits[:, :-1]], 1)
    logits = logits.float() / temperature  # the distribution sampled from
    return selective_log_softmax(logits, batch["ids"]), logits
