"""A type checker for the CEL that CRD rules use, after cel-go's `checker/checker.go`.

It types every node (the cost estimator needs the kinds: a select on an object costs one more
than on a list; scalars have size 1) and resolves each call to cel-go's overload ids (the
estimator prices `add_string` by size, `add_int64` at 1). The declarations are cel-go's standard
library (`common/stdlib/standard.go`) with Kubernetes' environment options: homogeneous aggregate
literals and cross-type numeric comparisons (k8s.io/apiserver pkg/cel/environment/base.go).

Kubernetes' extension libraries (strings, lists, regex, URLs, quantities, ...) are recognised by
name and refused with `UnsupportedFunction`: their cost functions are not ported, so a rule that
calls one cannot be priced here, and this check never guesses a price.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from m2rl_operator.api.admission.cel_ast import (
    ACCUMULATOR,
    Call,
    Comprehension,
    CreateList,
    CreateMap,
    Expr,
    Ident,
    Literal,
    Select,
)
from m2rl_operator.api.admission.decl import DeclType


@dataclass(frozen=True)
class CelType:
    """checker type: kind plus parameters (list elem; map key, value) or the object declaration."""

    kind: str
    params: tuple[CelType, ...] = ()
    decl: DeclType | None = field(default=None, compare=False)
    object_name: str = ""

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list({self.params[0]})"
        if self.kind == "map":
            return f"map({self.params[0]}, {self.params[1]})"
        if self.kind == "object":
            return self.object_name
        if self.kind == "param":
            return "_var"
        return {"null": "null_type", "timestamp": "google.protobuf.Timestamp",
                "duration": "google.protobuf.Duration"}.get(self.kind, self.kind)  # fmt: skip


BOOL = CelType("bool")
INT = CelType("int")
UINT = CelType("uint")
DOUBLE = CelType("double")
STRING = CelType("string")
BYTES = CelType("bytes")
NULL = CelType("null")
TIMESTAMP = CelType("timestamp")
DURATION = CelType("duration")
DYN = CelType("dyn")
ERROR = CelType("error")
_A = CelType("param", object_name="A")
_B = CelType("param", object_name="B")
_SCALARS = {"bool", "int", "uint", "double", "timestamp", "duration"}


def list_of(elem: CelType) -> CelType:
    return CelType("list", (elem,))


def map_of(key: CelType, value: CelType) -> CelType:
    return CelType("map", (key, value))


def from_decl(decl: DeclType) -> CelType:
    """DeclType.CelType()."""
    if decl.kind == "list":
        assert decl.elem is not None
        return list_of(from_decl(decl.elem))
    if decl.kind == "map":
        assert decl.elem is not None
        return map_of(STRING, from_decl(decl.elem))
    if decl.kind == "object":
        return CelType("object", decl=decl, object_name=decl.name)
    return CelType(decl.kind)


def is_scalar(t: CelType) -> bool:
    """checker/cost.go isScalar: constant-size types (not strings, bytes, containers)."""
    return t.kind in _SCALARS


# ---- declarations ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overload:
    id: str
    params: tuple[CelType, ...]
    result: CelType
    member: bool = False


def _ov(id_: str, params: tuple[CelType, ...], result: CelType, member: bool = False) -> Overload:
    return Overload(id_, params, result, member)


def _comparisons() -> dict[str, list[Overload]]:
    names = {"_<_": "less", "_<=_": "less_equals", "_>_": "greater", "_>=_": "greater_equals"}
    same = [
        ("bool", BOOL), ("int64", INT), ("uint64", UINT), ("double", DOUBLE), ("string", STRING),
        ("bytes", BYTES), ("timestamp", TIMESTAMP), ("duration", DURATION),
    ]  # fmt: skip
    # CrossTypeNumericComparisons(true): Kubernetes 1.28+ (pkg/cel/environment/base.go)
    cross = [
        ("int64_double", INT, DOUBLE), ("int64_uint64", INT, UINT), ("uint64_double", UINT, DOUBLE),
        ("uint64_int64", UINT, INT), ("double_int64", DOUBLE, INT), ("double_uint64", DOUBLE, UINT),
    ]  # fmt: skip
    out: dict[str, list[Overload]] = {}
    for op, prefix in names.items():
        out[op] = [_ov(f"{prefix}_{suffix}", (t, t), BOOL) for suffix, t in same]
        out[op] += [_ov(f"{prefix}_{suffix}", (a, b), BOOL) for suffix, a, b in cross]
    return out


STANDARD: dict[str, list[Overload]] = {
    "_?_:_": [_ov("conditional", (BOOL, _A, _A), _A)],
    "_&&_": [_ov("logical_and", (BOOL, BOOL), BOOL)],
    "_||_": [_ov("logical_or", (BOOL, BOOL), BOOL)],
    "!_": [_ov("logical_not", (BOOL,), BOOL)],
    "@not_strictly_false": [_ov("not_strictly_false", (BOOL,), BOOL)],
    "_==_": [_ov("equals", (_A, _A), BOOL)],
    "_!=_": [_ov("not_equals", (_A, _A), BOOL)],
    "-_": [_ov("negate_int64", (INT,), INT), _ov("negate_double", (DOUBLE,), DOUBLE)],
    "_+_": [
        _ov("add_bytes", (BYTES, BYTES), BYTES),
        _ov("add_double", (DOUBLE, DOUBLE), DOUBLE),
        _ov("add_duration_duration", (DURATION, DURATION), DURATION),
        _ov("add_duration_timestamp", (DURATION, TIMESTAMP), TIMESTAMP),
        _ov("add_timestamp_duration", (TIMESTAMP, DURATION), TIMESTAMP),
        _ov("add_int64", (INT, INT), INT),
        _ov("add_list", (list_of(_A), list_of(_A)), list_of(_A)),
        _ov("add_string", (STRING, STRING), STRING),
        _ov("add_uint64", (UINT, UINT), UINT),
    ],
    "_-_": [
        _ov("subtract_double", (DOUBLE, DOUBLE), DOUBLE),
        _ov("subtract_duration_duration", (DURATION, DURATION), DURATION),
        _ov("subtract_int64", (INT, INT), INT),
        _ov("subtract_timestamp_duration", (TIMESTAMP, DURATION), TIMESTAMP),
        _ov("subtract_timestamp_timestamp", (TIMESTAMP, TIMESTAMP), DURATION),
        _ov("subtract_uint64", (UINT, UINT), UINT),
    ],
    "_*_": [
        _ov("multiply_double", (DOUBLE, DOUBLE), DOUBLE),
        _ov("multiply_int64", (INT, INT), INT),
        _ov("multiply_uint64", (UINT, UINT), UINT),
    ],
    "_/_": [
        _ov("divide_double", (DOUBLE, DOUBLE), DOUBLE),
        _ov("divide_int64", (INT, INT), INT),
        _ov("divide_uint64", (UINT, UINT), UINT),
    ],
    "_%_": [_ov("modulo_int64", (INT, INT), INT), _ov("modulo_uint64", (UINT, UINT), UINT)],
    "_[_]": [_ov("index_list", (list_of(_A), INT), _A), _ov("index_map", (map_of(_A, _B), _A), _B)],
    "@in": [_ov("in_list", (_A, list_of(_A)), BOOL), _ov("in_map", (_A, map_of(_A, _B)), BOOL)],
    "size": [
        _ov("size_bytes", (BYTES,), INT),
        _ov("bytes_size", (BYTES,), INT, member=True),
        _ov("size_list", (list_of(_A),), INT),
        _ov("list_size", (list_of(_A),), INT, member=True),
        _ov("size_map", (map_of(_A, _B),), INT),
        _ov("map_size", (map_of(_A, _B),), INT, member=True),
        _ov("size_string", (STRING,), INT),
        _ov("string_size", (STRING,), INT, member=True),
    ],
    "contains": [_ov("contains_string", (STRING, STRING), BOOL, member=True)],
    "endsWith": [_ov("ends_with_string", (STRING, STRING), BOOL, member=True)],
    "startsWith": [_ov("starts_with_string", (STRING, STRING), BOOL, member=True)],
    "matches": [
        _ov("matches", (STRING, STRING), BOOL),
        _ov("matches_string", (STRING, STRING), BOOL, member=True),
    ],
    "string": [
        _ov("string_to_string", (STRING,), STRING),
        _ov("int64_to_string", (INT,), STRING),
        _ov("uint64_to_string", (UINT,), STRING),
        _ov("double_to_string", (DOUBLE,), STRING),
        _ov("bytes_to_string", (BYTES,), STRING),
        _ov("bool_to_string", (BOOL,), STRING),
        _ov("timestamp_to_string", (TIMESTAMP,), STRING),
        _ov("duration_to_string", (DURATION,), STRING),
    ],
    "int": [
        _ov("int64_to_int64", (INT,), INT),
        _ov("uint64_to_int64", (UINT,), INT),
        _ov("double_to_int64", (DOUBLE,), INT),
        _ov("string_to_int64", (STRING,), INT),
        _ov("timestamp_to_int64", (TIMESTAMP,), INT),
    ],
    "uint": [
        _ov("uint64_to_uint64", (UINT,), UINT),
        _ov("int64_to_uint64", (INT,), UINT),
        _ov("double_to_uint64", (DOUBLE,), UINT),
        _ov("string_to_uint64", (STRING,), UINT),
    ],
    "double": [
        _ov("double_to_double", (DOUBLE,), DOUBLE),
        _ov("int64_to_double", (INT,), DOUBLE),
        _ov("uint64_to_double", (UINT,), DOUBLE),
        _ov("string_to_double", (STRING,), DOUBLE),
    ],
    "bytes": [_ov("bytes_to_bytes", (BYTES,), BYTES), _ov("string_to_bytes", (STRING,), BYTES)],
    "bool": [_ov("bool_to_bool", (BOOL,), BOOL), _ov("string_to_bool", (STRING,), BOOL)],
    "dyn": [_ov("to_dyn", (_A,), DYN)],
    **_comparisons(),
}

# Functions of Kubernetes' CEL environment beyond the standard library above (k8s.io/apiserver
# pkg/cel/library, cel-go ext strings/sets/lists/two-variable comprehensions, and the timestamp
# and duration accessors): declared on the API server, not priced here.
UNMODELLED_FUNCTIONS = frozenset(
    {
        "isSorted", "sum", "min", "max", "indexOf", "lastIndexOf", "includes", "find", "findAll",
        "url", "isURL", "getScheme", "getHost", "getHostname", "getPort", "getEscapedPath", "getQuery",
        "ip", "isIP", "cidr", "isCIDR", "family", "isCanonical", "isLoopback", "isUnspecified",
        "isLinkLocalMulticast", "isLinkLocalUnicast", "isGlobalUnicast", "containsIP", "containsCIDR",
        "masked", "prefixLength", "quantity", "isQuantity", "sign", "asInteger", "isInteger",
        "asApproximateFloat", "isGreaterThan", "isLessThan", "compareTo", "add", "sub", "semver",
        "isSemver", "major", "minor", "patch", "format", "named", "validate", "charAt", "lowerAscii",
        "upperAscii", "replace", "split", "substring", "trim", "join", "quote", "reverse", "contains",
        "equivalent", "intersects", "authorizer", "serviceAccount", "path", "group", "resource",
        "subresource", "namespace", "name", "check", "allowed", "reason", "error", "errored",
        "fieldSelector", "labelSelector", "optional", "of", "none", "orValue", "hasValue", "value",
        "all", "exists", "existsOne", "exists_one", "transformList", "transformMap", "transformMapEntry",
        "distinct", "flatten", "range", "slice", "sort", "sortBy", "first", "last", "getDate",
        "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getHours", "getMilliseconds",
        "getMinutes", "getMonth", "getSeconds", "timestamp", "duration", "type", "bind", "jsonpatch",
        "escapeKey", "strings", "sets", "math", "cel", "base64", "encode", "decode", "greatest", "least",
        "ceil", "floor", "round", "trunc", "abs", "isInf", "isNaN", "isFinite", "bitAnd", "bitOr",
        "bitXor", "bitNot", "bitShiftLeft", "bitShiftRight", "sqrt",
    }
)  # fmt: skip


class CheckError(ValueError):
    """A type error, worded as cel-go's checker words it."""


