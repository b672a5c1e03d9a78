"""The GRPO training loop, readable top to bottom.

One step:  prompts (mixer) -> rollout (n completions per prompt, sampling-policy logprobs)
  -> rewards (verifiers, in worker processes) [-> overlong shaping] [-> dynamic sampling refill,
  kept groups rebalanced over the ranks] -> group advantages -> the policy update (`update.py`:
  [pi_old recomputed, pi_ref, rollout correction] then update_epochs x mini_batches optimiser
  updates over micro-batches) -> weight sync to rollout servers -> metrics -> checkpoint every K steps.

Data parallelism: every rank draws the same global batch from the mixer (same seed, same state)
and keeps its own slice (`prompts[rank::world]`); a group lives on one rank, so advantages need no
communication (dynamic sampling may move whole groups between ranks, `dynamic_sampling.py`). Loss
normalisers are all-reduced, so each update's gradient equals its slice's full gradient whatever the
split into ranks and micro-batches. The learning rate is a function of the step (`warmup_steps`
counts steps, as the API says), set before the step's updates.

One-step off-policy (`algorithm.off_policy_steps: 1`): right after step t's batch is collected,
step t+1's first batch is drawn and generated + scored in a background thread (the rollout engine
still holds the weights before update t) while update t runs; the thread is joined before the
weight sync, so every batch comes from one set of weights. Colocated runs then generate in a
child process (`rollout.process`), not on the policy being updated. The batch in flight is saved
with each checkpoint, so resume stays exact.

Deviations from the papers are listed in `m2rl_trainer.grpo.losses`. Here: by default the importance
ratio uses the rollout engine's logprobs as pi_old (no recomputation pass; the cost is the engine
mismatch); `recompute_old_logprobs` with `importance_sampling` (tis/mis) corrects it as slime and
verl do (`grpo/rollout_correction.py`).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from m2rl_trainer.agent.rollout import agent_task, episode_figures, episode_keys, is_environment
from m2rl_trainer.config import TrainerConfig
from m2rl_trainer.data.datasets import DatasetError, Prompt, load_domain, render_prompt
from m2rl_trainer.data.mixer import DomainMixer
from m2rl_trainer.grpo import group_advantages, overlong_penalty
from m2rl_trainer.rewards import hygiene
from m2rl_trainer.rewards.client import HttpScorer
from m2rl_trainer.rewards.scorer import Scorer, ScorerConfig
from m2rl_trainer.rewards.types import Sample
from m2rl_trainer.rollout.base import Completion, SamplingParams
from m2rl_trainer.train import checkpoint as ckpt
from m2rl_trainer.train.collectives import all_reduce
from m2rl_trainer.train.dynamic_sampling import rebalance
from m2rl_trainer.train.engine import (
    DistInfo,
    build_engine,
    build_reference,
    deepspeed_config,
    full_state_dict,
    init_distributed,
    resolve_dtype,
    set_learning_rate,
    step_learning_rate,
)
from m2rl_trainer.train.memory import check_fits, prepare_policy
from m2rl_trainer.train.metrics import MetricsSink
from m2rl_trainer.train.rollouts import ScoredGroup, figures, local_sums, zero_variance
from m2rl_trainer.train.teachers import Teachers
from m2rl_trainer.train.update import PolicyUpdate


class TrainingAborted(RuntimeError):
    """The run stopped on purpose (too many non-finite steps, a replica that kept old weights)."""


RoundResult = tuple[list[ScoredGroup], dict[str, float]]  # one generation round and its timings


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        self.domains = {d.name: load_domain(d, self.algo.seed) for d in config.data.domains}
        self.agent_domains = [d.name for d in config.data.domains if is_environment(d.verifier)]
        self.scorer: Any = self._make_scorer()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        self.dist: DistInfo = init_distributed(self.on_gpu)
        self.is_main = self.dist.is_main
        self._drop_long_prompts()  # still before the model is loaded
        _seed_everything(self.algo.seed)

        dtype = resolve_dtype(config.deepspeed, self.on_gpu)
        # A config that cannot fit is refused here, before any weights are read (train/memory.py).
        device_bytes = (
            torch.cuda.get_device_properties(self.dist.local_rank).total_memory if self.on_gpu else None
        )
        check_fits(
            config, world_size=self.dist.world_size, weight_bytes=dtype.itemsize, device_bytes=device_bytes
        )
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
        prepare_policy(model, gradient_checkpointing=config.memory.gradient_checkpointing)
        ds = deepspeed_config(
            config.deepspeed, self.algo, world_size=self.dist.world_size, on_gpu=self.on_gpu
        )
        self.engine = build_engine(model, ds)
        self.device = self.engine.device
        self.ref_model = self._make_reference(dtype, ds)
        self.update = PolicyUpdate(
            self.engine,
            self.ref_model,
            self.algo,
            domains=list(self.domains),
            pad_id=self.tokenizer.pad_token_id or 0,
            world_size=self.dist.world_size,
            zero_stage=config.deepspeed.zero_stage,
            memory=config.memory,
        )

        weights = {d.name: d.weight for d in config.data.domains}
        self.mixer = DomainMixer(self.domains, weights, config.data.mixing, self.algo.seed)
        self.rollout = self._make_rollout()
        self.environment, self.episode_config = self._make_environment()
        self.teachers = self._make_teachers(dtype)
        # Step t+1's first batch, generated during update t (off_policy_steps = 1).
        self.prefetcher = (
            ThreadPoolExecutor(1, thread_name_prefix="m2rl-prefetch") if self.algo.off_policy_steps else None
        )
        self.prefetched: RoundResult | None = None
        self.nccl_engine: Any = None  # created at the first NCCL weight sync (GPU clusters)
        self.step = 0
        self.skipped_steps = 0  # steps whose update a non-finite loss skipped entirely
        self.nonfinite_steps = 0  # steps with a non-finite loss (what faults.max_skipped_steps limits)
        self.metrics: MetricsSink | None = None
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
            self.metrics = MetricsSink(
                self.out / config.metrics.jsonl,
                config.metrics.prometheus_port,
                config.run_name,
                final_scrape_timeout_s=config.metrics.final_scrape_timeout_s,
            )

    def _make_reference(self, dtype: torch.dtype, ds: dict[str, Any]) -> Any:
        """The frozen reference model of the KL term (None when kl_coef is 0: nothing is loaded).
        Under ZeRO-3 it is partitioned over the ranks like the policy (a DeepSpeed inference engine),
        not replicated on every GPU; under ZeRO 0-2 each rank holds a copy."""
        if self.algo.kl_coef == 0:
            return None
        from transformers import AutoModelForCausalLM

        ref = AutoModelForCausalLM.from_pretrained(self.config.model, dtype=dtype).eval()
        ref.requires_grad_(False)
        if self.config.deepspeed.zero_stage == 3:
            return build_reference(ref, ds)
        return ref.to(self.device)

    def _make_scorer(self) -> Any:
        """The verifier service when one is configured (cluster pods: model-written code runs in the
        sandboxed Deployment, not beside the trainer), else the same library in-process. Agent
        domains are rewarded by their environment instead (`_make_environment`)."""
        rewards = self.config.rewards
        if rewards.service_url:
            return HttpScorer(rewards.service_url, timeout_s=rewards.request_timeout_s)
        verifiers = {d.verifier: {} for d in self.config.data.domains if not is_environment(d.verifier)}
        return Scorer(ScorerConfig(verifiers=verifiers, warm_up=False))

    def _make_environment(self) -> tuple[Any, Any]:
        """The tool environment and episode settings of agent domains ((None, None) without any):
        the environment service of the run (pods) or the environment in-process."""
        names = {d.verifier for d in self.config.data.domains if is_environment(d.verifier)}
        if not names:
            return None, None
        from m2rl_trainer.agent.episode import EpisodeConfig
        from m2rl_trainer.agent.rollout import open_environment

        end_of_turn = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if not isinstance(end_of_turn, int) or end_of_turn == self.tokenizer.unk_token_id:
            raise DatasetError(
                f"agent domains need a chat model whose turns end with <|im_end|> (Qwen's format); "
                f"the tokenizer of {self.config.model} has no such token"
            )
        (name,) = names  # one environment kind exists (workplace_assistant)
        a = self.config.agent
        environment = open_environment(name, service_url=a.environment_url, data_dir=a.environment_data)
        config = EpisodeConfig(
            end_of_turn_id=end_of_turn,
            max_turns=a.max_turns,
            max_tokens=self.algo.max_response_tokens,
            parallel=a.parallel_episodes,
        )
        return environment, config

    def _make_teachers(self, dtype: torch.dtype) -> Teachers | None:
        if self.algo.name != "mt-opd":
            return None
        return Teachers(
            self.algo.teachers,
            tokenizer=self.tokenizer,
            device=self.device,
            dtype=dtype,
            micro_batch_size=self.algo.micro_batch_size,
            pad_id=self.tokenizer.pad_token_id or 0,
            timeout_s=self.config.rollout.request_timeout_s,
            max_retries=self.config.rollout.max_retries,
        )

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt as the rollout sees it: an agent task's chat template with its tools, else
        the rendered text's tokens."""
        if is_environment(prompt.verifier):
            return agent_task(prompt, self.tokenizer).prompt_ids
        text = render_prompt(
            prompt, self.tokenizer, self.config.data.chat_template, self.config.data.system_prompt
        )
        return list(self.tokenizer(text)["input_ids"])

    def _drop_long_prompts(self) -> None:
        """Leave out prompts longer than `algorithm.max_prompt_tokens` (as verl's filter does), and
        say how many; a domain left empty is an error naming it."""
        limit = self.algo.max_prompt_tokens
        for name, prompts in self.domains.items():
            lengths = [len(self._prompt_ids(p)) for p in prompts]
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

            return HFGenerateRollout(
                self.engine.module,
                self.tokenizer,
                device=str(self.device),
                synced_gpus=self._synced_generation,
            )
        from m2rl_trainer.rollout.server import VLLMServerRollout

        r = self.config.rollout
        return VLLMServerRollout(
            r.server_urls,
            model_name=r.served_model_name or self.config.model,
            tokenizer=self.tokenizer,
            timeout_s=r.request_timeout_s,
            max_retries=r.max_retries,
        )

    @property
    def _synced_generation(self) -> bool:
        """In-process generation on a ZeRO-3 policy with several ranks: every forward gathers the
        partitioned weights collectively, so all ranks must keep stepping `generate` together
        (transformers' `synced_gpus`, which it turns on by itself only under `HfDeepSpeedConfig`)."""
        return (
            self.config.rollout.mode == "colocated"
            and not self.algo.off_policy_steps
            and self.config.deepspeed.zero_stage == 3
            and self.dist.world_size > 1
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
        """Generate and score this rank's prompts (`batch[rank::world]` of round `round_index`).
        No collectives unless generation is synced (ZeRO-3, in-process): it may run in the prefetch
        thread. Agent prompts run as episodes and are rewarded by their environment; the others
        are generated in one call and scored by the verifiers. MT-OPD: then the teachers score."""
        timings: dict[str, float] = {}
        n, sampling = self.algo.group_size, self._sampling(step, round_index)
        agent = [i for i, p in enumerate(prompts) if is_environment(p.verifier)]
        single = [i for i, p in enumerate(prompts) if not is_environment(p.verifier)]
        groups: list[list[Completion]] = [[] for _ in prompts]
        correct: list[list[float]] = [[] for _ in prompts]
        episodes: list[Counter[str]] = [Counter() for _ in prompts]
        start = time.perf_counter()
        texts = [
            render_prompt(
                prompts[i], self.tokenizer, self.config.data.chat_template, self.config.data.system_prompt
            )
            for i in single
        ]
        synced = self._synced_generation  # a rank without prompts still steps with the others
        if texts or synced:
            for i, group in zip(single, self.rollout.generate(texts, sampling), strict=True):
                groups[i] = group
        if agent:
            from dataclasses import replace

            from m2rl_trainer.agent.engines import engine_generate
            from m2rl_trainer.agent.rollout import agent_groups

            turns = replace(sampling, stop_token_ids=[self.episode_config.end_of_turn_id])
            found = agent_groups(
                [prompts[i] for i in agent],
                n,
                engine_generate(self.rollout, turns),
                self.tokenizer,
                self.environment,
                self.episode_config,
            )
            for i, (group, rewards, counts) in zip(agent, found, strict=True):
                groups[i], correct[i], episodes[i] = group, rewards, counts
        timings["time_generation_s"] = time.perf_counter() - start

        start = time.perf_counter()
        samples = [
            Sample(verifier=prompts[i].verifier, response=c.text, reference=prompts[i].reference,
                   options=prompts[i].verifier_options)
            for i in single
            for c in groups[i]
        ]  # fmt: skip
        results = self.scorer.score(samples) if samples else []
        by_prompt = {i: results[k * n : (k + 1) * n] for k, i in enumerate(single)}
        for i in single:
            correct[i] = [float(r.reward) for r in by_prompt[i]]
        timings["time_reward_s"] = time.perf_counter() - start

        teacher_logprobs: list[Any] = [None] * len(prompts)
        if self.teachers is not None and prompts:
            start = time.perf_counter()
            scored = [
                (p.domain, list(g[0].prompt_token_ids), g) for p, g in zip(prompts, groups, strict=True)
            ]
            teacher_logprobs = list(self.teachers.score(scored))
            timings["time_teacher_s"] = time.perf_counter() - start

        world, rank = self.dist.world_size, self.dist.rank
        scored_groups = []
        for i, (prompt, group) in enumerate(zip(prompts, groups, strict=True)):
            shaped = list(correct[i])
            if self.algo.overlong_buffer_tokens > 0:
                lengths = torch.tensor([len(c.token_ids) for c in group], dtype=torch.float32)
                penalty = overlong_penalty(
                    lengths,
                    self.algo.max_response_tokens,
                    self.algo.overlong_buffer_tokens,
                    self.algo.overlong_penalty,
                )
                shaped = [r + float(p) for r, p in zip(correct[i], penalty, strict=True)]
            key = (round_index, rank + i * world)  # the prompt's place in the round's global batch
            signs = hygiene.count([prompt.domain] * len(group), by_prompt[i]) if i in by_prompt else Counter()
            scored_groups.append(
                ScoredGroup(
                    prompt, list(group[0].prompt_token_ids), group, shaped, correct[i], key, signs,
                    teacher_logprobs[i], episodes[i],
                )
            )  # fmt: skip
        return scored_groups, timings

    def _collect(
        self, first: RoundResult | None = None
    ) -> tuple[list[ScoredGroup], list[ScoredGroup], dict[str, float]]:
        """(kept, generated, timings): this rank's groups to train on, and every group it generated.

        With dynamic sampling, zero-variance groups are dropped and the step is refilled with fresh
        prompts (all ranks draw the same extra batches, every rank stops after the same round), then
        the kept groups are rebalanced over the ranks. `first`: the step's first round, prefetched
        during the previous update."""
        world, rank = self.dist.world_size, self.dist.rank
        target = self.algo.prompts_per_step
        if first is None:
            first = self._generate_and_score(self.mixer.next_batch(target)[rank::world], self.step, 0)
        groups, timings = first
        generated = list(groups)
        timings = {**timings, "refill_rounds": 0.0}
        if not self.algo.dynamic_sampling:
            return groups, generated, timings
        kept: list[ScoredGroup] = []
        for round_index in range(self.algo.max_refill_rounds + 1):
            kept += [g for g, flat in zip(groups, zero_variance(groups), strict=True) if not flat]
            total_kept = all_reduce([float(len(kept))])[0]
            if total_kept >= target or round_index == self.algo.max_refill_rounds:
                break
            extra = self.mixer.next_batch(int(target - total_kept))
            groups, more = self._generate_and_score(extra[rank::world], self.step, round_index + 1)
            generated += groups
            for key, value in more.items():
                timings[key] += value
            timings["refill_rounds"] = float(round_index + 1)
        return rebalance(kept, lambda g: g.key, target, rank, world), generated, timings

    def _sequences(self, kept: list[ScoredGroup]) -> list[dict[str, Any]]:
        """One entry per group: prompt ids, domain and its trainable completions (ids, old logprobs,
        advantage). Empty completions have nothing to learn from; with overlong_filtering, truncated
        ones (finish reason "length") are left out of the loss too, after counting in their group's
        advantages (DAPO's overlong filtering)."""
        if not kept:
            return []
        rewards = torch.tensor([g.rewards for g in kept], dtype=torch.float32)
        # MT-OPD: no reward advantage; per-token ones come from the teachers (update.py, first pass)
        distill = self.algo.name == "mt-opd"
        advantages = (
            torch.zeros_like(rewards) if distill else group_advantages(rewards, self.algo.scale_rewards())
        )
        groups = []
        for g, group in enumerate(kept):
            completions = [
                {
                    "ids": list(c.token_ids),
                    "old_logprobs": list(c.logprobs),
                    "advantage": float(advantages[g, j]),
                    **({"loss_mask": list(c.loss_mask)} if c.loss_mask is not None else {}),
                    **({"teacher_logprobs": group.teacher_logprobs[j]} if group.teacher_logprobs else {}),
                }
                for j, c in enumerate(group.completions)
                if c.token_ids and not (self.algo.overlong_filtering and c.finish_reason == "length")
            ]
            if completions:
                groups.append(
                    {
                        "prompt": list(group.prompt_ids),
                        "domain": group.prompt.domain,
                        "completions": completions,
                    }
                )
        return groups

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
                "nonfinite_steps": self.nonfinite_steps,
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
        """Load the newest complete checkpoint, if any (checksums verified first, by rank 0)."""
        latest = ckpt.latest_checkpoint(self.checkpoint_root)
        if latest is None:
            return False
        ckpt.verify_once(latest, self.is_main)
        self.engine.load_checkpoint(str(latest / "deepspeed"), tag="state")
        state = json.loads((latest / "trainer_state.json").read_text())
        self.step = int(state["step"])
        self.skipped_steps = int(state["skipped_steps"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", self.skipped_steps))
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
        set_learning_rate(self.engine, step_learning_rate(self.algo, self.step))
        first, self.prefetched = self.prefetched, None
        kept, generated, timings = self._collect(first)
        groups = self._sequences(kept)
        next_batch = self._prefetch_next_batch()

        t_update = time.perf_counter()
        update = self.update.run(groups)
        timings["time_update_s"] = time.perf_counter() - t_update

        if next_batch is not None:
            t_wait = time.perf_counter()
            self.prefetched = next_batch.result()  # joined before the sync: one weight set per batch
            timings["time_prefetch_wait_s"] = time.perf_counter() - t_wait
        t_sync = time.perf_counter()
        if update["updates_applied"]:  # the weights changed (a non-finite loss may have cut the step short)
            self.sync_weights(version=self.step + 1)
        timings["time_sync_s"] = time.perf_counter() - t_sync
        return self._record(kept, generated, update, timings, time.perf_counter() - start)

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
        self,
        kept: list[ScoredGroup],
        generated: list[ScoredGroup],
        update: dict[str, Any],
        timings: dict[str, float],
        wall: float,
    ) -> dict[str, Any]:
        """Global metrics of the step (all ranks reduce; rank 0 writes): rewards over every generated
        group, kept_* over the groups trained on, the update's statistics."""
        names = list(self.domains)
        step, per_domain = figures(all_reduce(local_sums(generated, kept, names)), names)
        for name, values in update.pop("per_domain").items():
            per_domain.setdefault(name, {}).update(values)
        # Reward-hacking signs over every generated group (not only those trained on).
        hygiene_keys = hygiene.keys(names)
        signs = sum((g.hygiene for g in generated), Counter[str]())
        counts = all_reduce([float(signs[k]) for k in hygiene_keys])
        for name, shares in hygiene.shares(dict(zip(hygiene_keys, counts, strict=True))).items():
            per_domain[name].update(shares)
        if self.agent_domains:  # turns, tool calls, tool-result tokens of every generated episode
            agent_keys = episode_keys(self.agent_domains)
            done = sum((g.episodes for g in generated), Counter[str]())
            totals = all_reduce([float(done[k]) for k in agent_keys])
            for name, values in episode_figures(dict(zip(agent_keys, totals, strict=True))).items():
                per_domain[name].update(values)
        nonfinite = bool(update.pop("nonfinite"))
        record: dict[str, Any] = {
            "step": self.step + 1,
            **step,
            "per_domain": per_domain,
            "time_step_s": wall,
            "tokens_per_s": step["response_length"]
            * step["generated_completions"]
            / max(timings.get("time_generation_s", 0.0), 1e-9),
            "skipped_steps": self.skipped_steps + (nonfinite and not update["updates_applied"]),
            "nonfinite_steps": self.nonfinite_steps + nonfinite,
            "learning_rate": float(self.engine.get_lr()[0]),
            **timings,
            **update,
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
                self.skipped_steps = record["skipped_steps"]
                if record["nonfinite_steps"] > self.nonfinite_steps:
                    self.nonfinite_steps = record["nonfinite_steps"]
                    if self.nonfinite_steps > self.config.faults.max_skipped_steps:
                        raise TrainingAborted(
                            f"non-finite loss in {self.nonfinite_steps} steps (faults.max_skipped_steps = "
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
        if self.environment is not None:
            self.environment.close()
        if self.teachers is not None:
            self.teachers.close()
        if hasattr(self.rollout, "close"):
            self.rollout.close()
        if self.metrics is not None:
            self.metrics.close()


def train(config: TrainerConfig) -> dict[str, Any]:
    return GRPOTrainer(config).train()
