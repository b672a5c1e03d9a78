"""Child names, labels and selectors of every kind: defined once, for creating and for finding.

Names are deterministic functions of the owner's name, so a restarted operator finds (and does not
duplicate) what it created before. Owner names are at most 40 characters (a CRD rule), which keeps
every child name and pod hostname below Kubernetes' 63-character label limit.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "m2rl.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
PLURALS: Final = {"RLVRRun": "rlvrruns", "MergeJob": "mergejobs", "EvalSuite": "evalsuites"}

APP_NAME: Final = "m2rl"
MANAGED_BY: Final = "m2rl-operator"
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
CONFIG_FILE: Final = {"RLVRRun": "trainer.yaml", "MergeJob": "merge.yaml", "EvalSuite": "eval.yaml"}
VERIFIER_CONFIG_FILE: Final = "verifier.yaml"  # the run's verifier service config (same ConfigMap)
ATTEMPT: Final = f"{GROUP}/attempt"
"""Label and annotation of a trainer Job and its pods: the restart attempt (as JobSet's
jobset.sigs.k8s.io/restart-attempt); the trainer Service selects only the current attempt's pods."""
KEEP: Final = f"{GROUP}/keep-on-delete"
"""Annotation of a child the operator creates without an owner reference (the checkpoint claim):
deleting the resource leaves it."""

# Components (the app.kubernetes.io/component label).
TRAINER: Final = "trainer"
ROLLOUT: Final = "rollout"
VERIFIER: Final = "verifier"
CONFIG: Final = "config"
CHECKPOINTS: Final = "checkpoints"
MERGE: Final = "merge"
EVAL: Final = "eval"
TEACHER: Final = "teacher"
ENVIRONMENT: Final = "environment"
TEACHER_INDEX: Final = f"{GROUP}/teacher"
"""Label of an MT-OPD teacher's StatefulSet pods: the teacher's index in spec.algorithm.teachers
(every teacher's pods share the component label; their selectors must not overlap)."""


def owner_label(kind: str) -> str:
    """The label that names a child's owner, e.g. m2rl.io/rlvrrun: NAME."""
    return f"{GROUP}/{kind.lower()}"


# ---- RLVRRun ---------------------------------------------------------------------------------------


def config_map(owner: str) -> str:
    return f"{owner}-config"


def trainer(run: str) -> str:
    """The trainer's Indexed Job and its headless Service (same name: pods get stable DNS names)."""
    return f"{run}-trainer"


def trainer_host(run: str, namespace: str, index: int = 0) -> str:
    """Stable DNS name of trainer pod `index` (Indexed Job hostname <job>-<index>, subdomain <svc>)."""
    return f"{trainer(run)}-{index}.{trainer(run)}.{namespace}.svc"


def rollout(run: str) -> str:
    """The vLLM StatefulSet, its headless Service and the NetworkPolicy admitting the trainer."""
    return f"{run}-rollout"


def rollout_host(run: str, namespace: str, index: int) -> str:
    return f"{rollout(run)}-{index}.{rollout(run)}.{namespace}.svc"


def teacher(run: str, index: int) -> str:
    """MT-OPD teacher `index`'s vLLM StatefulSet, its headless Service and its served model name
    (at most 51 characters: its pods' controller-revision-hash label stays under 63)."""
    return f"{run}-teacher-{index}"


def teacher_host(run: str, namespace: str, index: int, replica: int) -> str:
    return f"{teacher(run, index)}-{replica}.{teacher(run, index)}.{namespace}.svc"


def teachers_policy(run: str) -> str:
    """The NetworkPolicy admitting the run's trainer to every teacher server."""
    return f"{run}-teachers"


def environment(run: str) -> str:
    """The agent environment's Deployment, Service and NetworkPolicy."""
    return f"{run}-environment"


def environment_url(run: str, namespace: str, port: int) -> str:
    return f"http://{environment(run)}.{namespace}.svc:{port}"


def verifier(owner: str) -> str:
    """The verifier Deployment, Service and NetworkPolicy."""
    return f"{owner}-verifier"


def verifier_url(owner: str, namespace: str, port: int) -> str:
    """The verifier Service as the trainer reaches it."""
    return f"http://{verifier(owner)}.{namespace}.svc:{port}"


def checkpoints_claim(run: str) -> str:
    """The PVC the operator creates when spec.checkpoint.uri is unset."""
    return f"{run}-checkpoints"


# ---- MergeJob and EvalSuite ------------------------------------------------------------------------


def merge_job(merge: str) -> str:
    return f"{merge}-merge"


def eval_job(suite: str) -> str:
    return f"{suite}-eval"


# ---- labels and selectors --------------------------------------------------------------------------


def selector(kind: str, owner: str, component: str) -> dict[str, str]:
    """Labels that select one component's pods (immutable on Deployments/StatefulSets: keep small)."""
    return {owner_label(kind): owner, "app.kubernetes.io/component": component}


def labels(kind: str, owner: str, component: str, queue_name: str | None = None) -> dict[str, str]:
    """Every label of a child: app.kubernetes.io/*, the owner label, and Kueue's queue if any."""
    result = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": owner,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": APP_NAME,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        owner_label(kind): owner,
    }
    if queue_name:
        result[KUEUE_QUEUE_LABEL] = queue_name
    return result


def owner_selector(kind: str, owner: str) -> str:
    """Label selector (string form) of all children of one owner."""
    return f"{owner_label(kind)}={owner}"
