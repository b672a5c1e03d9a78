"""The M2RL API (m2rl.io/v1alpha1): spec and status models of RLVRRun, MergeJob and EvalSuite.

The pydantic models are the single source of truth. From them come the CRDs (`crd_manifests`,
written to crds/ and the Helm chart by `m2rl crds`), the offline admission check behind
`m2rl validate` (`validate_object`, `validate_path`) and docs/api.md.

Parse a custom resource's spec in the operator with e.g. `RLVRRunSpec.model_validate(body["spec"])`
(camelCase keys; the API server has applied the defaults already, the models apply the same ones
for YAML read without a cluster). Model and dataset locations use one URI scheme: `parse_uri`.
"""

from m2rl_operator.api.algorithm import PRESETS, AlgorithmSpec, ResolvedAlgorithm, resolve_algorithm
from m2rl_operator.api.base import API_VERSION, GROUP, VERSION
from m2rl_operator.api.common import Condition, DatasetSpec, VerifierRef, VerifierServiceSpec
from m2rl_operator.api.crd import KINDS, KINDS_BY_NAME, MAX_NAME_LENGTH, Kind, crd_manifests
from m2rl_operator.api.evalsuite import BenchmarkSpec, EvalModel, EvalResult, EvalSuiteSpec, EvalSuiteStatus
from m2rl_operator.api.merge_methods import MERGE_METHODS, MergeMethod
from m2rl_operator.api.mergejob import ExpertSpec, MergeJobSpec, MergeJobStatus
from m2rl_operator.api.offline import ObjectReport, validate_object, validate_path
from m2rl_operator.api.rlvrrun import DomainSpec, ModelSpec, RLVRRunSpec, RLVRRunStatus
from m2rl_operator.api.uri import InvalidURIError, ParsedURI, parse_model_uri, parse_uri
from m2rl_operator.api.validation import NotEvaluated, SchemaValidator, Violation
from m2rl_operator.api.yaml_io import KubeYAMLLoader, loads_all

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "KINDS_BY_NAME",
    "MAX_NAME_LENGTH",
    "MERGE_METHODS",
    "PRESETS",
    "VERSION",
    "AlgorithmSpec",
    "BenchmarkSpec",
    "Condition",
    "DatasetSpec",
    "DomainSpec",
    "EvalModel",
    "EvalResult",
    "EvalSuiteSpec",
    "EvalSuiteStatus",
    "ExpertSpec",
    "InvalidURIError",
    "Kind",
    "KubeYAMLLoader",
    "MergeJobSpec",
    "MergeJobStatus",
    "MergeMethod",
    "ModelSpec",
    "NotEvaluated",
    "ObjectReport",
    "ParsedURI",
    "RLVRRunSpec",
    "RLVRRunStatus",
    "ResolvedAlgorithm",
    "SchemaValidator",
    "VerifierRef",
    "VerifierServiceSpec",
    "Violation",
    "crd_manifests",
    "loads_all",
    "parse_model_uri",
    "parse_uri",
    "resolve_algorithm",
    "validate_object",
    "validate_path",
]
