"""The GRPO training loop, readable top to bottom.

One step:  prompts (mixer) -> rollout (n completions per prompt, sampling-policy logprobs)
  -> rewards (verifiers, in worker processes) [-> overlong shaping] [-> dynamic sampling refill]
  -> group advantages -> `update_epochs` optimiser updates over micro-batches
  -> weight sync to rollout servers -> metrics -> checkpoint every K steps.

Data parallelism: every rank draws the same global batch from the mixer (same seed, same state)
and keeps its own slice (`prompts[rank::world]`); groups never cross ranks, so advantages need no
communication. Loss normalisers (tokens, sequences) are all-reduced, so the gradient equals the
full-batch gradient whatever the split into ranks and micro-batches (DeepSpeed averages gradients
over ranks; the loss is multiplied by the world size to undo that).

One-step off-policy (`algorithm.off_policy_steps: 1`): right after step t's batch is collected,
step t+1's first batch is drawn and generated + scored in a background thread (the rollout engine
still holds the weights before update t) while update t runs; the thread is joined before the
weight sync, so every batch comes from one set of weights. Colocated runs then generate in a
child process (`rollout.process`), not on the policy being updated. The batch in flight is saved
with each checkpoint, so resume stays exact.

Deviations from the papers are listed in `m2rl_trainer.grpo.losses`. Here: the importance ratio
uses the rollout engine's logprobs as pi_old (no recomputation pass; the cost is a small
engine mismatch, visible as `ratio_mean` in the metrics); one optimiser update per epoch over the
whole rollout batch (no PPO mini-batches).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from m2rl_trainer.config import TrainerConfig
from m2rl_trainer.data.datasets import DatasetError, Prompt, load_domain, render_prompt
from m2rl_trainer.data.mixer import DomainMixer
from m2rl_trainer.grpo import (
    group_advantages,
    overlong_penalty,
    policy_loss,
    token_entropy_from_logits,
    zero_variance_groups,
)
from m2rl_trainer.rewards import hygiene
from m2rl_trainer.rewards.client import HttpScorer
from m2rl_trainer.rewards.scorer import Scorer, ScorerConfig
from m2rl_trainer.rewards.types import Sample
from m2rl_trainer.rollout.base import Completion, SamplingParams
from m2rl_trainer.train import checkpoint as ckpt
from m2rl_trainer.train.batching import micro_batches, shared_prefix_batch, shared_prefix_logprobs
from m2rl_trainer.train.engine import (
    DistInfo,
    build_engine,
    deepspeed_config,
    full_state_dict,
    init_distributed,
    resolve_dtype,
)
from m2rl_trainer.train.metrics import MetricsSink


class TrainingAborted(RuntimeError):
    """The run stopped on purpose (too many non-finite steps, a replica that kept old weights)."""


@dataclass
class Rollouts:
    """This rank's share of one step: groups of completions with rewards (rows = prompts)."""

    prompts: list[Prompt] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    groups: list[list[Completion]] = field(default_factory=list)
    rewards: list[list[float]] = field(default_factory=list)  # shaped rewards (what advantages see)
    correct: list[list[float]] = field(default_factory=list)  # verifier reward alone (accuracy)
    hygiene: Counter[str] = field(default_factory=Counter)  # rewarded samples' hacking signs, every round

    def extend(self, other: Rollouts, keep: list[bool]) -> None:
        self.hygiene.update(other.hygiene)
        for i, k in enumerate(keep):
            if k:
                self.prompts.append(other.prompts[i])
                self.prompt_ids.append(other.prompt_ids[i])
                self.groups.append(other.groups[i])
                self.rewards.append(other.rewards[i])
                self.correct.append(other.correct[i])


RoundResult = tuple[Rollouts, dict[str, float]]  # one generation round and its timings


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _all_reduce(values: list[float], op: dist.ReduceOp = dist.ReduceOp.SUM) -> list[float]:
    if dist.get_world_size() == 1:  # a gloo round trip costs ~2 ms even alone; ~13 per step
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


