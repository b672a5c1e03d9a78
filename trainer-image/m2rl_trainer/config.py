"""The trainer's config file: one dataclass tree, loaded from YAML or JSON, validated up front.

The operator renders this file into a ConfigMap for an RLVRRun; the local runner writes it to
disk. The trainer owns the schema. Unknown keys are errors that name their path (a typo must not
silently fall back to a default); every default says its unit and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# mt-opd: multi-teacher on-policy distillation (grpo/opd.py), per-token advantages from each
# domain's teacher instead of rewards.
Algorithm = Literal["grpo", "dr_grpo", "dapo", "mt-opd"]
# Loss aggregation, with verl's names and meanings (TRL: "grpo" = seq-mean-token-mean,
# "dapo"/"bnpo" = token-mean, "dr_grpo" = seq-mean-token-sum-norm).
LossAggregation = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
KLEstimator = Literal["k1", "k2", "k3"]
# Rollout/trainer mismatch correction (slime's --use-tis and its masked variant; verl's rollout_is):
# "tis" truncates the weight pi_old_trainer / pi_rollout at the cap, "mis" masks tokens outside [floor, cap].
ImportanceSampling = Literal["none", "tis", "mis"]
MixingMode = Literal["weighted", "concat_shuffle"]
RolloutMode = Literal["server", "colocated"]
WeightSyncMode = Literal["filesystem", "nccl"]


class ConfigError(ValueError):
    """A config problem; the message names the field path."""


@dataclass
class FieldMapping:
    """Which dataset columns hold the prompt and the reference answer."""

    prompt: str = "prompt"  # a string, or a list of chat messages ({role, content})
    reference: str = "answer"  # what the verifier compares against
    id: str | None = None  # optional stable id column (default: the row index)


@dataclass
class DomainConfig:
    """One domain: its data, its verifier and its share of each batch."""

    name: str
    dataset: str  # local path: .jsonl, .json (list) or .parquet
    verifier: str  # verifier type, e.g. "math", "code", "multiple_choice", "ifeval"
    fields: FieldMapping = field(default_factory=FieldMapping)
    verifier_options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0  # relative sampling weight in "weighted" mixing
    max_samples: int | None = None  # cap on prompts taken from this dataset (None: all)
    # How records are read: "jsonl" maps columns with `fields`; "nemotron" reads the Nemotron RL
    # blend's rows as the M2RL study does (m2rl_trainer.data.nemotron); options per format.
    format: str = "jsonl"
    format_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    domains: list[DomainConfig] = field(default_factory=list)
    mixing: MixingMode = "concat_shuffle"  # the M2RL study concatenated and shuffled
    chat_template: bool = False  # wrap prompts with the tokenizer's chat template
    system_prompt: str | None = None  # prepended as a system message when chat_template is on


@dataclass
class TeacherConfig:
    """One MT-OPD teacher: the domains it teaches, and where its model is (exactly one of `model`,
    scored by a forward pass in the trainer, and `server_urls`, vLLM servers that return prompt
    log-probs)."""

    domains: list[str]
    model: str | None = None  # a Hugging Face folder, loaded on every rank (colocated scoring)
    server_urls: list[str] = field(default_factory=list)  # vLLM replicas serving the teacher
    served_model_name: str | None = None  # the name those servers answer to (default: first model id)


@dataclass
class AlgorithmConfig:
    name: Algorithm = "grpo"
    group_size: int = 8  # completions per prompt
    prompts_per_step: int = 16
    learning_rate: float = 1e-6
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0  # training steps (not optimizer updates) of linear warm-up
    lr_min_ratio: float = 0.0  # linear/cosine decay ends at lr_min_ratio x learning_rate
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    clip_low: float = 0.2  # epsilon_low of the clipped ratio
    clip_high: float = 0.2  # epsilon_high; DAPO's clip-higher uses 0.28
    # Dual-clip PPO (Ye et al. 2019; verl's clip_ratio_c, slime's --eps-clip-c): the loss of a token
    # with negative advantage is at most -clip_ratio_c * A however large its ratio. None: off.
    clip_ratio_c: float | None = None
    # pi_old from the trainer (one extra forward pass without gradient, before the first update)
    # instead of the rollout engine's logprobs; the rollout logprobs then only feed the correction.
    recompute_old_logprobs: bool = False
    importance_sampling: ImportanceSampling = "none"  # needs recompute_old_logprobs
    importance_sampling_cap: float = 2.0  # C; slime's --tis-clip and verl's rollout_is_threshold (2.0)
    importance_sampling_floor: float = 0.0  # lower bound; slime's --tis-clip-low (0)
    kl_coef: float = 0.0  # 0: no reference model is loaded at all
    kl_estimator: KLEstimator = "k3"
    entropy_coef: float = 0.0
    loss_aggregation: LossAggregation | None = None  # None: the algorithm's own (see defaults())
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal, refill
    max_refill_rounds: int = 3  # bound on extra generation rounds when dynamic sampling refills
    overlong_buffer_tokens: int = 0  # DAPO soft overlong punishment window (0: off)
    overlong_penalty: float = 1.0  # penalty at the hard limit, linear inside the buffer
    # DAPO's overlong filtering: truncated responses (finish reason "length") stay in their group's
    # advantage but are left out of the loss and its normalisers (TRL's mask_truncated_completions).
    overlong_filtering: bool = False
    normalize_advantage_std: bool | None = None  # None: the algorithm's own (not for dr_grpo)
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_tokens: int = 256
    max_response_tokens: int = 64
    steps: int = 100
    update_epochs: int = 1  # optimisation passes over each rollout batch
    # PPO mini-batches: each epoch splits the step's groups into this many disjoint slices and takes
    # one optimizer update per slice (update_epochs x mini_batches updates per step).
    mini_batches: int = 1
    micro_batch_size: int = 32  # sequences per forward/backward; accumulation covers the rest
    max_grad_norm: float = 1.0
    seed: int = 0
    # 1: step t+1's first batch is generated and scored (with the weights before update t) while
    # update t runs; the importance ratio against the sampling logprobs accounts for the lag.
    off_policy_steps: int = 0
    teachers: list[TeacherConfig] = field(default_factory=list)  # mt-opd: one per domain (or shared)

    def resolved_aggregation(self) -> LossAggregation:
        if self.loss_aggregation is not None:
            return self.loss_aggregation
        defaults: dict[str, LossAggregation] = {
            "grpo": "seq-mean-token-mean",
            "dr_grpo": "seq-mean-token-sum-norm",
            "dapo": "token-mean",
            "mt-opd": "seq-mean-token-mean",  # slime's default reduction, which the study's OPD ran
        }
        return defaults[self.name]

    def scale_rewards(self) -> bool:
        """Divide advantages by the group's std (GRPO, DAPO) or not (Dr.GRPO), unless set explicitly."""
        if self.normalize_advantage_std is not None:
            return self.normalize_advantage_std
        return self.name != "dr_grpo"

    def recomputes_old_logprobs(self) -> bool:
        """pi_old from the trainer: asked for, or MT-OPD (its advantages use the student's own
        log-probs before the update, as the study's on_policy_distillation estimator)."""
        return self.recompute_old_logprobs or self.name == "mt-opd"

    def teacher_of(self) -> dict[str, int]:
        """Domain name -> index of its teacher in `teachers`."""
        return {domain: i for i, t in enumerate(self.teachers) for domain in t.domains}

    def updates_per_step(self) -> int:
        """Optimizer updates of one training step."""
        return self.update_epochs * self.mini_batches


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU


