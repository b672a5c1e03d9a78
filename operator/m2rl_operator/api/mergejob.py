"""MergeJob: a merge of expert checkpoints (mergekit) plus a weight-space analysis."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from m2rl_operator.api.base import (
    URI_MAX_LENGTH,
    ApiModel,
    Rule,
    cel_list,
    english_list,
    exactly_one,
    field_rules,
    model_rules,
)
from m2rl_operator.api.common import (
    URI,
    ObjectName,
    PodOptions,
    SchedulingOptions,
    ShortName,
    StatusBase,
    WritableURI,
)
from m2rl_operator.api.merge_methods import (
    EXPERT_PARAMETERS,
    GLOBAL_PARAMETERS,
    MERGE_METHODS,
    MethodName,
    methods_where,
)
from m2rl_operator.api.rlvrrun import DType

MAX_EXPERTS = 16

MUTABLE_SPEC_FIELDS = ("ttlSecondsAfterFinished",)
"""The spec fields that may change on an existing MergeJob; a merge is one-shot, so every other
field is immutable (`updates.add_update_rules`)."""


class MergeBase(ApiModel):
    """The base model the experts' task vectors are taken against."""

    model_config = model_rules(exactly_one(["model", "runRef"], "base"))

    model: URI | None = None
    """model is the base model's URI (pvc://, hf:// or file://). Exactly one of model and runRef is set."""
    run_ref: ObjectName | None = None
    """runRef names an RLVRRun in the same namespace whose base model (spec.model.uri) is used.
    Exactly one of model and runRef is set."""


class ExpertSpec(ApiModel):
    """One model to merge."""

    model_config = model_rules(exactly_one(["runRef", "mergeRef", "model"], "an expert"))

    name: ShortName | None = None
    """name labels the expert in the analysis. Unset means the runRef or mergeRef, or the last path
    segment of model."""
    run_ref: ObjectName | None = None
    """runRef names an RLVRRun in the same namespace; its final model is merged, and the MergeJob
    waits until the run has succeeded. Exactly one of runRef, mergeRef and model is set."""
    merge_ref: ObjectName | None = None
    """mergeRef names another MergeJob in the same namespace; its output is merged (hierarchical
    merges), after it has succeeded. Exactly one of runRef, mergeRef and model is set."""
    model: URI | None = None
    """model is a checkpoint's URI (pvc://, hf:// or file://). Exactly one of runRef, mergeRef and
    model is set."""
    weight: float | None = Field(
        None,
        json_schema_extra=field_rules(
            Rule(
                rule="self > 0.0",
                message="weight must be positive (negative task vectors are not supported; remove the "
                "expert instead of giving it weight 0)",
            )
        ),
    )
    """weight scales the expert's contribution. Unset means 1. Used by linear, nuslerp, multislerp
    and the task-arithmetic family."""
    density: float | None = Field(None, gt=0.0, le=1.0)
    """density is the fraction of the task vector's entries kept (TIES trims the smallest by
    magnitude; DARE drops at random with probability 1 - density). Unset means 1 (keep all), and 0.2
    for mergelm_ties (MergeLM's default trim of 80%). TIES "trim 80%" is density 0.2; DARE "drop
    rate 0.2" is density 0.8."""
    dare_density: float | None = Field(None, gt=0.0, le=1.0)
    """dareDensity is, for mergelm_ties and mergelm_task_arithmetic, the probability that DARE keeps an
    entry before the merge (kept entries are divided by it when dareRescale). Unset means 1: no DARE.
    The study's "drop rate 0.2" is dareDensity 0.8."""
    gamma: float | None = Field(None, ge=0.0, lt=1.0)
    """gamma is the fraction of largest-magnitude entries removed by breadcrumbs. Unset means 0.01."""
    epsilon: float | None = Field(None, ge=0.0, lt=1.0)
    """epsilon is DELLA's spread of keep probabilities around density. Unset means 0.15."""


