"""EvalSuite -> ConfigMap (eval.yaml) + one Indexed Job: pod i serves model i with vLLM and scores
every benchmark with the training verifiers (`m2rl-eval`, the trainer image's evaluation entry)."""

from __future__ import annotations

from typing import Any

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
from m2rl_operator.builders.references import Resolved, merge_key, run_key
from m2rl_operator.settings import OperatorOptions

KIND = "EvalSuite"


def model_uris(spec: EvalSuiteSpec, resolved: Resolved) -> list[str]:
    return [
        m.model or resolved[run_key(m.run_ref) if m.run_ref else merge_key(m.merge_ref or "")]
        for m in spec.models
    ]


def build_eval_config(spec: EvalSuiteSpec, *, resolved: Resolved, options: OperatorOptions) -> dict[str, Any]:
    return {
        "models": [
            {"name": m.name, "path": local_path(uri, options), "chat_template": m.chat_template}
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


def uses_sandbox(spec: EvalSuiteSpec) -> bool:
    """Whether the evaluation pods run model-written code (a benchmark checked by the code verifier,
    in the pod's own sandbox)."""
    return any(b.verifier.type == "code" for b in spec.benchmarks)


def build_evalsuite(
    spec: EvalSuiteSpec, *, name: str, namespace: str, resolved: Resolved, options: OperatorOptions
) -> list[Manifest]:
    """The ConfigMap and the Indexed Job (one index per model). With spec.output the output location
    is mounted writable and passed as `--output` (OUTPUT/MODEL/results.json and per-sample files)."""
    config = config_map(KIND, name, namespace, build_eval_config(spec, resolved=resolved, options=options))
    w = spec.worker
    out = parse_uri(spec.output.uri) if spec.output else None
    writable = [out.claim] if out is not None and out.scheme == "pvc" else []
    uris = [*model_uris(spec, resolved), *(b.dataset.uri for b in spec.benchmarks), *([out] if out else [])]
    claim_vols, claim_mounts = claim_volumes(uris, writable, options)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    shm_vol, shm_mount = shm_volume(options)
    args = [
        "--config",
        f"{options.config_dir}/{naming.CONFIG_FILE[KIND]}",
        "--model-index",
        "$(JOB_COMPLETION_INDEX)",
    ]
    if out is not None:
        args += ["--output", local_path(out, options)]
    container: dict[str, Any] = {
        "name": "eval",
        "image": w.image or options.images.eval,
        "command": ["m2rl-eval"],
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
            "completions": len(spec.models),
            "parallelism": min(w.parallelism, len(spec.models)),
            "backoffLimitPerIndex": 1,
            "maxFailedIndexes": len(spec.models),
        },
    )
    return [config, job]