@dataclass
class MemoryConfig:
    """How the update bounds its memory (train/batching.py, train/logprobs.py, train/memory.py)."""

    gradient_checkpointing: bool = False  # recompute each decoder layer in the backward (API default: on)
    # Padded tokens per micro-batch (prompt rows x widest prompt + completions x longest); groups
    # may split across micro-batches. None: only micro_batch_size bounds a micro-batch.
    max_tokens_per_micro_batch: int | None = None
    logits_chunk_mib: float = 64.0  # fp32 logits per LM-head chunk; no [B, R, V] tensor is kept
    # Accelerator memory per rank the up-front check plans for. None: the device's own (CUDA), or
    # no check on CPU. The check refuses configs whose estimate exceeds `usable_fraction` of it.
    device_memory_gib: float | None = None
    usable_fraction: float = 0.9  # the rest: CUDA context, allocator fragmentation, NCCL buffers


@dataclass
class RolloutConfig:
    mode: RolloutMode = "server"
    server_urls: list[str] = field(default_factory=list)  # vLLM replicas (mode=server)
    served_model_name: str | None = None  # the name the servers answer to (default: first model id)
    request_timeout_s: float = 300.0
    max_retries: int = 5  # per request, with exponential backoff, before the run fails
    weight_sync: WeightSyncMode = "filesystem"
    weight_sync_dir: str | None = None  # shared folder rank 0 writes weights to (filesystem sync)
    nccl_master_address: str | None = None  # NCCL sync: where the trainer's rank 0 listens
    nccl_port: int = 29600
    nccl_workers_per_replica: int = 1  # tensor_parallel x pipeline_parallel of the replica