class MergeParameters(ApiModel):
    """Global parameters of the merge method; each is accepted only by the methods that read it."""

    lambda_: float | None = Field(None, alias="lambda", gt=0.0, le=100.0)
    """lambda scales the merged task vector before it is added to the base (task_arithmetic, ties,
    dare_*, breadcrumbs*, della*, mergelm_ties, mergelm_task_arithmetic). Unset means 1.0."""
    normalize: bool | None = None
    """normalize divides by the sum of the weights (linear and the task-arithmetic family). Unset means
    the method's default (true for linear, ties and della)."""
    rescale: bool | None = None
    """rescale multiplies the kept entries of each tensor's task vector so that its L1 norm equals the
    norm before dropping or trimming (mergekit 0.1.5, sparsify.rescaled_masked_tensor with
    RescaleNorm.l1; dare_*, della*, and the rest of the task-arithmetic family). This is not 1/density:
    a 20% magnitude trim of Gaussian entries is scaled by about 2.27, not 5. Unset means the method's
    default (true for dare_* and della*). For DARE rescaled by 1/density use mergelm_* (dareRescale)."""
    int8_mask: bool | None = None
    """int8Mask stores intermediate masks as int8 to save memory (task-arithmetic family, sce). Unset
    means false."""
    t: float | None = Field(None, ge=0.0, le=1.0)
    """t is slerp's interpolation factor from the base (0) to the expert (1). Required by slerp."""
    select_top_k: float | None = Field(None, alias="selectTopK", gt=0.0, le=1.0)
    """selectTopK is the fraction of highest-variance entries sce keeps (mergelm_sce: from which the
    experts' weights are computed; the merged entries are not masked, as in MergeLM). Unset means 1.0."""
    filter_wise: bool | None = None
    """filterWise makes model_stock compute its ratio per row instead of per tensor. Unset means false."""
    normalize_weights: bool | None = None
    """normalizeWeights makes multislerp normalise the weights to sum to 1. Unset means true."""
    eps: float | None = Field(None, gt=0.0, le=1.0)
    """eps is multislerp's numerical tolerance. Unset means 1e-8."""
    max_iter: int | None = Field(None, ge=1, le=10000)
    """maxIter is karcher's iteration limit. Unset means 10."""
    tol: float | None = Field(None, gt=0.0, le=1.0)
    """tol is karcher's convergence tolerance. Unset means 1e-5."""
    row_wise: bool | None = None
    """rowWise makes nuslerp interpolate row vectors instead of whole tensors. Unset means false."""
    flatten: bool | None = None
    """flatten makes nuslerp treat each tensor as one flat vector. Unset means true."""
    trim_scope: Literal["model", "tensor"] | None = None
    """trimScope is where mergelm_ties finds the magnitude below which entries are trimmed: over the
    whole model (model, MergeLM's flattened task vector; m2rl-merge computes the thresholds in a pass
    before the merge) or in each tensor (tensor, as mergekit's ties). Unset means model."""
    dare_rescale: bool | None = None
    """dareRescale divides the entries DARE keeps by dareDensity (MergeLM's use_weight_rescale), in
    mergelm_ties and mergelm_task_arithmetic. Unset means true."""


class MergeOutput(ApiModel):
    """Where the merged model is written."""

    uri: WritableURI
    """uri is the output directory (pvc://CLAIM/PATH or file:///PATH); a Hugging Face-format
    checkpoint is written there. Required."""


class AnalysisSpec(ApiModel):
    """Weight-space analysis of the experts' task vectors, as the M2RL study defines it."""

    enabled: bool = True
    """enabled runs the analysis after the merge (change masks, update sparsity, pairwise Jaccard with
    its random-overlap reference, exact and projected cosine, sign conflicts; see docs/merge.md).
    Default true. It needs a base: linear and karcher merges are analysed against spec.base when set."""
    eta: float = Field(1e-3, ge=0.0, le=1.0)
    """eta is the change threshold: a weight counts as changed when |w - w_base| > eta * max(|w|,
    |w_base|). Default 1e-3 (the study's); 0 counts every change."""
    projection_dims: int = Field(256, ge=1, le=65536)
    """projectionDims is the size of the random orthogonal projection of the projected cosine. Default
    256 (the study's)."""


