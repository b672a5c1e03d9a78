"""EvalSuite: models x benchmarks, generated with vLLM and scored by the training verifiers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from m2rl_operator.api.base import (
    ApiModel,
    Rule,
    exactly_one,
    field_rules,
    immutable,
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
)

MAX_MODELS = 32
MAX_BENCHMARKS = 32

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


class EvalSuiteSpec(SchedulingOptions):
    """The desired state of an EvalSuite."""

    models: list[EvalModel] = Field(
        min_length=1, max_length=MAX_MODELS, json_schema_extra=field_rules(_unique_names("model"))
    )
    """models to evaluate (1 to 32); adding models later evaluates only the new rows. Required."""
    benchmarks: list[BenchmarkSpec] = Field(
        min_length=1,
        max_length=MAX_BENCHMARKS,
        json_schema_extra=field_rules(
            _unique_names("benchmark"),
            immutable("benchmarks", "results already in the table were computed on them"),
        ),
    )
    """benchmarks to run every model on (1 to 32). Required; immutable."""
    sampling: SamplingSpec = Field(
        default_factory=SamplingSpec,
        json_schema_extra=field_rules(
            immutable("sampling", "results already in the table were computed with it")
        ),
    )
    """sampling holds the generation settings. Default: temperature 0.6, topP 0.95, 32768 tokens.
    Immutable."""
    worker: EvalWorkerSpec = Field(default_factory=EvalWorkerSpec)
    """worker sizes and places the evaluation pods. Default: 1 GPU, one pod at a time."""
    verifier: VerifierServiceSpec = Field(default_factory=VerifierServiceSpec)
    """verifier sizes and isolates the sandbox used by code benchmarks. Default: 1 replica."""


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
