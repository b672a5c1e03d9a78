"""Types shared by the three kinds: URIs, quantities, pod placement, datasets, verifiers, status."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema

from m2rl_operator.api.base import (
    MAX_LIST_ITEMS,
    NAME_MAX_LENGTH,
    SHORT_TEXT_MAX_LENGTH,
    URI_MAX_LENGTH,
    ApiModel,
    Rule,
    model_rules,
)
from m2rl_operator.api.uri import URI_PATTERN, WRITABLE_URI_PATTERN

# ---- strings -------------------------------------------------------------------------------------

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

URI = Annotated[str, StringConstraints(max_length=URI_MAX_LENGTH, pattern=URI_PATTERN)]
"""A model or dataset URI: pvc://CLAIM/PATH, hf://ORG/NAME[@REVISION] or file:///ABS/PATH."""
WritableURI = Annotated[str, StringConstraints(max_length=URI_MAX_LENGTH, pattern=WRITABLE_URI_PATTERN)]
"""A location the operator writes to: pvc://CLAIM/PATH or file:///ABS/PATH."""
ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH, pattern=DNS_LABEL_PATTERN)
]
"""The name of another object in the same namespace (a DNS-1123 label)."""
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=DNS_LABEL_PATTERN)]
"""A short identifier used in metric labels and file names (domain, model and benchmark names)."""

# ---- quantities and free-form objects ------------------------------------------------------------

