"""RLVRRun: one GRPO run of a model over one domain (an expert) or several (a mixed run), or an
MT-OPD run that distills experts into one student."""

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
DomainVerifierType = Literal["math", "code", "multiple_choice", "ifeval", "agent"]
"""A training domain's verifier: the verifiers of the trainer image, or `agent` (multi-turn tool
use in an environment, which verifies the episode)."""
EnvironmentName = Literal["workplace_assistant"]
"""The tool environments of the trainer image (m2rl_trainer.agent.environment.ENVIRONMENTS)."""
DEFAULT_ENVIRONMENT: EnvironmentName = "workplace_assistant"

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


class DomainVerifierRef(VerifierRef):
    """How a training domain's responses are verified: a verifier, or an agent environment."""

    model_config = model_rules(
        Rule(
            rule="self.type == 'agent' || !has(self.environment)",
            message="environment applies only to verifier type agent",
            field_path=".environment",
        ),
        Rule(
            rule="self.type != 'agent' || !has(self.options)",
            message="options do not apply to verifier type agent: its environment verifies an episode by "
            "replaying the episode's tool calls and the task's reference calls (configure it in spec.agent)",
            field_path=".options",
        ),
    )

    type: DomainVerifierType
    """type is the verifier: math (final-answer equivalence with math-verify, e.g. \\boxed{}), code
    (runs the tests in the sandbox), multiple_choice (the chosen letter), ifeval (IFEval instruction
    checkers), or agent: multi-turn tool use (Qwen-style <tool_call> blocks) against a tool
    environment served beside the verifier, rewarded 1 when the environment's final state equals the
    state the task's reference calls leave (NeMo Gym's workplace assistant; docs/agent.md). An agent
    domain's rows are tasks with chat messages and {"ground_truth", "tools"} references (the
    Nemotron blend's workbench rows: dataset format nemotron)."""
    environment: EnvironmentName | None = None
    """environment is the tool environment of an agent domain: workplace_assistant (email,
    calendar, analytics, project and customer tools over CSV tables). Unset means
    workplace_assistant. Only for type agent."""

    def trainer_name(self) -> str:
        """The trainer config's `verifier` of the domain: the environment's name for agent domains."""
        return (self.environment or DEFAULT_ENVIRONMENT) if self.type == "agent" else self.type


class DomainSpec(ApiModel):
    """One domain of the run: its prompts, how responses are verified, and its share of each step."""

    name: ShortName
    """name identifies the domain in metrics, status and checkpoints (e.g. math, code, science, if).
    Lowercase letters, digits and '-'; unique within the run."""
    dataset: DatasetSpec
    """dataset holds the domain's prompts and reference answers."""
    verifier: DomainVerifierRef
    """verifier scores the domain's responses (reward 1 for a verified response, else 0, unless the
    verifier documents partial credit); type agent runs multi-turn episodes in a tool environment."""
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


_TP_WITHIN_GPUS = Rule(
    rule="self.gpusPerReplica == 0 || self.tensorParallelSize <= self.gpusPerReplica",
    message="tensorParallelSize must not exceed gpusPerReplica: each tensor-parallel shard needs its own GPU",
    field_path=".tensorParallelSize",
)
_GPUS_MULTIPLE_OF_TP = Rule(
    rule="self.gpusPerReplica == 0 || self.gpusPerReplica % self.tensorParallelSize == 0",
    message="gpusPerReplica must be a multiple of tensorParallelSize: vLLM runs "
    "gpusPerReplica / tensorParallelSize data-parallel engines per replica",
    field_path=".gpusPerReplica",
)