@dataclass
class AgentConfig:
    """Agent domains (a domain whose `verifier` names a tool environment, m2rl_trainer.agent)."""

    environment_url: str | None = (
        None  # the environment service (pods: beside the verifier); None: in-process
    )
    environment_data: str | None = (
        None  # in-process data directory (NeMo Gym csv_data layout); None: built-in
    )
    max_turns: int = 6  # model turns per episode (the study's max_num_steps)
    parallel_episodes: int = 16  # episodes whose tool calls run at once (threads waiting on the environment)


@dataclass
class RewardsConfig:
    service_url: str | None = None  # the sandboxed verifier service (pods); None: score in-process
    request_timeout_s: float = 600.0  # per batch; a step's batch waits for its slowest code test


@dataclass
class CheckpointConfig:
    dir: str = "checkpoints"
    every_steps: int = 50  # 0: only at the end
    keep: int = 2  # newest checkpoints kept (0: keep all)


@dataclass
class MetricsConfig:
    jsonl: str = "metrics.jsonl"
    prometheus_port: int | None = None  # None: no endpoint (local runs); pods set 9400
    # At the end, keep the endpoint up until it has been scraped once more (at most this long), so
    # that the last step's numbers reach Prometheus; 0: close at once. A pod would set about twice
    # its scrape interval.
    final_scrape_timeout_s: float = 0.0


@dataclass
class FaultConfig:
    max_skipped_steps: int = 3  # steps with a NaN/inf loss tolerated before the run aborts


