"""EvalSuite: models x benchmarks, generated with vLLM and scored by the training verifiers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from m2rl_operator.api.base import (
    URI_MAX_LENGTH,
    ApiModel,
    Rule,
    exactly_one,
    field_rules,
    model_rules,
)
from m2rl_operator.api.common import (
    URI,
    DatasetSpec,
    ObjectName,
    PodOptions,
    SchedulingOptions,
    ShortName,
    StatusBase,
    Timestamp,
    VerifierRef,
    VerifierServiceSpec,
    WritableURI,
)

MAX_MODELS = 32
MAX_BENCHMARKS = 32

MUTABLE_SPEC_FIELDS = ("ttlSecondsAfterFinished",)
"""The spec fields that may change on an existing EvalSuite. Models and benchmarks are immutable:
the evaluation Job's completions cannot change, so another model or benchmark is another
EvalSuite (`updates.add_update_rules`)."""

METRIC_PATTERN = r"^(avg|pass|maj)@(k|[1-9][0-9]*)$"
Metric = Annotated[str, StringConstraints(max_length=16, pattern=METRIC_PATTERN)]
"""avg@k (mean accuracy over k samples), pass@N (unbiased estimate that one of N is right), maj@N
(majority vote over N); k means the benchmark's `samples`."""


def _unique_names(what: str) -> Rule:
    return Rule(
        rule="self.all(x, self.exists_one(y, y.name == x.name))",
        message=f"{what} names must be unique: each name is a row or column of the results table",
    )


class EvalModel(ApiModel):
    """One model to evaluate."""

    model_config = model_rules(
        exactly_one(["runRef", "mergeRef", "model"], "a model"),
        Rule(
            rule="!has(self.systemPrompt) || (has(self.chatTemplate) && self.chatTemplate)",
            message="systemPrompt needs chatTemplate: true (set here, not inherited): the system message is "
            "part of the chat template",
            field_path=".systemPrompt",
        ),
    )

    name: ShortName
    """name labels the model in the results table. Unique within the suite."""
    run_ref: ObjectName | None = None
    """runRef names an RLVRRun in the same namespace; its final model is evaluated once the run has
    succeeded. Exactly one of runRef, mergeRef and model is set."""
    merge_ref: ObjectName | None = None
    """mergeRef names a MergeJob in the same namespace; its output is evaluated once it has succeeded.
    Exactly one of runRef, mergeRef and model is set."""
    model: URI | None = None
    """model is a checkpoint's URI (pvc://, hf:// or file://), e.g. the base model as a baseline.
    Exactly one of runRef, mergeRef and model is set."""
    chat_template: bool | None = None
    """chatTemplate wraps prompts in the tokenizer's chat template. Unset means the prompt format the
    model was trained with: a runRef model's run's (spec.model.chatTemplate), a mergeRef model's
    merged runs' when they all agree; true for a model URI and for merges of runs that disagree."""
    system_prompt: str | None = Field(None, max_length=16384)
    """systemPrompt is prepended to every prompt as a system message; needs chatTemplate: true set
    here. Unset means the one the model was trained with (runRef and mergeRef models, as
    chatTemplate); none for a model URI."""


class BenchmarkSpec(ApiModel):
    """One benchmark: its data, its verifier, and how many samples per prompt."""

    name: ShortName
    """name labels the benchmark in the results table (e.g. aime24, gpqa-diamond). Unique within the
    suite."""
    dataset: DatasetSpec
    """dataset holds the benchmark's prompts and references (split defaults to "train"; set "test"
    where the benchmark keeps its questions there)."""
    verifier: VerifierRef
    """verifier scores responses, with the same code as training rewards."""
    samples: int = Field(1, ge=1, le=1024)
    """samples is k, the number of responses per prompt. Default 1."""
    metrics: list[Metric] = Field(default_factory=lambda: ["avg@k"], min_length=1, max_length=8)
    """metrics reported for the benchmark: avg@k, pass@N, maj@N (N <= samples, or k for samples).
    Default ["avg@k"]."""
    max_response_tokens: int | None = Field(None, ge=1, le=1_048_576)
    """maxResponseTokens overrides sampling.maxResponseTokens for this benchmark. Unset means the suite's."""


