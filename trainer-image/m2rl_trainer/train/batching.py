"""Micro-batches for the policy update, with each prompt computed once for its whole group.

A GRPO group is one prompt and its n completions. A plain forward pass over n full sequences
computes the prompt n times; here the prompt runs once, its keys/values (and their gradient) are
shared by the group's completions through the KV cache, and only the completions run per sample.
With prompts as long as the responses that halves the update's work. The result equals a
full-sequence forward per completion (tested to 1e-6 on log-probabilities and gradients).

Groups are plain dicts: {"prompt": [ids], "completions": [{"ids", "old_logprobs", "advantage"}]}.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from m2rl_trainer.train.logprobs import HeadRequest, add_chunked_head

DEFAULT_CHUNK_MIB = 64.0
# whether this transformers lets a layer keep a read-only cache under checkpointing (5.19 does;
# modeling_layers.py `_can_checkpoint_with_cache`); without it, checkpointed updates run whole sequences
CACHE_UNDER_CHECKPOINTING = hasattr(
    GradientCheckpointingLayer, "_can_checkpoint_with_cache"
)  # fp32 logits per LM-head chunk (MemoryConfig.logits_chunk_mib)

Group = dict[str, Any]


def micro_batches(
    groups: list[Group], micro_batch_size: int, max_tokens: int | None = None
) -> list[list[Group]]:
    """Micro-batches of at most `micro_batch_size` completions and, when `max_tokens` is set, at
    most that many padded tokens (prompt rows x widest prompt + completion rows x longest
    completion, the shapes `shared_prefix_batch` builds). A group may be split: each piece keeps
    its prompt, so a split prompt runs once per piece. A completion is never split; one whose own
    cost exceeds `max_tokens` goes alone (the trainer refuses such configs up front).

    Groups are sorted by length first, and each group's completions too, so little of a
    micro-batch is padding. The loss normalisers are global and every sequence is whole in one
    micro-batch, so the split leaves the gradient unchanged (`aggregation.py`).
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    ordered = sorted(groups, key=lambda g: (len(g["prompt"]), max(len(c["ids"]) for c in g["completions"])))
    chunks: list[list[Group]] = []
    count = prompt_rows = prompt_width = length = 0
    for group in ordered:
        piece: Group | None = None  # this group's share of the current micro-batch
        for completion in sorted(group["completions"], key=lambda c: len(c["ids"])):
            new_piece = piece is None
            rows = prompt_rows + (1 if new_piece else 0)
            width, longest = max(prompt_width, len(group["prompt"])), max(length, len(completion["ids"]))
            fits = count + 1 <= micro_batch_size and (
                max_tokens is None or rows * width + (count + 1) * longest <= max_tokens
            )
            if not chunks or not fits:
                chunks.append([])
                count = prompt_rows = prompt_width = length = 0
                new_piece, rows, width, longest = True, 1, len(group["prompt"]), len(completion["ids"])
            if new_piece:
                piece = {**group, "completions": []}
                chunks[-1].append(piece)
            assert piece is not None
            piece["completions"].append(completion)
            count, prompt_rows, prompt_width, length = count + 1, rows, width, longest
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


def _checkpointing_layers(model: Any) -> tuple[Any, list[Any], bool]:
    """(the Hugging Face model, its modules flagged for gradient checkpointing, whether the
    forward will checkpoint)."""
    base = getattr(model, "module", model)  # the Hugging Face model inside a DeepSpeed engine
    # the layers and the decoder (which otherwise turns `use_cache` off) carry the flag
    flagged = [m for m in base.modules() if getattr(m, "gradient_checkpointing", False)]
    return base, flagged, base.training and bool(flagged)


def shares_prompts(model: Any, batch: dict[str, torch.Tensor]) -> bool:
    """Whether `shared_prefix_logprobs` runs the batch as two forwards (prompts once, then the
    completions on their cache) rather than one over whole sequences: prompts are shared, some
    response has more than one token, and this transformers keeps a cache under checkpointing."""
    return _can_share(batch, _checkpointing_layers(model)[2])


def _can_share(batch: dict[str, torch.Tensor], checkpointing: bool) -> bool:
    return (
        len(batch["owner"]) != batch["prompt_ids"].shape[0]
        and batch["ids"].shape[1] > 1
        and not (checkpointing and not CACHE_UNDER_CHECKPOINTING)
    )