@dataclass
class TrainerConfig:
    """Everything one run of `m2rl-train` needs."""

    model: str  # a Hugging Face folder
    output_dir: str
    run_name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: Any, data: Any, path: str) -> Any:
    """Build dataclass `cls` from plain data, checking types and rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{path + '.' if path else ''}{unknown[0]}: unknown field (known: {', '.join(known)})"
        )
    kwargs = {}
    for name, f in known.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required field is missing")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # PyYAML (YAML 1.1) reads `5e-4` as a string; accept what float() reads, nothing else.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{path}: expected float, got {value!r}") from None
    if tp in (int, float, str, bool) and (
        not isinstance(value, tp) or (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r}")
    return value


def validate(config: TrainerConfig) -> list[str]:
    """Cross-field problems, as messages that name the field (empty list: valid)."""
    a, problems = config.algorithm, []
    if a.group_size < 2:
        problems.append("algorithm.group_size: must be at least 2 (advantages compare samples of a group)")
    positive = ("prompts_per_step", "steps", "update_epochs", "mini_batches", "micro_batch_size")
    for name in (*positive, "max_response_tokens"):
        if getattr(a, name) < 1:
            problems.append(f"algorithm.{name}: must be at least 1")
    if a.mini_batches > a.prompts_per_step:
        problems.append(
            f"algorithm.mini_batches: {a.mini_batches} slices of {a.prompts_per_step} prompts "
            "(prompts_per_step) would leave some empty"
        )
    if a.clip_low < 0 or a.clip_high < a.clip_low:
        problems.append("algorithm.clip_high: must be >= clip_low >= 0")
    if a.clip_ratio_c is not None and a.clip_ratio_c <= 1.0:
        problems.append("algorithm.clip_ratio_c: must be > 1 (the dual clip bounds -A * ratio at -A * c)")
    if a.importance_sampling != "none" and not a.recompute_old_logprobs:
        problems.append(
            f"algorithm.importance_sampling: {a.importance_sampling} weighs by pi_old_trainer / pi_rollout "
            "and needs recompute_old_logprobs: true"
        )
    if a.importance_sampling_cap < 1.0:
        problems.append("algorithm.importance_sampling_cap: must be >= 1 (weight 1, no mismatch, must pass)")
    if not 0.0 <= a.importance_sampling_floor < 1.0:
        problems.append("algorithm.importance_sampling_floor: must be in [0, 1)")
    if a.warmup_steps < 0 or (a.warmup_steps and a.warmup_steps >= a.steps):
        problems.append("algorithm.warmup_steps: must be >= 0 and smaller than steps")
    if not 0.0 <= a.lr_min_ratio <= 1.0:
        problems.append("algorithm.lr_min_ratio: must be in [0, 1]")
    if a.weight_decay < 0:
        problems.append("algorithm.weight_decay: must be >= 0")
    if not 0 < a.top_p <= 1:
        problems.append("algorithm.top_p: must be in (0, 1]")
    if a.temperature <= 0:
        problems.append("algorithm.temperature: must be > 0")
    if a.learning_rate <= 0:
        problems.append("algorithm.learning_rate: must be > 0")
    if a.overlong_buffer_tokens >= a.max_response_tokens and a.overlong_buffer_tokens:
        problems.append("algorithm.overlong_buffer_tokens: must be smaller than max_response_tokens")
    if not config.data.domains:
        problems.append("data.domains: at least one domain is required")
    if config.data.system_prompt is not None and not config.data.chat_template:
        problems.append("data.system_prompt: needs data.chat_template (raw prompts have no system message)")
    names = [d.name for d in config.data.domains]
    for i, d in enumerate(config.data.domains):
        if names.count(d.name) > 1:
            problems.append(f"data.domains[{i}].name: duplicate domain name {d.name!r}")
        if d.weight <= 0:
            problems.append(f"data.domains[{i}].weight: must be > 0")
        if d.max_samples is not None and d.max_samples < 1:
            problems.append(f"data.domains[{i}].max_samples: must be at least 1 (or unset for all)")
        from m2rl_trainer.data.formats import format_problems

        problems += format_problems(d, f"data.domains[{i}]")
    if config.rollout.mode == "server" and not config.rollout.server_urls:
        problems.append("rollout.server_urls: server mode needs at least one vLLM server URL")
    if config.rollout.weight_sync == "nccl":
        if not config.rollout.nccl_master_address:
            problems.append(
                "rollout.nccl_master_address: NCCL weight sync needs the trainer's rank-0 address"
            )
        if len(config.rollout.server_urls) > 1:
            problems.append(
                "rollout.server_urls: NCCL weight sync serves one replica per trainer (vLLM 0.32's "
                "trainer engine); use weight_sync=filesystem for several replicas"
            )
        if config.rollout.mode != "server":
            problems.append("rollout.weight_sync: nccl applies to mode=server only")
    if a.off_policy_steps not in (0, 1):
        problems.append(
            "algorithm.off_policy_steps: must be 0 (on-policy) or 1 (generation overlaps the update)"
        )
    elif (
        a.off_policy_steps
        and config.rollout.mode == "colocated"
        and config.deepspeed.zero_stage == 3
        and int(os.environ.get("WORLD_SIZE", "1")) > 1
    ):
        problems.append(
            "algorithm.off_policy_steps: colocated rollout with ZeRO-3 on several ranks cannot overlap "
            "(each rank's generator needs the full weights); use zero_stage 2 or rollout.mode server"
        )
    problems += _memory_problems(config)
    problems += _mt_opd_problems(config)
    problems += _agent_problems(config)
    if config.checkpoint.every_steps < 0 or config.checkpoint.keep < 0:
        problems.append("checkpoint: every_steps and keep must be >= 0")
    return problems


def _mt_opd_problems(config: TrainerConfig) -> list[str]:
    a, problems = config.algorithm, []
    if a.name != "mt-opd":
        return ["algorithm.teachers: only algorithm.name mt-opd has teachers"] if a.teachers else []
    if not a.teachers:
        problems.append("algorithm.teachers: mt-opd needs a teacher for every domain")
    names = {d.name for d in config.data.domains}
    for i, t in enumerate(a.teachers):
        where = f"algorithm.teachers[{i}]"
        if (t.model is None) == (not t.server_urls):
            problems.append(f"{where}: set exactly one of model (scored in the trainer) and server_urls")
        if t.server_urls and not t.served_model_name:
            problems.append(
                f"{where}.served_model_name: the name the teacher's servers answer to is required"
            )
        if not t.domains:
            problems.append(f"{where}.domains: must name at least one domain")
        problems += [
            f"{where}.domains: {d!r} is not a domain of data.domains" for d in t.domains if d not in names
        ]
    taught = [d for t in a.teachers for d in t.domains]
    problems += [
        f"algorithm.teachers: domain {d!r} has two teachers"
        for d in sorted(set(taught))
        if taught.count(d) > 1
    ]
    problems += [f"algorithm.teachers: domain {d!r} has no teacher" for d in sorted(names - set(taught))]
    if a.dynamic_sampling:
        problems.append("algorithm.dynamic_sampling: mt-opd has no rewards to filter groups by")
    if a.overlong_buffer_tokens:
        problems.append("algorithm.overlong_buffer_tokens: mt-opd has no rewards to shape")
    return problems


def _agent_problems(config: TrainerConfig) -> list[str]:
    from m2rl_trainer.agent.environment import ENVIRONMENTS

    agent, problems = config.agent, []
    if agent.max_turns < 1 or agent.parallel_episodes < 1:
        problems.append("agent: max_turns and parallel_episodes must be at least 1")
    if not any(d.verifier in ENVIRONMENTS for d in config.data.domains):
        return problems
    if (
        config.rollout.mode == "colocated"
        and config.deepspeed.zero_stage == 3
        and not config.algorithm.off_policy_steps
        and int(os.environ.get("WORLD_SIZE", "1")) > 1
    ):
        problems.append(
            "data.domains: agent episodes take a different number of turns on each rank, which in-process "
            "generation on a ZeRO-3 policy over several ranks cannot follow (its ranks generate in "
            "lockstep); use zero_stage 2, off_policy_steps 1 or rollout.mode server"
        )
    return problems


def _memory_problems(config: TrainerConfig) -> list[str]:
    m, a, problems = config.memory, config.algorithm, []
    longest = a.max_prompt_tokens + a.max_response_tokens
    if m.max_tokens_per_micro_batch is not None and m.max_tokens_per_micro_batch < longest:
        problems.append(
            f"memory.max_tokens_per_micro_batch: {m.max_tokens_per_micro_batch} is less than one sequence "
            f"(max_prompt_tokens + max_response_tokens = {longest}); a sequence is never split"
        )
    if m.logits_chunk_mib <= 0:
        problems.append("memory.logits_chunk_mib: must be > 0")
    if m.device_memory_gib is not None and m.device_memory_gib <= 0:
        problems.append("memory.device_memory_gib: must be > 0 (or unset: the device's own)")
    if not 0 < m.usable_fraction <= 1:
        problems.append("memory.usable_fraction: must be in (0, 1]")
    return problems


def load_config(source: str | Path | dict[str, Any]) -> TrainerConfig:
    """Load and validate a config from a YAML/JSON file or a dict; raise ConfigError listing problems."""
    if isinstance(source, dict):
        data, where = source, "config"
    else:
        where = str(source)
        try:
            text = Path(source).read_text()
        except OSError as error:
            raise ConfigError(f"{where}: cannot read config file ({error.strerror})") from error
        try:
            data = json.loads(text) if str(source).endswith(".json") else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as error:
            raise ConfigError(f"{where}: not valid YAML/JSON: {error}") from error
    try:
        config = _build(TrainerConfig, data, "")
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error
    problems = validate(config)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return config