QUANTITY_PATTERN = (  # the pattern Kubernetes' own CRDs use for resource.Quantity
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and re.fullmatch(QUANTITY_PATTERN, value) is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
"""A Kubernetes resource quantity: an integer or a string such as "500m", "16Gi"."""

FreeForm = Annotated[
    dict[str, Any],
    Field(max_length=32),
    WithJsonSchema({"type": "object", "maxProperties": 32, "x-kubernetes-preserve-unknown-fields": True}),
]
"""An object of at most 32 keys passed through as is (its owner documents its keys)."""

Timestamp = datetime


# ---- pod placement --------------------------------------------------------------------------------


class ResourceRequirements(ApiModel):
    """Compute resources of a container, as in a Pod's `resources`."""

    requests: dict[str, Quantity] | None = Field(None, max_length=16)
    """requests are the minimum resources (e.g. cpu: "8", memory: 64Gi). Unset means the operator's
    default for the component; GPUs are set from the component's GPU count, not here."""
    limits: dict[str, Quantity] | None = Field(None, max_length=16)
    """limits are the maximum resources. Unset means no limits beyond the GPU count."""


class Toleration(ApiModel):
    """A toleration, as in a Pod's `tolerations`."""

    key: str | None = Field(None, max_length=SHORT_TEXT_MAX_LENGTH)
    """key is the taint key the toleration applies to. Unset (with operator Exists) matches all taints."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """operator is Exists (any value) or Equal (the value must match). Default Equal."""
    value: str | None = Field(None, max_length=SHORT_TEXT_MAX_LENGTH)
    """value is the taint value to match with operator Equal. Unset means the empty value."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """effect is the taint effect to match. Unset means all effects."""
    toleration_seconds: int | None = Field(None, ge=0)
    """tolerationSeconds is how long a NoExecute taint is tolerated. Unset means forever."""


class KeySelector(ApiModel):
    """A key of a Secret or ConfigMap in the same namespace."""

    name: ObjectName
    """name is the Secret's or ConfigMap's name."""
    key: str = Field(max_length=SHORT_TEXT_MAX_LENGTH)
    """key is the key inside it."""
    optional: bool = False
    """optional makes a missing object or key acceptable (the variable is then unset). Default false."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from."""

    model_config = model_rules(
        Rule(
            rule="(has(self.secretKeyRef) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0) == 1",
            message="valueFrom must set exactly one of `secretKeyRef`, `configMapKeyRef`",
        )
    )

    secret_key_ref: KeySelector | None = None
    """secretKeyRef reads the value from a Secret key (e.g. a Hugging Face token). Exactly one of
    secretKeyRef and configMapKeyRef is set."""
    config_map_key_ref: KeySelector | None = None
    """configMapKeyRef reads the value from a ConfigMap key. Exactly one of secretKeyRef and
    configMapKeyRef is set."""


class EnvVar(ApiModel):
    """An environment variable of a component's containers."""

    model_config = model_rules(
        Rule(
            rule="!(has(self.value) && has(self.valueFrom))",
            message="an environment variable sets either `value` or `valueFrom`, not both",
        )
    )

    name: str = Field(max_length=SHORT_TEXT_MAX_LENGTH, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """name is the variable's name."""
    value: str | None = Field(None, max_length=32768)
    """value is the variable's value. Unset (without valueFrom) means the empty string."""
    value_from: EnvVarSource | None = None
    """valueFrom takes the value from a Secret or ConfigMap key instead of `value`. Unset means the
    value is `value`."""


class PodOptions(ApiModel):
    """Placement and container options of one component's pods (see also the resource-wide `pod`)."""

    image: str | None = Field(None, max_length=URI_MAX_LENGTH)
    """image is the container image. Unset means the operator's default image for this component
    (Helm value `images.<component>`)."""
    resources: ResourceRequirements | None = None
    """resources are CPU/memory requests and limits of the main container. Unset means the
    operator's default; GPU counts come from the component's own GPU field."""
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        None, max_length=32
    )
    """nodeSelector restricts the pods to nodes with these labels. Unset means any node."""
    tolerations: list[Toleration] | None = Field(None, max_length=32)
    """tolerations let the pods run on tainted nodes (e.g. GPU nodes). Unset means none."""
    env: list[EnvVar] | None = Field(None, max_length=MAX_LIST_ITEMS)
    """env adds environment variables to the main container. Unset means none beyond the operator's."""


# ---- datasets and verifiers ----------------------------------------------------------------------

VerifierType = Literal["math", "code", "multiple_choice", "ifeval"]
DatasetFormat = Literal[
    "jsonl",
    "nemotron",
    "aime24",
    "aime25",
    "amc23",
    "math500",
    "gpqa",
    "mmlu_redux",
    "livecodebench",
    "hle",
    "ifeval",
    "ifbench",
]
"""The verifiers of the trainer image (m2rl_trainer.rewards.registry.VERIFIERS), by registered name."""


class FieldMapping(ApiModel):
    """Which columns of a dataset hold the prompt, the reference answer and an id."""

    prompt: str = Field("prompt", max_length=SHORT_TEXT_MAX_LENGTH)
    """prompt is the column with the prompt text (or chat messages). Default "prompt"."""
    answer: str = Field("answer", max_length=SHORT_TEXT_MAX_LENGTH)
    """answer is the column the verifier checks against: the final answer (math), the tests
    (code), the correct letter (multiple_choice) or the instruction ids and arguments (ifeval).
    Default "answer"."""
    id: str | None = Field(None, max_length=SHORT_TEXT_MAX_LENGTH)
    """id is a column with a stable row id, used in logs and per-sample results. Unset means the
    row number."""


class DatasetSpec(ApiModel):
    """A dataset: where it is and how its columns map to prompt and answer."""

    uri: URI
    """uri locates the data: a JSONL/Parquet file or directory on a volume (pvc://CLAIM/PATH,
    file:///PATH) or a Hub dataset (hf://ORG/NAME[@REVISION])."""
    split: str = Field("train", max_length=64)
    """split is the dataset split to read (Hub datasets and directories with split files).
    Default "train"."""
    config: str | None = Field(None, max_length=SHORT_TEXT_MAX_LENGTH)
    """config is the Hub dataset configuration (subset). Unset means the default configuration."""
    fields: FieldMapping = Field(default_factory=FieldMapping)
    """fields maps dataset columns to prompt, answer and id (format jsonl only). Default: columns
    "prompt", "answer"."""
    format: DatasetFormat = "jsonl"
    """format is the layout the data is published in. jsonl: any JSONL/JSON/Parquet file, columns
    mapped by fields. nemotron: rows of the Nemotron RL blend, routed by their `dataset` field with
    the M2RL study's prompt prefixes (training domains). Benchmarks as published: aime24, aime25,
    amc23, math500, gpqa, mmlu_redux, livecodebench, hle, ifeval, ifbench (each in the study's prompt
    template; see docs/eval.md). Default jsonl."""
    format_options: FreeForm | None = None
    """formatOptions are the format's own options, passed as is with the keys docs/eval.md gives
    (e.g. {"release": "release_v6", "start_date": "2025-02-01"} for livecodebench, {"domains":
    ["math"]} for nemotron). Unset means the format's defaults."""


class VerifierRef(ApiModel):
    """Which verifier scores a domain's or benchmark's responses."""

    type: VerifierType
    """type is the verifier: math (final-answer equivalence with math-verify, e.g. \\boxed{}), code
    (runs the tests in the sandbox), multiple_choice (the chosen letter) or ifeval (IFEval
    instruction checkers)."""
    options: FreeForm | None = None
    """options are passed to the verifier as is; each verifier documents its own keys and rejects
    unknown ones (e.g. {"mode": "loose"} for ifeval). Unset means the verifier's defaults."""


SandboxIsolation = Literal["Auto", "RuntimeClass", "UserNamespace", "Privileged"]
"""How a pod that runs model-written code isolates it (docs/operations.md#code-sandbox)."""


class VerifierServiceSpec(PodOptions):
    """The sandboxed verifier service (code execution and other checks)."""

    model_config = model_rules(
        Rule(
            # has(): the API server also evaluates this on the raw `default: {}` of the field.
            rule="!has(self.isolation) || self.isolation != 'RuntimeClass' || has(self.runtimeClassName)",
            message="isolation RuntimeClass needs runtimeClassName (e.g. gvisor)",
            field_path=".runtimeClassName",
        )
    )

    replicas: int = Field(1, ge=1, le=256)
    """replicas is the number of verifier pods. Default 1."""
    runtime_class_name: str | None = Field(None, max_length=NAME_MAX_LENGTH)
    """runtimeClassName runs the verifier pods under this RuntimeClass (e.g. gvisor) for stronger
    isolation of untrusted code. Unset means the cluster's default runtime."""
    timeout_seconds: float = Field(10.0, gt=0, le=3600)
    """timeoutSeconds is the wall-clock limit of one check (one response against its tests);
    a check that runs longer scores 0. Default 10."""
    concurrency: int = Field(8, ge=1, le=1024)
    """concurrency is the number of checks one verifier pod runs at a time. Default 8."""
    isolation: SandboxIsolation = "Auto"
    """isolation is how the pods that run model-written code (the verifier, and evaluation pods of
    code benchmarks) give bubblewrap what it needs: RuntimeClass (runtimeClassName, e.g. gVisor;
    passes the restricted Pod Security Standard), UserNamespace (hostUsers false, an unmasked
    /proc and the Localhost seccomp profile `seccompLocalhostProfile`; needs a namespace at the
    baseline level) or Privileged (the last resort; a privileged namespace). Auto means
    RuntimeClass when runtimeClassName is set, else UserNamespace. Only applies when a domain or
    benchmark uses the code verifier; docs/operations.md#code-sandbox says what each gives up."""
    seccomp_localhost_profile: str = Field("m2rl/bwrap.json", max_length=URI_MAX_LENGTH)
    """seccompLocalhostProfile is the node-local seccomp profile (relative to the kubelet's
    seccomp directory) of isolation UserNamespace: the runtime's default profile plus the
    namespace and mount calls bubblewrap makes. Default "m2rl/bwrap.json"."""


# ---- status ---------------------------------------------------------------------------------------

Phase = Literal["Pending", "Waiting", "Queued", "Running", "Suspended", "Succeeded", "Failed"]
"""Pending: accepted, children being created. Waiting: referenced runs or merges have not
succeeded yet. Queued: Kueue has not admitted the workload yet. Running, Suspended, Succeeded,
Failed: as the words say."""


class Condition(ApiModel):
    """A condition of the resource (the shape of Kubernetes' metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    """type of the condition in CamelCase, e.g. Ready, Succeeded, Suspended."""
    status: Literal["True", "False", "Unknown"]
    """status of the condition: True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """reason is a CamelCase word for the last transition, for machines."""
    message: str = Field(max_length=32768)
    """message explains the last transition, for humans. May be empty."""
    last_transition_time: Timestamp
    """lastTransitionTime is when the status last changed."""
    observed_generation: int | None = Field(None, ge=0)
    """observedGeneration is the metadata.generation the condition was computed from."""


def conditions_field() -> Any:
    """The `conditions` field: a list map keyed by type, as Kubernetes' own APIs declare it."""
    return Field(
        None,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class StatusBase(ApiModel):
    """Fields every status has."""

    phase: Phase | None = None
    """phase is a one-word summary of where the resource is in its life."""
    conditions: list[Condition] | None = conditions_field()
    """conditions are the latest observations of the resource's state, one per type."""
    observed_generation: int | None = Field(None, ge=0)
    """observedGeneration is the metadata.generation the operator last acted on."""
    start_time: Timestamp | None = None
    """startTime is when the operator started the work."""
    completion_time: Timestamp | None = None
    """completionTime is when the work succeeded or failed for good."""


# ---- fields common to the three specs --------------------------------------------------------------


class Affinity(ApiModel):
    """Scheduling constraints, as in a Pod's `affinity` (each part passed through unchanged)."""

    node_affinity: FreeForm | None = None
    """nodeAffinity is passed to every pod as is (e.g. requiredDuringSchedulingIgnoredDuringExecution).
    Unset means none."""
    pod_affinity: FreeForm | None = None
    """podAffinity is passed to every pod as is (e.g. keep a run's pods in one rack or NVLink
    domain by topologyKey). Unset means none."""
    pod_anti_affinity: FreeForm | None = None
    """podAntiAffinity is passed to every pod as is. Unset means none."""


LabelValue = Annotated[
    str, StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
]


class PodTemplateOptions(ApiModel):
    """Options passed through to every pod of the resource (trainer, rollout servers, verifier,
    merge and evaluation pods), for topology-aware scheduling, secondary networks, registries and
    workload identity. Component fields (nodeSelector, tolerations) add to these."""

    labels: dict[str, LabelValue] | None = Field(None, max_length=32)
    """labels are added to every pod (e.g. for a network or topology controller). The operator's
    own labels (app.kubernetes.io/*, m2rl.io/*, Kueue's) win over a label of the same key.
    Unset means none."""
    annotations: dict[str, Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        None, max_length=32
    )
    """annotations are added to every pod (e.g. k8s.v1.cni.cncf.io/networks for a secondary
    network). Unset means none."""
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        None, max_length=32
    )
    """nodeSelector restricts every pod to nodes with these labels; a component's own
    nodeSelector adds to it (and wins on the same key). Unset means any node."""
    tolerations: list[Toleration] | None = Field(None, max_length=32)
    """tolerations are added to every pod, before a component's own. Unset means none."""
    affinity: Affinity | None = None
    """affinity is every pod's affinity (node, pod and pod anti-affinity). Unset means none."""
    image_pull_secrets: list[ObjectName] | None = Field(None, max_length=16)
    """imagePullSecrets name Secrets in the namespace used to pull every pod's image. Unset means
    the service account's."""
    service_account_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """serviceAccountName runs the trainer, rollout, merge and evaluation pods under this service
    account, with its token mounted (e.g. for workload identity to a bucket). The verifier, which
    runs model-written code, never gets one. Unset means the namespace's default account without
    a mounted token. (The pods' priority class is spec.priorityClassName.)"""


class SchedulingOptions(ApiModel):
    """Queueing and priority of the resource's workloads."""

    queue_name: str | None = Field(None, max_length=NAME_MAX_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN)
    """queueName is the Kueue LocalQueue of the workloads; it is copied to the
    kueue.x-k8s.io/queue-name label of every Job, and of an RLVRRun's rollout StatefulSet and
    verifier Deployment, which start only once Kueue admitted the trainer. Kueue then alone sets
    the Jobs' suspend; the resource shows phase Queued until admission. Unset means no Kueue."""
    priority_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """priorityClassName is the PriorityClass of every pod. Unset means the cluster default."""
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    """ttlSecondsAfterFinished deletes the resource this long after it succeeded or failed (its
    outputs on volumes, and claims it created unless told otherwise, stay). Unset means never; 0
    means right away."""
    active_deadline_seconds: int | None = Field(None, ge=1)
    """activeDeadlineSeconds limits how long the resource's Job may run (the trainer Job of each
    attempt, the merge or evaluation Job), as a Job's own field does; past it the resource fails
    with reason DeadlineExceeded and is not restarted. Unset means no limit."""
    pod: PodTemplateOptions | None = None
    """pod holds options passed through to every pod of the resource (labels, annotations,
    nodeSelector, tolerations, affinity, imagePullSecrets, serviceAccountName). Unset means none.
    Immutable."""
