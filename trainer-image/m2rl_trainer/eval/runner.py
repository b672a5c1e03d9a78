"""Evaluate one model on every benchmark of an eval config.

    prompts (datasets, references checked) -> tokenizer (prompts rendered) -> scorer + engine
      -> per benchmark, chunk by chunk: generate k samples per prompt, score them in the background
         while the next chunk generates -> metrics -> outputs (all or nothing)

Everything that can be wrong with the data is found before a model is loaded or a server started.
Nothing here is new machinery: datasets come from `data.datasets`, generation from the rollout
engines (a vLLM server started here, an already running one, or Hugging Face `generate`), and
rewards from the training verifiers (`rewards.Scorer`), so an eval scores exactly as training does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from m2rl_trainer.config import DomainConfig
from m2rl_trainer.data.datasets import DatasetError, Prompt, load_domain, render_prompt
from m2rl_trainer.eval.config import BenchmarkConfig, EvalConfig, ModelConfig
from m2rl_trainer.eval.metrics import ANSWER_VERIFIERS, compute_metrics
from m2rl_trainer.rewards import VERIFIERS, Result, Sample, Scorer, ScorerConfig
from m2rl_trainer.rewards import ConfigError as VerifierConfigError
from m2rl_trainer.rewards.types import ERROR, SANDBOX_ERROR
from m2rl_trainer.rollout.base import Completion, RolloutEngine, SamplingParams
from m2rl_trainer.rollout.server import VLLMServerRollout, derive_seed
from m2rl_trainer.rollout.vllm_server import VLLMServer, VLLMServerConfig

log = logging.getLogger("m2rl.eval")

Engine = Literal["vllm", "hf"]
ENGINES: tuple[Engine, ...] = ("vllm", "hf")


class EvalError(RuntimeError):
    """An evaluation that cannot go on (no server, unusable model); the message says which part."""


@dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what to evaluate (the config)."""

    engine: Engine = "vllm"  # vllm as in the cluster; hf runs `generate` in-process (CPU tests, local runs)
    server_url: str | None = None  # vllm only: use this running server instead of starting one
    output_dir: Path | None = None  # None: only the summary is returned
    # Prompts per generate call: one progress line each, and the scoring of one chunk overlaps the
    # generation of the next. Part of each chunk's seed, so changing it changes the samples.
    chunk_prompts: int = 64
    # Math / IFEval worker processes and code sandboxes; capped because the eval pod's CPUs also
    # serve vLLM's scheduler and tokenisation.
    scorer_workers: int = field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))
    request_timeout_s: float = 3600.0  # one vLLM request = k long responses; minutes are normal


@dataclass
class BenchmarkResult:
    """One cell of the results table, with what is needed to trust it."""

    benchmark: str
    metrics: dict[str, float]  # keyed by the metric names exactly as configured
    prompts: int
    samples: int  # k, per prompt
    verdicts: dict[str, int]  # verdict -> samples
    truncated: int  # samples that hit the token limit (finish_reason "length")
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "metrics": dict(self.metrics), "prompts": self.prompts}


@dataclass
class ModelResult:
    model: str
    path: str
    engine: str
    results: list[BenchmarkResult]

    def to_json(self, config: EvalConfig) -> dict[str, Any]:
        """`results.json`: the termination message's shape plus details and the settings used."""
        return {
            "model": self.model,
            "path": self.path,
            "engine": self.engine,
            "sampling": asdict(config.sampling),
            "results": [asdict(r) for r in self.results],
        }


# ---- data ------------------------------------------------------------------------------------------


def load_benchmark(benchmark: BenchmarkConfig) -> list[Prompt]:
    """The benchmark's prompts, with every reference checked by its verifier (no model needed)."""
    domain = DomainConfig(
        name=benchmark.name,
        dataset=benchmark.dataset,
        verifier=benchmark.verifier,
        fields=benchmark.fields,
        verifier_options=dict(benchmark.verifier_options),
    )
    prompts = load_domain(domain)
    spec = VERIFIERS[benchmark.verifier]
    options = spec.parse_options(benchmark.verifier_options)
    for prompt in prompts:
        try:
            spec.check_reference(prompt.reference, options)
        except VerifierConfigError as error:
            raise DatasetError(
                f"benchmark {benchmark.name!r}: {benchmark.dataset}: prompt {prompt.id}: "
                f"field {benchmark.fields.reference!r}: {error}"
            ) from None
    return prompts


