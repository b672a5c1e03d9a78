"""`eval.yaml`: the models x benchmarks of an EvalSuite, as the operator renders it.

The operator's `build_eval_config` writes this file into a ConfigMap; every pod of the Indexed Job
reads it and evaluates model `--model-index`. The trainer image owns the schema. Everything is
checked here, before a dataset is read or a model loaded: unknown keys, missing fields, unknown
verifiers and their options, metric names, and the model index. Errors name the field path
(`benchmarks[1].verifier: ...`).

`sampling` is the one section with camelCase keys (the operator dumps the API's SamplingSpec as is);
snake_case spellings are accepted too, for hand-written files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from m2rl_trainer.config import ConfigError, FieldMapping
from m2rl_trainer.config import _build as build_dataclass
from m2rl_trainer.eval.metrics import ANSWER_VERIFIERS, parse_metric
from m2rl_trainer.rewards import VERIFIERS
from m2rl_trainer.rewards import ConfigError as VerifierConfigError

__all__ = [
    "BenchmarkConfig",
    "ConfigError",
    "EvalConfig",
    "ModelConfig",
    "SamplingConfig",
    "VLLMOptions",
    "load_eval_config",
    "parse_eval_config",
]

# Names become directory and file names of the outputs: no separators, no leading dot.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelConfig:
    """One model: a row of the results table."""

    name: str  # the row label; also the output subdirectory
    path: str  # a local Hugging Face folder, or a Hub id ORG/NAME (hf:// URIs)
    # The prompt format, with the trainer's defaults (m2rl_trainer.config.DataConfig): a model is
    # evaluated as it was trained. The operator always writes both (EvalSuite models inherit their
    # run's format).
    chat_template: bool = False  # wrap prompts in the tokenizer's chat template
    system_prompt: str | None = None  # prepended as a system message; needs chat_template


@dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmark: a column of the results table."""

    name: str
    dataset: str  # local file (.jsonl, .json list, .parquet; .csv for gpqa) or a folder (livecodebench)
    # A registered verifier type: math, code, multiple_choice, ifeval; "" means the format's own.
    verifier: str = ""
    fields: FieldMapping = field(default_factory=FieldMapping)  # the jsonl format's column mapping
    # The published layout the file is in (eval/benchmarks: jsonl, aime24, gpqa, livecodebench, ...)
    # and that adapter's options (e.g. LiveCodeBench's release and date window).
    format: str = "jsonl"
    format_options: dict[str, Any] = field(default_factory=dict)
    verifier_options: dict[str, Any] = field(default_factory=dict)
    samples: int = 1  # k: responses per prompt
    metrics: list[str] = field(default_factory=lambda: ["avg@k"])  # as written; also the result keys
    max_response_tokens: int | None = None  # None: sampling.max_response_tokens


@dataclass(frozen=True)
class SamplingConfig:
    """Generation settings shared by every benchmark; defaults are the API's."""

    temperature: float = 0.6  # Qwen3's recommendation for thinking mode; 0 is greedy
    top_p: float = 0.95
    top_k: int | None = None  # None: no top-k filter (the only value the rollout engines support)
    max_response_tokens: int = 32768  # new tokens per response
    seed: int = 0


@dataclass(frozen=True)
class VLLMOptions:
    """How the pod's own vLLM server is started (ignored with --server-url and --engine hf)."""

    tensor_parallel_size: int = 1  # GPUs one model is sharded over
    gpu_memory_utilization: float = 0.9  # fraction of each GPU's memory vLLM may take
    extra_args: list[str] = field(default_factory=list)  # appended to vLLM's command line


@dataclass(frozen=True)
class EvalConfig:
    models: list[ModelConfig]
    benchmarks: list[BenchmarkConfig]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    vllm: VLLMOptions = field(default_factory=VLLMOptions)

    def model(self, index: int) -> ModelConfig:
        """Model `index` (the pod's completion index); a clear error when out of range."""
        if not 0 <= index < len(self.models):
            raise ConfigError(
                f"--model-index {index}: out of range; the config has {len(self.models)} model(s) "
                f"(indices 0 to {len(self.models) - 1})"
            )
        return self.models[index]

    def response_tokens(self, benchmark: BenchmarkConfig) -> int:
        return benchmark.max_response_tokens or self.sampling.max_response_tokens


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake_keys(raw: Any, path: str) -> Any:
    """`sampling` keys as snake_case: topP -> top_p; both spellings of one key is an error."""
    if not isinstance(raw, dict):
        return raw  # build_dataclass reports the wrong type with its path
    result: dict[str, Any] = {}
    for key, value in raw.items():
        snake = _CAMEL.sub("_", str(key)).lower()
        if snake in result:
            raise ConfigError(f"{path}.{key}: given twice (as {snake!r} and {key!r})")
        result[snake] = value
    return result


