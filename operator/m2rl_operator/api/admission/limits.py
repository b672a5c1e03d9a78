"""The API server's limits and constants for CRD validation rules, with where they live.

Every number is copied from Kubernetes 1.36 (apiserver and apiextensions-apiserver tags
kubernetes-1.36.3) and cel-go v0.26.0 (the version 1.34-1.36 ship); the values have not changed
since Kubernetes 1.28.
"""

from __future__ import annotations

# k8s.io/apiextensions-apiserver pkg/apis/apiextensions/validation/validation.go
STATIC_ESTIMATED_COST_LIMIT = 10_000_000
"""StaticEstimatedCostLimit: the largest estimated cost of one rule (times its cardinality) or of
one messageExpression."""
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
"""StaticEstimatedCRDCostLimit: the largest sum of the estimated costs of all rules of a CRD."""

# k8s.io/apiserver pkg/apis/cel/config.go
PER_CALL_LIMIT = 1_000_000
"""PerCallLimit: the runtime cost limit of one rule evaluation (also used when defaults are checked)."""
RUNTIME_CEL_COST_BUDGET = 10_000_000
"""RuntimeCELCostBudget: the runtime cost budget of all rules of one object (or one default)."""
MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024
"""MaxRequestSizeBytes: the size bound behind every unbounded list, map and string estimate."""

# k8s.io/apiserver pkg/cel/limits.go
MAX_DURATION_SIZE_JSON = 32
MAX_DATETIME_SIZE_JSON = 32
MIN_DURATION_SIZE_JSON = 3
JSON_DATE_SIZE = 12
MIN_DATETIME_SIZE_JSON = 21
MIN_STRING_SIZE = 2
MIN_BOOL_SIZE = 4
MIN_NUMBER_SIZE = 1

# github.com/google/cel-go common/cost.go
SELECT_AND_IDENT_COST = 1
CONST_COST = 0
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
STRUCT_CREATE_BASE_COST = 40
STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25

UINT64_MAX = 2**64 - 1
"""math.MaxUint64: cel-go's "unknown" size and cost, and the saturation point of its arithmetic."""

# k8s.io/apimachinery pkg/util/validation: DNS1123SubdomainMaxLength, used by Kubernetes 1.37+ as the
# bound of metadata.name in CEL (apiextensions-apiserver pkg/apiserver/schema/cel/model/schemas.go).
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
