"""An offline CRD admission check that follows the Kubernetes API server's code.

`check_crd(manifest)` runs on a CustomResourceDefinition what kube-apiserver runs when the CRD is
created (k8s.io/apiextensions-apiserver pkg/apis/apiextensions/validation/validation.go
`ValidateCustomResourceDefinition`, the schema part): structural-schema rules (root metadata
included), fieldPath validity, CEL compilation, estimated cost per rule and per CRD with the
API server's limits, and every rule evaluated on every schema default as written. It runs once
per Kubernetes profile whose estimates differ (1.28, 1.36, 1.37: `decl.SUPPORTED_PROFILES`) and
accepts a CRD only if all of them do. Errors print as the API server prints them; what the port
does not model is refused with `NOT_CHECKED`, never passed.

`m2rl validate --crds` and tests/unit/admission use it; docs/api.md explains what it covers.
"""

from m2rl_operator.api.admission.crd_check import CRDReport, ProfileReport, check_crd, check_crds, crds_in
from m2rl_operator.api.admission.decl import KUBE_1_28, KUBE_1_36, KUBE_1_37, SUPPORTED_PROFILES, Profile
from m2rl_operator.api.admission.errors import FieldError
from m2rl_operator.api.admission.schema_checks import NOT_CHECKED, Options, RuleCost, validate_validation

__all__ = [
    "KUBE_1_28",
    "KUBE_1_36",
    "KUBE_1_37",
    "NOT_CHECKED",
    "SUPPORTED_PROFILES",
    "CRDReport",
    "FieldError",
    "Options",
    "Profile",
    "ProfileReport",
    "RuleCost",
    "check_crd",
    "check_crds",
    "crds_in",
    "validate_validation",
]
