"""RLVRRun: one GRPO run of a model over one domain (an expert) or several (a mixed run)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from m2rl_operator.api.algorithm import AlgorithmSpec
from m2rl_operator.api.base import (
    URI_MAX_LENGTH,
    ApiModel,
    Rule,
    field_rules,
    model_rules,
)
from m2rl_operator.api.common import (
    URI,
    DatasetSpec,
    PodOptions,
    Quantity,
    SchedulingOptions,
    ShortName,
    StatusBase,
    Timestamp,
    VerifierRef,
    VerifierServiceSpec,
    WritableURI,
)

DType = Literal["bfloat16", "float16", "float32"]
MAX_DOMAINS = 16

MUTABLE_SPEC_FIELDS = ("suspend", "rollout.replicas", "verifier.replicas", "ttlSecondsAfterFinished")
"""The spec fields that may change on an existing RLVRRun (the operator applies each to the live
run); every other field is immutable (`updates.add_update_rules`)."""


class ModelSpec(ApiModel):
    """The model a run starts from."""

    model_config = model_rules(
        Rule(
            rule="!has(self.systemPrompt) || self.chatTemplate",
            message="systemPrompt needs chatTemplate: true: the system message is part of the chat template",
            field_path=".systemPrompt",
        )
    )

    uri: URI
    """uri locates the base model's Hugging Face-format checkpoint: pvc://CLAIM/PATH,
    hf://ORG/NAME[@REVISION] or file:///PATH. Required."""
    dtype: DType = "bfloat16"
    """dtype of the weights during training and generation: bfloat16, float16 or float32. Default
    bfloat16."""
    chat_template: bool = True
    """chatTemplate wraps prompts in the tokenizer's chat template. Default true; set false for base
    models without one (prompts are then used as plain text)."""
    system_prompt: str | None = Field(None, max_length=16384)
    """systemPrompt is prepended to every prompt as a system message (e.g. asking for the final
    answer in \\boxed{}). Needs chatTemplate. Unset means no system message."""
    tokenizer: URI | None = None
    """tokenizer loads the tokenizer from another URI. Unset means the model's own."""


class DomainSpec(ApiModel):
    """One domain of the run: its prompts, how responses are verified, and its share of each step."""

    name: ShortName
    """name identifies the domain in metrics, status and checkpoints (e.g. math, code, science, if).
    Lowercase letters, digits and '-'; unique within the run."""
    dataset: DatasetSpec
    """dataset holds the domain's prompts and reference answers."""
    verifier: VerifierRef
    """verifier scores the domain's responses (reward 1 for a verified response, else 0, unless the
    verifier documents partial credit)."""
    weight: float = Field(
        1.0,
        json_schema_extra=field_rules(
            Rule(
                rule="self > 0.0",
                message="weight must be positive: it is the domain's share of each step's prompts "
                "(remove the domain instead of giving it weight 0)",
            )
        ),
    )
    """weight is the domain's mixing weight: each step draws prompts from the domains in proportion
    to their weights. Default 1 (equal shares). Ignored when the run has one domain."""
    max_samples: int | None = Field(None, ge=1)
    """maxSamples caps how many prompts of the dataset are used (the first ones after shuffling
    with the run's seed). Unset means all."""


class DeepSpeedSpec(ApiModel):
    """DeepSpeed settings of the trainer."""

    model_config = model_rules(
        Rule(
            rule="!self.offloadParams || self.zeroStage == 3",
            message="offloadParams needs zeroStage 3: only ZeRO-3 partitions the parameters it could offload",
            field_path=".offloadParams",
        )
    )

    zero_stage: int = Field(3, ge=0, le=3)
    """zeroStage is the ZeRO stage: 0 (none), 1 (optimizer states), 2 (+ gradients), 3 (+
    parameters). Default 3."""
    offload_optimizer: bool = False
    """offloadOptimizer keeps optimizer states in CPU memory (ZeRO-Offload). Default false."""
    offload_params: bool = False
    """offloadParams keeps parameters in CPU memory; needs zeroStage 3. Default false."""


