"""What the CRD schema cannot check but the operator must refuse: pure functions returning problems.

Each problem names the field. The handler turns a non-empty list into a PermanentError (the
resource gets phase Failed, reason InvalidSpec); `m2rl render` prints them and exits 1.
"""

from __future__ import annotations

from m2rl_operator.api.algorithm import PRESETS
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.api.uri import parse_uri

# Dataset formats the trainer reads (m2rl_trainer.data.formats); the others are benchmark layouts.
TRAINING_FORMATS = ("jsonl", "nemotron")


def rlvrrun_problems(spec: RLVRRunSpec) -> list[str]:
    """Spec values the trainer image (m2rl_trainer 0.1) cannot honour yet."""
    problems: list[str] = []
    for i, domain in enumerate(spec.domains):
        if parse_uri(domain.dataset.uri).scheme == "hf":
            problems.append(
                f"spec.domains[{i}].dataset.uri: {domain.dataset.uri}: the trainer reads dataset files "
                "(.jsonl, .json, .parquet) from a volume; copy the Hub dataset to a pvc:// path"
            )
        if domain.dataset.config is not None:
            problems.append(f"spec.domains[{i}].dataset.config: Hub dataset configurations are not supported")
        if domain.dataset.format not in TRAINING_FORMATS:
            problems.append(
                f"spec.domains[{i}].dataset.format: {domain.dataset.format} is a benchmark format; "
                f"training reads {' or '.join(TRAINING_FORMATS)}"
            )
    a = spec.algorithm
    preset_std = PRESETS[a.type].normalize_advantage_std
    if a.normalize_advantage_std is not None and a.normalize_advantage_std != preset_std:
        problems.append(
            f"spec.algorithm.normalizeAdvantageStd: the trainer ties it to the algorithm type "
            f"({a.type}: {str(preset_std).lower()}); choose the type instead"
        )
    if spec.model.dtype == "float16":
        problems.append("spec.model.dtype: float16 is not supported by the trainer (use bfloat16 or float32)")
    if spec.model.tokenizer is not None:
        problems.append("spec.model.tokenizer: a separate tokenizer is not supported by the trainer yet")
    if (
        spec.rollout.mode == "server"
        and spec.rollout.weight_sync == "nccl"
        and spec.rollout.gpus_per_replica == 0
    ):
        problems.append("spec.rollout.weightSync: nccl needs GPUs; use filesystem with gpusPerReplica 0")
    if spec.agent is not None and spec.agent.data and parse_uri(spec.agent.data).scheme == "hf":
        problems.append(
            f"spec.agent.data: {spec.agent.data}: the environment reads a folder of CSV files from a volume; "
            "copy it to a pvc:// path"
        )
    ranks = spec.trainer.nodes * max(spec.trainer.gpus_per_node, 1)
    if (
        any(d.verifier.type == "agent" for d in spec.domains)
        and spec.rollout.mode == "colocated"
        and spec.trainer.deepspeed.zero_stage == 3
        and a.off_policy_steps == 0
        and ranks > 1
    ):
        # m2rl_trainer.config._agent_problems refuses it at start; say so before any pod runs.
        problems.append(
            "spec.domains: agent episodes take a different number of turns on each rank, which colocated "
            "generation on a ZeRO-3 policy over several ranks cannot follow (its ranks generate in "
            "lockstep); use trainer.deepspeed.zeroStage 2, algorithm.offPolicySteps 1 or rollout.mode server"
        )
    return problems