def load_benchmarks(config: EvalConfig) -> dict[str, list[Prompt]]:
    return {b.name: load_benchmark(b) for b in config.benchmarks}


# ---- engines ---------------------------------------------------------------------------------------


def served_model_name(url: str, model: ModelConfig) -> str:
    """The name to send to a running server: its only model, or the one named like `model`."""
    try:
        response = httpx.get(url.rstrip("/") + "/v1/models", timeout=30.0, trust_env=False)
        response.raise_for_status()
        served = [entry["id"] for entry in response.json()["data"]]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
        raise EvalError(f"--server-url {url}: cannot list its models (/v1/models): {error}") from error
    if len(served) == 1:
        return str(served[0])
    for candidate in (model.name, model.path):
        if candidate in served:
            return candidate
    raise EvalError(f"--server-url {url} serves {served}; none is named {model.name!r} or {model.path!r}")


def vllm_server_config(
    model: ModelConfig, config: EvalConfig, *, max_model_len: int, gpus: int
) -> VLLMServerConfig:
    """The pod's own vLLM server for `model` (pure: `gpus` is passed in)."""
    extra: list[str] = []
    if gpus > 0:
        extra += ["--tensor-parallel-size", str(config.vllm.tensor_parallel_size)]
        extra += ["--gpu-memory-utilization", str(config.vllm.gpu_memory_utilization)]
    extra += config.vllm.extra_args  # last, so the user's flags win (argparse keeps the last value)
    return VLLMServerConfig(
        model=Path(model.path),
        served_model_name=model.name,
        dtype="auto" if gpus > 0 else "float32",  # CPU: bf16 kernels are slow or missing
        # Exactly what the longest prompt plus its response needs: the KV cache holds more sequences.
        max_model_len=max_model_len,
        enforce_eager=gpus == 0,  # GPU: CUDA graphs pay back their start-up on long generations
        dev_mode=False,  # evaluation never reloads weights
        seed=config.sampling.seed,
        extra_args=tuple(extra),
        startup_timeout_s=1800.0,  # a large checkpoint read from a volume takes minutes
    )


def _max_model_len(config: EvalConfig, texts: dict[str, list[str]], tokenizer: Any) -> int:
    longest = 0
    for benchmark in config.benchmarks:
        prompt_tokens = max(len(tokenizer(text)["input_ids"]) for text in texts[benchmark.name])
        longest = max(longest, prompt_tokens + config.response_tokens(benchmark))
    return longest


@contextmanager
def open_engine(
    model: ModelConfig,
    config: EvalConfig,
    options: RunOptions,
    tokenizer: Any,
    texts: dict[str, list[str]],
    log_dir: Path,
) -> Iterator[RolloutEngine]:
    """The rollout engine for `model`, closed (and its server stopped) on exit."""
    if options.engine == "hf":
        with _hf_engine(model, tokenizer) as engine:
            yield engine
        return
    # Evaluation reads only the text: any temperature / top_p is fine (no logprob-mode check).
    rollout_args: dict[str, Any] = {
        "timeout_s": options.request_timeout_s,
        "max_retries": 2,
        "policy_logprobs": False,
    }
    if options.server_url:
        name = served_model_name(options.server_url, model)
        log.info("using the vLLM server at %s (model %r)", options.server_url, name)
        with VLLMServerRollout([options.server_url], name, tokenizer, **rollout_args) as shared:
            yield shared
        return
    import torch

    server_config = vllm_server_config(
        model, config, max_model_len=_max_model_len(config, texts, tokenizer), gpus=torch.cuda.device_count()
    )
    server = VLLMServer(server_config, log_dir / f"vllm-{model.name}.log")
    log.info("starting vLLM on %s (log: %s)", model.path, server.log_path)
    try:
        server.wait_ready()
        log.info("vLLM ready in %.0f s at %s", server.startup_seconds or 0.0, server.url)
        with VLLMServerRollout([server.url], server.model_name, tokenizer, **rollout_args) as own:
            yield own
    finally:
        server.stop()