class MergeWorkerSpec(PodOptions):
    """The pod that runs the merge."""

    gpus: int = Field(0, ge=0, le=16)
    """gpus for the merge pod. Default 0: merging is memory-bound and runs on CPU."""


def _method_rules() -> list[Rule]:
    """CEL rules generated from MERGE_METHODS: base, expert counts and per-method parameters."""
    rules: list[Rule] = []
    need_base = methods_where(lambda m: m.base == "required")
    rules.append(
        Rule(
            rule=f"!(self.method in {cel_list(need_base)}) || has(self.base)",
            message=f"base is required by methods {english_list(need_base)}: they merge each expert's "
            "difference from the base model",
            message_expression="'base is required by method ' + self.method + ': it merges the "
            "difference of each expert from the base model'",
            field_path=".base",
        )
    )
    for m in MERGE_METHODS.values():
        if m.max_experts is not None and m.max_experts == m.min_experts:
            cond, what = f"self.experts.size() == {m.min_experts}", f"exactly {m.min_experts}"
        elif m.min_experts > 1:
            cond, what = f"self.experts.size() >= {m.min_experts}", f"at least {m.min_experts}"
        else:
            continue
        plural = "expert" if m.min_experts == 1 else "experts"
        rules.append(
            Rule(
                rule=f"self.method != '{m.name}' || {cond}",
                # A static message: `+ string(self.experts.size())` has no size bound for the API
                # server's cost estimator (more than 100x over budget).
                message=f"method {m.name} takes {what} {plural}",
                field_path=".experts",
            )
        )
    for param in GLOBAL_PARAMETERS:
        users = [name for name, m in MERGE_METHODS.items() if param in m.global_params]
        rules.append(
            Rule(
                rule=f"!has(self.parameters) || !has(self.parameters.{param}) "
                f"|| self.method in {cel_list(users)}",
                message=f"parameters.{param} is read only by methods {english_list(users, 'or')}; "
                "the chosen method would ignore it",
                message_expression=f"'parameters.{param} is read only by methods "
                f"{english_list(users, 'or')}; method ' + self.method + ' would ignore it'",
                field_path=f".parameters.{param}",
            )
        )
    for m in MERGE_METHODS.values():
        for param in sorted(m.required_global):
            rules.append(
                Rule(
                    rule=f"self.method != '{m.name}' "
                    f"|| (has(self.parameters) && has(self.parameters.{param}))",
                    message=f"method {m.name} requires parameters.{param}",
                    field_path=f".parameters.{param}",
                )
            )
    for param in EXPERT_PARAMETERS:
        users = [name for name, m in MERGE_METHODS.items() if param in m.expert_params]
        rules.append(
            Rule(
                rule=f"self.method in {cel_list(users)} || self.experts.all(e, !has(e.{param}))",
                message=f"experts[].{param} is read only by methods {english_list(users, 'or')}; "
                "the chosen method would ignore it",
                message_expression=f"'experts[].{param} is read only by methods "
                f"{english_list(users, 'or')}; method ' + self.method + ' would ignore it'",
                field_path=".experts",
            )
        )
    rules.append(
        Rule(
            # A conditional, not `!has(e.name) || ...`: cel-python does not absorb an error on the
            # right of `||` inside a nested macro (cel-go does); both agree on this form.
            rule="self.experts.all(e, has(e.name) "
            "? self.experts.exists_one(f, has(f.name) && f.name == e.name) : true)",
            message="expert names must be unique within a merge",
            field_path=".experts",
        )
    )
    return rules


