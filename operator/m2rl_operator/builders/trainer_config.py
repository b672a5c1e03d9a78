"""The trainer's config file (schema owned by m2rl_trainer.config.TrainerConfig), as a plain dict.

Only keys with a counterpart in the RLVRRun spec (or that the operator decides, such as paths,
server URLs and ports) are written; the trainer's own defaults cover the rest. A test loads the
rendered dict with `m2rl_trainer.config.load_config`, so the two schemas cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from m2rl_operator import naming
from m2rl_operator.api.algorithm import TRAINER_ALGORITHM_NAMES, resolve_algorithm
from m2rl_operator.api.rlvrrun import AgentSpec, RLVRRunSpec
from m2rl_operator.builders.common import local_path
from m2rl_operator.builders.references import Resolved, teacher_models
from m2rl_operator.settings import OperatorOptions

FINAL_SCRAPE_TIMEOUT_S = 60.0  # twice a usual 30 s scrape interval


def run_output_uri(name: str, spec: RLVRRunSpec) -> str:
    """The directory the run writes into: spec.checkpoint.uri, else pvc://<run>-checkpoints/<run>."""
    if spec.checkpoint.uri:
        return spec.checkpoint.uri.rstrip("/")
    return f"pvc://{naming.checkpoints_claim(name)}/{name}"


def checkpoint_uri(name: str, spec: RLVRRunSpec, step: int) -> str:
    """URI of the Hugging Face model folder of the checkpoint after `step`."""
    return f"{run_output_uri(name, spec)}/checkpoints/step-{step:06d}/model"


def final_model_uri(name: str, spec: RLVRRunSpec) -> str:
    """The trained model: the trainer always checkpoints after the last step (algorithm.steps)."""
    return checkpoint_uri(name, spec, spec.algorithm.steps)


def rollout_urls(name: str, namespace: str, spec: RLVRRunSpec, options: OperatorOptions) -> list[str]:
    if spec.rollout.mode != "server":
        return []
    return [
        f"http://{naming.rollout_host(name, namespace, i)}:{options.ports.rollout}"
        for i in range(spec.rollout.replicas)
    ]


def teacher_urls(
    name: str, namespace: str, spec: RLVRRunSpec, options: OperatorOptions, index: int
) -> list[str]:
    """The replicas of MT-OPD teacher `index` (server mode), as the trainer reaches them."""
    replicas = spec.teacher_servers.replicas if spec.teacher_servers else 1
    port = options.ports.rollout
    return [f"http://{naming.teacher_host(name, namespace, index, r)}:{port}" for r in range(replicas)]


def has_agent_domain(spec: RLVRRunSpec) -> bool:
    return any(d.verifier.type == "agent" for d in spec.domains)


def serves_teachers(spec: RLVRRunSpec) -> bool:
    """MT-OPD in rollout mode server: each teacher has its own vLLM servers (colocated: the trainer
    loads the teachers)."""
    return spec.algorithm.type == "mt_opd" and spec.rollout.mode == "server"


def _teachers(
    spec: RLVRRunSpec, name: str, namespace: str, options: OperatorOptions, resolved: Resolved
) -> list[dict[str, Any]]:
    """algorithm.teachers of the trainer config: served (server_urls + served_model_name) or loaded
    by the trainer (model: the path where the pod mounts it)."""
    out = []
    uris = teacher_models(spec, resolved)
    for i, (teacher, uri) in enumerate(zip(spec.algorithm.teachers or [], uris, strict=True)):
        entry: dict[str, Any] = {"domains": list(teacher.domains)}
        if serves_teachers(spec):
            entry["server_urls"] = teacher_urls(name, namespace, spec, options, i)
            entry["served_model_name"] = naming.teacher(name, i)
        else:
            entry["model"] = local_path(uri, options)
        out.append(entry)
    return out


