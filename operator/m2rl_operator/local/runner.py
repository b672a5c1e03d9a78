"""The local runner's loop: start what is ready, watch the processes, write statuses, stop cleanly.

It is the operator's reconcile on one machine. Every half second it
  1. resolves each waiting resource's references from the statuses it keeps (as `reconcile.resolve`
     does from the API server): Waiting while a referenced run or merge has not succeeded, Failed
     (DependencyFailed) once one failed;
  2. starts ready resources while fewer than `parallel` main processes run (a trainer, a merge, one
     model of an evaluation; an RLVRRun's verifier and vLLM servers are its sidecars and do not
     count);
  3. polls the processes and computes each status with the operator's own functions
     (`status.run_status`, `status.dependent_status`), writing it into the workdir when it changed.

Restarts follow the cluster: a failed trainer is restarted from its latest checkpoint, and a dead
verifier or vLLM server started again (as its Deployment or StatefulSet would), up to
`spec.maxRestarts` times in all; a merge is retried twice (the Job's backoffLimit), each evaluation
index once (backoffLimitPerIndex); exit code 2 (invalid input) is never retried. Ctrl-C (or SIGTERM) stops
every process (process groups, then the marker sweep), marks what was running Suspended with reason
Interrupted, and exits 130; the same command resumes: succeeded resources are skipped, runs resume
from their checkpoints, evaluations redo only the models without a result.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.builders.references import teacher_models
from m2rl_operator.builders.trainer_config import (
    checkpoint_uri,
    final_model_uri,
    has_agent_domain,
    serves_teachers,
)
from m2rl_operator.lifecycle import RunPlan as RefreshPlan
from m2rl_operator.local import processes
from m2rl_operator.local.display import Display, Row
from m2rl_operator.local.plan import (
    JobPlan,
    Layout,
    PlanError,
    ProcessPlan,
    Resource,
    RunPlan,
    input_paths,
    plan_eval,
    plan_merge,
    plan_run,
    teacher_replicas,
)
from m2rl_operator.local.store import Record, Store
from m2rl_operator.render import resolve_offline
from m2rl_operator.status import (
    Progress,
    RunObservation,
    Status,
    dependent_status,
    run_status,
    waiting_status,
)

INVALID_INPUT = 2  # the trainer image's programs exit 2 on bad config or data: a retry cannot help
CHECKPOINT_DIR = re.compile(r"^step-(\d{6,})$")  # m2rl_trainer.train.checkpoint.STEP_DIR
DONE = ("Succeeded", "Failed")


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RunnerOptions:
    """How `m2rl run` runs (the resources say what)."""

    workdir: Path
    data_root: Path
    parallel: int = 2  # main processes at once (trainers, merges, evaluated models)
    eval_engine: str = "hf"  # m2rl-eval --engine: hf (in-process generate) or vllm (a server per model)
    grace_s: float = 10.0  # SIGTERM -> SIGKILL, seconds
    poll_s: float = 0.5  # loop period, seconds
    service_timeout_s: float = 900.0  # verifier / vLLM start-up (vLLM takes 1-2 min on a busy CPU)


def _job(state: str) -> dict[str, Any]:
    """A Job object as `status.job_state` reads it, for a local process in `state`."""
    condition = {"Succeeded": "Complete", "Failed": "Failed"}.get(state)
    if condition:
        return {"spec": {}, "status": {"conditions": [{"type": condition, "status": "True"}]}}
    return {"spec": {}, "status": {"active": 1} if state == "Running" else {}}


class Workload:
    """One resource being run: its processes and its status."""

    def __init__(self, runner: LocalRunner, resource: Resource, record: Record) -> None:
        self.runner = runner
        self.resource = resource
        self.record = record
        self.children: list[processes.Child] = []  # running now
        self.started_at: float | None = None
        self.state = "Pending"  # Pending, Running, Succeeded, Failed
        self.interrupted = False
        self.launched = False  # started at least once in this invocation: its status is its own
        self.message = ""  # the last event, for the display

    # --- scheduling
    def active(self) -> int:
        """Main processes running now (what `parallel` limits)."""
        return 0

    def wants(self) -> int:
        """Main processes it could start now."""
        return 0

    def launch(self, slots: int) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.state in DONE

    # --- processes
    def spawn(self, plan: ProcessPlan) -> processes.Child:
        env = {**self.runner.base_env, **plan.env}
        if plan.result_file is not None:
            plan.result_file.parent.mkdir(parents=True, exist_ok=True)
            plan.result_file.unlink(missing_ok=True)
            env["M2RL_RESULT_PATH"] = str(plan.result_file)
        log = (
            self.runner.store.folder(self.resource.kind, self.resource.name)
            / "logs"
            / f"{plan.component}.log"
        )
        child = processes.start(plan.component, plan.argv, log=log, env=env)
        self.children.append(child)
        if self.started_at is None:
            self.started_at = time.monotonic()
        return child

    def reap(self, child: processes.Child) -> None:
        """Account a finished child's CPU time and forget it."""
        usage = self.record.usage.cpu_seconds
        usage[child.name] = round(usage.get(child.name, 0.0) + child.cpu_seconds, 3)
        if child in self.children:
            self.children.remove(child)

    def finish(self, state: str, message: str = "") -> None:
        """Done: what still runs (the services) is asked to stop; the runner reaps it without waiting."""
        self.runner.retire(self, self.children)
        self.children = []
        self.state = state
        self.message = message
        self.stop_clock()

    def stop_clock(self) -> None:
        """Add this attempt's wall-clock time to the record."""
        if self.started_at is not None:
            elapsed = time.monotonic() - self.started_at
            self.record.usage.wall_seconds = round(self.record.usage.wall_seconds + elapsed, 3)
            self.started_at = None

    def log_tail(self, child: processes.Child, lines: int = 15) -> str:
        try:
            text = child.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text)

    # --- status and display
    def status(self) -> Status:
        raise NotImplementedError

    def row(self) -> Row:
        return Row(self.resource.key, self.record.phase or "Pending", elapsed=self.elapsed())

    def elapsed(self) -> float | None:
        return None if self.started_at is None else time.monotonic() - self.started_at


