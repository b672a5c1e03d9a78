"""What `m2rl run` executes: the input's resources, checked and planned with the operator's own code.

Checking is `m2rl validate` (CRD schema and CEL rules, offline) plus what the operator refuses
(`rlvrrun_problems`) and references that nothing in the input or the workdir provides. Planning
calls the operator's builders with `OperatorOptions(pvc_root=DATA_ROOT, config_dir=...)`, so a
`pvc://claim/path` URI becomes `DATA_ROOT/claim/path` and every config file is the one the pods
would mount. Each pod's container becomes a local process:

| In a cluster | Here |
|---|---|
| trainer Job (torchrun) | `torchrun --nproc_per_node RANKS -m m2rl_trainer.cli` (one rank: python -m) |
| rollout StatefulSet (vLLM) | one `vllm.entrypoints.openai.api_server` per replica on a free loopback port |
| MT-OPD teacher StatefulSets (server mode) | likewise, one vLLM server per teacher replica |
| verifier Deployment + Service | `m2rl-verifier serve` on a free loopback port |
| agent environment Deployment + Service | `python -m m2rl_trainer.agent serve` on a free loopback port |
| merge Job | `m2rl-merge` with the Job's arguments |
| eval Indexed Job | `m2rl-eval --model-index I` per model, `--engine hf` on CPU by default |
| ConfigMap | the file it holds, under the resource's folder in the workdir |
| termination message | the file `$M2RL_RESULT_PATH` (m2rl_trainer.utils.results) |

Only addresses differ from the pods' configs: the trainer reaches its vLLM servers (rollout and
teachers), its verifier and its agent environment at 127.0.0.1 ports instead of Service DNS names,
and exposes no metrics port (progress is read from its metrics.jsonl). An MT-OPD run waits for the
runs and merges its teachers reference, like a MergeJob; colocated (the quickstart's mode), the
trainer loads the teachers' final model folders itself. The functions here are pure; the runner
owns ports and processes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from m2rl_operator import naming
from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.offline import validate_object
from m2rl_operator.api.rlvrrun import RLVRRunSpec, TeacherServerSpec
from m2rl_operator.api.uri import parse_uri
from m2rl_operator.api.yaml_io import iter_documents
from m2rl_operator.builders import build_evalsuite, build_mergejob, build_rlvrrun, rlvrrun_problems
from m2rl_operator.builders.common import Manifest, local_path
from m2rl_operator.builders.references import (
    BASE_SUFFIX,
    Resolved,
    evalsuite_references,
    mergejob_references,
    rlvrrun_references,
    unresolved,
)
from m2rl_operator.builders.trainer_config import has_agent_domain, run_output_uri, serves_teachers
from m2rl_operator.render import resolve_offline
from m2rl_operator.settings import OperatorOptions

KINDS = ("RLVRRun", "MergeJob", "EvalSuite")
Spec = RLVRRunSpec | MergeJobSpec | EvalSuiteSpec
SPEC_MODELS: dict[str, type[RLVRRunSpec] | type[MergeJobSpec] | type[EvalSuiteSpec]] = {
    "RLVRRun": RLVRRunSpec,
    "MergeJob": MergeJobSpec,
    "EvalSuite": EvalSuiteSpec,
}


class PlanError(ValueError):
    """The input cannot run; the message lists every problem, each naming the object and field."""


@dataclass(frozen=True)
class Resource:
    """One RLVRRun, MergeJob or EvalSuite of the input."""

    kind: str
    name: str
    obj: dict[str, Any]  # apiVersion, kind, metadata, spec as read
    source: str

    @property
    def key(self) -> str:
        """The reference key ("RLVRRun/NAME"), as builders.references spells it."""
        return f"{self.kind}/{self.name}"

    @property
    def spec(self) -> Any:
        return SPEC_MODELS[self.kind].model_validate(self.obj.get("spec") or {})

    @property
    def digest(self) -> str:
        """sha256 of the spec: a finished resource is only skipped if its spec did not change."""
        return spec_digest(self.obj)

    def references(self) -> list[str]:
        """Keys of the resources this one needs to have succeeded (a run's base model needs nothing)."""
        if self.kind == "MergeJob":
            keys = mergejob_references(self.spec)
        elif self.kind == "EvalSuite":
            keys = evalsuite_references(self.spec)
        else:
            keys = rlvrrun_references(self.spec)  # MT-OPD teachers
        return [k for k in keys if not k.endswith(BASE_SUFFIX)]


def spec_digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj.get("spec") or {}, sort_keys=True).encode()).hexdigest()