class UnsupportedFunction(ValueError):
    """A Kubernetes extension function this check cannot price: refused, never guessed."""


@dataclass
class Checked:
    """The checker's side tables: type and matching overload ids of each node, by node id."""

    root: Expr
    types: dict[int, CelType]
    overloads: dict[int, list[str]]
    uses_old_self: bool


def check(expr: Expr, variables: dict[str, CelType]) -> Checked:
    """Type-check `expr` with the given variables (`self`, `oldSelf`)."""
    checker = _Checker(variables)
    checker.check(expr)
    return Checked(expr, checker.types, checker.overloads, checker.uses_old_self)


class _Checker:
    def __init__(self, variables: dict[str, CelType]) -> None:
        self.scopes: list[dict[str, CelType]] = [dict(variables)]
        self.types: dict[int, CelType] = {}
        self.overloads: dict[int, list[str]] = {}
        self.uses_old_self = False

    def lookup(self, name: str) -> CelType | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def check(self, e: Expr) -> CelType:
        t = self._check(e)
        self.types[e.id] = t
        return t

    def _check(self, e: Expr) -> CelType:
        if isinstance(e, Literal):
            return {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bytes": BYTES,
                    "bool": BOOL, "null": NULL}[e.kind]  # fmt: skip
        if isinstance(e, Ident):
            found = self.lookup(e.name)
            if found is None:
                raise CheckError(f"undeclared reference to '{e.name}' (in container '')")
            if e.name == "oldSelf":
                self.uses_old_self = True
            return found
        if isinstance(e, Select):
            return self._select(e)
        if isinstance(e, Call):
            return self._call(e)
        if isinstance(e, CreateList):
            # HomogeneousAggregateLiterals: every element has the first element's type.
            elem: CelType | None = None
            for item in e.elements:
                t = self.check(item)
                if elem is None or elem.kind == "dyn":
                    elem = t
                elif not _assignable(elem, t, {}):
                    raise CheckError(f"expected type '{elem}' but found '{t}'")
            return list_of(elem if elem is not None else DYN)
        if isinstance(e, CreateMap):
            key_t: CelType | None = None
            val_t: CelType | None = None
            for k, v in e.entries:
                kt, vt = self.check(k), self.check(v)
                if key_t is not None and not _assignable(key_t, kt, {}):
                    raise CheckError(f"expected type '{key_t}' but found '{kt}'")
                if val_t is not None and not _assignable(val_t, vt, {}):
                    raise CheckError(f"expected type '{val_t}' but found '{vt}'")
                key_t, val_t = key_t or kt, val_t or vt
            return map_of(key_t or DYN, val_t or DYN)
        if isinstance(e, Comprehension):
            return self._comprehension(e)
        raise CheckError(f"unexpected expression {type(e).__name__}")

    def _select(self, e: Select) -> CelType:
        operand = self.check(e.operand)
        if operand.kind == "object":
            assert operand.decl is not None
            found = operand.decl.fields.get(e.field)
            if found is None:
                raise CheckError(f"undefined field '{e.field}'")
            result = from_decl(found.type)
        elif operand.kind == "map":
            result = operand.params[1]
        elif operand.kind == "dyn":
            result = DYN
        else:
            raise CheckError(f"type '{operand}' does not support field selection")
        return BOOL if e.test_only else result

    def _call(self, e: Call) -> CelType:
        arg_types = [self.check(a) for a in e.args]
        target_type = self.check(e.target) if e.target is not None else None
        candidates = STANDARD.get(e.function)
        if candidates is None or not any(o.member == (e.target is not None) for o in candidates):
            if e.function in UNMODELLED_FUNCTIONS:
                raise UnsupportedFunction(
                    f"function '{e.function}' is declared in the API server's CEL environment, but this "
                    "check does not model its cost: the rule is refused rather than priced by a guess"
                )
            raise CheckError(f"undeclared reference to '{e.function}' (in container '')")
        actual = ([target_type] if target_type is not None else []) + arg_types
        matched: list[tuple[Overload, dict[str, CelType]]] = []
        for overload in candidates:
            if overload.member != (e.target is not None) or len(overload.params) != len(actual):
                continue
            mapping: dict[str, CelType] = {}
            if all(_assignable(p, a, mapping) for p, a in zip(overload.params, actual, strict=True)):
                matched.append((overload, mapping))
        if not matched:
            shown = ", ".join(str(t) for t in actual[1 if target_type is not None else 0 :])
            signature = f"{target_type}.({shown})" if target_type is not None else f"({shown})"
            raise CheckError(f"found no matching overload for '{e.function}' applied to '{signature}'")
        self.overloads[e.id] = [o.id for o, _ in matched]
        results = {_substitute(o.result, m) for o, m in matched}
        return results.pop() if len(results) == 1 else DYN

    def _comprehension(self, e: Comprehension) -> CelType:
        range_type = self.check(e.iter_range)
        accu_type = self.check(e.accu_init)
        if range_type.kind in ("list", "map"):
            var_type = range_type.params[0]  # list elements, map keys
        elif range_type.kind == "dyn":
            var_type = DYN
        else:
            raise CheckError(
                f"expression of type '{range_type}' cannot be range of a comprehension "
                "(must be list, map, or dynamic)"
            )
        self.scopes.append({e.accu_var: accu_type})
        self.scopes.append({e.iter_var: var_type})
        condition = self.check(e.loop_condition)
        if not _assignable(BOOL, condition, {}):
            raise CheckError(f"expected type 'bool' but found '{condition}'")
        step = self.check(e.loop_step)
        if not _assignable(accu_type, step, {}):
            raise CheckError(f"expected type '{accu_type}' but found '{step}'")
        if accu_type.kind == "list" and accu_type.params[0].kind == "dyn":
            accu_type = step  # the free element type of `[]` unifies with the step's (map, filter)
        self.scopes.pop()
        self.scopes[-1][e.accu_var] = accu_type
        if e.accu_var == ACCUMULATOR:
            self.scopes[-1][ACCUMULATOR] = accu_type
        result = self.check(e.result)
        self.scopes.pop()
        return result


