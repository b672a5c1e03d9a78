"""MergeJob -> ConfigMap (a mergekit config) + one Job running mergekit on the merge volume."""

from __future__ import annotations

from typing import Any

import yaml

from m2rl_operator import naming
from m2rl_operator.api.merge_methods import EXPERT_PARAMETERS, GLOBAL_PARAMETERS
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.uri import parse_uri
from m2rl_operator.builders.common import (
    Manifest,
    claim_volumes,
    config_volume,
    dump,
    local_path,
    metadata,
    pod_placement,
    resources,
)
from m2rl_operator.builders.references import BASE_SUFFIX, Resolved, merge_key, run_key
from m2rl_operator.settings import OperatorOptions

KIND = "MergeJob"


def _expert_uris(spec: MergeJobSpec, resolved: Resolved) -> list[str]:
    uris = []
    for e in spec.experts:
        if e.model:
            uris.append(e.model)
        else:
            uris.append(resolved[run_key(e.run_ref) if e.run_ref else merge_key(e.merge_ref or "")])
    return uris


def _base_uri(spec: MergeJobSpec, resolved: Resolved) -> str | None:
    if spec.base is None:
        return None
    return spec.base.model or resolved[run_key(spec.base.run_ref or "") + BASE_SUFFIX]


def build_merge_config(spec: MergeJobSpec, *, resolved: Resolved, options: OperatorOptions) -> dict[str, Any]:
    """mergekit's YAML config (merge_method, base_model, models[].parameters, parameters, dtype)."""
    params_in = dump(spec.parameters)
    config: dict[str, Any] = {"merge_method": spec.method}
    if (base := _base_uri(spec, resolved)) is not None:
        config["base_model"] = local_path(base, options)
    models = []
    for expert, uri in zip(spec.experts, _expert_uris(spec, resolved), strict=True):
        entry: dict[str, Any] = {"model": local_path(uri, options)}
        values = dump(expert)
        parameters = {kit: values[api] for api, kit in EXPERT_PARAMETERS.items() if api in values}
        if parameters:
            entry["parameters"] = parameters
        models.append(entry)
    config["models"] = models
    parameters = {kit: params_in[api] for api, kit in GLOBAL_PARAMETERS.items() if api in params_in}
    if parameters:
        config["parameters"] = parameters
    config["dtype"] = spec.dtype
    return config


def build_mergejob(
    spec: MergeJobSpec, *, name: str, namespace: str, resolved: Resolved, options: OperatorOptions
) -> list[Manifest]:
    """The ConfigMap and the Job of a MergeJob whose references are all in `resolved`."""
    config = build_merge_config(spec, resolved=resolved, options=options)
    out = parse_uri(spec.output.uri)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(naming.config_map(name), namespace, KIND, name, naming.CONFIG),
        "data": {naming.CONFIG_FILE[KIND]: yaml.safe_dump(config, sort_keys=False)},
    }
    inputs = [u for u in (_base_uri(spec, resolved), *_expert_uris(spec, resolved)) if u]
    writable = [out.claim] if out.scheme == "pvc" else []
    claim_vols, claim_mounts = claim_volumes([*inputs, out], writable, options)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    w = spec.worker
    container: dict[str, Any] = {
        "name": "merge",
        "image": w.image or options.images.merge,
        "command": ["mergekit-yaml"],
        "args": [
            f"{options.config_dir}/{naming.CONFIG_FILE[KIND]}",
            local_path(out, options),
            "--lazy-unpickle",
        ]
        + (["--cuda"] if w.gpus > 0 else []),
        "volumeMounts": [config_mount, *claim_mounts],
    }
    if w.env:
        container["env"] = [dump(e) for e in w.env]
    if res := resources(w, w.gpus):
        container["resources"] = res
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(naming.merge_job(name), namespace, KIND, name, naming.MERGE, spec.queue_name),
        "spec": {
            "backoffLimit": 2,  # a merge is deterministic; retries cover evicted or OOM-killed pods
            "template": {
                "metadata": {"labels": naming.labels(KIND, name, naming.MERGE, spec.queue_name)},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [config_vol, *claim_vols],
                    **pod_placement(w, spec.priority_class_name),
                },
            },
        },
    }
    return [config_map, job]