def load_resources(paths: Sequence[Path], known: Mapping[str, dict[str, Any]] = {}) -> list[Resource]:
    """The M2RL resources of `paths` (files or folders), checked; PlanError lists every problem.

    `known`: objects by key that earlier runs in the same workdir already hold (references may
    point at them).
    """
    problems: list[str] = []
    resources: list[Resource] = []
    seen: dict[str, str] = {}
    invalid: set[str] = set()
    for path in paths:
        if not path.exists():
            problems.append(f"{path}: no such file or directory")
            continue
        try:
            documents = list(iter_documents(path))
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as error:
            problems.append(f"{path}: cannot read YAML: {error}")
            continue
        for doc in documents:
            obj = doc.content
            violations, _, skipped = validate_object(obj)
            if skipped:
                continue  # not an M2RL kind (a PersistentVolumeClaim): a folder under the data root
            name = (obj.get("metadata") or {}).get("name") if isinstance(obj, dict) else None
            identity = f"{doc.label}: {obj.get('kind') if isinstance(obj, dict) else '?'}/{name}"
            if violations:
                problems += [f"{identity}: {v}" for v in violations]
                invalid.add(f"{obj.get('kind')}/{name}")  # references to it are not reported again
                continue
            resource = Resource(obj["kind"], name, obj, doc.label)
            if resource.key in seen:
                problems.append(f"{identity}: {resource.key} is also defined in {seen[resource.key]}")
                continue
            seen[resource.key] = doc.label
            resources.append(resource)
    objects = {**known, **{r.key: r.obj for r in resources}}
    resolved = resolve_offline(list(objects.values()))
    for resource in resources:
        identity = f"{resource.source}: {resource.key}"
        if resource.kind == "RLVRRun":
            problems += [f"{identity}: {p}" for p in rlvrrun_problems(resource.spec)]
            if resource.spec.rollout.mode == "server" and resource.spec.rollout.weight_sync == "nccl":
                problems.append(f"{identity}: spec.rollout.weightSync: nccl needs GPUs; use filesystem")
        missing = [key for key in unresolved(resource.references(), resolved) if key not in invalid]
        problems += [f"{identity}: references {key}, which is neither in the input nor in the workdir"
                     for key in missing]  # fmt: skip
    problems += cycles(resources)
    if problems:
        raise PlanError("\n".join(problems))
    return resources


def cycles(resources: Sequence[Resource]) -> list[str]:
    """References that loop (a merge of itself, through other merges): never runnable."""
    edges = {r.key: r.references() for r in resources}
    problems: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(key: str, trail: list[str]) -> None:
        if state.get(key) == 2 or key not in edges:
            return
        if state.get(key) == 1:
            problems.append(f"{key}: references form a cycle: {' -> '.join([*trail, key])}")
            return
        state[key] = 1
        for ref in edges[key]:
            visit(ref, [*trail, key])
        state[key] = 2

    for key in edges:
        visit(key, [])
    return problems


# ---- the workdir's layout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where a resource's files go: WORKDIR/<plural>/<name>/{resource.json, config/, logs/, results/}."""

    workdir: Path
    data_root: Path

    def folder(self, kind: str, name: str) -> Path:
        return self.workdir / naming.PLURALS[kind] / name

    def options(self, kind: str, name: str) -> OperatorOptions:
        """The operator's options with volumes under the data root and configs in the resource's folder."""
        return OperatorOptions(
            metrics_port=None,
            pvc_root=str(self.data_root),
            config_dir=str(self.folder(kind, name) / "config"),
        )