def parse_eval_config(data: Any) -> EvalConfig:
    """Build and validate an EvalConfig from the parsed YAML; ConfigError names the first bad field."""
    if isinstance(data, dict) and "sampling" in data:
        data = {**data, "sampling": _snake_keys(data["sampling"], "sampling")}
    config: EvalConfig = build_dataclass(EvalConfig, data, "")
    problems = validate(config)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def load_eval_config(path: str | Path) -> EvalConfig:
    """Read `path` (YAML or JSON) and validate it; the message starts with the file name."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"{where}: cannot read config file ({error.strerror})") from error
    try:
        data = json.loads(text) if where.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where}: not valid YAML/JSON: {error}") from error
    try:
        return parse_eval_config(data)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error


def validate(config: EvalConfig) -> list[str]:
    """Cross-field problems, as messages that name the field (empty list: valid)."""
    problems: list[str] = []
    if not config.models:
        problems.append("models: at least one model is required")
    if not config.benchmarks:
        problems.append("benchmarks: at least one benchmark is required")
    for kind, items in (("models", config.models), ("benchmarks", config.benchmarks)):
        names = [item.name for item in items]
        for i, name in enumerate(names):
            if not _NAME.match(name):
                problems.append(
                    f"{kind}[{i}].name: {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                    "(it names output files)"
                )
            elif names.index(name) != i:
                problems.append(f"{kind}[{i}].name: duplicate name {name!r}")
    for i, model in enumerate(config.models):
        if not model.path:
            problems.append(f"models[{i}].path: must not be empty")
        if model.system_prompt is not None and not model.chat_template:
            problems.append(
                f"models[{i}].system_prompt: needs chat_template (raw prompts have no system message)"
            )
    s = config.sampling
    if s.temperature < 0:
        problems.append(f"sampling.temperature: must be >= 0, got {s.temperature}")
    if not 0 < s.top_p <= 1:
        problems.append(f"sampling.top_p: must be in (0, 1], got {s.top_p}")
    if s.top_k is not None:
        # SamplingParams has no top-k and both engines force it off; silently dropping it would
        # report numbers for another sampling distribution than the one asked for.
        problems.append("sampling.top_k: not supported by the rollout engines yet; leave it unset")
    if s.max_response_tokens < 1:
        problems.append("sampling.max_response_tokens: must be at least 1")
    for i, benchmark in enumerate(config.benchmarks):
        problems += _benchmark_problems(f"benchmarks[{i}]", benchmark, s)
    v = config.vllm
    if v.tensor_parallel_size < 1:
        problems.append("vllm.tensor_parallel_size: must be at least 1")
    if not 0 < v.gpu_memory_utilization <= 1:
        problems.append("vllm.gpu_memory_utilization: must be in (0, 1]")
    return problems


def _benchmark_problems(where: str, b: BenchmarkConfig, sampling: SamplingConfig) -> list[str]:
    from m2rl_trainer.eval.benchmarks import benchmark_problems, verifier_of

    problems: list[str] = []
    if not b.dataset:
        problems.append(f"{where}.dataset: must not be empty")
    format_problems = benchmark_problems(b, where)
    problems += format_problems
    verifier = b.verifier if format_problems else verifier_of(b)
    if verifier and verifier not in VERIFIERS:
        problems.append(
            f"{where}.verifier: unknown verifier {verifier!r}; known: {', '.join(sorted(VERIFIERS))}"
        )
    elif verifier:
        try:
            VERIFIERS[verifier].parse_options(b.verifier_options)  # unknown keys, types, ranges
        except VerifierConfigError as error:
            problems.append(f"{where}.verifier_options: {error}")
    if b.samples < 1:
        problems.append(f"{where}.samples: must be at least 1, got {b.samples}")
    elif sampling.temperature == 0 and b.samples > 1:
        problems.append(
            f"{where}.samples: {b.samples} samples with sampling.temperature 0 would all be the same "
            "greedy response; use samples 1 or a temperature above 0"
        )
    if b.max_response_tokens is not None and b.max_response_tokens < 1:
        problems.append(f"{where}.max_response_tokens: must be at least 1 (or unset)")
    if not b.metrics:
        problems.append(f"{where}.metrics: at least one metric is required")
    for j, name in enumerate(b.metrics):
        try:
            metric = parse_metric(name)
        except ValueError as error:
            problems.append(f"{where}.metrics[{j}]: {error}")
            continue
        if metric.n is not None and metric.n > b.samples:
            problems.append(
                f"{where}.metrics[{j}]: {name} needs at least {metric.n} samples per prompt; "
                f"samples is {b.samples}"
            )
        if metric.kind == "maj" and verifier not in ANSWER_VERIFIERS:
            problems.append(
                f"{where}.metrics[{j}]: {name} votes on extracted answers, which only the "
                f"{', '.join(ANSWER_VERIFIERS)} verifiers report; {verifier!r} does not"
            )
        if b.metrics.index(name) != j:
            problems.append(f"{where}.metrics[{j}]: duplicate metric {name!r}")
    return problems