class MergeJobSpec(SchedulingOptions):
    """The desired state of a MergeJob."""

    model_config = model_rules(*_method_rules())

    method: MethodName
    """method is the merge algorithm (mergekit's name): linear (weighted average), task_arithmetic,
    ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear, sce, model_stock,
    slerp, nuslerp, multislerp or karcher; or one of the M2RL study's MergeLM variants: mergelm_ties
    (DARE, then TIES trimmed over the whole model, sign election, disjoint mean), mergelm_sce (SCE
    without mergekit's equal-weights fallback for small task vectors) or mergelm_task_arithmetic
    (DARE rescaled by 1/dareDensity, then the sum). Required."""
    base: MergeBase | None = None
    """base is the model task vectors are computed against. Required by the task-arithmetic family,
    sce, model_stock, slerp and the mergelm_* methods. linear and karcher merge without it: for them
    it is used only by the weight-space analysis (which is skipped without a base)."""
    experts: list[ExpertSpec] = Field(min_length=1, max_length=MAX_EXPERTS)
    """experts are the models to merge (1 to 16), each exactly one of runRef, mergeRef or model.
    Required."""
    parameters: MergeParameters = Field(default_factory=MergeParameters)
    """parameters are the method's global parameters. Unset means the method's defaults."""
    dtype: DType = "bfloat16"
    """dtype of the merged weights: bfloat16, float16 or float32. Default bfloat16."""
    output: MergeOutput
    """output says where the merged model goes. Required."""
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    """analysis switches the weight-space analysis. Default: enabled."""
    worker: MergeWorkerSpec = Field(default_factory=MergeWorkerSpec)
    """worker places and sizes the merge pod. Default: CPU only, operator-default image."""


class CosinePair(ApiModel):
    """How two experts' task vectors relate."""

    first: str = Field(max_length=63)
    """first expert's name."""
    second: str = Field(max_length=63)
    """second expert's name."""
    cosine: float = Field(ge=-1.0, le=1.0)
    """cosine similarity of the two flattened task vectors."""
    projected_cosine: float | None = Field(None, ge=-1.0, le=1.0)
    """projectedCosine is the cosine after the seeded random orthogonal projection to
    analysis.projectionDims dimensions."""
    jaccard: float | None = Field(None, ge=0.0, le=1.0)
    """jaccard is |M_first and M_second| / |M_first or M_second| of the two change masks."""
    jaccard_random: float | None = Field(None, ge=0.0, le=1.0)
    """jaccardRandom is p1 p2 / (p1 + p2 - p1 p2), the Jaccard index of independent random masks with the
    same update fractions: a jaccard well above it means the experts changed the same weights."""


class AnalysisStatus(ApiModel):
    """Summary of the weight-space analysis."""

    report_uri: str | None = Field(None, max_length=URI_MAX_LENGTH)
    """reportUri is the full report (per-layer numbers) next to the merged model."""
    task_vector_norms: dict[str, float] | None = Field(None, max_length=MAX_EXPERTS)
    """taskVectorNorms maps each expert to the L2 norm of its task vector (expert minus base)."""
    pairwise_cosine: list[CosinePair] | None = Field(None, max_length=MAX_EXPERTS * (MAX_EXPERTS - 1) // 2)
    """pairwiseCosine lists, for every pair of experts, the exact and projected cosine of their task
    vectors and the Jaccard index of their change masks with its random-overlap reference."""
    update_fraction: dict[str, float] | None = Field(None, max_length=MAX_EXPERTS)
    """updateFraction maps each expert to the fraction of weights it changed (its change mask; 1 minus
    the update sparsity)."""
    sign_conflict_fraction: float | None = Field(None, ge=0.0, le=1.0)
    """signConflictFraction is the fraction of parameters that one expert changed upwards and another
    downwards (what TIES resolves)."""
    eta: float | None = Field(None, ge=0.0)
    """eta is the change threshold the masks were computed with."""


class MergeJobStatus(StatusBase):
    """The observed state of a MergeJob."""

    output_model: str | None = Field(None, max_length=URI_MAX_LENGTH)
    """outputModel is the merged model's URI once the merge succeeded."""
    analysis: AnalysisStatus | None = None
    """analysis summarises the experts' task vectors."""
    waiting_for: list[Annotated[str, StringConstraints(max_length=128)]] | None = Field(
        None, max_length=MAX_EXPERTS + 1
    )
    """waitingFor lists the referenced RLVRRuns/MergeJobs (as Kind/name) that have not succeeded yet."""