# ---- process plans ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessPlan:
    """One local process standing in for a pod's container."""

    component: str  # names the log file (logs/COMPONENT.log) and the line in `m2rl get`
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the runner's environment
    health_url: str | None = None  # a service: ready once this answers 200
    result_file: Path | None = None  # where the program leaves its termination message


@dataclass(frozen=True)
class RunPlan:
    """An RLVRRun: its config file, sidecar services and trainer."""

    files: Mapping[Path, str]  # config files to write before anything starts
    services: tuple[ProcessPlan, ...]
    trainer: ProcessPlan
    output_dir: Path  # the trainer's output_dir: metrics.jsonl, checkpoints/


@dataclass(frozen=True)
class JobPlan:
    """A MergeJob (one process) or an EvalSuite (one process per model index)."""

    files: Mapping[Path, str]
    processes: tuple[ProcessPlan, ...]


def program(name: str) -> str:
    """A console script of the installed trainer image (beside this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise PlanError(
            f"{name}: not found beside {sys.executable} or on PATH; `m2rl run` starts the trainer "
            "image's programs (pip install ./trainer-image, or `bash scripts/setup.sh`)"
        )
    return found


def _container(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    (manifest,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    container: dict[str, Any] = manifest["spec"]["template"]["spec"]["containers"][0]
    return container


def _config_files(manifests: list[Manifest], options: OperatorOptions) -> dict[Path, str]:
    """The ConfigMaps' files, where the containers would find them mounted."""
    return {
        Path(options.config_dir) / file: text
        for m in manifests
        if m["kind"] == "ConfigMap"
        for file, text in m["data"].items()
    }


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's literal environment variables (valueFrom entries are cluster-only)."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def expand(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container arguments (unknown variables stay as written)."""
    out = []
    for arg in args:
        for key, value in env.items():
            arg = arg.replace(f"$({key})", value)
        out.append(arg)
    return out


def set_flag(args: Sequence[str], flag: str, value: str) -> list[str]:
    """`args` with the value after `flag` replaced (appended when the flag is absent)."""
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def trainer_ranks(spec: RLVRRunSpec) -> int:
    """Ranks of the run on this machine: nodes x GPUs per node, one per node on CPU."""
    return spec.trainer.nodes * max(spec.trainer.gpus_per_node, 1)


def teacher_replicas(spec: RLVRRunSpec) -> list[int]:
    """vLLM servers per MT-OPD teacher that the run starts (server mode; colocated: none)."""
    if not serves_teachers(spec):
        return []
    per_teacher = (spec.teacher_servers or TeacherServerSpec()).replicas
    return [per_teacher] * len(spec.algorithm.teachers or [])


