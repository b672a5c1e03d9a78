"""MergeJob -> ConfigMap (a mergekit config) + one Job running `m2rl-merge` on the merge volume.

`m2rl-merge` (trainer image, m2rl_trainer.merge) runs mergekit into a temporary folder, analyses
the experts' task vectors, renames the result into spec.output, and reports the analysis summary in
its termination message (read by status.merge_analysis).
"""

from __future__ import annotations

import re
from typing import Any

from m2rl_operator import naming
from m2rl_operator.api.merge_methods import EXPERT_PARAMETERS, GLOBAL_PARAMETERS, MERGE_METHODS
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.uri import parse_uri
from m2rl_operator.builders.common import (
    Manifest,
    claim_volumes,
    config_map,
    config_volume,
    dump,
    local_path,
)
from m2rl_operator.builders.pods import requests_for, worker_job
from m2rl_operator.builders.references import BASE_SUFFIX, Resolved, merge_key, run_key
from m2rl_operator.settings import OperatorOptions

KIND = "MergeJob"
MAX_NAME = 63  # status.analysis.pairwiseCosine[].first/second
INVALID_INPUT_EXIT_CODE = 2  # m2rl-merge: bad config, names or output path; a retry cannot help


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


def expert_names(spec: MergeJobSpec) -> list[str]:
    """The experts' names in the analysis, in order: name, else runRef or mergeRef, else the last
    path segment of model (a Hub id's repository name). Characters other than letters, digits, '.',
    '_' and '-' become '-', and a name taken by an earlier expert gets -2, -3, ..."""
    names: list[str] = []
    for e in spec.experts:
        if e.name or e.run_ref or e.merge_ref:
            raw = e.name or e.run_ref or e.merge_ref or ""
        else:
            uri = parse_uri(e.model or "")
            raw = (uri.repo if uri.scheme == "hf" else uri.path or uri.claim).rstrip("/").rsplit("/", 1)[-1]
        name = re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:MAX_NAME] or "expert"
        unique, k = name, 2
        while unique in names:
            unique = f"{name[: MAX_NAME - len(str(k)) - 1]}-{k}"
            k += 1
        names.append(unique)
    return names


def build_merge_config(spec: MergeJobSpec, *, resolved: Resolved, options: OperatorOptions) -> dict[str, Any]:
    """mergekit's YAML config (merge_method, base_model, models[].parameters, parameters, dtype)."""
    params_in = dump(spec.parameters)
    config: dict[str, Any] = {"merge_method": spec.method}
    # A method that ignores the base (linear, karcher) would average it in if mergekit were given it;
    # its base goes to m2rl-merge's --analysis-base instead.
    if (base := _base_uri(spec, resolved)) is not None and MERGE_METHODS[spec.method].base != "ignored":
        config["base_model"] = local_path(base, options)
    models = []
    # mergekit 0.1.5 requires a weight per model for the methods that read one; the API's unset is 1.
    default_weight = {"weight": 1.0} if "weight" in MERGE_METHODS[spec.method].expert_params else {}
    for expert, uri in zip(spec.experts, _expert_uris(spec, resolved), strict=True):
        entry: dict[str, Any] = {"model": local_path(uri, options)}
        values = {**default_weight, **dump(expert)}
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


def _analysis_args(spec: MergeJobSpec, resolved: Resolved, options: OperatorOptions) -> list[str]:
    """m2rl-merge's analysis flags: the thresholds, and the base of a method that merges without one."""
    if not spec.analysis.enabled:
        return []
    args = ["--eta", repr(spec.analysis.eta), "--projection-dims", str(spec.analysis.projection_dims)]
    base = _base_uri(spec, resolved)
    if base is not None and MERGE_METHODS[spec.method].base == "ignored":
        args += ["--analysis-base", local_path(base, options)]
    return args


def build_mergejob(
    spec: MergeJobSpec, *, name: str, namespace: str, resolved: Resolved, options: OperatorOptions
) -> list[Manifest]:
    """The ConfigMap and the Job of a MergeJob whose references are all in `resolved`."""
    out = parse_uri(spec.output.uri)
    config = config_map(KIND, name, namespace, build_merge_config(spec, resolved=resolved, options=options))
    inputs = [u for u in (_base_uri(spec, resolved), *_expert_uris(spec, resolved)) if u]
    writable = [out.claim] if out.scheme == "pvc" else []
    claim_vols, claim_mounts = claim_volumes([*inputs, out], writable, options)
    config_vol, config_mount = config_volume(naming.config_map(name), options)
    w = spec.worker
    container: dict[str, Any] = {
        "name": "merge",
        "image": w.image or options.images.merge,
        "command": ["m2rl-merge"],
        "args": [
            "--config",
            f"{options.config_dir}/{naming.CONFIG_FILE[KIND]}",
            "--output",
            local_path(out, options),
            *(["--cuda"] if w.gpus > 0 else []),
            *([] if spec.analysis.enabled else ["--no-analysis"]),
            "--expert-names",
            ",".join(expert_names(spec)),
            *_analysis_args(spec, resolved, options),
        ],
        "volumeMounts": [config_mount, *claim_mounts],
    }
    if w.env:
        container["env"] = [dump(e) for e in w.env]
    container["resources"] = requests_for(w, options.default_requests.for_gpus(w.gpus), w.gpus)
    job = worker_job(
        KIND,
        name,
        namespace,
        spec,
        job_name=naming.merge_job(name),
        component=naming.MERGE,
        worker=w,
        container=container,
        volumes=[config_vol, *claim_vols],
        job_spec={
            "backoffLimit": 2,  # a merge is deterministic; retries cover evicted or OOM-killed pods
            # ...but not an invalid config or an occupied output path, which fail the same way again.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "merge",
                            "operator": "In",
                            "values": [INVALID_INPUT_EXIT_CODE],
                        },
                    }
                ]
            },
        },
    )
    return [config, job]
