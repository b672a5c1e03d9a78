"""The RL algorithm of an RLVRRun: GRPO, its DAPO and Dr. GRPO variants, and MT-OPD.

`type` picks a preset; any field left unset takes the preset's value (`PRESETS`), and
`resolve_algorithm` returns the fully resolved settings that the trainer config is built from.
The presets are also written into CEL rules (e.g. clipHigh >= clipLow after resolution), so the
API server checks the values the trainer will actually use.

References: GRPO, Shao et al. 2024 (arXiv:2402.03300); DAPO, Yu et al. 2025 (arXiv:2503.14476:
clip-higher, dynamic sampling, token-level loss, overlong reward shaping); Dr. GRPO, Liu et al.
2025 (arXiv:2503.20783: no length or std normalisation). MT-OPD, multi-teacher on-policy
distillation as the M2RL study runs it (slime's `on_policy_distillation` advantage estimator): each
domain's expert scores the student's samples token by token (docs/mt-opd.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from m2rl_operator.api.base import ApiModel, Rule, exactly_one, field_rules, model_rules
from m2rl_operator.api.common import URI, ObjectName, ShortName

AlgorithmType = Literal["grpo", "dapo", "dr_grpo", "mt_opd"]
TRAINER_ALGORITHM_NAMES = {"grpo": "grpo", "dapo": "dapo", "dr_grpo": "dr_grpo", "mt_opd": "mt-opd"}
"""The trainer config's `algorithm.name` of each API type (m2rl_trainer.config.Algorithm)."""
MAX_TEACHERS = 16  # one per domain at most (RLVRRun's MAX_DOMAINS)
MAX_TEACHER_DOMAINS = 16
LossAggregation = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
KLEstimator = Literal["k1", "k2", "k3"]
ImportanceSampling = Literal["none", "tis", "mis"]
ScheduleType = Literal["constant", "cosine", "linear"]


@dataclass(frozen=True)
class Preset:
    """The values an algorithm type gives to the fields the user leaves unset."""

    clip_low: float
    clip_high: float
    kl_coef: float
    loss_aggregation: LossAggregation
    dynamic_sampling: bool
    overlong_buffer_tokens: int
    normalize_advantage_std: bool


PRESETS: dict[str, Preset] = {
    # GRPO as commonly run today: symmetric clip, sequence-mean of token-mean losses, no KL.
    "grpo": Preset(0.2, 0.2, 0.0, "seq-mean-token-mean", False, 0, True),
    # DAPO: clip-higher 0.28, token-level loss, dynamic sampling, 4,096-token overlong buffer.
    "dapo": Preset(0.2, 0.28, 0.0, "token-mean", True, 4096, True),
    # Dr. GRPO: constant normaliser instead of response length, no std scaling of advantages.
    "dr_grpo": Preset(0.2, 0.2, 0.0, "seq-mean-token-sum-norm", False, 0, False),
    # MT-OPD as the study ran it: slime's defaults (clip 0.2/0.2, no KL, its loss reduction); no
    # rewards, so nothing to filter (dynamic sampling) or shape (overlong buffer). The std flag is
    # the trainer's own (true for every type but dr_grpo) and has no effect without rewards.
    "mt_opd": Preset(0.2, 0.2, 0.0, "seq-mean-token-mean", False, 0, True),
}


def _preset_expr(field: str, attr: str, *, integer: bool = False) -> str:
    """CEL for a field's effective value: the user's if set, else the preset of self.type.

    Literals are typed like the field (CEL does not compare int with double).
    """

    def literal(value: float) -> str:
        return str(int(value)) if integer else repr(float(value))

    fallback = getattr(PRESETS["grpo"], attr)
    expr = literal(fallback)
    for name in (n for n in PRESETS if n != "grpo"):
        value = getattr(PRESETS[name], attr)
        if value != fallback:
            expr = f"(self.type == '{name}' ? {literal(value)} : {expr})"
    return f"(has(self.{field}) ? self.{field} : {expr})"


_CLIP_HIGH = _preset_expr("clipHigh", "clip_high")
_CLIP_LOW = _preset_expr("clipLow", "clip_low")


class LearningRateSchedule(ApiModel):
    """How the learning rate changes over the run."""

    type: ScheduleType = "constant"
    """type is constant, cosine (decay to minRatio x learningRate) or linear (likewise). Default
    constant."""
    warmup_steps: int = Field(0, ge=0)
    """warmupSteps ramps the learning rate linearly over this many training steps (step k of the
    warm-up uses (k+1)/warmupSteps of it, whatever the number of optimizer updates per step).
    Default 0 (none)."""
    min_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """minRatio is the final learning rate of cosine and linear decay, as a fraction of
    learningRate. Default 0. Ignored by constant."""