def plan_run(
    resource: Resource,
    layout: Layout,
    *,
    verifier_port: int,
    rollout_ports: Sequence[int],
    master_port: int,
    resolved: Resolved | None = None,
    teacher_ports: Sequence[Sequence[int]] = (),
    environment_port: int | None = None,
) -> RunPlan:
    """The RLVRRun's children as local processes (ports chosen by the caller: `teacher_ports` one
    list per teacher, as `teacher_replicas` counts them; `environment_port` with agent domains).
    `resolved`: the model URIs of the MT-OPD teachers' references."""
    spec: RLVRRunSpec = resource.spec
    name = resource.name
    options = layout.options("RLVRRun", name)
    manifests = build_rlvrrun(spec, name=name, namespace="default", options=options, resolved=resolved)
    files = _config_files(manifests, options)
    config_path = Path(options.config_dir) / naming.CONFIG_FILE["RLVRRun"]
    config = yaml.safe_load(files[config_path])
    loopback = "http://127.0.0.1:{}"
    if spec.rollout.mode == "server":
        config["rollout"]["server_urls"] = [loopback.format(p) for p in rollout_ports]
    if serves_teachers(spec):
        if [len(p) for p in teacher_ports] != teacher_replicas(spec):
            raise ValueError(f"teacher_ports: {teacher_replicas(spec)} ports per teacher expected")
        for teacher, ports in zip(config["algorithm"]["teachers"], teacher_ports, strict=True):
            teacher["server_urls"] = [loopback.format(p) for p in ports]
    if has_agent_domain(spec):
        if environment_port is None:
            raise ValueError("environment_port: a run with an agent domain needs its environment's port")
        config["agent"]["environment_url"] = loopback.format(environment_port)
    config["rewards"]["service_url"] = loopback.format(verifier_port)
    config["metrics"]["prometheus_port"] = None
    files[config_path] = yaml.safe_dump(config, sort_keys=False)

    verifier = _container(manifests, "Deployment", naming.verifier(name))
    # In a cluster the verifier pod has CPUs of its own and runs model-written programs at idle
    # priority; here it shares the machine with its own trainer (and other runs), which starves
    # idle-priority programs: a code step waited five minutes for its rewards. Same sandbox, normal
    # priority (the verifier's own `sandbox.low_priority` setting). The operator's config already
    # enables only the verifiers the run's domains use (no worker pool starts for nothing).
    verifier_config = Path(options.config_dir) / naming.VERIFIER_CONFIG_FILE
    verifier_settings = yaml.safe_load(files[verifier_config])
    verifier_settings.setdefault("sandbox", {})["low_priority"] = False
    files[verifier_config] = yaml.safe_dump(verifier_settings, sort_keys=False)
    verifier_args = set_flag(set_flag(verifier["args"], "--host", "127.0.0.1"), "--port", str(verifier_port))
    services = [
        ProcessPlan(
            "verifier",
            (program(verifier["command"][0]), *verifier["command"][1:], *verifier_args),
            _env(verifier),
            health_url=loopback.format(verifier_port) + "/health",
        )
    ]
    if has_agent_domain(spec):
        assert environment_port is not None
        environment = _container(manifests, "Deployment", naming.environment(name))
        args = set_flag(set_flag(environment["args"], "--host", "127.0.0.1"), "--port", str(environment_port))
        services.append(
            ProcessPlan(
                "environment",
                (sys.executable, *environment["command"][1:], *args),
                _env(environment),
                health_url=loopback.format(environment_port) + "/health",
            )
        )
    servers = [(naming.rollout(name), "rollout", rollout_ports)] if spec.rollout.mode == "server" else []
    servers += [(naming.teacher(name, i), f"teacher-{i}", ports) for i, ports in enumerate(teacher_ports)]
    for statefulset, component, ports in servers:
        server = _container(manifests, "StatefulSet", statefulset)
        env = {"VLLM_CPU_KVCACHE_SPACE": "1", **_env(server)}  # GiB of KV cache on CPU
        for index, port in enumerate(ports):
            args = set_flag(set_flag(server["args"], "--host", "127.0.0.1"), "--port", str(port))
            services.append(
                ProcessPlan(
                    f"{component}-{index}",
                    (sys.executable, *server["command"][1:], *args),
                    env,
                    health_url=loopback.format(port) + "/health",
                )
            )
    trainer = _container(manifests, "Job", naming.trainer(name))
    ranks = trainer_ranks(spec)
    module = trainer["args"][trainer["args"].index("-m") :]  # -m m2rl_trainer.cli --config FILE
    if ranks > 1:
        launcher = [program("torchrun"), "--nnodes", "1", "--nproc_per_node", str(ranks),
                    "--master_addr", "127.0.0.1", "--master_port", str(master_port)]  # fmt: skip
    else:
        launcher = [sys.executable]
    trainer_env = {k: v for k, v in _env(trainer).items() if k not in _TORCHRUN_ENV}
    output_dir = Path(config["output_dir"])
    return RunPlan(
        files=files,
        services=tuple(services),
        trainer=ProcessPlan("trainer", (*launcher, *module), trainer_env),
        output_dir=output_dir,
    )