class TrainerSpec(PodOptions):
    """The trainer: DeepSpeed ranks that compute the policy update."""

    nodes: int = Field(1, ge=1, le=1024)
    """nodes is the number of trainer pods (one per node; rank 0 coordinates). Default 1."""
    gpus_per_node: int = Field(8, ge=0, le=16)
    """gpusPerNode is the number of GPUs (and ranks) per trainer pod. Default 8; 0 trains on CPU
    (one rank per pod, for tests and tiny models)."""
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    """deepspeed configures ZeRO and offloading. Default: ZeRO-3 without offloading."""
    gradient_checkpointing: bool = True
    """gradientCheckpointing recomputes activations in the backward pass to save memory. Default
    true."""
    micro_batch_size: int = Field(1, ge=1, le=1024)
    """microBatchSize is the number of responses per rank per forward/backward pass; gradients are
    accumulated up to the mini-batch. Default 1."""


class RolloutSpec(PodOptions):
    """The rollout servers: vLLM replicas that generate responses and receive new weights."""

    model_config = model_rules(
        Rule(
            rule="self.gpusPerReplica == 0 || self.tensorParallelSize <= self.gpusPerReplica",
            message="tensorParallelSize must not exceed gpusPerReplica: each tensor-parallel shard "
            "needs its own GPU",
            field_path=".tensorParallelSize",
        ),
        Rule(
            rule="self.weightSync != 'nccl' || self.replicas == 1",
            message="weightSync nccl serves one replica (vLLM 0.32's trainer-side NCCL engine connects to "
            "one server): use replicas 1 or weightSync filesystem",
            field_path=".weightSync",
        ),
        Rule(
            rule="self.gpusPerReplica == 0 || self.gpusPerReplica % self.tensorParallelSize == 0",
            message="gpusPerReplica must be a multiple of tensorParallelSize: vLLM runs "
            "gpusPerReplica / tensorParallelSize data-parallel engines per replica",
            field_path=".gpusPerReplica",
        ),
    )

    mode: Literal["server", "colocated"] = "server"
    """mode is server (vLLM servers in their own pods, the default) or colocated (generation inside
    the trainer process with Hugging Face generate: no rollout pods, for tiny models and CPU runs;
    the other rollout fields are then ignored)."""
    replicas: int = Field(1, ge=1, le=1024)
    """replicas is the number of vLLM servers. Default 1."""
    gpus_per_replica: int = Field(1, ge=0, le=16)
    """gpusPerReplica is the number of GPUs per server. Default 1; 0 runs vLLM on CPU."""
    tensor_parallel_size: int = Field(1, ge=1, le=16)
    """tensorParallelSize shards the model over this many GPUs of a replica. Default 1."""
    weight_sync: Literal["nccl", "filesystem"] = "filesystem"
    """weightSync is how new weights reach the servers after each step: filesystem (safetensors on
    the checkpoint volume, then an in-place reload on every replica; works everywhere) or nccl
    (broadcast from trainer rank 0 over GPUs; one replica only, as vLLM 0.32's trainer-side
    engine connects to one server). Default filesystem."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """gpuMemoryUtilization is the fraction of GPU memory vLLM may use. Default 0.9."""
    extra_args: list[Annotated[str, StringConstraints(max_length=1024)]] | None = Field(None, max_length=64)
    """extraArgs are appended to the vLLM server's command line (e.g. ["--enable-prefix-caching"]).
    Unset means none."""


class CheckpointSpec(ApiModel):
    """Where and how often the run saves checkpoints."""

    model_config = model_rules(
        Rule(
            rule="!has(self.storageClassName) || !has(self.uri)",
            message="storageClassName applies only to the volume the operator creates: leave it unset "
            "when uri names an existing location",
            field_path=".storageClassName",
        )
    )

    every_steps: int = Field(50, ge=1)
    """everySteps saves a checkpoint every this many steps (and always after the last step).
    Default 50."""
    keep: int = Field(3, ge=0)
    """keep is how many recent checkpoints to keep (the final model is always kept). Default 3;
    0 keeps all."""
    uri: WritableURI | None = None
    """uri is the directory the run writes into (pvc://CLAIM/PATH or file:///PATH); share one
    ReadWriteMany claim between runs so merges and evaluations can read every checkpoint. Unset
    means the operator creates a claim named <run>-checkpoints and writes to its root."""
    size: Quantity = "200Gi"
    """size of the claim the operator creates when uri is unset. Default 200Gi."""
    storage_class_name: str | None = Field(None, max_length=URI_MAX_LENGTH)
    """storageClassName of the claim the operator creates when uri is unset. Unset means the
    cluster's default class."""
    delete_with_run: bool = False
    """deleteWithRun makes the claim the operator creates (when uri is unset) belong to the run, so
    deleting the run, or its ttlSecondsAfterFinished, deletes the claim and every checkpoint and
    the final model with it. Default false: the claim outlives the run (delete it yourself)."""


class RLVRRunSpec(SchedulingOptions):
    """The desired state of an RLVRRun."""

    model_config = model_rules(
        Rule(
            rule="self.mixing == 'weighted' || self.domains.all(d, d.weight == 1.0)",
            message="domain weights apply only with mixing: weighted; concat_shuffle takes each domain "
            "in proportion to its number of rows (leave weight unset, or use maxSamples)",
            field_path=".mixing",
        ),
    )

    model: ModelSpec
    """model is the base model the run starts from. Required."""
    mixing: Literal["weighted", "concat_shuffle"] = "weighted"
    """mixing is how a mixed run draws prompts: weighted (each step samples the domains in
    proportion to their weights) or concat_shuffle (all datasets concatenated and shuffled, so each
    domain's share is its share of the rows; the M2RL study's choice). Default weighted."""
    domains: list[DomainSpec] = Field(
        min_length=1,
        max_length=MAX_DOMAINS,
        json_schema_extra=field_rules(
            Rule(
                rule="self.all(d, self.exists_one(e, e.name == d.name))",
                message="domain names must be unique within a run: each domain gets its own metrics and "
                "status entry",
            ),
        ),
    )
    """domains are the training domains: one makes an expert run, several make a mixed multi-task
    run whose steps draw prompts from each domain by weight. Required (1 to 16)."""
    algorithm: AlgorithmSpec
    """algorithm holds the GRPO-family settings; `steps` is required."""
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    """trainer sizes and places the DeepSpeed trainer. Default: 1 node x 8 GPUs, ZeRO-3."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """rollout sizes and places the vLLM servers. Default: 1 replica x 1 GPU, NCCL weight sync."""
    verifier: VerifierServiceSpec = Field(default_factory=VerifierServiceSpec)
    """verifier sizes and isolates the sandboxed verifier service. Default: 1 replica, 10 s per check."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """checkpoint says where and how often to save. Default: every 50 steps, keep 3, on a new
    200Gi claim."""
    suspend: bool = False
    """suspend stops the run's pods while keeping its checkpoints; setting it back to false resumes
    from the latest checkpoint. Default false."""
    max_restarts: int = Field(3, ge=0, le=1000)
    """maxRestarts is how many times a failed run is restarted from its latest checkpoint before it
    is marked Failed. Default 3; 0 fails on the first failure."""


class DomainStatus(ApiModel):
    """Training progress of one domain."""

    name: str = Field(max_length=32)
    """name of the domain."""
    reward: float | None = None
    """reward is the mean reward of the domain's responses in the latest step."""
    accuracy: float | None = Field(None, ge=0.0, le=1.0)
    """accuracy is the fraction of the latest step's responses the verifier accepted."""
    samples: int | None = Field(None, ge=0)
    """samples is the number of the domain's responses trained on so far."""


class CheckpointStatus(ApiModel):
    """A saved checkpoint."""

    uri: str = Field(max_length=URI_MAX_LENGTH)
    """uri of the checkpoint directory."""
    step: int = Field(ge=0)
    """step after which it was saved."""
    time: Timestamp | None = None
    """time it was saved."""


class RLVRRunStatus(StatusBase):
    """The observed state of an RLVRRun."""

    step: int | None = Field(None, ge=0)
    """step is the last completed training step."""
    total_steps: int | None = Field(None, ge=0)
    """totalSteps is spec.algorithm.steps, copied for `kubectl get`."""
    restarts: int | None = Field(None, ge=0)
    """restarts counts restarts after failures (see spec.maxRestarts); restarts after a disruption
    (preemption, eviction, node drain) or a spec update are not counted."""
    attempt: int | None = Field(None, ge=0)
    """attempt is the number of the current trainer Job: every restart, counted or not, starts a
    new attempt (label m2rl.io/attempt of the Job and its pods)."""
    latest_checkpoint: CheckpointStatus | None = None
    """latestCheckpoint is the newest checkpoint; a restart resumes from it."""
    final_model: str | None = Field(None, max_length=URI_MAX_LENGTH)
    """finalModel is the URI of the trained model once the run succeeded; MergeJobs and EvalSuites
    that reference the run read it."""
    domains: list[DomainStatus] | None = Field(
        None,
        max_length=MAX_DOMAINS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """domains holds per-domain reward and accuracy of the latest step."""