def build_trainer_config(
    spec: RLVRRunSpec,
    *,
    name: str,
    namespace: str,
    options: OperatorOptions,
    resolved: Resolved | None = None,
) -> dict[str, Any]:
    """The dict written as trainer.yaml into the run's ConfigMap. `resolved` holds the model URIs of
    the MT-OPD teachers' references (builders.references)."""
    out = local_path(run_output_uri(name, spec), options)
    algo = resolve_algorithm(spec.algorithm)
    a = spec.algorithm
    server = spec.rollout.mode == "server"
    weight_sync = spec.rollout.weight_sync if server else "filesystem"
    rollout: dict[str, Any] = {
        "mode": spec.rollout.mode,
        "server_urls": rollout_urls(name, namespace, spec, options),
        "served_model_name": name if server else None,
        "weight_sync": weight_sync,
        "weight_sync_dir": f"{out}/weights" if server and weight_sync == "filesystem" else None,
        "nccl_master_address": naming.trainer_host(name, namespace) if weight_sync == "nccl" else None,
        "nccl_port": options.ports.nccl_weight_sync,
    }
    config: dict[str, Any] = {
        "model": local_path(spec.model.uri, options),
        "output_dir": out,
        "run_name": name,
        "data": {
            "domains": [
                {
                    "name": d.name,
                    "dataset": local_path(d.dataset.uri, options),
                    "verifier": d.verifier.trainer_name(),
                    "fields": {
                        "prompt": d.dataset.fields.prompt,
                        "reference": d.dataset.fields.answer,
                        "id": d.dataset.fields.id,
                    },
                    "verifier_options": dict(d.verifier.options or {}),
                    "format": d.dataset.format,
                    "format_options": dict(d.dataset.format_options or {}),
                    "weight": d.weight,
                    "max_samples": d.max_samples,
                }
                for d in spec.domains
            ],
            "mixing": spec.mixing,
            "chat_template": spec.model.chat_template,
            "system_prompt": spec.model.system_prompt,
        },
        "algorithm": {
            "name": TRAINER_ALGORITHM_NAMES[a.type],
            "group_size": a.group_size,
            "prompts_per_step": a.prompts_per_step,
            "learning_rate": a.learning_rate,
            "lr_schedule": a.schedule.type,
            "warmup_steps": a.schedule.warmup_steps,
            "lr_min_ratio": a.schedule.min_ratio,
            "weight_decay": a.weight_decay,
            "clip_low": algo.clip_low,
            "clip_high": algo.clip_high,
            "clip_ratio_c": a.clip_ratio_c,
            "recompute_old_logprobs": algo.recompute_logprobs,
            "importance_sampling": a.rollout_correction.importance_sampling,
            "importance_sampling_cap": a.rollout_correction.cap,
            "importance_sampling_floor": a.rollout_correction.floor,
            "kl_coef": algo.kl_coef,
            "kl_estimator": a.kl_estimator,
            "entropy_coef": a.entropy_coef,
            "loss_aggregation": algo.loss_aggregation,
            "dynamic_sampling": algo.dynamic_sampling,
            "overlong_buffer_tokens": algo.overlong_buffer_tokens,
            "overlong_penalty": a.overlong_penalty,
            "overlong_filtering": a.overlong_filtering,
            "normalize_advantage_std": algo.normalize_advantage_std,
            "temperature": a.temperature,
            "top_p": a.top_p,
            "max_prompt_tokens": a.max_prompt_tokens,
            "max_response_tokens": a.max_response_tokens,
            "steps": a.steps,
            "update_epochs": a.update_epochs,
            "mini_batches": a.mini_batches,
            "off_policy_steps": a.off_policy_steps,
            "micro_batch_size": spec.trainer.micro_batch_size,
            "max_grad_norm": a.max_grad_norm,
            "seed": a.seed,
        },
        "deepspeed": {
            "zero_stage": spec.trainer.deepspeed.zero_stage,
            "offload_optimizer": spec.trainer.deepspeed.offload_optimizer,
            "offload_params": spec.trainer.deepspeed.offload_params,
            "dtype": spec.model.dtype,
        },
        # The update's memory (the trainer's `memory` section); the device size is read on the GPU.
        "memory": {"gradient_checkpointing": spec.trainer.gradient_checkpointing},
        "rollout": rollout,
        # Model-written code runs in the run's sandboxed verifier Deployment, not in the trainer pod.
        "rewards": {"service_url": naming.verifier_url(name, namespace, options.ports.verifier)},
        "checkpoint": {
            "dir": f"{out}/checkpoints",
            "every_steps": spec.checkpoint.every_steps,
            "keep": spec.checkpoint.keep,
        },
        # The last step's numbers reach Prometheus and the operator's own progress scrape (which
        # comes every status interval) before the pod ends.
        "metrics": {
            "jsonl": "metrics.jsonl",
            "prometheus_port": options.ports.trainer_metrics,
            "final_scrape_timeout_s": FINAL_SCRAPE_TIMEOUT_S,
        },
    }
    if a.type == "mt_opd":
        config["algorithm"]["teachers"] = _teachers(spec, name, namespace, options, resolved or {})
    if has_agent_domain(spec):
        agent = spec.agent or AgentSpec()
        # Episodes run against the run's sandboxed environment Deployment, beside the verifier.
        config["agent"] = {
            "environment_url": naming.environment_url(name, namespace, options.ports.environment),
            "max_turns": agent.max_turns,
            "parallel_episodes": agent.parallel_episodes,
        }
    return config