class GRPOTrainer:
    """Owns the engine, data, rollout, scorer and sinks of one run; `train()` runs it."""

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.algo = config.algorithm
        self.on_gpu = torch.cuda.is_available()
        self.out = Path(config.output_dir)
        checkpoints = Path(config.checkpoint.dir)
        self.checkpoint_root = checkpoints if checkpoints.is_absolute() else self.out / checkpoints
        # 1. Everything that can be wrong with the input fails here, before any GPU work.
        self.domains = {d.name: load_domain(d) for d in config.data.domains}
        self.scorer: Any = self._make_scorer()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        self.dist: DistInfo = init_distributed(self.on_gpu)
        self.is_main = self.dist.is_main
        self._drop_long_prompts()  # still before the model is loaded
        _seed_everything(self.algo.seed)

        dtype = resolve_dtype(config.deepspeed, self.on_gpu)
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
        self.ref_model = None
        if self.algo.kl_coef > 0:  # no reference model at all when the KL term is off
            self.ref_model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).eval()
            self.ref_model.requires_grad_(False)
        ds = deepspeed_config(
            config.deepspeed, self.algo, world_size=self.dist.world_size, on_gpu=self.on_gpu
        )
        self.engine = build_engine(model, ds, self.algo)
        self.device = self.engine.device
        if self.ref_model is not None:
            self.ref_model.to(self.device)
        self._lm_head_grad = self._watch_lm_head_grad()

        weights = {d.name: d.weight for d in config.data.domains}
        self.mixer = DomainMixer(self.domains, weights, config.data.mixing, self.algo.seed)
        self.rollout = self._make_rollout()
        # Step t+1's first batch, generated during update t (off_policy_steps = 1).
        self.prefetcher = (
            ThreadPoolExecutor(1, thread_name_prefix="m2rl-prefetch") if self.algo.off_policy_steps else None
        )
        self.prefetched: RoundResult | None = None
        self.nccl_engine: Any = None  # created at the first NCCL weight sync (GPU clusters)
        self.step = 0
        self.skipped_steps = 0
        self.metrics: MetricsSink | None = None
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
            self.metrics = MetricsSink(
                self.out / config.metrics.jsonl, config.metrics.prometheus_port, config.run_name
            )

    def _make_scorer(self) -> Any:
        """The verifier service when one is configured (cluster pods: model-written code runs in the
        sandboxed Deployment, not beside the trainer), else the same library in-process."""
        rewards = self.config.rewards
        if rewards.service_url:
            return HttpScorer(rewards.service_url, timeout_s=rewards.request_timeout_s)
        return Scorer(
            ScorerConfig(verifiers={d.verifier: {} for d in self.config.data.domains}, warm_up=False)
        )

    def _drop_long_prompts(self) -> None:
        """Leave out prompts longer than `algorithm.max_prompt_tokens` (as verl's filter does), and
        say how many; a domain left empty is an error naming it."""
        limit = self.algo.max_prompt_tokens
        for name, prompts in self.domains.items():
            lengths = [
                len(self.tokenizer(render_prompt(p, self.tokenizer, self.config.data.chat_template,
                                                 self.config.data.system_prompt))["input_ids"])
                for p in prompts
            ]  # fmt: skip
            kept = [p for p, n in zip(prompts, lengths, strict=True) if n <= limit]
            if not kept:
                raise DatasetError(
                    f"data.domains[{name}]: every prompt is longer than algorithm.max_prompt_tokens ({limit})"
                )
            if len(kept) < len(prompts) and self.is_main:
                print(f"[m2rl-train] domain {name}: {len(prompts) - len(kept)} of {len(prompts)} prompts "
                      f"longer than {limit} tokens left out", flush=True)  # fmt: skip
            self.domains[name] = kept

    # ---------------------------------------------------------------- rollout and rewards
    def _make_rollout(self) -> Any:
        if self.config.rollout.mode == "colocated" and self.algo.off_policy_steps:
            from m2rl_trainer.rollout.process import ProcessRollout

            dtype = resolve_dtype(self.config.deepspeed, self.on_gpu)
            return ProcessRollout(self.config.model, dtype=str(dtype).removeprefix("torch."))
        if self.config.rollout.mode == "colocated":
            from m2rl_trainer.rollout.colocated import HFGenerateRollout

            return HFGenerateRollout(self.engine.module, self.tokenizer, device=str(self.device))
        from m2rl_trainer.rollout.server import VLLMServerRollout

        r = self.config.rollout
        return VLLMServerRollout(
            r.server_urls,
            model_name=r.served_model_name or self.config.model,
            tokenizer=self.tokenizer,
            timeout_s=r.request_timeout_s,
            max_retries=r.max_retries,
        )

    def _sampling(self, step: int, round_index: int) -> SamplingParams:
        # Seeds derive from (seed, step, rank, round), so a resumed run samples exactly as an
        # uninterrupted one, whatever RNG state the interruption left behind.
        seed = (self.algo.seed * 1_000_003 + step * 1_009 + self.dist.rank * 101 + round_index) % 2**31
        return SamplingParams(
            n=self.algo.group_size,
            max_tokens=self.algo.max_response_tokens,
            temperature=self.algo.temperature,
            top_p=self.algo.top_p,
            stop=[],
            seed=seed,
        )

    def _generate_and_score(self, prompts: list[Prompt], step: int, round_index: int) -> RoundResult:
        """Generate and score this rank's prompts. No collectives: it may run in the prefetch thread."""
        timings: dict[str, float] = {}
        texts = [
            render_prompt(p, self.tokenizer, self.config.data.chat_template, self.config.data.system_prompt)
            for p in prompts
        ]
        start = time.perf_counter()
        groups = self.rollout.generate(texts, self._sampling(step, round_index)) if texts else []
        timings["time_generation_s"] = time.perf_counter() - start

        start = time.perf_counter()
        samples = [
            Sample(verifier=p.verifier, response=c.text, reference=p.reference, options=p.verifier_options)
            for p, group in zip(prompts, groups, strict=True)
            for c in group
        ]
        results = self.scorer.score(samples) if samples else []
        timings["time_reward_s"] = time.perf_counter() - start

        n = self.algo.group_size
        rollouts = Rollouts(
            hygiene=hygiene.count(
                [p.domain for p, g in zip(prompts, groups, strict=True) for _ in g], results
            )
        )
        for i, (prompt, group) in enumerate(zip(prompts, groups, strict=True)):
            correct = [float(r.reward) for r in results[i * n : (i + 1) * n]]
            shaped = list(correct)
            if self.algo.overlong_buffer_tokens > 0:
                lengths = torch.tensor([len(c.token_ids) for c in group], dtype=torch.float32)
                penalty = overlong_penalty(
                    lengths,
                    self.algo.max_response_tokens,
                    self.algo.overlong_buffer_tokens,
                    self.algo.overlong_penalty,
                )
                shaped = [r + float(p) for r, p in zip(correct, penalty, strict=True)]
            rollouts.prompts.append(prompt)
            rollouts.prompt_ids.append(list(group[0].prompt_token_ids))
            rollouts.groups.append(group)
            rollouts.rewards.append(shaped)
            rollouts.correct.append(correct)
        return rollouts, timings

    def _collect(self, first: RoundResult | None = None) -> RoundResult:
        """This rank's groups for the step; with dynamic sampling, zero-variance groups are dropped
        and refilled with fresh prompts (all ranks draw the same extra batches) up to the target.
        `first`: the step's first round, prefetched during the previous update."""
        world, rank = self.dist.world_size, self.dist.rank
        target = self.algo.prompts_per_step
        if first is None:
            first = self._generate_and_score(self.mixer.next_batch(target)[rank::world], self.step, 0)
        rollouts, timings = first
        stats = {"zero_variance_fraction": 0.0, "refill_rounds": 0.0}
        if not self.algo.dynamic_sampling:
            zero_var = (
                float(zero_variance_groups(torch.tensor(rollouts.correct)).sum()) if rollouts.correct else 0.0
            )
            stats["zero_variance_fraction"] = _all_reduce([zero_var])[0] / target
            return rollouts, {**timings, **stats}
        kept = Rollouts()
        drawn, dropped = 0, 0.0
        for round_index in range(self.algo.max_refill_rounds + 1):
            # Filter on the verifier's outcomes, not shaped rewards (as verl's DAPO recipe): an
            # all-correct group that differs only in length penalties carries no task signal.
            keep = (
                (~zero_variance_groups(torch.tensor(rollouts.correct))).tolist() if rollouts.correct else []
            )
            dropped += len(keep) - sum(keep)
            kept.extend(rollouts, keep)
            drawn += len(rollouts.prompts)
            total_kept = _all_reduce([float(len(kept.prompts))])[0]
            if total_kept >= target or round_index == self.algo.max_refill_rounds:
                break
            extra = self.mixer.next_batch(int(target - total_kept))
            rollouts, more = self._generate_and_score(extra[rank::world], self.step, round_index + 1)
            for key, value in more.items():
                timings[key] += value
            stats["refill_rounds"] = float(round_index + 1)
        totals = _all_reduce([dropped, float(drawn)])
        stats["zero_variance_fraction"] = totals[0] / max(totals[1], 1.0)
        # Keep at most this rank's share of the target, so ranks stay balanced.
        share = len(range(rank, target, world))
        kept.prompts, kept.prompt_ids = kept.prompts[:share], kept.prompt_ids[:share]
        kept.groups, kept.rewards, kept.correct = (
            kept.groups[:share],
            kept.rewards[:share],
            kept.correct[:share],
        )
        return kept, {**timings, **stats}

    # ---------------------------------------------------------------- policy update
    def _sequences(self, rollouts: Rollouts, advantages: torch.Tensor) -> list[dict[str, Any]]:
        """One entry per group: prompt ids and its non-empty completions (ids, old logprobs,
        advantage); a completion without tokens has nothing to learn from and is left out."""
        groups = []
        for g, (prompt_ids, group) in enumerate(zip(rollouts.prompt_ids, rollouts.groups, strict=True)):
            completions = [
                {
                    "ids": list(c.token_ids),
                    "old_logprobs": list(c.logprobs),
                    "advantage": float(advantages[g, j]),
                }
                for j, c in enumerate(group)
                if c.token_ids
            ]
            if completions:
                groups.append({"prompt": list(prompt_ids), "completions": completions})
        return groups

    def _micro_batch(self, groups: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return shared_prefix_batch(groups, self.tokenizer.pad_token_id or 0, self.device)

    def _policy_logprobs(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return shared_prefix_logprobs(model, batch, self.algo.temperature)

    def _watch_lm_head_grad(self) -> torch.Tensor | None:
        """A buffer summing the output layer's gradient over micro-batches (ZeRO 0-2, where DeepSpeed
        keeps gradients in its own buckets); ZeRO-3 asks DeepSpeed for the gathered gradient instead.
        Costs one lm_head-sized buffer and an all-reduce of it per update."""
        if self.config.deepspeed.zero_stage == 3:
            return None
        param = self.engine.module.get_output_embeddings().weight
        buffer = torch.zeros_like(param, dtype=torch.float32)

        def accumulate(grad: torch.Tensor) -> None:
            buffer.add_(grad.detach().float())

        param.register_hook(accumulate)
        return buffer

    def _lm_head_grad_norm(self) -> float:
        """Norm of the full-batch gradient of the output layer (call before `engine.step()`)."""
        if self._lm_head_grad is None:
            from deepspeed.utils import safe_get_full_grad

            grad = safe_get_full_grad(self.engine.module.get_output_embeddings().weight)
            return float(grad.norm()) if grad is not None else float("nan")
        dist.all_reduce(self._lm_head_grad)
        norm = float(self._lm_head_grad.norm()) / self.dist.world_size  # losses carry a x world factor
        self._lm_head_grad.zero_()
        return norm

    def _update(self, groups: list[dict[str, Any]]) -> dict[str, float]:
        """`update_epochs` optimiser steps over this rank's groups; returns averaged statistics."""
        world = self.dist.world_size
        completions = [c for g in groups for c in g["completions"]]
        chunks = micro_batches(groups, self.algo.micro_batch_size)
        num_tokens, num_sequences, max_micro = (
            *_all_reduce([float(sum(len(c["ids"]) for c in completions)), float(len(completions))]),
            _all_reduce([float(len(chunks))], dist.ReduceOp.MAX)[0],
        )
        sums: dict[str, float] = {}
        weight = loss_sum = 0.0
        nonfinite = False
        for _epoch in range(self.algo.update_epochs):
            for index in range(int(max_micro)):
                # Ranks must run the same number of forwards (ZeRO-3 gathers weights collectively):
                # a rank with fewer micro-batches repeats its first one with zero weight.
                dummy = index >= len(chunks)
                chunk = chunks[0] if dummy and chunks else chunks[index] if chunks else None
                if chunk is None:
                    raise TrainingAborted(
                        "a rank has no sequences to train on: prompts_per_step < world size?"
                    )
                batch = self._micro_batch(chunk)
                logprobs, logits = self._policy_logprobs(self.engine, batch)
                ref_logprobs = None
                if self.ref_model is not None:
                    with torch.no_grad():
                        ref_logprobs, _ = self._policy_logprobs(self.ref_model, batch)
                # Entropy is always measured; it carries gradient only when it is part of the loss.
                entropy = token_entropy_from_logits(logits if self.algo.entropy_coef > 0 else logits.detach())
                loss, stats = policy_loss(
                    logprobs,
                    batch["old_logprobs"],
                    batch["advantages"],
                    batch["mask"],
                    clip_low=self.algo.clip_low,
                    clip_high=self.algo.clip_high,
                    aggregation=self.algo.resolved_aggregation(),
                    num_tokens=num_tokens,
                    num_sequences=num_sequences,
                    max_response_tokens=self.algo.max_response_tokens,
                    ref_logprobs=ref_logprobs,
                    kl_coef=self.algo.kl_coef,
                    kl_estimator=self.algo.kl_estimator,
                    entropy=entropy,
                    entropy_coef=self.algo.entropy_coef,
                )
                finite = _all_reduce([0.0 if torch.isfinite(loss) else 1.0], dist.ReduceOp.MAX)[0] == 0.0
                if not finite:
                    nonfinite = True
                    break
                scale = 0.0 if dummy else float(world)  # undo DeepSpeed's mean over ranks
                self.engine.backward(loss * scale, scale_wrt_gas=False)
                if not dummy:
                    # Statistics are per-micro-batch token means: weight them by their tokens.
                    tokens = float(batch["mask"].sum())
                    weight += tokens
                    for key, value in stats.items():
                        if key != "num_tokens":
                            sums[key] = sums.get(key, 0.0) + float(value) * tokens
                    loss_sum += float(loss.detach())
            if nonfinite:
                break
            lm_head_grad_norm = self._lm_head_grad_norm()
            self.engine.step()
        if nonfinite:
            self.engine.optimizer.zero_grad()
            if self._lm_head_grad is not None:
                self._lm_head_grad.zero_()
            return {"nonfinite": 1.0}
        # Global figures: token-weighted stats and the loss (each rank holds its share of it).
        keys = sorted(sums)
        reduced = _all_reduce([sums[k] for k in keys] + [weight, loss_sum])
        out = {key: value / max(reduced[-2], 1.0) for key, value in zip(keys, reduced, strict=False)}
        out["loss"] = reduced[-1] / self.algo.update_epochs
        grad_norm = self.engine.get_global_grad_norm()
        out["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        out["lm_head_grad_norm"] = lm_head_grad_norm
        out["learning_rate"] = float(self.engine.get_lr()[0])
        out["response_tokens"] = num_tokens
        return out

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        root = self.checkpoint_root
        final = root / ckpt.step_dir_name(self.step)
        tmp = root / (final.name + ".tmp")
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        state = full_state_dict(self.engine, self.config.deepspeed.zero_stage)
        if self.is_main:
            assert state is not None
            self.engine.module.save_pretrained(tmp / "model", state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / "model")
        self.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state")
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(ckpt.rng_state(), tmp / "rng" / f"rank-{self.dist.rank}.pt")
        if self.prefetched is not None:  # the next step's batch, drawn and generated already
            torch.save(self.prefetched, tmp / "rng" / f"prefetched-rank-{self.dist.rank}.pt")
        dist.barrier()
        if self.is_main:
            trainer_state = {
                "step": self.step,
                "skipped_steps": self.skipped_steps,
                "mixer": self.mixer.state_dict(),
            }
            (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
            ckpt.finalize(tmp, final)
            ckpt.prune(root, self.config.checkpoint.keep)
            if self.metrics is not None:
                self.metrics.checkpoint_written(self.step)
        dist.barrier()
        return final

    def resume_if_possible(self) -> bool:
        """Load the newest complete checkpoint, if any (checksums verified first)."""
        latest = ckpt.latest_checkpoint(self.checkpoint_root)
        if latest is None:
            return False
        ckpt.verify_checksums(latest)
        self.engine.load_checkpoint(str(latest / "deepspeed"), tag="state")
        state = json.loads((latest / "trainer_state.json").read_text())
        self.step = int(state["step"])
        self.skipped_steps = int(state["skipped_steps"])
        self.mixer.load_state_dict(state["mixer"])
        ckpt.set_rng_state(torch.load(latest / "rng" / f"rank-{self.dist.rank}.pt", weights_only=False))
        prefetched = latest / "rng" / f"prefetched-rank-{self.dist.rank}.pt"
        self.prefetched = torch.load(prefetched, weights_only=False) if prefetched.exists() else None
        if self.is_main:
            print(f"[m2rl-train] resumed from {latest} at step {self.step}", flush=True)
        return True

    # ---------------------------------------------------------------- the loop
    def train_step(self) -> dict[str, Any]:
        start = time.perf_counter()
        first, self.prefetched = self.prefetched, None
        rollouts, timings = self._collect(first)
        rewards = torch.tensor(rollouts.rewards, dtype=torch.float32)
        advantages = group_advantages(rewards, scale_by_std=self.algo.scale_rewards())
        groups = self._sequences(rollouts, advantages)
        next_batch = self._prefetch_next_batch()

        t_update = time.perf_counter()
        update = self._update(groups)
        timings["time_update_s"] = time.perf_counter() - t_update

        if next_batch is not None:
            t_wait = time.perf_counter()
            self.prefetched = next_batch.result()  # joined before the sync: one weight set per batch
            timings["time_prefetch_wait_s"] = time.perf_counter() - t_wait
        t_sync = time.perf_counter()
        if "nonfinite" not in update:
            self.sync_weights(version=self.step + 1)
        timings["time_sync_s"] = time.perf_counter() - t_sync
        return self._record(rollouts, update, timings, time.perf_counter() - start)

    def _prefetch_next_batch(self) -> Future[RoundResult] | None:
        """Draw step t+1's batch now and generate + score it in the background (off_policy_steps 1)."""
        if self.prefetcher is None or self.step + 1 >= self.algo.steps:
            return None
        world, rank = self.dist.world_size, self.dist.rank
        batch = self.mixer.next_batch(self.algo.prompts_per_step)[rank::world]
        return self.prefetcher.submit(self._generate_and_score, batch, self.step + 1, 0)

    def sync_weights(self, version: int) -> None:
        """Push the weights to the rollout engine: vLLM servers, or the colocated generator process
        (an in-process colocated rollout generates with the policy itself: nothing to do)."""
        if self.config.rollout.mode == "colocated":
            if self.algo.off_policy_steps:
                if self.config.deepspeed.zero_stage == 3:  # one rank (checked in config.validate)
                    state = full_state_dict(self.engine, 3)
                else:
                    state = self.engine.module.state_dict()
                assert state is not None
                self.rollout.update_weights(state)
            return
        from m2rl_trainer.train.weight_sync import sync_to_servers

        sync_to_servers(self, version=version)

    def _record(
        self, rollouts: Rollouts, update: dict[str, float], timings: dict[str, float], wall: float
    ) -> dict[str, Any]:
        """Global metrics of the step (all ranks reduce; rank 0 writes)."""
        names = list(self.domains)
        local = []
        for name in names:
            rows = [i for i, p in enumerate(rollouts.prompts) if p.domain == name]
            rewards = [r for i in rows for r in rollouts.rewards[i]]
            correct = [r for i in rows for r in rollouts.correct[i]]
            lengths = [len(c.token_ids) for i in rows for c in rollouts.groups[i]]
            local += [float(sum(rewards)), float(sum(correct)), float(sum(lengths)), float(len(rewards))]
        totals = _all_reduce(local)
        per_domain = {}
        all_n = all_correct = all_reward = all_len = 0.0
        for k, name in enumerate(names):
            reward_sum, correct_sum, length_sum, n = totals[4 * k : 4 * k + 4]
            all_n, all_correct, all_reward, all_len = (
                all_n + n,
                all_correct + correct_sum,
                all_reward + reward_sum,
                all_len + length_sum,
            )
            if n:
                per_domain[name] = {
                    "reward": reward_sum / n,
                    "accuracy": correct_sum / n,
                    "response_length": length_sum / n,
                }
        hygiene_keys = hygiene.keys(names)
        counts = _all_reduce([float(rollouts.hygiene[k]) for k in hygiene_keys])
        for name, shares in hygiene.shares(dict(zip(hygiene_keys, counts, strict=True))).items():
            per_domain[name].update(shares)
        record: dict[str, Any] = {
            "step": self.step + 1,
            "reward": all_reward / max(all_n, 1),
            "accuracy": all_correct / max(all_n, 1),
            "response_length": all_len / max(all_n, 1),
            "completions": all_n,
            "per_domain": per_domain,
            "time_step_s": wall,
            "tokens_per_s": all_len / max(timings.get("time_generation_s", 0.0), 1e-9),
            "skipped_steps": self.skipped_steps + (1 if "nonfinite" in update else 0),
            **timings,
            **{k: v for k, v in update.items() if k != "nonfinite"},
        }
        return record

    def train(self) -> dict[str, Any]:
        """Run (or resume) until `algorithm.steps`; returns the last step's record."""
        resumed = self.resume_if_possible()
        generator_process = self.config.rollout.mode == "colocated" and self.algo.off_policy_steps > 0
        if resumed or generator_process:
            # Rollout engines start from the base model: give them the checkpoint's weights (the
            # generator process loaded the model folder, not the trainer's possibly resumed weights).
            self.sync_weights(version=self.step)
        last: dict[str, Any] = {}
        every = self.config.checkpoint.every_steps
        try:
            while self.step < self.algo.steps:
                record = self.train_step()
                if record["skipped_steps"] > self.skipped_steps:
                    self.skipped_steps = record["skipped_steps"]
                    if self.skipped_steps > self.config.faults.max_skipped_steps:
                        raise TrainingAborted(
                            f"non-finite loss in {self.skipped_steps} steps (faults.max_skipped_steps = "
                            f"{self.config.faults.max_skipped_steps}); last at step {self.step + 1}"
                        )
                self.step += 1
                if self.metrics is not None:
                    self.metrics.log(record)
                    print(self._progress_line(record), flush=True)
                last = record
                if (every and self.step % every == 0) or self.step == self.algo.steps:
                    self.save_checkpoint()
        finally:
            self.close()
        return last

    def _progress_line(self, r: dict[str, Any]) -> str:
        domains = " ".join(f"{d}={v['accuracy']:.2f}" for d, v in r["per_domain"].items())
        return (
            f"[m2rl-train] step {r['step']}/{self.algo.steps} reward {r['reward']:.3f} "
            f"acc {r['accuracy']:.3f} "
            f"({domains}) len {r['response_length']:.1f} loss {r.get('loss', float('nan')):+.2e} "
            f"gen {r['time_generation_s']:.1f}s upd {r['time_update_s']:.1f}s sync {r['time_sync_s']:.1f}s"
        ) + hygiene.progress(r["per_domain"])

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.shutdown(wait=True, cancel_futures=True)
        self.scorer.close()
        if hasattr(self.rollout, "close"):
            self.rollout.close()
        if self.metrics is not None:
            self.metrics.close()


def train(config: TrainerConfig) -> dict[str, Any]:
    return GRPOTrainer(config).train()