def shared_prefix_logprobs(
    model: Any,
    batch: dict[str, torch.Tensor],
    temperature: float,
    *,
    chunk_mib: float = DEFAULT_CHUNK_MIB,
    share: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(response token), entropy of the next-token distribution), both [B, R] fp32 and zero
    at padding, under `model` (a causal LM, or a DeepSpeed engine wrapping one): the prompts run
    once, their keys/values are copied to each completion of the group, then the completions run on
    top of them. The LM head runs in chunks of about `chunk_mib` MiB of fp32 logits
    (`train/logprobs.py`): no [B, R, V] tensor exists, in the forward or the backward.

    Under gradient checkpointing (`model.gradient_checkpointing_enable()`, training mode),
    transformers' `GradientCheckpointingLayer` drops `past_key_values` (modeling_layers.py), since a
    cache written in the forward would be written again by the recompute. Here the prompts' pass
    runs without checkpointing (its activations are the small part: one row per prompt), and the
    completions' pass reads the prompts' keys/values from a read-only cache (`update` returns the
    concatenation and stores nothing), so the recompute sees the same states and the layers may
    keep it (`_can_checkpoint_with_cache`, the flag transformers provides for readers).

    `share`: the path, decided by the caller (None: `shares_prompts`). Ranks of a ZeRO-3 model
    must make the same forwards, so they agree on it first (`PolicyUpdate._forward`); False is
    always valid, True only where `shares_prompts` holds.
    """
    base, flagged, checkpointing = _checkpointing_layers(model)
    add_chunked_head(base)
    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
    owner, ids, follow = batch["owner"], batch["ids"], batch["mask"][:, 1:].bool()

    def head(select: Any, targets: torch.Tensor) -> HeadRequest:
        return HeadRequest(select=select, targets=targets, temperature=temperature, chunk_mib=chunk_mib)

    # Whole sequences when nothing is shared, or when this transformers cannot keep a cache under
    # checkpointing (`_can_checkpoint_with_cache` is recent): then each prompt runs once per completion.
    if not (_can_share(batch, checkpointing) if share is None else share):
        return _whole_sequences(model, batch, head)
    with _layer_flags(flagged, "gradient_checkpointing", False, checkpointing):
        prefix = model(
            input_ids=batch["prompt_ids"],
            attention_mask=batch["prompt_mask"],
            position_ids=batch["prompt_positions"],
            use_cache=True,
            # the prompt's last position predicts the first response token
            head=head(lambda hidden: hidden[:, -1][owner], ids[:, 0]),
        )
    logprobs, entropy = [prefix.logprobs[:, None]], [prefix.entropy[:, None]]
    if ids.shape[1] > 1:
        cache = prefix.past_key_values
        cache.reorder_cache(owner)  # one copy of the prompt's keys/values per completion
        for layer in cache.layers:
            layer.update = types.MethodType(_read_only_update, layer)
        with _layer_flags(layers, "_can_checkpoint_with_cache", True, checkpointing):
            rest = model(
                input_ids=ids,
                attention_mask=batch["attention"],
                position_ids=batch["positions"],
                past_key_values=cache,
                use_cache=False,
                head=head(lambda hidden: hidden[:, :-1][follow], ids[:, 1:][follow]),
            )
        zeros = torch.zeros(follow.shape, dtype=rest.logprobs.dtype, device=follow.device)
        logprobs.append(zeros.masked_scatter(follow, rest.logprobs))
        entropy.append(zeros.masked_scatter(follow, rest.entropy))
    return torch.cat(logprobs, 1), torch.cat(entropy, 1)


def _whole_sequences(model: Any, batch: dict[str, torch.Tensor], head: Any) -> tuple[torch.Tensor, ...]:
    """Each completion after its own copy of its prompt, in one forward. Used when no prompt is
    shared (micro_batch_size 1, or a long response alone in its token budget): nothing to save,
    and without padding no attention mask is built at all (transformers then lets SDPA use its
    causal kernels), which removes the mask's query x key term, the one part of the memory that
    grows with the square of the length."""
    mask, owner = batch["mask"].bool(), batch["owner"]
    attention = batch["attention"]
    width = batch["prompt_ids"].shape[1]
    out = model(
        input_ids=torch.cat([batch["prompt_ids"][owner], batch["ids"]], 1),
        attention_mask=None if bool(attention.all()) else attention,
        position_ids=torch.cat([batch["prompt_positions"][owner], batch["positions"]], 1),
        use_cache=False,
        head=head(lambda hidden: hidden[:, width - 1 : -1][mask], batch["ids"][mask]),
    )
    zeros = torch.zeros(mask.shape, dtype=out.logprobs.dtype, device=mask.device)
    return zeros.masked_scatter(mask, out.logprobs), zeros.masked_scatter(mask, out.entropy)


def _read_only_update(
    self: Any, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """`DynamicLayer.update` without the write: the prompt's states followed by this call's."""
    return torch.cat([self.keys, key_states], -2), torch.cat([self.values, value_states], -2)


@contextmanager
def _layer_flags(layers: list[Any], name: str, value: bool, active: bool) -> Iterator[None]:
    """Set an attribute on each decoder layer for the duration of one call (when `active`)."""
    saved = [layer.__dict__.get(name, _UNSET) for layer in layers]
    if active:
        for layer in layers:
            setattr(layer, name, value)
    try:
        yield
    finally:
        if active:
            for layer, old in zip(layers, saved, strict=True):
                if old is _UNSET:
                    delattr(layer, name)
                else:
                    setattr(layer, name, old)


_UNSET = object()
