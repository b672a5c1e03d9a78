"""`analysis.yaml`: the study's information, prediction-behaviour and self-verification analyses of an
EvalSuite, as the operator renders its `spec.analysis` (next to eval.yaml, which names the models and
benchmarks referred to here). Unknown keys are errors naming their path; names are checked against
eval.yaml before anything is read or loaded. A section that is absent is not run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from m2rl_trainer.config import ConfigError
from m2rl_trainer.config import _build as build_dataclass
from m2rl_trainer.eval.config import EvalConfig

Mode = Literal["outcome", "reasoning"]


@dataclass(frozen=True)
class DomainConfig:
    """A domain: benchmarks of eval.yaml analysed together, and its expert (a model of eval.yaml)."""

    name: str
    benchmarks: list[str]
    expert: str | None = None  # the model trained on this domain alone; None: no expert


@dataclass(frozen=True)
class InformationConfig:
    """KL cross-matrix and policy-neighbourhood test on trajectories sampled per domain."""

    models: list[str] = field(default_factory=list)  # empty: the experts and the mixed model
    prompts: int = 16  # per domain: its benchmarks' first prompts, in order
    samples: int = 4  # trajectories per prompt and sampling model
    max_response_tokens: int = 1024  # per trajectory
    epsilon: float = 1.0  # nats per sequence: B is in A's neighbourhood when KL(A || B) < epsilon
    seed: int = 0


@dataclass(frozen=True)
class PredictionConfig:
    """Per-prompt gains over the SFT model and their cosine with the experts' union gain."""


@dataclass(frozen=True)
class SelfVerificationConfig:
    """Each judge model as a generative verifier of one model's evaluated responses."""

    responses_from: str  # the model whose responses (eval samples) are judged
    judges: list[str] = field(default_factory=list)  # empty: every model of eval.yaml
    responses: int = 32  # per domain: the first samples of its benchmarks, prompt-major
    modes: list[Mode] = field(default_factory=lambda: ["outcome", "reasoning"])
    max_response_tokens: int = 1024  # of a judgement


@dataclass(frozen=True)
class AnalysisConfig:
    domains: list[DomainConfig]
    sft: str | None = None  # the SFT model all gains are measured from (prediction)
    mixed: str | None = None  # the mixed multi-task model
    merged: list[str] = field(default_factory=list)  # merged models
    information: InformationConfig | None = None
    prediction: PredictionConfig | None = None
    self_verification: SelfVerificationConfig | None = None
    wait_s: float = 86400.0  # how long to wait for the models' evaluation outputs
    poll_s: float = 30.0  # how often to look for them

    @property
    def experts(self) -> dict[str, str]:
        """domain -> expert model name, for the domains that have one."""
        return {d.name: d.expert for d in self.domains if d.expert}

    def information_models(self) -> list[str]:
        if self.information and self.information.models:
            return list(self.information.models)
        return list(dict.fromkeys([*self.experts.values(), *([self.mixed] if self.mixed else [])]))

    def judges(self, config: EvalConfig) -> list[str]:
        if self.self_verification and self.self_verification.judges:
            return list(self.self_verification.judges)
        return [m.name for m in config.models]


def parse_analysis_config(data: Any, eval_config: EvalConfig) -> AnalysisConfig:
    config: AnalysisConfig = build_dataclass(AnalysisConfig, data, "")
    if problems := validate(config, eval_config):
        raise ConfigError("; ".join(problems))
    return config


def load_analysis_config(path: str | Path, eval_config: EvalConfig) -> AnalysisConfig:
    where = str(path)
    try:
        text = Path(path).read_text()
        data = json.loads(text) if where.endswith(".json") else yaml.safe_load(text)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read config file ({error.strerror})") from error
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where}: not valid YAML/JSON: {error}") from error
    try:
        return parse_analysis_config(data, eval_config)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error


def validate(config: AnalysisConfig, eval_config: EvalConfig) -> list[str]:
    """Names that eval.yaml does not define, missing requirements and bad numbers, naming the field."""
    models = {m.name for m in eval_config.models}
    benchmarks = {b.name for b in eval_config.benchmarks}
    problems: list[str] = []

    def model(where: str, name: str | None) -> None:
        if name is not None and name not in models:
            problems.append(f"{where}: {name!r} is not a model of the suite ({', '.join(sorted(models))})")

    if not config.domains:
        problems.append("domains: at least one domain is required")
    seen: set[str] = set()
    for i, d in enumerate(config.domains):
        if d.name in seen:
            problems.append(f"domains[{i}].name: duplicate domain {d.name!r}")
        seen.add(d.name)
        if not d.benchmarks:
            problems.append(f"domains[{i}].benchmarks: at least one benchmark is required")
        for j, b in enumerate(d.benchmarks):
            if b not in benchmarks:
                problems.append(
                    f"domains[{i}].benchmarks[{j}]: {b!r} is not a benchmark of the suite "
                    f"({', '.join(sorted(benchmarks))})"
                )
        model(f"domains[{i}].expert", d.expert)
    model("sft", config.sft)
    model("mixed", config.mixed)
    for i, name in enumerate(config.merged):
        model(f"merged[{i}]", name)
    if config.prediction is not None:
        if config.sft is None:
            problems.append("sft: required by prediction (gains are measured from the SFT model)")
        if not config.experts:
            problems.append("domains[].expert: prediction needs at least one expert (the union gain)")
    if (info := config.information) is not None:
        for i, name in enumerate(info.models):
            model(f"information.models[{i}]", name)
        if not config.information_models():
            problems.append("information.models: no models (and no experts or mixed model to default to)")
        for name, value, low in (("prompts", info.prompts, 1), ("samples", info.samples, 1)):
            if value < low:
                problems.append(f"information.{name}: must be at least {low}, got {value}")
        if info.max_response_tokens < 1:
            problems.append("information.max_response_tokens: must be at least 1")
        if not info.epsilon > 0:
            problems.append(f"information.epsilon: must be > 0, got {info.epsilon}")
    if (sv := config.self_verification) is not None:
        model("self_verification.responses_from", sv.responses_from)
        for i, name in enumerate(sv.judges):
            model(f"self_verification.judges[{i}]", name)
        if sv.responses < 1:
            problems.append(f"self_verification.responses: must be at least 1, got {sv.responses}")
        if not sv.modes or len(set(sv.modes)) != len(sv.modes):
            problems.append("self_verification.modes: one or both of outcome, reasoning, each once")
        if sv.max_response_tokens < 1:
            problems.append("self_verification.max_response_tokens: must be at least 1")
    if config.information is None and config.prediction is None and config.self_verification is None:
        problems.append("information, prediction, self_verification: none is set; nothing to analyse")
    if config.wait_s < 0 or config.poll_s <= 0:
        problems.append("wait_s, poll_s: wait_s must be >= 0 and poll_s > 0")
    return problems