class RolloutCorrectionSpec(ApiModel):
    """How the trainer corrects the mismatch between the rollout engine's probabilities and its own
    (different kernels and precision give the same tokens slightly different log-probabilities), as
    slime (`--use-tis`) and verl (rollout correction) do."""

    model_config = model_rules(
        Rule(
            rule="self.importanceSampling == 'none' || !has(self.recomputeLogprobs) "
            "|| self.recomputeLogprobs",
            message="importanceSampling tis or mis weighs tokens by pi_old_trainer / pi_rollout, which needs "
            "recomputeLogprobs: leave it unset or set it true",
            field_path=".recomputeLogprobs",
        ),
    )

    recompute_logprobs: bool | None = None
    """recomputeLogprobs makes the trainer recompute pi_old, the denominator of the PPO ratio, in one
    extra forward pass without gradient before the first update, instead of using the rollout
    engine's log-probabilities; the rollout's then only feed importanceSampling. Unset means true when
    importanceSampling is tis or mis, else false."""
    importance_sampling: ImportanceSampling = "none"
    """importanceSampling weighs each token's policy loss by rho = pi_old_trainer / pi_rollout: tis
    truncates it to at most cap (and at least floor; truncated importance sampling, slime's
    --use-tis), mis masks tokens whose rho falls outside [floor, cap] (masked importance sampling).
    none: no weight. Default none."""
    cap: float = Field(2.0, ge=1.0, le=100.0)
    """cap is the upper bound C of the importance weight (slime's --tis-clip, verl's
    rollout_is_threshold). Default 2.0."""
    floor: float = Field(0.0, ge=0.0, lt=1.0)
    """floor is the lower bound of the importance weight (slime's --tis-clip-low). Default 0."""


class TeacherSpec(ApiModel):
    """One MT-OPD teacher: the domains whose samples it scores, and the model it is."""

    model_config = model_rules(exactly_one(["runRef", "mergeRef", "model"], "a teacher"))

    domains: list[ShortName] = Field(
        min_length=1,
        max_length=MAX_TEACHER_DOMAINS,
        json_schema_extra=field_rules(
            Rule(
                rule="self.all(d, self.exists_one(e, e == d))",
                message="a teacher names each of its domains once",
            )
        ),
    )
    """domains are the run's domains (spec.domains[].name) this teacher teaches: every sample of
    them is scored by this teacher. Each domain of the run has exactly one teacher. Required."""
    run_ref: ObjectName | None = None
    """runRef names an RLVRRun in the same namespace (an expert); its final model teaches, and the
    run waits until that RLVRRun has succeeded. Exactly one of runRef, mergeRef and model is set."""
    merge_ref: ObjectName | None = None
    """mergeRef names a MergeJob in the same namespace; its merged model teaches, once it has
    succeeded. Exactly one of runRef, mergeRef and model is set."""
    model: URI | None = None
    """model is a checkpoint's URI (pvc://, hf:// or file://). Exactly one of runRef, mergeRef and
    model is set."""


