"""EvalSuite -> ConfigMap (eval.yaml) + one Indexed Job: pod i serves model i with vLLM and scores
every benchmark with the training verifiers (`m2rl-eval`, the trainer image's evaluation entry).

With spec.output, every pod writes its files under that folder (mounted writable). With spec.analysis,
the ConfigMap also holds analysis.yaml and the Job has one completion more: its pods run
`python -m m2rl_trainer.analysis`, which evaluates model i for i < len(models) exactly as m2rl-eval
does, and runs the analyses at the last index once the outputs it reads exist. The Job controller
starts the lowest pending indexes first (kubernetes pkg/controller/job/indexed_job_utils.go,
firstPendingIndexes), so with parallelism 1 the analysis pod starts after every evaluation."""

from __future__ import annotations

from typing import Any

import yaml

from m2rl_operator import naming
from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.uri import parse_uri
from m2rl_operator.builders.common import (
    Manifest,
    claim_volumes,
    config_map,
    config_volume,
    dump,
    local_path,
    shm_volume,
)
from m2rl_operator.builders.pods import requests_for, sandbox_security, worker_job
from m2rl_operator.builders.references import Resolved, eval_prompt_format, merge_key, run_key
from m2rl_operator.settings import OperatorOptions

KIND = "EvalSuite"


def model_uris(spec: EvalSuiteSpec, resolved: Resolved) -> list[str]:
    return [
        m.model or resolved[run_key(m.run_ref) if m.run_ref else merge_key(m.merge_ref or "")]
        for m in spec.models
    ]


def _model_entry(name: str, path: str, prompt: dict[str, Any]) -> dict[str, Any]:
    entry = {"name": name, "path": path, "chat_template": prompt["chat_template"]}
    if prompt["system_prompt"] is not None:
        entry["system_prompt"] = prompt["system_prompt"]
    return entry


def build_eval_config(spec: EvalSuiteSpec, *, resolved: Resolved, options: OperatorOptions) -> dict[str, Any]:
    return {
        "models": [
            _model_entry(m.name, local_path(uri, options), eval_prompt_format(m, resolved))
            for m, uri in zip(spec.models, model_uris(spec, resolved), strict=True)
        ],
        "benchmarks": [
            {
                "name": b.name,
                "dataset": local_path(b.dataset.uri, options),
                "fields": {
                    "prompt": b.dataset.fields.prompt,
                    "reference": b.dataset.fields.answer,
                    "id": b.dataset.fields.id,
                },
                "verifier": b.verifier.type,
                "verifier_options": dict(b.verifier.options or {}),
                "format": b.dataset.format,
                "format_options": dict(b.dataset.format_options or {}),
                "samples": b.samples,
                "metrics": list(b.metrics),
                "max_response_tokens": b.max_response_tokens or spec.sampling.max_response_tokens,
            }
            for b in spec.benchmarks
        ],
        "sampling": dump(spec.sampling),
        "vllm": {
            "tensor_parallel_size": spec.worker.tensor_parallel_size,
            "gpu_memory_utilization": spec.worker.gpu_memory_utilization,
            "extra_args": list(spec.worker.extra_args or []),
        },
    }


ANALYSIS_FILE = "analysis.yaml"
# The analysis pod waits this long for the evaluation outputs it reads (with parallelism below the
# number of models, evaluations may still run when it starts).
ANALYSIS_WAIT_S = 7 * 24 * 3600