@contextmanager
def _hf_engine(model: ModelConfig, tokenizer: Any) -> Iterator[RolloutEngine]:
    import torch
    from transformers import AutoModelForCausalLM

    from m2rl_trainer.rollout.colocated import HFGenerateRollout

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "auto" if device == "cuda" else torch.float32  # CPU: bf16 matmuls are slow
    log.info("loading %s on %s", model.path, device)
    network: Any = AutoModelForCausalLM.from_pretrained(model.path, dtype=dtype)
    engine = HFGenerateRollout(network.to(device), tokenizer, device=device)
    try:
        yield engine
    finally:
        engine.close()


# ---- outputs ---------------------------------------------------------------------------------------


class OutputWriter:
    """A model's outputs under ROOT/MODEL/, all or nothing.

    Files are written into a hidden sibling directory and renamed into place by `commit`; on an
    exception (or without a commit) the directory is removed, so ROOT/MODEL only ever holds a
    finished evaluation (the previous one until the new one is complete).
    """

    def __init__(self, root: Path, model: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.final = root / model
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{model}.partial-", dir=root))
        self.tmp.chmod(0o755)  # mkdtemp's 0700 would hide the results from others on a shared volume

    def samples_path(self, benchmark: str) -> Path:
        return self.tmp / f"{benchmark}.samples.jsonl"

    def commit(self, results: dict[str, Any]) -> Path:
        (self.tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if self.final.exists():
            # A rename cannot replace a non-empty directory: move the old one aside first.
            old = self.tmp.with_name(self.tmp.name.replace(".partial-", ".old-"))
            os.replace(self.final, old)
            os.replace(self.tmp, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()  # a no-op after commit (the directory has been renamed)


# ---- the evaluation --------------------------------------------------------------------------------


def evaluate_model(config: EvalConfig, model_index: int, options: RunOptions) -> ModelResult:
    """Evaluate model `model_index` on every benchmark; outputs written when `options.output_dir`."""
    model = config.model(model_index)
    if options.engine not in ENGINES:
        raise EvalError(f"engine {options.engine!r} is unknown (known: {', '.join(ENGINES)})")
    if options.server_url and options.engine != "vllm":
        raise EvalError("--server-url needs --engine vllm")
    prompts = load_benchmarks(config)  # data errors before anything heavy
    tokenizer = load_tokenizer(model)
    texts = {
        b.name: [
            render_prompt(p, tokenizer, model.chat_template, model.system_prompt) for p in prompts[b.name]
        ]
        for b in config.benchmarks
    }  # the model's prompt format: the one it was trained with (the operator fills it in)
    verifiers = sorted({b.verifier for b in config.benchmarks})
    scorer_config = ScorerConfig(
        verifiers={name: {} for name in verifiers},  # options travel with each sample
        python_workers=options.scorer_workers,
        sandbox_workers=options.scorer_workers,
    )
    results: list[BenchmarkResult] = []
    with ExitStack() as stack:
        writer = None
        if options.output_dir is not None:
            writer = stack.enter_context(OutputWriter(options.output_dir, model.name))
        log_dir = writer.tmp if writer else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        scorer = stack.enter_context(Scorer(scorer_config))
        engine = stack.enter_context(open_engine(model, config, options, tokenizer, texts, log_dir))
        for index, benchmark in enumerate(config.benchmarks):
            results.append(
                run_benchmark(
                    index, benchmark, prompts[benchmark.name], texts[benchmark.name],
                    engine=engine, scorer=scorer, config=config, options=options,
                    samples_path=writer.samples_path(benchmark.name) if writer else None,
                )
            )  # fmt: skip
        result = ModelResult(model.name, model.path, options.engine, results)
        if writer is not None:
            log.info("outputs: %s", writer.commit(result.to_json(config)))
    return result


def load_tokenizer(model: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path)
    except (OSError, ValueError) as error:
        raise EvalError(
            f"model {model.name!r}: cannot load the tokenizer from {model.path}: {error}"
        ) from error


def run_benchmark(
    index: int,
    benchmark: BenchmarkConfig,
    prompts: Sequence[Prompt],
    texts: Sequence[str],
    *,
    engine: RolloutEngine,
    scorer: Scorer,
    config: EvalConfig,
    options: RunOptions,
    samples_path: Path | None,
) -> BenchmarkResult:
    """Generate, score and summarise one benchmark (per-sample records to `samples_path`)."""
    started = time.monotonic()
    k, total = benchmark.samples, len(prompts)
    s = config.sampling
    log.info("%s: %d prompts x %d samples", benchmark.name, total, k)
    rewards: list[list[float]] = []
    answers: list[list[str | None]] = []
    verdicts: Counter[str] = Counter()
    truncated = 0
    pending: list[tuple[int, list[list[Completion]], Future[list[Result]]]] = []
    with ExitStack() as stack:
        records = stack.enter_context(samples_path.open("w")) if samples_path else None
        background = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="eval-score"))

        def collect(start: int, groups: list[list[Completion]], scored: list[Result]) -> None:
            nonlocal truncated
            for offset, group in enumerate(groups):
                prompt = prompts[start + offset]
                row = scored[offset * k : (offset + 1) * k]
                rewards.append([r.reward for r in row])
                answers.append([_answer(benchmark.verifier, r) for r in row])
                for j, (completion, result) in enumerate(zip(group, row, strict=True)):
                    verdicts[result.verdict] += 1
                    truncated += completion.finish_reason == "length"
                    if records is not None:
                        records.write(
                            json.dumps(_record(prompt, j, completion, result, answers[-1][j])) + "\n"
                        )

        for start in range(0, total, options.chunk_prompts):
            chunk = list(range(start, min(start + options.chunk_prompts, total)))
            params = SamplingParams(
                n=k,
                max_tokens=config.response_tokens(benchmark),
                temperature=s.temperature,
                top_p=s.top_p,
                # Distinct per benchmark and chunk: engines derive per-prompt seeds from the index
                # within a call, and equal seeds on different prompts give correlated samples.
                seed=derive_seed(derive_seed(s.seed, index), start),
            )
            groups = engine.generate([texts[i] for i in chunk], params)
            samples = [
                Sample(
                    benchmark.verifier,
                    c.text,
                    prompts[i].reference,
                    benchmark.verifier_options,
                    id=prompts[i].id,
                )
                for i, group in zip(chunk, groups, strict=True)
                for c in group
            ]
            pending.append((start, groups, background.submit(scorer.score, samples)))
            while pending and pending[0][2].done():  # write finished chunks in order as they come
                first, done_groups, future = pending.pop(0)
                collect(first, done_groups, future.result())
            log.info(
                "%s: %d/%d prompts generated (%.0f s)",
                benchmark.name, chunk[-1] + 1, total, time.monotonic() - started,
            )  # fmt: skip
        for first, done_groups, future in pending:
            collect(first, done_groups, future.result())
    metrics = compute_metrics(benchmark.metrics, rewards, answers)
    seconds = time.monotonic() - started
    shown = " ".join(f"{name}={value:.4f}" for name, value in metrics.items())
    log.info(
        "%s: %s (%d prompts x %d samples, %d truncated, %.0f s; verdicts %s)",
        benchmark.name, shown, total, k, truncated, seconds, dict(verdicts),
    )  # fmt: skip
    if broken := verdicts[ERROR] + verdicts[SANDBOX_ERROR]:
        # Scored 0 like wrong answers, but they measure the verifier, not the model.
        log.warning(
            "%s: %d samples could not be checked (verdict error/sandbox_error)", benchmark.name, broken
        )
    return BenchmarkResult(benchmark.name, metrics, total, k, dict(verdicts), truncated, round(seconds, 3))


def _answer(verifier: str, result: Result) -> str | None:
    """The answer a sample votes with in maj@ (None: it has none)."""
    if verifier not in ANSWER_VERIFIERS:
        return None
    extracted = result.details.get("extracted")
    return None if extracted is None else str(extracted)


def _record(
    prompt: Prompt, sample: int, completion: Completion, result: Result, answer: str | None
) -> dict[str, Any]:
    return {
        "prompt_id": prompt.id,
        "sample": sample,
        "response": completion.text,
        "reward": result.reward,
        "verdict": result.verdict,
        "answer": answer,
        "finish_reason": completion.finish_reason,
        "response_tokens": len(completion.token_ids),
        "details": result.details,
    }
