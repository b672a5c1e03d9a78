"""The policy update of one step, readable top to bottom.

    this rank's groups
      -> one pass without gradient, once per step (not per epoch): pi_old recomputed by the trainer
         (`recompute_old_logprobs`), pi_ref (`kl_coef > 0`), the rollout-correction weights and the
         rollout/trainer mismatch figures
      -> update_epochs x mini_batches optimizer updates: each epoch splits the groups into
         `mini_batches` disjoint slices (PPO mini-batches); one update per slice, its gradient
         accumulated over micro-batches
      -> statistics, token-weighted over every update; per-domain clip share and entropy.

Exact normalisation per update: a slice's loss is divided by that slice's token and sequence
counts summed over all ranks, so each update's gradient is the gradient of its slice's loss
whatever the split into ranks and micro-batches (DeepSpeed averages gradients over ranks; the loss
is multiplied by the world size to undo that, verl's `dp_size`).

Collectives stay matched: every rank runs the same number of forwards in each pass (ZeRO-3 gathers
parameters collectively), so a rank with fewer micro-batches in a slice, or none at all (dynamic
sampling can leave a rank without groups), runs zero-weight ones.

A non-finite loss drops that update and the rest of the step on every rank (the flag is
all-reduced before any backward of the micro-batch); updates already taken in the step stay.

Groups are the dicts of `batching.py`, plus "domain" per group and, after the first pass,
"rollout_logprobs", "ref_logprobs" and "is_weights" per completion.

Multi-turn completions (agent episodes) carry a "loss_mask": 1 on the model's tokens, 0 on the tool
results between its turns. The forward runs over every token (the results are context), while the
loss, its normalisers, the KL, the mismatch figures and the statistics count only masked-in tokens.

MT-OPD (`algorithm.name: mt-opd`, grpo/opd.py): completions carry their teacher's
"teacher_logprobs"; the first pass recomputes pi_old and sets per-token "token_advantages" =
teacher - pi_old on trained tokens, which replace the scalar advantage in the loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from m2rl_trainer.config import AlgorithmConfig, MemoryConfig
from m2rl_trainer.grpo import (
    clip_regions,
    importance_weights,
    mismatch_sums,
    policy_loss,
)
from m2rl_trainer.grpo.opd import opd_advantages
from m2rl_trainer.train.batching import (
    micro_batches,
    shared_prefix_batch,
    shared_prefix_logprobs,
    shares_prompts,
)
from m2rl_trainer.train.collectives import all_reduce

Group = dict[str, Any]
MAX = dist.ReduceOp.MAX
PER_TOKEN_EXTRAS = ("rollout_logprobs", "ref_logprobs", "is_weights", "teacher_logprobs", "token_advantages")
MISMATCH = ("tokens", "kl", "k3_kl", "corrected", "weight")


def split(groups: list[Group], parts: int) -> list[list[Group]]:
    """`parts` contiguous slices of `groups`, sizes differing by at most one (the first ones larger)."""
    base, extra = divmod(len(groups), parts)
    slices, start = [], 0
    for j in range(parts):
        end = start + base + (j < extra)
        slices.append(groups[start:end])
        start = end
    return slices


def trained_tokens(completion: dict[str, Any]) -> int:
    """Tokens of a completion the loss trains on (all of them, or a multi-turn one's model tokens)."""
    mask = completion.get("loss_mask")
    return len(completion["ids"]) if mask is None else int(sum(mask))


def loss_mask(chunk: list[Group], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, R]: 1 on the tokens the loss trains on: response tokens (`batch["mask"]`), times each
    multi-turn completion's own loss mask."""
    completions = [c for g in chunk for c in g["completions"]]
    if not any("loss_mask" in c for c in completions):
        return batch["mask"]
    own = torch.zeros_like(batch["mask"])
    for i, c in enumerate(completions):
        row = c.get("loss_mask") or [1] * len(c["ids"])
        own[i, : len(row)] = torch.tensor(row, dtype=own.dtype)
    return batch["mask"] * own


def per_token(chunk: list[Group], key: str, width: int, device: torch.device | str) -> torch.Tensor:
    """[B, width] of each completion's per-token `key`, right-padded with 0, in the completion order
    of `shared_prefix_batch` (groups in order, completions in order)."""
    rows = [c[key] for g in chunk for c in g["completions"]]
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out.to(device)


class PolicyUpdate:
    """The update of every step of one run: the engine, the frozen reference, and the settings."""

    def __init__(
        self,
        engine: Any,
        ref_model: Any,
        algo: AlgorithmConfig,
        domains: list[str],
        pad_id: int,
        world_size: int,
        zero_stage: int,
        memory: MemoryConfig | None = None,
    ) -> None:
        self.engine, self.ref_model, self.algo = engine, ref_model, algo
        self.memory = memory or MemoryConfig()  # chunked head size and token budget of micro-batches
        self.domains, self.pad_id, self.world = domains, pad_id, world_size
        self.zero_stage = zero_stage
        self._lm_head_grad = self._watch_lm_head_grad()

    # ---------------------------------------------------------------- the step's update
    def run(self, groups: list[Group]) -> dict[str, Any]:
        """Every optimizer update of the step over this rank's groups (collective: all ranks call it)."""
        out: dict[str, Any] = self._first_pass(groups)
        slices = split(groups, self.algo.mini_batches)
        chunks = [
            micro_batches(s, self.algo.micro_batch_size, self.memory.max_tokens_per_micro_batch)
            for s in slices
        ]
        counts = all_reduce([n for s in slices for n in self._counts(s)])  # [tokens, sequences] per slice
        longest = all_reduce([float(len(c)) for c in chunks], MAX)
        totals = _Totals(self.domains)
        applied, nonfinite, lm_head_grad_norm, own_grad_norm = 0, False, float("nan"), None
        for _epoch in range(self.algo.update_epochs):
            for j in range(self.algo.mini_batches):
                tokens, sequences = counts[2 * j], counts[2 * j + 1]
                if tokens == 0:  # an empty slice on every rank: nothing to learn from
                    continue
                if not self._accumulate(chunks[j], int(longest[j]), tokens, sequences, totals):
                    nonfinite = True
                    break
                lm_head_grad_norm = self._lm_head_grad_norm()
                own_grad_norm = self._plain_grad_norm()
                self.engine.step()
                applied += 1
            if nonfinite:
                break
        if nonfinite:  # drop the half-accumulated gradient of the failed update
            self.engine.optimizer.zero_grad()
            if self._lm_head_grad is not None:
                self._lm_head_grad.zero_()
        out |= totals.reduce(applied)
        out["updates_applied"] = applied
        out["nonfinite"] = nonfinite
        out["response_tokens"] = sum(counts[0::2])
        out["lm_head_grad_norm"] = lm_head_grad_norm
        if applied:
            grad_norm = self.engine.get_global_grad_norm()
            grad_norm = grad_norm if grad_norm is not None else own_grad_norm
            out["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        return out

    def _accumulate(
        self, chunks: list[list[Group]], longest: int, tokens: float, sequences: float, totals: _Totals
    ) -> bool:
        """Forward and backward over one slice's micro-batches; False (and no backward of that
        micro-batch on any rank) when a loss is not finite."""
        for index in range(longest):
            dummy = index >= len(chunks)
            chunk = chunks[index] if not dummy else (chunks[0] if chunks else [self._dummy_group()])
            batch = self._batch(chunk)
            logprobs, entropy = self._forward(self.engine, batch)
            # Entropy is always measured; it carries gradient only when it is part of the loss.
            entropy = entropy if self.algo.entropy_coef > 0 else entropy.detach()
            loss, stats = policy_loss(
                logprobs,
                batch["old_logprobs"],
                batch.get("token_advantages", batch["advantages"]),
                batch["loss_mask"],
                clip_low=self.algo.clip_low,
                clip_high=self.algo.clip_high,
                aggregation=self.algo.resolved_aggregation(),
                num_tokens=tokens,
                num_sequences=sequences,
                max_response_tokens=self.algo.max_response_tokens,
                ref_logprobs=batch.get("ref_logprobs"),
                kl_coef=self.algo.kl_coef,
                kl_estimator=self.algo.kl_estimator,
                entropy=entropy,
                entropy_coef=self.algo.entropy_coef,
                clip_ratio_c=self.algo.clip_ratio_c,
                is_weights=batch.get("is_weights"),
            )
            if all_reduce([0.0 if torch.isfinite(loss) else 1.0], MAX)[0] != 0.0:
                return False
            self.engine.backward(loss * (0.0 if dummy else float(self.world)), scale_wrt_gas=False)
            if dummy:  # same statistics keys on every rank, so their all-reduce lines up
                totals.register(stats)
            else:
                totals.add(
                    stats, float(loss.detach()), chunk, batch, logprobs.detach(), entropy.detach(), self.algo
                )
        return True

    # ---------------------------------------------------------------- the pass without gradient
    @torch.no_grad()
    def _first_pass(self, groups: list[Group]) -> dict[str, float]:
        """pi_old by the trainer, pi_ref, and the correction weights, written into each completion."""
        recompute, reference = self.algo.recomputes_old_logprobs(), self.ref_model is not None
        if not recompute and not reference:
            return {}
        chunks = micro_batches(groups, self.algo.micro_batch_size, self.memory.max_tokens_per_micro_batch)
        longest = int(all_reduce([float(len(chunks))], MAX)[0])
        sums, ratio_max = dict.fromkeys(MISMATCH, 0.0), 0.0
        opd = [0.0, 0.0]  # MT-OPD: sum of log pi_old - log pi_teacher over trained tokens, and their count
        for index in range(longest):
            dummy = index >= len(chunks)
            chunk = chunks[index] if not dummy else (chunks[0] if chunks else [self._dummy_group()])
            batch = self._batch(chunk)
            trainer = self._forward(self.engine, batch)[0] if recompute else None
            ref = self._forward(self.ref_model, batch)[0] if reference else None
            if dummy:
                continue
            completions = [c for g in chunk for c in g["completions"]]
            if ref is not None:
                for i, c in enumerate(completions):
                    c["ref_logprobs"] = ref[i, : len(c["ids"])].tolist()
            if trainer is not None:
                a, rollout = self.algo, batch["old_logprobs"]
                mode, bounds = (
                    a.importance_sampling,
                    {"cap": a.importance_sampling_cap, "floor": a.importance_sampling_floor},
                )
                weights = importance_weights(trainer, rollout, mode, **bounds)
                found = mismatch_sums(trainer, rollout, batch["loss_mask"], mode, **bounds)
                for key in MISMATCH:
                    sums[key] += float(found[key])
                ratio_max = max(ratio_max, float(found["ratio_max"]))
                for i, c in enumerate(completions):
                    n = len(c["ids"])
                    c["rollout_logprobs"], c["old_logprobs"] = c["old_logprobs"], trainer[i, :n].tolist()
                    c["is_weights"] = weights[i, :n].tolist()
                if "teacher_logprobs" in batch:
                    advantages = opd_advantages(batch["teacher_logprobs"], trainer, batch["loss_mask"])
                    opd[0] -= float(advantages.sum())
                    opd[1] += float(batch["loss_mask"].sum())
                    for i, c in enumerate(completions):
                        c["token_advantages"] = advantages[i, : len(c["ids"])].tolist()
        if not recompute:
            return {}
        reduced = dict(zip(MISMATCH, all_reduce([sums[k] for k in MISMATCH]), strict=True))
        tokens = max(reduced["tokens"], 1.0)
        extra = {}
        if self.algo.name == "mt-opd":
            kl_sum, kl_tokens = all_reduce(opd)
            extra["opd_reverse_kl"] = kl_sum / max(kl_tokens, 1.0)  # k1 estimate, per trained token
        return extra | {
            "rollout_trainer_kl": reduced["kl"] / tokens,
            "rollout_trainer_k3_kl": reduced["k3_kl"] / tokens,
            "importance_weight_clip_ratio": reduced["corrected"] / tokens,
            "importance_weight_mean": reduced["weight"] / tokens,
            "importance_ratio_max": all_reduce([ratio_max], MAX)[0],
        }

    # ---------------------------------------------------------------- helpers
    def _counts(self, groups: list[Group]) -> tuple[float, float]:
        completions = [c for g in groups for c in g["completions"]]
        return float(sum(trained_tokens(c) for c in completions)), float(len(completions))

    def _batch(self, chunk: list[Group]) -> dict[str, torch.Tensor]:
        batch = shared_prefix_batch(chunk, self.pad_id, self.engine.device)
        first = chunk[0]["completions"][0]
        width = batch["ids"].shape[1]
        for key in PER_TOKEN_EXTRAS:
            if key in first:
                batch[key] = per_token(chunk, key, width, self.engine.device)
        batch["loss_mask"] = loss_mask(chunk, batch)
        return batch

    def _forward(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs [B, R], entropy [B, R]) of the batch's responses under `model`; the LM head
        runs in chunks (`memory.logits_chunk_mib`), never building [B, R, V] logits."""
        share = None
        if self.zero_stage == 3 and self.world > 1:
            # ZeRO-3 gathers each module's parameters in its forward, collectively: every rank must
            # run the same forwards (DeepSpeed asserts it in `PartitionedParameterCoordinator.
            # reset_step` and hangs in the broadcast when they differ), while one or two forwards
            # per micro-batch depend on the batch (`shares_prompts`; a rank's zero-weight dummy
            # group never shares). So the ranks agree: two forwards only where every rank can.
            share = all_reduce([float(shares_prompts(model, batch))], dist.ReduceOp.MIN)[0] == 1.0
        return shared_prefix_logprobs(
            model, batch, self.algo.temperature, chunk_mib=self.memory.logits_chunk_mib, share=share
        )

    def _dummy_group(self) -> Group:
        """A one-token group for a rank without groups: it runs forwards with zero weight."""
        completion: dict[str, Any] = {"ids": [self.pad_id], "old_logprobs": [0.0], "advantage": 0.0}
        if self.algo.recomputes_old_logprobs():
            completion |= {"rollout_logprobs": [0.0], "is_weights": [1.0]}
        if self.algo.name == "mt-opd":
            completion |= {"teacher_logprobs": [0.0], "token_advantages": [0.0]}
        if self.ref_model is not None:
            completion["ref_logprobs"] = [0.0]
        return {"prompt": [self.pad_id], "domain": None, "completions": [completion]}

    def _plain_grad_norm(self) -> float | None:
        """The gradient norm of the coming update where DeepSpeed records none: its engine copies
        `optimizer._global_grad_norm` (`DeepSpeedEngine._take_model_step`), which only its ZeRO,
        bf16 and fp16 optimizers keep; a plain optimizer (ZeRO-0, fp32) has none. Its gradients
        are the full, all-reduced ones here (every backward is a boundary: gradient_accumulation_steps 1),
        so the norm is what `clip_fp32_gradients` clips."""
        if hasattr(self.engine.optimizer, "_global_grad_norm"):
            return None
        grads = [p.grad.detach().float() for p in self.engine.module.parameters() if p.grad is not None]
        return (
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            if grads
            else None
        )

    def _watch_lm_head_grad(self) -> torch.Tensor | None:
        """A buffer summing the output layer's gradient over micro-batches (ZeRO 0-2, where DeepSpeed
        keeps gradients in its own buckets); ZeRO-3 asks DeepSpeed for the gathered gradient instead.
        Costs one lm_head-sized buffer and an all-reduce of it per update."""
        if self.zero_stage == 3:
            return None
        param = self.engine.module.get_output_embeddings().weight
        buffer = torch.zeros_like(param, dtype=torch.float32)

        def accumulate(grad: torch.Tensor) -> None:
            buffer.add_(grad.detach().float())

        param.register_hook(accumulate)
        return buffer

    def _lm_head_grad_norm(self) -> float:
        """Norm of the update's gradient of the output layer (call before `engine.step()`)."""
        if self._lm_head_grad is None:
            from deepspeed.utils import safe_get_full_grad

            grad = safe_get_full_grad(self.engine.module.get_output_embeddings().weight)
            return float(grad.norm()) if grad is not None else float("nan")
        if self.world > 1:
            dist.all_reduce(self._lm_head_grad)  # a device tensor: NCCL on GPUs
        norm = float(self._lm_head_grad.norm()) / self.world  # losses carry a x world factor
        self._lm_head_grad.zero_()
        return norm


class _Totals:
    """Token-weighted sums of the loss statistics over micro-batches and updates, and per domain
    the clipped tokens and the entropy; `reduce` all-reduces them (every rank calls it)."""

    def __init__(self, domains: list[str]) -> None:
        self.domains = domains
        self.sums: dict[str, float] = {}
        self.weight = self.loss = 0.0
        self.per_domain = {name: [0.0, 0.0, 0.0] for name in domains}  # tokens, clipped, entropy

    def register(self, stats: dict[str, float]) -> None:
        for key in stats:
            if key != "num_tokens":
                self.sums.setdefault(key, 0.0)

    def add(
        self,
        stats: dict[str, float],
        loss: float,
        chunk: list[Group],
        batch: dict[str, torch.Tensor],
        logprobs: torch.Tensor,
        entropy: torch.Tensor,
        algo: AlgorithmConfig,
    ) -> None:
        tokens = stats["num_tokens"]
        self.weight += tokens
        self.loss += loss
        for key, value in stats.items():
            if key not in ("num_tokens", "ratio_max"):
                self.sums[key] = self.sums.get(key, 0.0) + value * tokens
        self.sums["ratio_max"] = max(self.sums.get("ratio_max", 0.0), stats["ratio_max"])
        # Per row, then per domain: clipped tokens and entropy over the row's valid tokens.
        valid = batch["loss_mask"].bool()
        ratio = torch.exp((logprobs - batch["old_logprobs"]).clamp(-20.0, 20.0))
        advantages = batch.get("token_advantages", batch["advantages"].unsqueeze(-1))  # [B, R] or [B, 1]
        low, high = clip_regions(ratio, advantages, algo.clip_low, algo.clip_high)
        clipped = ((low | high) & valid).sum(-1).tolist()
        entropy_sums = torch.where(valid, entropy, torch.zeros_like(entropy)).sum(-1).tolist()
        lengths = valid.sum(-1).tolist()
        domains = [g["domain"] for g in chunk for _ in g["completions"]]
        for domain, n, c, h in zip(domains, lengths, clipped, entropy_sums, strict=True):
            row = self.per_domain[domain]
            row[0], row[1], row[2] = row[0] + n, row[1] + c, row[2] + h

    def reduce(self, applied: int) -> dict[str, Any]:
        keys = sorted(k for k in self.sums if k != "ratio_max")
        flat = [self.sums[k] for k in keys] + [self.weight, self.loss]
        flat += [x for name in self.domains for x in self.per_domain[name]]
        reduced = all_reduce(flat)
        weight = max(reduced[len(keys)], 1.0)
        out: dict[str, Any] = {k: v / weight for k, v in zip(keys, reduced, strict=False)}
        out["ratio_max"] = all_reduce([self.sums.get("ratio_max", 0.0)], MAX)[0]
        out["loss"] = reduced[len(keys) + 1] / max(applied, 1)
        per_domain = {}
        rest = reduced[len(keys) + 2 :]
        for i, name in enumerate(self.domains):
            tokens, clipped, entropy = rest[3 * i : 3 * i + 3]
            if tokens:
                per_domain[name] = {"clip_ratio": clipped / tokens, "entropy": entropy / tokens}
        out["per_domain"] = per_domain
        return out