class SamplingSpec(ApiModel):
    """Generation settings shared by all benchmarks."""

    temperature: float = Field(0.6, ge=0.0, le=10.0)
    """temperature of sampling; 0 is greedy. Default 0.6 (Qwen3's recommendation for thinking mode)."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """topP is the nucleus-sampling mass. Default 0.95."""
    top_k: int | None = Field(None, ge=1)
    """topK keeps only the k most likely tokens. Unset means no top-k filter."""
    max_response_tokens: int = Field(32768, ge=1, le=1_048_576)
    """maxResponseTokens is the generation limit per response. Default 32768."""
    seed: int = Field(0, ge=0, le=2**31 - 1)
    """seed of sampling, for reproducible results. Default 0."""


class EvalWorkerSpec(PodOptions):
    """The evaluation pods: each runs vLLM for one model and scores one or more benchmarks."""

    model_config = model_rules(
        Rule(
            rule="self.gpus == 0 || self.tensorParallelSize <= self.gpus",
            message="tensorParallelSize must not exceed gpus: each tensor-parallel shard needs its own GPU",
            field_path=".tensorParallelSize",
        )
    )

    gpus: int = Field(1, ge=0, le=16)
    """gpus per evaluation pod. Default 1; 0 runs vLLM on CPU."""
    tensor_parallel_size: int = Field(1, ge=1, le=16)
    """tensorParallelSize shards the model over this many GPUs. Default 1."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """gpuMemoryUtilization is the fraction of GPU memory vLLM may use. Default 0.9."""
    parallelism: int = Field(1, ge=1, le=256)
    """parallelism is how many evaluation pods run at once. Default 1."""
    extra_args: list[Annotated[str, StringConstraints(max_length=1024)]] | None = Field(None, max_length=64)
    """extraArgs are appended to the vLLM command line. Unset means none."""


class EvalOutput(ApiModel):
    """Where evaluation results are written."""

    uri: WritableURI
    """uri is the output directory (pvc://CLAIM/PATH or file:///PATH): every evaluation pod writes
    MODEL/ there (per-sample JSONL, results.json, results.md, results.png) and keeps its per-sample
    cache in it; the analysis writes _analysis/ there. Required."""


MAX_DOMAINS = 16


class AnalysisDomain(ApiModel):
    """A domain of the analysis: benchmarks of the suite analysed together, and its expert."""

    name: ShortName
    """name labels the domain in the analysis (e.g. math). Unique within the analysis."""
    benchmarks: list[ShortName] = Field(min_length=1, max_length=MAX_BENCHMARKS)
    """benchmarks are names from spec.benchmarks whose prompts make up the domain. Required."""
    expert: ShortName | None = None
    """expert is the model of spec.models trained on this domain alone. Unset means none (the union
    gain of the prediction analysis runs over the domains that have one)."""


class InformationAnalysis(ApiModel):
    """The KL cross-matrix and the policy-neighbourhood test (docs/eval.md, "Analysis")."""

    models: list[ShortName] | None = Field(None, max_length=MAX_MODELS)
    """models whose policies are compared, names from spec.models. Unset means the experts and the
    mixed model."""
    prompts: int = Field(16, ge=1, le=4096)
    """prompts is how many prompts per domain the trajectories start from (its benchmarks' first
    ones). Default 16."""
    samples: int = Field(4, ge=1, le=256)
    """samples is how many trajectories each model samples per prompt (temperature 1, top-p 1).
    Default 4."""
    max_response_tokens: int = Field(1024, ge=1, le=1_048_576)
    """maxResponseTokens caps each trajectory. Default 1024."""
    epsilon: float = Field(1.0, gt=0.0)
    """epsilon is the neighbourhood threshold in nats per trajectory: B is in A's neighbourhood when
    E[log pi_A(y|x) - log pi_B(y|x)] < epsilon over A's trajectories. Default 1.0."""
    seed: int = Field(0, ge=0, le=2**31 - 1)
    """seed of the trajectories' sampling. Default 0."""


class PredictionAnalysis(ApiModel):
    """Per-prompt gains over the SFT model and their cosine with the experts' union gain."""

    enabled: bool = True
    """enabled runs it (`prediction: {}` is enough). Default true."""


class SelfVerificationAnalysis(ApiModel):
    """Each judge model as a generative verifier of one model's evaluated responses."""

    responses_from: ShortName
    """responsesFrom is the model of spec.models whose evaluated responses are judged. Required."""
    judges: list[ShortName] | None = Field(None, max_length=MAX_MODELS)
    """judges are models of spec.models. Unset means every model."""
    responses: int = Field(32, ge=1, le=4096)
    """responses is how many responses per domain are judged (the first samples of its benchmarks).
    Default 32."""
    modes: list[Literal["outcome", "reasoning"]] = Field(
        default_factory=lambda: ["outcome", "reasoning"], min_length=1, max_length=2
    )
    """modes are what the judges see: outcome (the text after the response's last </think>) and
    reasoning (the full response). Default both."""
    max_response_tokens: int = Field(1024, ge=1, le=1_048_576)
    """maxResponseTokens caps each judgement. Default 1024."""


def _in_models(path: str) -> str:
    return f"self.models.exists(m, m.name == {path})"


class EvalAnalysisSpec(ApiModel):
    """The M2RL study's information, prediction-behaviour and self-verification analyses of the suite.

    They run in one more pod of the evaluation Job once the models they read are evaluated; the
    weight-space analysis is the MergeJob's."""

    model_config = model_rules(
        Rule(
            rule="has(self.information) || has(self.prediction) || has(self.selfVerification)",
            message="analysis needs at least one of information, prediction and selfVerification",
        ),
        Rule(
            rule="!has(self.prediction) || has(self.sft)",
            message="analysis.prediction needs sft: gains are measured from the SFT model",
            field_path=".sft",
        ),
        Rule(
            rule="self.domains.all(d, self.domains.exists_one(e, e.name == d.name))",
            message="analysis domain names must be unique",
            field_path=".domains",
        ),
    )

    domains: list[AnalysisDomain] = Field(min_length=1, max_length=MAX_DOMAINS)
    """domains group the suite's benchmarks by training domain, each with its expert. Required."""
    sft: ShortName | None = None
    """sft is the model of spec.models the others were trained from (the SFT model). Required by
    prediction."""
    mixed: ShortName | None = None
    """mixed is the model of spec.models trained on all domains at once. Unset means none."""
    merged: list[ShortName] | None = Field(None, max_length=MAX_MODELS)
    """merged are models of spec.models made by merging the experts. Unset means none."""
    information: InformationAnalysis | None = None
    """information runs the KL cross-matrix and neighbourhood test. Unset means not run."""
    prediction: PredictionAnalysis | None = None
    """prediction runs the gain analysis (needs sft and at least one expert). Unset means not run."""
    self_verification: SelfVerificationAnalysis | None = None
    """selfVerification runs the judges. Unset means not run."""


class EvalSuiteSpec(SchedulingOptions):
    """The desired state of an EvalSuite."""

    model_config = model_rules(
        Rule(
            rule="!has(self.queueName) || !has(self.suspend) || !self.suspend",
            message="suspend cannot be used with queueName: Kueue alone sets the suspend of a Job it "
            "queues; stop a queued suite by deactivating its Kueue Workload (spec.active: false)",
            field_path=".suspend",
        ),
        Rule(
            rule="!has(self.analysis) || has(self.output)",
            message="analysis needs output: it reads the evaluations' per-sample files from there",
            field_path=".output",
        ),
        Rule(
            rule="!has(self.analysis) || self.analysis.domains.all(d, d.benchmarks.all(b, "
            "self.benchmarks.exists(x, x.name == b)))",
            message="analysis.domains[].benchmarks must name benchmarks of spec.benchmarks",
            field_path=".analysis.domains",
        ),
        Rule(
            rule="!has(self.analysis) || ("
            f"(!has(self.analysis.sft) || {_in_models('self.analysis.sft')}) && "
            f"(!has(self.analysis.mixed) || {_in_models('self.analysis.mixed')}) && "
            f"(!has(self.analysis.merged) || self.analysis.merged.all(n, {_in_models('n')})) && "
            f"self.analysis.domains.all(d, !has(d.expert) || {_in_models('d.expert')}))",
            message="analysis.sft, mixed, merged and domains[].expert must name models of spec.models",
            field_path=".analysis",
        ),
        Rule(
            rule="!has(self.analysis) || ("
            "(!has(self.analysis.information) || !has(self.analysis.information.models) || "
            f"self.analysis.information.models.all(n, {_in_models('n')})) && "
            "(!has(self.analysis.selfVerification) || ("
            f"{_in_models('self.analysis.selfVerification.responsesFrom')} && "
            "(!has(self.analysis.selfVerification.judges) || "
            f"self.analysis.selfVerification.judges.all(n, {_in_models('n')})))))",
            message="analysis.information.models and selfVerification.responsesFrom and judges must name "
            "models of spec.models",
            field_path=".analysis",
        ),
    )

    models: list[EvalModel] = Field(
        min_length=1, max_length=MAX_MODELS, json_schema_extra=field_rules(_unique_names("model"))
    )
    """models to evaluate (1 to 32). Required. To evaluate another model, create another EvalSuite."""
    benchmarks: list[BenchmarkSpec] = Field(
        min_length=1,
        max_length=MAX_BENCHMARKS,
        json_schema_extra=field_rules(
            _unique_names("benchmark"),
        ),
    )
    """benchmarks to run every model on (1 to 32). Required."""
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    """sampling holds the generation settings. Default: temperature 0.6, topP 0.95, 32768 tokens."""
    worker: EvalWorkerSpec = Field(default_factory=EvalWorkerSpec)
    """worker sizes and places the evaluation pods. Default: 1 GPU, one pod at a time."""
    verifier: VerifierServiceSpec = Field(default_factory=VerifierServiceSpec)
    """verifier isolates the sandbox that code benchmarks run in, inside each evaluation pod
    (`isolation`, `runtimeClassName`, `seccompLocalhostProfile`); its replicas, resources and
    concurrency do not apply (an evaluation pod runs its own checks). Default: isolation Auto."""
    output: EvalOutput | None = None
    """output is where each evaluation pod writes its per-sample results and results.json
    (OUTPUT/MODEL/...), mounted writable. Unset means results reach only the status table."""
    analysis: EvalAnalysisSpec | None = None
    """analysis runs the study's information, prediction-behaviour and self-verification analyses in one
    more pod after the evaluations it reads (needs output). Unset means none."""
    suspend: bool = False
    """suspend stops the evaluation pods (finished models keep their results); false resumes.
    Default false."""


class EvalResult(ApiModel):
    """One cell of the results table."""

    model: str = Field(max_length=32)
    """model is the row: a name from spec.models."""
    benchmark: str = Field(max_length=32)
    """benchmark is the column: a name from spec.benchmarks."""
    phase: Literal["Pending", "Running", "Succeeded", "Failed"]
    """phase of this cell's evaluation."""
    metrics: dict[str, float] | None = Field(None, max_length=8)
    """metrics maps each requested metric (as written, e.g. "avg@k") to its value in [0, 1]."""
    prompts: int | None = Field(None, ge=0)
    """prompts is the number of benchmark prompts evaluated."""
    completion_time: Timestamp | None = None
    """completionTime is when the cell finished."""


class KLPair(ApiModel):
    """The KL divergence of one model's policy from another's, averaged over the domains."""

    sampler: str = Field(max_length=32)
    """sampler is the model whose trajectories were scored (A in KL(A || B))."""
    scorer: str = Field(max_length=32)
    """scorer is the other model (B)."""
    kl: float
    """kl is the mean over domains of E[log pi_A(y|x) - log pi_B(y|x)], nats per trajectory."""
    neighbour: bool
    """neighbour says kl < analysis.information.epsilon: B is in A's policy neighbourhood."""


class JudgeAccuracy(ApiModel):
    """How often one model judged the given responses right, in one mode, over all domains."""

    model: str = Field(max_length=32)
    """model is the judge."""
    mode: Literal["outcome", "reasoning"]
    """mode is what the judge saw: the outcome only, or the full reasoning."""
    accuracy: float = Field(ge=0.0, le=1.0)
    """accuracy is the fraction of judgements that agree with the verifier."""


class EvalAnalysisStatus(ApiModel):
    """Summary of the suite's analyses; the full results are in reportUri's folder."""

    report_uri: str | None = Field(None, max_length=URI_MAX_LENGTH)
    """reportUri is the full report (per domain; trajectories, judgements and PNG charts beside it)."""
    kl: list[KLPair] | None = Field(None, max_length=MAX_MODELS * (MAX_MODELS - 1))
    """kl lists KL(A || B) for every ordered pair of the information analysis' models."""
    epsilon: float | None = None
    """epsilon is the neighbourhood threshold used."""
    gain_cosine: dict[str, float] | None = Field(None, max_length=MAX_MODELS)
    """gainCosine maps each model to the cosine of its per-prompt gain over the SFT model with the
    experts' union gain, over all domains."""
    judge_accuracy: list[JudgeAccuracy] | None = Field(None, max_length=2 * MAX_MODELS)
    """judgeAccuracy lists each judge's accuracy per mode."""


class EvalSuiteStatus(StatusBase):
    """The observed state of an EvalSuite."""

    results: list[EvalResult] | None = Field(
        None,
        max_length=MAX_MODELS * MAX_BENCHMARKS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["model", "benchmark"],
        },
    )
    """results is the models x benchmarks table, one entry per cell."""
    cells_total: int | None = Field(None, ge=0)
    """cellsTotal is the number of cells (models x benchmarks)."""
    cells_succeeded: int | None = Field(None, ge=0)
    """cellsSucceeded is the number of finished cells."""
    waiting_for: list[Annotated[str, StringConstraints(max_length=128)]] | None = Field(
        None, max_length=MAX_MODELS
    )
    """waitingFor lists the referenced RLVRRuns/MergeJobs (as Kind/name) that have not succeeded yet."""
    analysis: EvalAnalysisStatus | None = None
    """analysis summarises the analyses once their pod has finished."""