def _assignable(param: CelType, actual: CelType, mapping: dict[str, CelType]) -> bool:
    """internalIsAssignable, reduced to the types CRD rules see."""
    if param.kind == "param":
        bound = mapping.get(param.object_name)
        if bound is None:
            mapping[param.object_name] = actual
            return True
        if bound.kind == "dyn" and actual.kind != "dyn":
            mapping[param.object_name] = actual
            return True
        return _assignable(bound, actual, mapping)
    if param.kind == "dyn" or actual.kind == "dyn" or actual.kind == "error":
        return True
    if actual.kind == "null":
        return param.kind in ("null", "object", "timestamp", "duration")
    if param.kind == "null":
        return actual.kind in ("object", "timestamp", "duration")
    if param.kind != actual.kind:
        return False
    if param.kind == "object":
        return param.object_name == actual.object_name
    return len(param.params) == len(actual.params) and all(
        _assignable(p, a, mapping) for p, a in zip(param.params, actual.params, strict=True)
    )


def _substitute(t: CelType, mapping: dict[str, CelType]) -> CelType:
    if t.kind == "param":
        return mapping.get(t.object_name, DYN)
    if t.params:
        return CelType(t.kind, tuple(_substitute(p, mapping) for p in t.params), t.decl, t.object_name)
    return t