class AlgorithmSpec(ApiModel):
    """GRPO-family and MT-OPD settings: sampling, loss, regularisation and optimisation."""

    model_config = model_rules(
        Rule(
            rule=f"{_CLIP_HIGH} >= {_CLIP_LOW}",
            message="clipHigh must be greater than or equal to clipLow, after unset fields take the preset "
            "of `type` (clipLow 0.2; clipHigh 0.28 for dapo, else 0.2): clip-higher widens the upper "
            "bound of the ratio, it never narrows it",
            # No messageExpression naming the values: `string(double)` has no size bound for the API
            # server's cost estimator, and concatenating it exceeds the budget more than 100x.
            field_path=".clipHigh",
        ),
        Rule(
            rule="self.miniBatches <= self.promptsPerStep",
            message="miniBatches must not exceed promptsPerStep: each mini-batch is a slice of the "
            "step's prompts",
            field_path=".miniBatches",
        ),
        Rule(
            rule="self.schedule.warmupSteps < self.steps",
            message="schedule.warmupSteps must be smaller than steps: warm-up would never finish",
            field_path=".schedule.warmupSteps",
        ),
        Rule(
            rule=f"{_preset_expr('overlongBufferTokens', 'overlong_buffer_tokens', integer=True)}"
            " < self.maxResponseTokens",
            message="overlongBufferTokens (after applying the preset of `type`: dapo uses 4096) must be "
            "smaller than maxResponseTokens: the penalty ramps up over the last overlongBufferTokens",
            field_path=".overlongBufferTokens",
        ),
        # MT-OPD, as the trainer checks it (m2rl_trainer.config._mt_opd_problems); the rules that
        # relate teachers to the run's domains are on the RLVRRun spec.
        Rule(
            rule="self.type != 'mt_opd' || has(self.teachers)",
            message="type mt_opd needs teachers: each domain's samples are scored by its teacher",
            field_path=".teachers",
        ),
        Rule(
            rule="self.type == 'mt_opd' || !has(self.teachers)",
            message="teachers apply only to type mt_opd (the other types learn from rewards)",
            field_path=".teachers",
        ),
        Rule(
            rule="self.type != 'mt_opd' || !has(self.dynamicSampling) || !self.dynamicSampling",
            message="dynamicSampling does not apply to type mt_opd: it has no rewards to filter groups by",
            field_path=".dynamicSampling",
        ),
        Rule(
            rule="self.type != 'mt_opd' || !has(self.overlongBufferTokens) || self.overlongBufferTokens == 0",
            message="overlongBufferTokens does not apply to type mt_opd: it has no rewards to shape",
            field_path=".overlongBufferTokens",
        ),
    )

    type: AlgorithmType = "grpo"
    """type is the algorithm: grpo, dapo, dr_grpo, or mt_opd (multi-teacher on-policy distillation:
    each sample is scored token by token by its domain's teacher, and the advantage of a token is
    the teacher's log-probability minus the student's; docs/mt-opd.md). It sets the defaults of
    clipLow, clipHigh, klCoef, lossAggregation, dynamicSampling, overlongBufferTokens and
    normalizeAdvantageStd (see the presets table in docs/api.md). Default grpo."""
    teachers: list[TeacherSpec] | None = Field(None, min_length=1, max_length=MAX_TEACHERS)
    """teachers are MT-OPD's experts, each teaching some of the run's domains; every domain of the
    run is taught by exactly one. Required by type mt_opd, refused by the others. With rollout mode
    server each teacher is served by its own vLLM servers (spec.teacherServers); colocated, the
    trainer loads each teacher and scores with a forward pass."""
    group_size: int = Field(
        16,
        le=1024,
        json_schema_extra=field_rules(
            Rule(
                rule="self >= 2",
                message="groupSize must be at least 2: GRPO scores each response against the other "
                "responses to the same prompt, so a group of one has no baseline",
            )
        ),
    )
    """groupSize is the number of responses sampled per prompt (G). Default 16."""
    prompts_per_step: int = Field(128, ge=1, le=65536)
    """promptsPerStep is the number of prompts per training step; a step trains on
    promptsPerStep x groupSize responses. Default 128."""
    update_epochs: int = Field(1, ge=1, le=64)
    """updateEpochs is the number of optimisation passes over each step's responses. Default 1; more
    passes reuse the samples with importance ratios, clipped by clipLow/clipHigh."""
    mini_batches: int = Field(1, ge=1, le=1024)
    """miniBatches splits each pass over the step's prompts into this many disjoint slices, one
    optimizer update per slice (PPO mini-batches): a step takes updateEpochs x miniBatches updates,
    each normalised over its own slice. Default 1 (one update per pass; with updateEpochs 1, strictly
    on-policy)."""
    off_policy_steps: int = Field(0, ge=0, le=1)
    """offPolicySteps lets generation run ahead of training. 0 (default): each step samples with the
    current weights. 1: step t+1's responses are generated and scored, with the weights before update
    t, while update t runs (one-step off-policy; the importance ratio against the sampling policy
    accounts for the lag). Faster when generation and the update use different resources."""
    steps: int = Field(ge=1, le=10_000_000)
    """steps is the number of training steps of the run. Required."""
    learning_rate: float = Field(2e-6, gt=0.0, le=1.0)
    """learningRate is the AdamW peak learning rate. Default 2e-6."""
    schedule: LearningRateSchedule = Field(default_factory=LearningRateSchedule)
    """schedule shapes the learning rate over steps. Default: constant, no warm-up."""
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    """weightDecay is AdamW's decoupled weight decay. Default 0."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """maxGradNorm clips the global gradient norm. Default 1.0."""
    clip_low: float | None = Field(None, ge=0.0, le=1.0)
    """clipLow is epsilon_low of the clipped objective (ratio >= 1 - clipLow). Unset means the
    preset's (0.2)."""
    clip_high: float | None = Field(None, ge=0.0, le=10.0)
    """clipHigh is epsilon_high (ratio <= 1 + clipHigh); DAPO's clip-higher uses 0.28. Unset means
    the preset's (grpo 0.2, dapo 0.28, dr_grpo 0.2)."""
    clip_ratio_c: float | None = Field(None, gt=1.0, le=100.0)
    """clipRatioC enables dual-clip PPO (Ye et al. 2019): the loss of a token with negative advantage A
    is at most -clipRatioC x A however large its ratio (verl's clip_ratio_c, slime's --eps-clip-c;
    typical value 3). Unset means off."""
    rollout_correction: RolloutCorrectionSpec = Field(default_factory=RolloutCorrectionSpec)
    """rolloutCorrection corrects the rollout/trainer probability mismatch. Default: none (the
    rollout's log-probabilities are pi_old)."""
    kl_coef: float | None = Field(None, ge=0.0, le=10.0)
    """klCoef is the weight of the KL penalty to the reference (initial) model; 0 disables it and
    the reference model is not loaded. Unset means the preset's (0 for all three)."""
    kl_estimator: KLEstimator = "k3"
    """klEstimator is the per-token KL estimator (Schulman's k1, k2 or k3). Default k3. Used only
    when klCoef > 0."""
    entropy_coef: float = Field(0.0, ge=0.0, le=1.0)
    """entropyCoef is the weight of an entropy bonus. Default 0 (none)."""
    loss_aggregation: LossAggregation | None = None
    """lossAggregation reduces per-token losses to a scalar (verl's names): token-mean (all tokens
    of the step weigh the same), seq-mean-token-mean (mean per response, then over responses),
    seq-mean-token-sum (sum per response, mean over responses) or seq-mean-token-sum-norm (sum per
    response divided by the constant maxResponseTokens). Unset means the preset's (grpo
    seq-mean-token-mean, dapo token-mean, dr_grpo seq-mean-token-sum-norm)."""
    normalize_advantage_std: bool | None = None
    """normalizeAdvantageStd divides group-centred rewards by the group's standard deviation.
    Unset means the preset's (true, except dr_grpo)."""
    dynamic_sampling: bool | None = None
    """dynamicSampling drops prompts whose responses all got the same reward (zero advantage) and
    samples more until the step is full. Unset means the preset's (dapo true, others false)."""
    overlong_buffer_tokens: int | None = Field(None, ge=0)
    """overlongBufferTokens enables DAPO's soft overlong punishment: responses longer than
    maxResponseTokens - overlongBufferTokens lose up to overlongPenalty reward, linearly. 0
    disables it. Unset means the preset's (dapo 4096, others 0)."""
    overlong_penalty: float = Field(1.0, ge=0.0, le=100.0)
    """overlongPenalty is the reward lost by a response of maxResponseTokens tokens under overlong
    shaping. Default 1.0."""
    overlong_filtering: bool = False
    """overlongFiltering leaves truncated responses (cut at maxResponseTokens) out of the loss, while
    they still count in their group's advantages (DAPO's overlong filtering). Default false."""
    temperature: float = Field(1.0, gt=0.0, le=10.0)
    """temperature of rollout sampling. Default 1.0."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """topP is the nucleus-sampling mass of rollouts. Default 1.0 (off)."""
    max_prompt_tokens: int = Field(2048, ge=1, le=1_048_576)
    """maxPromptTokens drops prompts longer than this many tokens. Default 2048."""
    max_response_tokens: int = Field(32768, ge=1, le=1_048_576)
    """maxResponseTokens is the generation limit per response. Default 32768."""
    seed: int = Field(0, ge=0, le=2**31 - 1)
    """seed drives data order and sampling; runs with equal seeds see prompts in the same order.
    Default 0."""


@dataclass(frozen=True)
class ResolvedAlgorithm:
    """An AlgorithmSpec with every preset-dependent field filled in."""

    spec: AlgorithmSpec
    clip_low: float
    clip_high: float
    kl_coef: float
    loss_aggregation: LossAggregation
    dynamic_sampling: bool
    overlong_buffer_tokens: int
    normalize_advantage_std: bool
    recompute_logprobs: bool


def resolve_algorithm(spec: AlgorithmSpec) -> ResolvedAlgorithm:
    """Fill every unset preset-dependent field from PRESETS[spec.type]."""
    preset = PRESETS[spec.type]
    return ResolvedAlgorithm(
        spec=spec,
        clip_low=preset.clip_low if spec.clip_low is None else spec.clip_low,
        clip_high=preset.clip_high if spec.clip_high is None else spec.clip_high,
        kl_coef=preset.kl_coef if spec.kl_coef is None else spec.kl_coef,
        loss_aggregation=preset.loss_aggregation if spec.loss_aggregation is None else spec.loss_aggregation,
        dynamic_sampling=preset.dynamic_sampling if spec.dynamic_sampling is None else spec.dynamic_sampling,
        overlong_buffer_tokens=(
            preset.overlong_buffer_tokens
            if spec.overlong_buffer_tokens is None
            else spec.overlong_buffer_tokens
        ),
        normalize_advantage_std=(
            preset.normalize_advantage_std
            if spec.normalize_advantage_std is None
            else spec.normalize_advantage_std
        ),
        recompute_logprobs=(
            spec.rollout_correction.importance_sampling != "none"
            if spec.rollout_correction.recompute_logprobs is None
            else spec.rollout_correction.recompute_logprobs
        ),
    )