# ---- RLVRRun ----------------------------------------------------------------------------------------


class RunWorkload(Workload):
    """Verifier service, agent environment and vLLM servers (rollout, MT-OPD teachers) first; the
    trainer once they answer /health. An MT-OPD run starts once its teachers' runs succeeded."""

    def __init__(self, runner: LocalRunner, resource: Resource, record: Record) -> None:
        super().__init__(runner, resource, record)
        self.spec: RLVRRunSpec = resource.spec
        self.plan: RunPlan | None = None
        self.services: dict[str, processes.Child] = {}
        self.ready: set[str] = set()
        self.trainer: processes.Child | None = None
        self.restarts = int(record.status.get("restarts") or 0)
        self.metrics_offset = 0
        self.last: dict[str, Any] | None = None  # the trainer's latest metrics record
        self.steps_seen: list[tuple[float, int]] = []  # (time, step) of this attempt, for the ETA

    def active(self) -> int:
        return 1 if self.state == "Running" else 0

    def wants(self) -> int:
        return 1 if self.state == "Pending" else 0

    def launch(self, slots: int) -> None:
        free = processes.free_port
        replicas = self.spec.rollout.replicas if self.spec.rollout.mode == "server" else 0
        self.plan = plan_run(
            self.resource,
            self.runner.layout,
            verifier_port=free(),
            rollout_ports=[free() for _ in range(replicas)],
            master_port=free(),
            resolved=self.runner.resolved,
            teacher_ports=[[free() for _ in range(n)] for n in teacher_replicas(self.spec)],
            environment_port=free() if has_agent_domain(self.spec) else None,
        )
        write_files(self.plan.files)
        self.plan.output_dir.mkdir(parents=True, exist_ok=True)
        self.read_metrics()  # an earlier attempt's steps: the progress starts where it stopped
        self.state = "Running"
        self.launched = True
        self.record.usage.attempts += 1
        for service in self.plan.services:
            self.services[service.component] = self.spawn(service)
        self.message = "starting " + ", ".join(self.services)

    def tick(self) -> None:
        assert self.plan is not None
        for plan in self.plan.services:
            child = self.services[plan.component]
            if child.poll() is not None:  # a Deployment or StatefulSet would start the pod again
                self.reap(child)
                self.ready.discard(plan.component)
                why = f"{plan.component} exited with code {child.returncode}"
                if self.restarts >= self.spec.max_restarts:
                    self.finish("Failed", f"{why}:\n{self.log_tail(child)}")
                    return
                self.restarts += 1
                self.runner.display.event(
                    f"{self.resource.key}: {why}; starting it again\n{self.log_tail(child)}"
                )
                self.services[plan.component] = self.spawn(plan)
                continue
            if plan.component not in self.ready and plan.health_url and child.healthy(plan.health_url):
                self.ready.add(plan.component)
        if self.trainer is None:
            if len(self.ready) == len(self.plan.services):
                self.trainer = self.spawn(self.plan.trainer)
                self.steps_seen = [(time.monotonic(), self.step() or 0)]
                self.message = "training"
            elif (self.elapsed() or 0.0) > self.runner.options.service_timeout_s:
                waiting = sorted(set(self.services) - self.ready)
                self.finish("Failed", f"{', '.join(waiting)} not ready after "
                                      f"{self.runner.options.service_timeout_s:.0f} s")  # fmt: skip
            return
        self.read_metrics()
        code = self.trainer.poll()
        if code is None:
            return
        trainer, self.trainer = self.trainer, None
        self.reap(trainer)
        self.read_metrics()
        if code == 0:
            self.finish("Succeeded")
        elif code != INVALID_INPUT and self.restarts < self.spec.max_restarts:
            self.restarts += 1
            self.message = (f"trainer exited with code {code}; restart {self.restarts}/"
                            f"{self.spec.max_restarts} from the latest checkpoint")  # fmt: skip
            self.runner.display.event(f"{self.resource.key}: {self.message}\n{self.log_tail(trainer)}")
        else:
            self.finish("Failed", f"trainer exited with code {code}:\n{self.log_tail(trainer)}")

    def read_metrics(self) -> None:
        """New lines of the trainer's metrics.jsonl (its durable record of every step)."""
        assert self.plan is not None
        path = self.plan.output_dir / "metrics.jsonl"
        try:
            with path.open("rb") as handle:
                handle.seek(self.metrics_offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        self.metrics_offset += len(complete)
        for line in complete.decode().splitlines():
            if line.strip():
                self.last = json.loads(line)
                self.steps_seen.append((time.monotonic(), int(self.last["step"])))

    def step(self) -> int | None:
        return int(self.last["step"]) if self.last else self.record.status.get("step")

    def progress(self) -> Progress | None:
        if self.last is None:
            return None
        domains = {
            name: {"reward": float(v["reward"]), "accuracy": float(v["accuracy"])}
            for name, v in self.last.get("per_domain", {}).items()
        }
        return Progress(step=int(self.last["step"]), domains=domains, checkpoint_step=self.checkpoint_step())

    def checkpoint_step(self) -> int | None:
        """The newest complete checkpoint (a step-N folder with its checksums written)."""
        assert self.plan is not None
        root = self.plan.output_dir / "checkpoints"
        steps = [
            int(match.group(1))
            for p in root.glob("step-*")
            if (match := CHECKPOINT_DIR.match(p.name)) and (p / "checksums.json").is_file()
        ]  # not step-N.tmp: the trainer writes its checksums there before the rename that completes it
        return max(steps, default=None)

    def status(self) -> Status:
        state = self.state if self.trainer is not None or self.done else "Pending"
        spec = self.spec.model_copy(update={"suspend": True}) if self.interrupted else self.spec
        name = self.resource.name
        status = run_status(
            spec,
            RunObservation(
                job=_job(state),
                rollout_ready=sum(c.startswith("rollout-") for c in self.ready)
                if self.spec.rollout.mode == "server"
                else None,
                verifier_ready=int("verifier" in self.ready),
                progress=self.progress() if self.plan is not None else None,
                teachers_ready=tuple(
                    sum(c.startswith(f"teacher-{i}-") for c in self.ready)
                    for i in range(len(teacher_replicas(self.spec)))
                )
                if serves_teachers(self.spec)
                else None,
                environment_ready=int("environment" in self.ready) if has_agent_domain(self.spec) else None,
            ),
            old=self.record.status,
            generation=1,
            now=now_iso(),
            plan=self.plan_of(state),
            final_model=final_model_uri(name, spec),
            checkpoint_uri=lambda step: checkpoint_uri(name, spec, step),
            teacher_models=teacher_models(spec, self.runner.resolved) if spec.algorithm.teachers else None,
        )
        return interrupted(status) if self.interrupted else status

    def plan_of(self, state: str) -> RefreshPlan:
        """The refresh decision `status.run_status` reads, as the operator's `plan_run` would make it
        for a local trainer in `state` (the runner itself does the restarting)."""
        terminal = state if state in ("Succeeded", "Failed") else None
        return RefreshPlan(
            action="keep",
            attempt=self.restarts + 1,
            restarts=self.restarts,
            rollout_replicas=self.spec.rollout.replicas if self.spec.rollout.mode == "server" else 0,
            verifier_replicas=self.spec.verifier.replicas,
            teacher_replicas=max(teacher_replicas(self.spec), default=0),
            environment_replicas=int(has_agent_domain(self.spec)),
            terminal=terminal,
            reason="TrainerFailed" if terminal == "Failed" else "",
            message=self.message if terminal == "Failed" else "",
        )

    def row(self) -> Row:
        step, total = self.step(), self.spec.algorithm.steps
        reward = float(self.last["reward"]) if self.last else None
        eta = None
        if self.trainer is not None and len(self.steps_seen) > 1 and step is not None:
            (t0, s0), (t1, s1) = self.steps_seen[0], self.steps_seen[-1]
            if s1 > s0:
                eta = (total - step) * (t1 - t0) / (s1 - s0)
        phase = self.record.phase or "Pending"
        if phase == "Running" and self.trainer is None:
            phase = "Starting"
        return Row(self.resource.key, phase, step, total, reward, self.elapsed(), eta)


def interrupted(status: Status) -> Status:
    """A status whose Suspended condition says Ctrl-C stopped it (the run resumes on the next start)."""
    for condition in status.get("conditions") or []:
        if condition["type"] == "Suspended" and condition["status"] == "True":
            condition["reason"] = "Interrupted"
            condition["message"] = "stopped by Ctrl-C; the same `m2rl run` command resumes it"
    status["phase"] = "Suspended"
    return status


# ---- MergeJob and EvalSuite -------------------------------------------------------------------------


class JobWorkload(Workload):
    """A Job of independent processes (a merge; one per model of an evaluation), each retried."""

    def __init__(
        self, runner: LocalRunner, resource: Resource, record: Record, retries: int, parallelism: int
    ) -> None:
        super().__init__(runner, resource, record)
        self.spec: MergeJobSpec | EvalSuiteSpec = resource.spec
        self.retries = retries  # per process
        self.parallelism = parallelism
        self.plan: JobPlan | None = None
        self.todo: list[int] = []
        self.running: dict[int, processes.Child] = {}
        self.failures: dict[int, int] = {}
        self.failed: set[int] = set()
        self.results: dict[int, Status] = {}
        self.durations: list[float] = []

    def prepare(self, plan: JobPlan) -> None:
        """Plan it; processes whose result the workdir already holds (an earlier attempt) are done."""
        self.plan = plan
        for index, process in enumerate(plan.processes):
            result = read_result(process.result_file)
            if result is not None:
                self.results[index] = result
            else:
                self.todo.append(index)

    def active(self) -> int:
        return len(self.running)

    def wants(self) -> int:
        return min(len(self.todo), self.parallelism - len(self.running)) if self.state != "Failed" else 0

    def launch(self, slots: int) -> None:
        assert self.plan is not None
        if self.state == "Pending":
            write_files(self.plan.files)
            self.state = "Running"
            self.launched = True
            self.record.usage.attempts += 1
        for _ in range(max(0, min(slots, self.wants()))):
            index = self.todo.pop(0)
            self.running[index] = self.spawn(self.plan.processes[index])

    def tick(self) -> None:
        assert self.plan is not None
        for index, child in list(self.running.items()):
            code = child.poll()
            if code is None:
                continue
            del self.running[index]
            self.reap(child)
            result = read_result(self.plan.processes[index].result_file) if code == 0 else None
            if result is not None:
                self.results[index] = result
                self.durations.append(time.monotonic() - child.started)
                continue
            self.failures[index] = self.failures.get(index, 0) + 1
            why = f"{child.name} exited with code {code}" + ("" if code else " without a result")
            if code != INVALID_INPUT and self.failures[index] <= self.retries:
                self.todo.insert(0, index)
                self.runner.display.event(f"{self.resource.key}: {why}; retrying\n{self.log_tail(child)}")
            else:
                self.failed.add(index)
                self.message = f"{why}:\n{self.log_tail(child)}"
        if self.state == "Running" and not self.todo and not self.running:
            self.finish("Failed" if self.failed else "Succeeded", self.message)

    def status(self) -> Status:
        results = [self.results[i] for i in sorted(self.results)]
        status = dependent_status(
            self.resource.kind,
            self.spec,
            _job(self.state),
            results,
            old=self.record.status,
            generation=1,
            now=now_iso(),
        )
        if self.interrupted:
            status["phase"] = "Suspended"
        return status

    def row(self) -> Row:
        total = len(self.plan.processes) if self.plan else None
        done = len(self.results)
        eta = None
        if self.durations and self.state == "Running":
            left = len(self.todo) + len(self.running)
            eta = sum(self.durations) / len(self.durations) * left / max(self.parallelism, 1)
        phase = self.record.phase or "Pending"
        if total == 1:
            return Row(self.resource.key, phase, elapsed=self.elapsed())
        return Row(self.resource.key, phase, done, total, None, self.elapsed(), eta, unit="models")


def read_result(path: Path | None) -> Status | None:
    """A program's termination message, if it left one."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_files(files: dict[Path, str] | Any) -> None:
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# ---- the loop ---------------------------------------------------------------------------------------


class LocalRunner:
    """Runs resources to completion (or until interrupted)."""

    def __init__(
        self,
        resources: Sequence[Resource],
        options: RunnerOptions,
        display: Display,
        known: dict[str, Record] | None = None,
    ) -> None:
        self.options = options
        self.display = display
        self.store = Store(options.workdir)
        self.layout = Layout(options.workdir.resolve(), options.data_root.resolve())
        self.known = dict(known or {})  # records of earlier runs in this workdir, by key
        self.marker = str(options.workdir.resolve())
        threads = str(max(1, (os.cpu_count() or 1) // max(options.parallel, 1)))
        self.base_env = {
            **os.environ,
            processes.MARKER: self.marker,
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # Several processes share the cores: one torch thread pool per core each would thrash.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", threads),
        }
        objects = {**{k: r.obj for k, r in self.known.items()}, **{r.key: r.obj for r in resources}}
        self.resolved = resolve_offline(list(objects.values()))
        self.workloads: list[Workload] = []
        self.retiring: list[tuple[Workload, processes.Child, float]] = []  # SIGTERM sent; deadline
        self.skipped: list[str] = []
        for resource in resources:
            record = self.store.load(resource.kind, resource.name)
            if record is not None and record.digest != resource.digest:
                raise PlanError(
                    f"{resource.source}: {resource.key}: its spec changed since it ran in "
                    f"{options.workdir}; use another workdir (or remove "
                    f"{self.store.folder(resource.kind, resource.name)} and its outputs)"
                )
            if record is not None and record.phase == "Succeeded":
                self.known[resource.key] = record
                self.skipped.append(resource.key)
                continue
            if record is None:
                obj = {
                    **resource.obj,
                    "metadata": {**resource.obj["metadata"], "creationTimestamp": now_iso()},
                }
                record = Record(obj, resource.digest)
            record.obj["spec"] = resource.obj["spec"]
            self.workloads.append(self._workload(resource, record))
        self._check_inputs(resources)

    def _workload(self, resource: Resource, record: Record) -> Workload:
        if resource.kind == "RLVRRun":
            return RunWorkload(self, resource, record)
        if resource.kind == "MergeJob":
            return JobWorkload(self, resource, record, retries=2, parallelism=1)
        spec: EvalSuiteSpec = resource.spec
        return JobWorkload(self, resource, record, retries=1, parallelism=spec.worker.parallelism)

    def _check_inputs(self, resources: Sequence[Resource]) -> None:
        """Models and datasets nothing here produces must exist before anything starts."""
        problems = []
        for resource in resources:
            for field_name, path in input_paths(resource, self.layout, self.resolved):
                if not path.exists():
                    problems.append(f"{resource.source}: {resource.key}: {field_name}: {path} does not exist")
        if problems:
            raise PlanError("\n".join(problems))

    # --- references
    def phase_of(self, key: str) -> str | None:
        for workload in self.workloads:
            if workload.resource.key == key:
                return workload.record.phase
        record = self.known.get(key)
        return record.phase if record else None

    def _dependencies(self, workload: Workload) -> tuple[list[str], list[str]]:
        waiting, failed = [], []
        for key in workload.resource.references():
            phase = self.phase_of(key)
            if phase == "Failed":
                failed.append(key)
            elif phase != "Succeeded":
                waiting.append(key)
        return waiting, failed

    def _plan_job(self, workload: JobWorkload) -> None:
        resource = workload.resource
        if resource.kind == "MergeJob":
            workload.prepare(plan_merge(resource, self.layout, self.resolved))
        else:
            workload.prepare(plan_eval(resource, self.layout, self.resolved, self.options.eval_engine))

    # --- the loop
    def run(self) -> int:
        """Run everything; 0 when all succeeded, 1 when something failed, 130 when interrupted."""
        self.store.workdir.mkdir(parents=True, exist_ok=True)
        for key in self.skipped:
            self.display.event(f"{key}: succeeded in an earlier run, skipped")
        previous = _install_stop_signals()
        try:
            while not all(w.done for w in self.workloads):
                self._step()
                time.sleep(self.options.poll_s)
            self._step()
        except KeyboardInterrupt:
            self.display.event("interrupted: stopping every process (Ctrl-C again kills them at once)")
            self._shutdown(interrupted=True)
            self.display.event("stopped; run the same command again to resume")
            return 130
        except BaseException:
            self._shutdown(interrupted=True)
            raise
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        self._shutdown(interrupted=False)
        failed = [w.resource.key for w in self.workloads if w.state == "Failed"]
        return 1 if failed else 0

    def retire(self, workload: Workload, children: list[processes.Child]) -> None:
        """SIGTERM `children` now; `_reap_retired` SIGKILLs what is left after the grace period."""
        deadline = time.monotonic() + self.options.grace_s
        for child in children:
            processes.terminate(child)
            self.retiring.append((workload, child, deadline))

    def _reap_retired(self, *, wait: bool = False) -> None:
        """Reap stopped children (their CPU time goes into the record); with `wait`, all of them."""
        while self.retiring:
            for entry in list(self.retiring):
                workload, child, deadline = entry
                if child.poll() is None and time.monotonic() < deadline:
                    continue
                processes.kill(child)  # the group's leftovers too
                workload.reap(child)
                self.store.save(workload.record)
                self.retiring.remove(entry)
            if not wait:
                return
            time.sleep(0.05)

    def _step(self) -> None:
        self._reap_retired()
        busy = sum(w.active() for w in self.workloads)
        for workload in self.workloads:
            if workload.done or (workload.state == "Pending" and not self._ready(workload)):
                continue
            free = self.options.parallel - busy
            # A pending job with nothing left to run (all results from an earlier attempt) starts
            # without a slot, and finishes on its first tick.
            wants = workload.wants()
            if (free > 0 and wants > 0) or (workload.state == "Pending" and wants == 0):
                workload.launch(free)
                busy = sum(w.active() for w in self.workloads)
        for workload in self.workloads:
            if workload.state == "Running":
                workload.tick()
            if workload.launched:
                self._publish(workload, workload.status())
        self.display.update([w.row() for w in self.workloads])

    def _ready(self, workload: Workload) -> bool:
        """Whether a pending resource's references all succeeded (publishes Waiting or Failed)."""
        waiting, failed = self._dependencies(workload)
        if failed:
            workload.state = "Failed"
            workload.message = f"referenced {', '.join(failed)} failed"
        if failed or waiting or workload.resource.references():
            # A merge or an evaluation whose references succeeded is Pending until it gets a slot.
            self._publish(workload, self._waiting_status(workload, waiting, failed))
        if failed or waiting:
            return False
        if isinstance(workload, JobWorkload) and workload.plan is None:
            self._plan_job(workload)
        return True

    def _waiting_status(self, workload: Workload, waiting: list[str], failed: list[str]) -> Status:
        return waiting_status(workload.record.status, waiting, failed, 1, now_iso())

    def _publish(self, workload: Workload, status: Status) -> None:
        """Save the status when it changed; say so when the phase changed."""
        record = workload.record
        old_phase = record.phase
        if record.status == status:
            return
        record.obj["status"] = status
        self.store.save(record)
        if status.get("phase") != old_phase:
            message = (
                f" ({workload.message.strip()})" if status["phase"] == "Failed" and workload.message else ""
            )
            self.display.event(f"{workload.resource.key}: {old_phase or '-'} -> {status['phase']}{message}")

    def _shutdown(self, *, interrupted: bool) -> None:
        """Stop every process (process groups, then anything left with the marker); save statuses."""
        running = [w for w in self.workloads if w.children]
        children = [c for w in running for c in w.children]
        try:
            processes.stop(children, self.options.grace_s)
            self._reap_retired(wait=True)
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
            processes.stop(children, 0.0)
            self.retiring = [(w, c, 0.0) for w, c, _ in self.retiring]
            self._reap_retired(wait=True)
        left = processes.sweep(self.marker)
        if left:
            self.display.event(f"killed {len(left)} process(es) that had left their process group")
        for workload in running:
            for child in list(workload.children):
                workload.reap(child)
            if interrupted and not workload.done:
                workload.interrupted = True
                workload.stop_clock()
                self._publish(workload, workload.status())
                self.store.save(workload.record)
        self.display.update([w.row() for w in self.workloads])


Handler = Callable[[int, FrameType | None], Any] | int | None


def _install_stop_signals() -> dict[int, Handler]:
    """SIGINT and SIGTERM stop the runner (it then stops its children); returns the previous
    handlers. SIGINT is set explicitly: a shell starts background commands with SIGINT ignored and
    Python keeps an inherited SIG_IGN, so `m2rl run ... &` then `kill -INT` would otherwise run on."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    return {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
