"""EvalSuite -> ConfigMap (eval.yaml) + one Indexed Job: pod i serves model i with vLLM and scores
every benchmark with the training verifiers (`m2rl-eval`, the trainer image's evaluation entry)."""

from __future__ import annotations

from typing import Any

from m2rl_operator import naming
from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.builders.common import (
    Manifest,
    claim_volumes,
    config_map,
    config_volume,
    dump,
    local_path,
    resources,
    shm_volume,
    worker_job,
)
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


def build_evalsuite(
    spec: EvalSuiteSpec, *, name: str, namespace: str, resolved: Resolved, options: OperatorOptions
) -> list[Manifest]:
    config = config_map(KIND, name, namespace, build_eval_config(spec, resolved=resolved, options=options))
    w = spec.worker
    uris = [*model_uris(spec, resolved), *(b.dataset.uri for b in spec.benchmarks)]
    claim_vols, claim_mounts = claim_volumes(uris, [], options)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    shm_vol, shm_mount = shm_volume(options)
    container: dict[str, Any] = {
        "name": "eval",
        "image": w.image or options.images.eval,
        "command": ["m2rl-eval"],
        "args": [
            "--config",
            f"{options.config_dir}/{naming.CONFIG_FILE[KIND]}",
            "--model-index",
            "$(JOB_COMPLETION_INDEX)",
        ],
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
        "volumeMounts": [config_mount, shm_mount, *claim_mounts],
    }
    if res := resources(w, w.gpus):
        container["resources"] = res
    job = worker_job(
        KIND,
        name,
        namespace,
        job_name=naming.eval_job(name),
        component=naming.EVAL,
        worker=w,
        container=container,
        volumes=[config_vol, shm_vol, *claim_vols],
        queue_name=spec.queue_name,
        priority_class_name=spec.priority_class_name,
        job_spec={
            "completionMode": "Indexed",
            "completions": len(spec.models),
            "parallelism": min(w.parallelism, len(spec.models)),
            "backoffLimitPerIndex": 1,
            "maxFailedIndexes": len(spec.models),
        },
    )
    return [config, job]
