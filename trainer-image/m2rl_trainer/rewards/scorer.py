"""The batched interface: `Scorer.score(samples) -> results`, routed by each sample's verifier type.

A scorer is configured once (enabled verifier types with their default options, pool sizes,
sandbox settings); everything that makes no sense fails then, with a ConfigError. Each batch is
validated whole (types, merged options, references) before any sample is checked, so a bad sample
is an error, never a silent 0. Checks then run concurrently: multiple choice inline, math and
IFEval on warm Python worker processes, code on warm bubblewrap sandboxes; each pool has its own
threads, so a backlog of slow code never delays math.

Training (in-process) and the HTTP service use this same class, hence the same results.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

from m2rl_trainer.rewards import code_verifier, ifeval_verifier
from m2rl_trainer.rewards.metrics import VerifierMetrics
from m2rl_trainer.rewards.options import options_to_dict
from m2rl_trainer.rewards.registry import (
    INLINE,
    PYTHON_WORKER,
    SANDBOX,
    VERIFIERS,
    VerifierSpec,
    get_verifier,
)
from m2rl_trainer.rewards.sandbox import SandboxConfig, sandbox_worker_spec
from m2rl_trainer.rewards.types import ERROR, TIMEOUT, ConfigError, Result, Sample
from m2rl_trainer.rewards.workers import Reply, WorkerPool, WorkerSpec

PYTHON_GRACE_S = 2.0  # past a check's own limit, the host waits this long before killing the worker


@dataclass(frozen=True)
class ScorerConfig:
    """How a scorer runs.

    verifiers: enabled verifier types -> their default options (a sample's options override them);
      None enables every registered type with its defaults. A type not listed is refused.
    python_workers: processes for math and IFEval checks (each check is single-threaded CPU work).
    sandbox_workers: warm bubblewrap sandboxes for code; each runs one program at a time.
    warm_up: import math-verify / IFEval in the workers at start (about 1-3 s) rather than on the
      first sample, so the first request is not slow.
    """

    verifiers: Mapping[str, Mapping[str, Any]] | None = None
    python_workers: int = 2
    sandbox_workers: int = 2
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    warm_up: bool = True

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScorerConfig:
        """From a config file's mapping; unknown keys are errors."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"scorer config: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        values = dict(raw)
        if "sandbox" in values:
            sandbox_raw = values["sandbox"] or {}
            sandbox_allowed = {f.name for f in fields(SandboxConfig)}
            bad = sorted(set(sandbox_raw) - sandbox_allowed)
            if bad:
                raise ConfigError(
                    f"scorer config: unknown sandbox key(s) {bad}; allowed: {sorted(sandbox_allowed)}"
                )
            if "extra_ro_binds" in sandbox_raw:
                sandbox_raw = {**sandbox_raw, "extra_ro_binds": tuple(sandbox_raw["extra_ro_binds"])}
            values["sandbox"] = SandboxConfig(**sandbox_raw)
        for key in ("python_workers", "sandbox_workers"):
            if key in values and (not isinstance(values[key], int) or values[key] < 1):
                raise ConfigError(f"scorer config: {key} must be an integer >= 1, got {values[key]!r}")
        if values.get("verifiers") is not None and not isinstance(values["verifiers"], Mapping):
            raise ConfigError("scorer config: 'verifiers' must map verifier names to option objects")
        return cls(**values)


@dataclass(frozen=True)
class Prepared:
    """A validated sample: its spec and parsed options, ready to run."""

    index: int
    sample: Sample
    spec: VerifierSpec
    options: Any


class Scorer:
    def __init__(
        self,
        config: ScorerConfig | Mapping[str, Any] | None = None,
        *,
        metrics: VerifierMetrics | None = None,
    ) -> None:
        if config is None:
            config = ScorerConfig()
        elif isinstance(config, Mapping):
            config = ScorerConfig.from_dict(config)
        self.config = config
        self.metrics = metrics
        enabled = config.verifiers if config.verifiers is not None else {name: {} for name in VERIFIERS}
        self.defaults: dict[str, dict[str, Any]] = {}
        for name, defaults in enabled.items():
            spec = get_verifier(name)
            if not isinstance(defaults, Mapping):
                raise ConfigError(f"verifier {name!r}: default options must be an object, got {defaults!r}")
            spec.parse_options(defaults)  # fail now, at configuration time
            self.defaults[name] = dict(defaults)
        self._options_cache: dict[tuple[str, str], Any] = {}
        self._cache_lock = threading.Lock()
        self._pending = {PYTHON_WORKER: 0, SANDBOX: 0}
        self._pending_lock = threading.Lock()
        executors = {get_verifier(name).executor for name in self.defaults}
        self.python_pool: WorkerPool | None = None
        self.sandbox_pool: WorkerPool | None = None
        self._executors: dict[str, ThreadPoolExecutor] = {}
        try:
            # Workers start in their own threads at once; the imports below overlap with theirs.
            if PYTHON_WORKER in executors:
                self.python_pool = self._python_pool()
                self._executors[PYTHON_WORKER] = ThreadPoolExecutor(config.python_workers, "score-python")
            if SANDBOX in executors:
                self.sandbox_pool = WorkerPool(
                    sandbox_worker_spec(config.sandbox, self._on_kill("sandbox")), config.sandbox_workers
                )
                self._executors[SANDBOX] = ThreadPoolExecutor(config.sandbox_workers, "score-sandbox")
            if "ifeval" in self.defaults:
                ifeval_verifier.registry()  # reference checks in this process need IFEval's checker table
            for pool in (self.python_pool, self.sandbox_pool):
                if pool is not None:
                    pool.wait_started()
        except BaseException:
            self.close()
            raise

    # --- set-up -------------------------------------------------------------------------------------

    def _on_kill(self, pool: str) -> Any:
        def on_kill(reason: str) -> None:
            if self.metrics is not None:
                self.metrics.worker_killed(pool, reason)

        return on_kill

    def _python_pool(self) -> WorkerPool:
        preload = []
        if self.config.warm_up:
            preload = [n for n in self.defaults if get_verifier(n).executor == PYTHON_WORKER]
        spec = WorkerSpec(
            name="python",
            argv=[sys.executable, "-m", "m2rl_trainer.rewards.pyworker", *preload],
            ready_timeout_s=120.0,
            on_kill=self._on_kill("python"),
        )
        return WorkerPool(spec, self.config.python_workers)

    # --- validation ---------------------------------------------------------------------------------

    def _options(self, spec: VerifierSpec, sample_options: Mapping[str, Any]) -> Any:
        merged = {**self.defaults[spec.name], **sample_options}
        key = (spec.name, json.dumps(merged, sort_keys=True, default=str))
        with self._cache_lock:
            cached = self._options_cache.get(key)
        if cached is None:
            cached = spec.parse_options(merged)
            with self._cache_lock:
                if len(self._options_cache) > 10_000:  # per-sample options are usually a handful
                    self._options_cache.clear()
                self._options_cache[key] = cached
        return cached

    def prepare(self, samples: Sequence[Sample | Mapping[str, Any]]) -> list[Prepared]:
        """Validate a whole batch; the first problem raises ConfigError naming the sample."""
        prepared = []
        for index, raw in enumerate(samples):
            where = f"samples[{index}]"
            try:
                sample = raw if isinstance(raw, Sample) else Sample.from_dict(raw, where=where)
                if sample.id is not None:
                    where = f"samples[{index}] (id {sample.id!r})"
                spec = get_verifier(sample.verifier)
                if spec.name not in self.defaults:
                    enabled = sorted(self.defaults)
                    raise ConfigError(
                        f"verifier {spec.name!r} is not enabled in this scorer; enabled: {enabled}"
                    )
                options = self._options(spec, sample.options)
                spec.check_reference(sample.reference, options)
            except ConfigError as exc:
                message = str(exc)
                raise ConfigError(
                    message if message.startswith("samples[") else f"{where}: {message}"
                ) from None
            prepared.append(Prepared(index, sample, spec, options))
        return prepared

    # --- running ------------------------------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        """Samples submitted and not finished, per pool: the service's back-pressure signal."""
        with self._pending_lock:
            return dict(self._pending)

    def submit(self, prepared: Sequence[Prepared]) -> list[Future[Result]]:
        """Start checking validated samples; one future per sample, in order."""
        futures: list[Future[Result]] = []
        for item in prepared:
            executor = item.spec.executor
            quick = self._quick(item)
            if executor == INLINE or quick is not None:
                runner = self._run_inline if quick is None else lambda _item, result=quick: result
                future: Future[Result] = Future()
                future.set_result(self._finish(item, runner, time.monotonic()))
                futures.append(future)
                continue
            with self._pending_lock:
                self._pending[executor] += 1
            runner = self._run_python if executor == PYTHON_WORKER else self._run_code
            future = self._executors[executor].submit(self._timed, item, runner)
            future.add_done_callback(functools.partial(self._done, executor))
            futures.append(future)
        return futures

    def score(self, samples: Sequence[Sample | Mapping[str, Any]]) -> list[Result]:
        """Validate then score a batch; results are in the samples' order."""
        return [future.result() for future in self.submit(self.prepare(samples))]

    def _done(self, executor: str, _future: Future[Result]) -> None:
        with self._pending_lock:
            self._pending[executor] -= 1

    def _timed(self, item: Prepared, runner: Any) -> Result:
        return self._finish(item, runner, None)

    def _finish(self, item: Prepared, runner: Any, start: float | None) -> Result:
        start = time.monotonic() if start is None else start
        try:
            result = runner(item)
        except Exception as exc:  # a verifier bug or a dead pool: reported as such, never a silent 0
            result = Result(0.0, ERROR, {"error": f"{type(exc).__name__}: {exc}"})
        result.time_s = time.monotonic() - start
        result.id = item.sample.id
        result.verifier = item.spec.name
        if self.metrics is not None:
            self.metrics.observe(result)
        return result

    def _quick(self, item: Prepared) -> Result | None:
        """The verifier's in-process verdict for easy cases, if it has one (errors: no shortcut)."""
        if item.spec.quick_verdict is None:
            return None
        try:
            return item.spec.quick_verdict(item.sample.response, item.sample.reference, item.options)
        except Exception:  # the full check in its executor reports what is wrong
            return None

    def _run_inline(self, item: Prepared) -> Result:
        return item.spec.verify(item.sample.response, item.sample.reference, item.options)

    def _run_python(self, item: Prepared) -> Result:
        assert self.python_pool is not None
        message = {
            "verifier": item.spec.name,
            "response": item.sample.response,
            "reference": item.sample.reference,
            "options": options_to_dict(item.options),
        }
        limit = float(item.options.timeout_s)
        with self.python_pool.lease() as worker:
            reply = worker.call(message, limit + PYTHON_GRACE_S)
        if reply.status == "timeout":
            return Result(0.0, TIMEOUT, {"reason": f"check exceeded {limit} s; worker killed and replaced"})
        if reply.status != "ok" or reply.message is None:
            return Result(0.0, ERROR, {"error": f"python worker failed: {reply.detail}"})
        if "error" in reply.message:
            return Result(0.0, ERROR, {"error": reply.message["error"]})
        return Result.from_dict(reply.message["result"])

    def _run_code(self, item: Prepared) -> Result:
        assert self.sandbox_pool is not None
        grace = self.config.sandbox.host_grace_s
        with self.sandbox_pool.lease() as worker:

            def run(job: dict[str, Any], max_wall_s: float) -> Reply:
                return worker.call(job, max_wall_s + grace)

            return code_verifier.verify(item.sample.response, item.sample.reference, item.options, run)

    # --- state --------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        pools = {}
        for name, pool in (("python", self.python_pool), ("sandbox", self.sandbox_pool)):
            if pool is not None:
                pools[name] = {
                    "size": pool.size,
                    "alive": len(pool.pids()),
                    "busy": pool.busy(),
                    "restarts": sum(w.restarts for w in pool.workers),
                    # what the workers reported at start (for sandboxes: priority, seccomp)
                    "worker": {
                        k: v for k, v in pool.workers[0].ready_info.items() if k not in ("ready", "pid")
                    },
                }
        return {"verifiers": sorted(self.defaults), "pools": pools, "pending": self.pending()}

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=True, cancel_futures=True)
        for pool in (self.python_pool, self.sandbox_pool):
            if pool is not None:
                pool.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def score(
    samples: Sequence[Sample | Mapping[str, Any]], config: ScorerConfig | Mapping[str, Any] | None = None
) -> list[Result]:
    """One-shot scoring: a scorer with the batch's verifier types enabled, closed afterwards.

    Starting pools costs up to a few seconds; a training loop keeps one Scorer instead.
    """
    if config is None:
        names = sorted({s.verifier if isinstance(s, Sample) else str(s.get("verifier")) for s in samples})
        for name in names:
            get_verifier(name)
        config = ScorerConfig(verifiers={name: {} for name in names})
    with Scorer(config) as scorer:
        return scorer.score(samples)