class VLLMServerSpec(PodOptions):
    """The shape of a set of vLLM servers (replicas, GPUs, parallelism)."""

    model_config = model_rules(_TP_WITHIN_GPUS, _GPUS_MULTIPLE_OF_TP)

    replicas: int = Field(1, ge=1, le=1024)
    """replicas is the number of vLLM servers. Default 1."""
    gpus_per_replica: int = Field(1, ge=0, le=16)
    """gpusPerReplica is the number of GPUs per server. Default 1; 0 runs vLLM on CPU."""
    tensor_parallel_size: int = Field(1, ge=1, le=16)
    """tensorParallelSize shards the model over this many GPUs of a replica. Default 1."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """gpuMemoryUtilization is the fraction of GPU memory vLLM may use. Default 0.9."""
    extra_args: list[Annotated[str, StringConstraints(max_length=1024)]] | None = Field(None, max_length=64)
    """extraArgs are appended to the vLLM server's command line (e.g. ["--enable-prefix-caching"]).
    Unset means none."""


class RolloutSpec(VLLMServerSpec):
    """The rollout servers: vLLM replicas that generate responses and receive new weights."""

    model_config = model_rules(
        _TP_WITHIN_GPUS,
        Rule(
            rule="self.weightSync != 'nccl' || self.replicas == 1",
            message="weightSync nccl serves one replica (vLLM 0.32's trainer-side NCCL engine connects to "
            "one server): use replicas 1 or weightSync filesystem",
            field_path=".weightSync",
        ),
        _GPUS_MULTIPLE_OF_TP,
    )

    mode: Literal["server", "colocated"] = "server"
    """mode is server (vLLM servers in their own pods, the default) or colocated (generation inside
    the trainer process with Hugging Face generate: no rollout pods, for tiny models and CPU runs;
    the other rollout fields are then ignored). It also decides how MT-OPD teachers score: served
    by their own vLLM servers (server), or loaded by the trainer (colocated)."""
    weight_sync: Literal["nccl", "filesystem"] = "filesystem"
    """weightSync is how new weights reach the servers after each step: filesystem (safetensors on
    the checkpoint volume, then an in-place reload on every replica; works everywhere) or nccl
    (broadcast from trainer rank 0 over GPUs; one replica only, as vLLM 0.32's trainer-side
    engine connects to one server). Default filesystem."""


class TeacherServerSpec(VLLMServerSpec):
    """The vLLM servers of each MT-OPD teacher (rollout mode server): every teacher gets its own
    StatefulSet of this shape. Teachers never change, so they receive no weights; they only score
    (one forward pass per sample, prompt log-probabilities)."""


class AgentSpec(PodOptions):
    """Agent domains: their episodes, and the tool environment service beside the verifier."""

    max_turns: int = Field(6, ge=1, le=64)
    """maxTurns is the number of model turns per episode; a call in the last turn still counts.
    Default 6 (the M2RL study's max_num_steps, NeMo Gym's max_steps)."""
    parallel_episodes: int = Field(16, ge=1, le=1024)
    """parallelEpisodes is the number of episodes per trainer rank whose tool calls run at once.
    Default 16."""
    data: URI | None = None
    """data is the environment's data folder (pvc:// or file://) in NeMo Gym's csv_data layout (its
    resources_servers/workplace_assistant/csv_data, which the Nemotron blend's workbench rows refer
    to). Unset means the tiny built-in workplace (docs/agent.md)."""
    replicas: int = Field(1, ge=1, le=64)
    """replicas is the number of environment pods. Default 1. An episode's session lives in one
    pod: the Service keeps each trainer pod on one replica (session affinity by client IP)."""


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
        # MT-OPD teachers against the run's domains (m2rl_trainer.config._mt_opd_problems); bounded
        # by maxItems: 16 domains x 16 teachers x 16 domains per teacher.
        Rule(
            rule="!has(self.algorithm.teachers) || "
            "self.domains.all(d, self.algorithm.teachers.exists_one(t, d.name in t.domains))",
            message="every domain must have exactly one teacher: name each of spec.domains in the "
            "domains of one of spec.algorithm.teachers",
            field_path=".algorithm.teachers",
        ),
        Rule(
            rule="!has(self.algorithm.teachers) || "
            "self.algorithm.teachers.all(t, t.domains.all(n, self.domains.exists(d, d.name == n)))",
            message="teachers may teach only the run's domains (spec.domains[].name)",
            field_path=".algorithm.teachers",
        ),
        Rule(
            rule="!has(self.teacherServers) "
            "|| (self.algorithm.type == 'mt_opd' && self.rollout.mode == 'server')",
            message="teacherServers applies only to type mt_opd with rollout mode server (colocated, the "
            "trainer loads the teachers itself)",
            field_path=".teacherServers",
        ),
        Rule(
            rule="!has(self.agent) || self.domains.exists(d, d.verifier.type == 'agent')",
            message="agent applies only to runs with an agent domain (a domain with verifier type agent)",
            field_path=".agent",
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
    teacher_servers: TeacherServerSpec | None = None
    """teacherServers sizes and places each MT-OPD teacher's vLLM servers (type mt_opd, rollout
    mode server). Unset means 1 replica x 1 GPU per teacher."""
    agent: AgentSpec | None = None
    """agent configures the episodes of agent domains and their environment service (a Deployment
    beside the verifier, as sandboxed). Only for runs with an agent domain; unset means 6 turns,
    16 parallel episodes, the tiny built-in workplace, 1 replica."""
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
    teacher_models: list[Annotated[str, StringConstraints(max_length=URI_MAX_LENGTH)]] | None = Field(
        None, max_length=MAX_DOMAINS
    )
    """teacherModels are the model URIs of spec.algorithm.teachers, in order, as resolved when the
    run started (a runRef's final model, a mergeRef's output); an MT-OPD run uses them until it
    ends, whatever happens to the referenced resources."""
    waiting_for: list[Annotated[str, StringConstraints(max_length=128)]] | None = Field(
        None, max_length=MAX_DOMAINS
    )
    """waitingFor lists the teachers' RLVRRuns/MergeJobs (as Kind/name) that have not succeeded yet."""
    domains: list[DomainStatus] | None = Field(
        None,
        max_length=MAX_DOMAINS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """domains holds per-domain reward and accuracy of the latest step."""