def build_analysis_config(spec: EvalSuiteSpec) -> dict[str, Any]:
    """analysis.yaml (m2rl_trainer.analysis.config): spec.analysis in the trainer's snake_case."""
    a = spec.analysis
    assert a is not None
    config: dict[str, Any] = {
        "domains": [
            {"name": d.name, "benchmarks": list(d.benchmarks), **({"expert": d.expert} if d.expert else {})}
            for d in a.domains
        ],
        "merged": list(a.merged or []),
        "wait_s": ANALYSIS_WAIT_S,
    }
    for key, value in (("sft", a.sft), ("mixed", a.mixed)):
        if value is not None:
            config[key] = value
    if (i := a.information) is not None:
        config["information"] = {
            "models": list(i.models or []),
            "prompts": i.prompts,
            "samples": i.samples,
            "max_response_tokens": i.max_response_tokens,
            "epsilon": i.epsilon,
            "seed": i.seed,
        }
    if a.prediction is not None and a.prediction.enabled:
        config["prediction"] = {}
    if (v := a.self_verification) is not None:
        config["self_verification"] = {
            "responses_from": v.responses_from,
            "judges": list(v.judges or []),
            "responses": v.responses,
            "modes": list(v.modes),
            "max_response_tokens": v.max_response_tokens,
        }
    return config


def uses_sandbox(spec: EvalSuiteSpec) -> bool:
    """Whether the evaluation pods run model-written code (a benchmark checked by the code verifier,
    in the pod's own sandbox)."""
    return any(b.verifier.type == "code" for b in spec.benchmarks)


def build_evalsuite(
    spec: EvalSuiteSpec, *, name: str, namespace: str, resolved: Resolved, options: OperatorOptions
) -> list[Manifest]:
    """The ConfigMap and the Indexed Job (one index per model, plus the analysis' with spec.analysis).
    With spec.output the output location is mounted writable and passed as `--output`
    (OUTPUT/MODEL/results.json and per-sample files)."""
    config = config_map(KIND, name, namespace, build_eval_config(spec, resolved=resolved, options=options))
    if spec.analysis is not None:
        config["data"][ANALYSIS_FILE] = yaml.safe_dump(build_analysis_config(spec), sort_keys=False)
    w = spec.worker
    uris = [*model_uris(spec, resolved), *(b.dataset.uri for b in spec.benchmarks)]
    output = parse_uri(spec.output.uri) if spec.output else None
    writable = [output.claim] if output is not None and output.scheme == "pvc" else []
    claim_vols, claim_mounts = claim_volumes([*uris, *([output] if output else [])], writable, options)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    shm_vol, shm_mount = shm_volume(options)
    config_file = f"{options.config_dir}/{naming.CONFIG_FILE[KIND]}"
    index = ["--model-index", "$(JOB_COMPLETION_INDEX)"]
    out_args = ["--output", local_path(output, options)] if output is not None else []
    if spec.analysis is not None:
        command = ["python", "-m", "m2rl_trainer.analysis"]
        analysis = ["--analysis", f"{options.config_dir}/{ANALYSIS_FILE}"]
        args = ["--config", config_file, *analysis, *index, *out_args]
    else:
        command, args = ["m2rl-eval"], ["--config", config_file, *index, *out_args]
    completions = len(spec.models) + (spec.analysis is not None)
    container: dict[str, Any] = {
        "name": "eval",
        "image": w.image or options.images.eval,
        "command": command,
        "args": args,
        "env": [
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            },
            *(dump(e) for e in w.env or []),
        ],
        "resources": requests_for(w, options.default_requests.for_gpus(w.gpus), w.gpus),
        "volumeMounts": [config_mount, shm_mount, *claim_mounts],
    }
    v = spec.verifier
    sandbox = (
        sandbox_security(v.isolation, v.runtime_class_name, v.seccomp_localhost_profile)
        if uses_sandbox(spec)
        else None
    )
    job = worker_job(
        KIND,
        name,
        namespace,
        spec,
        job_name=naming.eval_job(name),
        component=naming.EVAL,
        worker=w,
        container=container,
        volumes=[config_vol, shm_vol, *claim_vols],
        sandbox=sandbox,
        job_spec={
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": min(w.parallelism, completions),
            "backoffLimitPerIndex": 1,
            "maxFailedIndexes": completions,
        },
    )
    return [config, job]