# Set by the trainer Job for its torchrun command line; torchrun here gets its own arguments.
_TORCHRUN_ENV = {"MASTER_ADDR", "MASTER_PORT", "NNODES", "NPROC_PER_NODE", "WORLD_SIZE", "NODE_RANK"}


def plan_merge(resource: Resource, layout: Layout, resolved: Resolved) -> JobPlan:
    """The MergeJob's Job as one `m2rl-merge` process."""
    options = layout.options("MergeJob", resource.name)
    manifests = build_mergejob(
        resource.spec, name=resource.name, namespace="default", resolved=resolved, options=options
    )
    container = _container(manifests, "Job", naming.merge_job(resource.name))
    result = layout.folder("MergeJob", resource.name) / "results" / "merge.json"
    process = ProcessPlan(
        "merge",
        (program(container["command"][0]), *container["args"]),
        _env(container),
        result_file=result,
    )
    return JobPlan(_config_files(manifests, options), (process,))


def plan_eval(resource: Resource, layout: Layout, resolved: Resolved, engine: str) -> JobPlan:
    """The EvalSuite's Indexed Job as one `m2rl-eval` process per model (`--engine` added)."""
    spec: EvalSuiteSpec = resource.spec
    options = layout.options("EvalSuite", resource.name)
    manifests = build_evalsuite(
        spec, name=resource.name, namespace="default", resolved=resolved, options=options
    )
    container = _container(manifests, "Job", naming.eval_job(resource.name))
    folder = layout.folder("EvalSuite", resource.name)
    processes = []
    for index, model in enumerate(spec.models):
        env = {**_env(container), "JOB_COMPLETION_INDEX": str(index)}
        args = expand(container["args"], env)
        args += ["--engine", engine, "--output", str(folder / "outputs")]
        processes.append(
            ProcessPlan(
                f"eval-{model.name}",
                (program(container["command"][0]), *args),
                env,
                result_file=folder / "results" / f"{index}.json",
            )
        )
    return JobPlan(_config_files(manifests, options), tuple(processes))


def input_paths(resource: Resource, layout: Layout, resolved: Resolved) -> list[tuple[str, Path]]:
    """(field, local path) of every model and dataset the resource reads that no other resource
    of the plan produces: they must exist before anything starts."""
    options = layout.options(resource.kind, resource.name)
    produced = {
        local_path(uri, options) for key, uri in resolved.items() if "#" not in key
    }  # not #base, #format
    fields: list[tuple[str, str]] = []
    spec = resource.spec
    if resource.kind == "RLVRRun":
        fields.append(("spec.model.uri", spec.model.uri))
        fields += [(f"spec.domains[{i}].dataset.uri", d.dataset.uri) for i, d in enumerate(spec.domains)]
        teachers = enumerate(spec.algorithm.teachers or [])
        fields += [(f"spec.algorithm.teachers[{i}].model", t.model) for i, t in teachers if t.model]
        if spec.agent is not None and spec.agent.data:
            fields.append(("spec.agent.data", spec.agent.data))
    elif resource.kind == "MergeJob":
        if spec.base is not None and spec.base.model:
            fields.append(("spec.base.model", spec.base.model))
        fields += [(f"spec.experts[{i}].model", e.model) for i, e in enumerate(spec.experts) if e.model]
    else:
        fields += [(f"spec.models[{i}].model", m.model) for i, m in enumerate(spec.models) if m.model]
        fields += [
            (f"spec.benchmarks[{i}].dataset.uri", b.dataset.uri) for i, b in enumerate(spec.benchmarks)
        ]
    result = []
    for name, uri in fields:
        if parse_uri(uri).scheme == "hf":
            continue  # downloaded by the program itself
        path = local_path(uri, options)
        if path not in produced:
            result.append((name, Path(path)))
    return result


def output_dir(resource: Resource, layout: Layout) -> Path | None:
    """Where an RLVRRun writes (its checkpoints and metrics)."""
    if resource.kind != "RLVRRun":
        return None
    options = layout.options("RLVRRun", resource.name)
    return Path(local_path(run_output_uri(resource.name, resource.spec), options))
