"""The static cost estimate of a CEL expression: a port of cel-go's `checker/cost.go` (v0.26.0).

Every rule is priced before the CRD is accepted. The unit is roughly one simple operation;
strings cost 0.1 per character to traverse; a comprehension costs its range's size times the
cost of one step. Sizes come from the schema (`decl.DeclType.max_elements`): that is what
`maxItems`, `maxLength` and `maxProperties` buy. Where the estimator knows no size (the result of
`string(x)`, for instance) it takes 2^64 - 1, so concatenating such a string costs more than any
budget: the reason `'...' + string(self.n)` messageExpressions are rejected.

The structure follows the Go code method by method (`cost`, `costIdent`, `costSelect`, `costCall`,
`functionCost`, `costComprehension`, `computeSize`, ...), with the API server's size estimator
(`sizeEstimator.EstimateSize`, apiextensions-apiserver pkg/apiserver/schema/cel/compilation.go)
and `PresenceTestHasCost(false)` (k8s.io/apiserver pkg/cel/environment/base.go). The Kubernetes
library estimator (k8s.io/apiserver pkg/cel/library/cost.go `EstimateCallCost`) returns no
estimate for any function the checker lets through (it prices only Kubernetes library
functions, which `checker.UnsupportedFunction` refuses), so it is not consulted here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from m2rl_operator.api.admission.checker import CelType, Checked, is_scalar
from m2rl_operator.api.admission.decl import DeclType, walk_decl
from m2rl_operator.api.admission.limits import (
    CONST_COST,
    LIST_CREATE_BASE_COST,
    MAP_CREATE_BASE_COST,
    REGEX_STRING_LENGTH_COST_FACTOR,
    SELECT_AND_IDENT_COST,
    STRING_TRAVERSAL_COST_FACTOR,
    UINT64_MAX,
)

_TWO_TO_64 = math.ldexp(1.0, 64)


def _add(x: int, y: int) -> int:
    """addUint64NoOverflow."""
    return UINT64_MAX if y > 0 and x > UINT64_MAX - y else x + y


def _mul(x: int, y: int) -> int:
    """multiplyUint64NoOverflow."""
    return UINT64_MAX if y != 0 and x > UINT64_MAX // y else x * y


def _mul_factor(x: int, y: float) -> int:
    """multiplyByCostFactor: float64 arithmetic, rounded up (Python floats are IEEE doubles too)."""
    xf = float(x)
    if xf > 0 and y > 0 and xf > UINT64_MAX / y:
        return UINT64_MAX
    ceil = math.ceil(xf * y)
    return UINT64_MAX if ceil >= _TWO_TO_64 else int(ceil)


@dataclass(frozen=True)
class Estimate:
    """SizeEstimate and CostEstimate (the same arithmetic in cel-go)."""

    min: int
    max: int

    def add(self, other: Estimate) -> Estimate:
        return Estimate(_add(self.min, other.min), _add(self.max, other.max))

    def multiply(self, other: Estimate) -> Estimate:
        return Estimate(_mul(self.min, other.min), _mul(self.max, other.max))

    def by_factor(self, factor: float) -> Estimate:
        return Estimate(_mul_factor(self.min, factor), _mul_factor(self.max, factor))

    def union(self, other: Estimate) -> Estimate:
        return Estimate(min(self.min, other.min), max(self.max, other.max))


UNKNOWN = Estimate(0, UINT64_MAX)
ZERO = Estimate(0, 0)


def fixed(n: int) -> Estimate:
    return Estimate(n, n)


@dataclass(frozen=True)
class EntrySize:
    """entrySizeEstimate: sizes of the keys (list: indices) and values of a literal container."""

    container: str  # "list" or "map"
    key: Estimate
    val: Estimate

    def union(self, other: EntrySize | None) -> EntrySize | None:
        if other is None:
            return None
        return EntrySize(self.container, self.key.union(other.key), self.val.union(other.val))


@dataclass
class _LocalVar:
    path: list[str]
    size: Estimate | None
    entry_size: EntrySize | None


@dataclass(frozen=True)
class _Node:
    """AstNode: what functionCost sees of an argument."""

    expr: Expr
    path: list[str]
    type: CelType
    derived_size: Estimate | None


class SizeEstimator:
    """The API server's `sizeEstimator` over the rule's root DeclType."""

    def __init__(self, root: DeclType) -> None:
        self.root = root

    def estimate_size(self, path: list[str]) -> Estimate | None:
        if not path:
            return None
        node = walk_decl(self.root, path[1:])  # the first element is the variable (self, oldSelf)
        return None if node is None else Estimate(0, node.max_elements)


def estimate_cost(checked: Checked, estimator: SizeEstimator) -> Estimate:
    """checker.Cost with PresenceTestHasCost(false)."""
    return _Coster(checked, estimator).cost(checked.root)


class _Coster:
    def __init__(self, checked: Checked, estimator: SizeEstimator) -> None:
        self.checked = checked
        self.estimator = estimator
        self.presence_test_cost = ZERO
        self.expr_paths: dict[int, list[str]] = {}
        self.local_vars: dict[str, list[_LocalVar]] = {}
        self.computed_sizes: dict[int, Estimate] = {}
        self.computed_entry_sizes: dict[int, EntrySize] = {}

    # ---- bookkeeping ---------------------------------------------------------------------------------

    def type_of(self, e: Expr) -> CelType:
        return self.checked.types[e.id]

    def peek(self, name: str) -> _LocalVar | None:
        stack = self.local_vars.get(name)
        return stack[-1] if stack else None

    def push(self, name: str, var: _LocalVar) -> None:
        self.local_vars.setdefault(name, []).append(var)

    def pop(self, name: str) -> None:
        self.local_vars[name].pop()

    def get_path(self, e: Expr) -> list[str]:
        if isinstance(e, Ident):
            var = self.peek(e.name)
            if var is not None:
                return list(var.path)
        return list(self.expr_paths.get(e.id, []))

    def node(self, e: Expr) -> _Node:
        """newAstNode: paths of accumulator variables are omitted."""
        path = self.get_path(e)
        if path and path[0] in (ACCUMULATOR, "__result__"):
            path = []
        return _Node(e, path, self.type_of(e), self.compute_size(e))

    def size_or_unknown(self, item: Expr | _Node) -> Estimate:
        size = item.derived_size if isinstance(item, _Node) else self.compute_size(item)
        return size if size is not None else UNKNOWN

    def compute_size(self, e: Expr) -> Estimate | None:
        if e.id in self.computed_sizes:
            return self.computed_sizes[e.id]
        literal = _expr_size(e)
        if literal is not None:
            return literal
        size = self.estimator.estimate_size(self.get_path(e))
        if size is not None:
            self.computed_sizes[e.id] = size
            return size
        if is_scalar(self.type_of(e)):
            return fixed(1)
        if isinstance(e, Ident):
            var = self.peek(e.name)
            if var is not None and var.size is not None:
                return var.size
        return None

    def compute_entry_size(self, e: Expr) -> EntrySize | None:
        if e.id in self.computed_entry_sizes:
            return self.computed_entry_sizes[e.id]
        if isinstance(e, Ident):
            var = self.peek(e.name)
            if var is not None and var.entry_size is not None:
                return var.entry_size
        return None

    def set_size(self, e: Expr, size: Estimate | None) -> None:
        if size is not None:
            self.computed_sizes[e.id] = size

    def set_entry_size(self, e: Expr, size: EntrySize | None) -> None:
        if size is not None:
            self.computed_entry_sizes[e.id] = size

    # ---- cost ----------------------------------------------------------------------------------------

    def cost(self, e: Expr) -> Estimate:
        if isinstance(e, Literal):
            return fixed(CONST_COST)
        if isinstance(e, Ident):
            var = self.peek(e.name)
            self.expr_paths[e.id] = list(var.path) if var is not None else [e.name]
            return fixed(SELECT_AND_IDENT_COST)
        if isinstance(e, Select):
            return self.cost_select(e)
        if isinstance(e, Call):
            return self.cost_call(e)
        if isinstance(e, CreateList):
            return self.cost_create_list(e)
        if isinstance(e, CreateMap):
            return self.cost_create_map(e)
        if isinstance(e, Comprehension):
            return self.cost_comprehension(e)
        return ZERO

    def cost_select(self, e: Select) -> Estimate:
        if e.test_only:
            return self.presence_test_cost.add(self.cost(e.operand))
        total = self.cost(e.operand)
        if self.type_of(e.operand).kind in ("map", "object"):
            total = total.add(fixed(SELECT_AND_IDENT_COST))
        self.expr_paths[e.id] = [*self.get_path(e.operand), e.field]
        return total

    def cost_call(self, e: Call) -> Estimate:
        if e.function == "dyn" and e.target is None:  # maybeUnwrapDynCall
            arg_cost = self.cost(e.args[0])
            self.set_size(e, self.compute_size(e.args[0]))
            self.set_entry_size(e, self.compute_entry_size(e.args[0]))
            return fixed(1).add(arg_cost)
        arg_costs = []
        arg_nodes = []
        for arg in e.args:
            arg_costs.append(self.cost(arg))
            arg_nodes.append(self.node(arg))
        overload_ids = self.checked.overloads.get(e.id, [])
        if not overload_ids:
            return ZERO
        total = ZERO
        target: _Node | None = None
        if e.target is not None:
            total = total.add(self.cost(e.target))
            target = self.node(e.target)
        fn_cost = Estimate(UINT64_MAX, 0)
        result_size: Estimate | None = None
        for overload in overload_ids:
            call_cost, size = self.function_cost(e, overload, target, arg_nodes, arg_costs)
            fn_cost = fn_cost.union(call_cost)
            if size is not None:
                result_size = size if result_size is None else result_size.union(size)
            if overload in ("index_list", "index_map") and e.args:
                entry = self.compute_entry_size(e.args[0])
                result_size = entry.val if entry is not None else None
                suffix = "@items" if overload == "index_list" else "@values"
                self.expr_paths[e.id] = [*self.get_path(e.args[0]), suffix]
            if result_size is None:
                result_size = self.compute_size(e)
        self.set_size(e, result_size)
        return total.add(fn_cost)

    def function_cost(
        self,
        e: Call,
        overload: str,
        target: _Node | None,
        args: list[_Node],
        arg_costs: list[Estimate],
    ) -> tuple[Estimate, Estimate | None]:
        arg_sum = ZERO
        for c in arg_costs:
            arg_sum = arg_sum.add(c)
        traversal = STRING_TRAVERSAL_COST_FACTOR
        if overload == "string_to_bytes" and len(args) == 1:
            sz = self.size_or_unknown(args[0])
            # Go multiplies uint64 without a guard here: it wraps.
            return sz.by_factor(traversal).add(arg_sum), Estimate(sz.min, (sz.max * 4) % (UINT64_MAX + 1))
        if overload == "bytes_to_string" and len(args) == 1:
            sz = self.size_or_unknown(args[0])
            return sz.by_factor(traversal).add(arg_sum), Estimate(sz.min // 4, sz.max)
        if overload in ("starts_with_string", "ends_with_string") and len(args) == 1:
            return self.size_or_unknown(args[0]).by_factor(traversal).add(arg_sum), None
        if overload == "in_list" and len(args) == 2:
            return self.size_or_unknown(args[1]).by_factor(1).add(arg_sum), None
        if overload == "matches_string" and target is not None and len(args) == 1:
            str_cost = self.size_or_unknown(target).add(fixed(1)).by_factor(traversal)
            regex_cost = self.size_or_unknown(args[0]).by_factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return str_cost.multiply(regex_cost).add(arg_sum), None
        if overload == "contains_string" and target is not None and len(args) == 1:
            str_cost = self.size_or_unknown(target).by_factor(traversal)
            substr_cost = self.size_or_unknown(args[0]).by_factor(traversal)
            return str_cost.multiply(substr_cost).add(arg_sum), None
        if overload in ("logical_or", "logical_and"):
            lhs, rhs = arg_costs
            return Estimate(lhs.min, lhs.add(rhs).max), None
        if overload == "conditional":
            size = self.size_or_unknown(args[1]).union(self.size_or_unknown(args[2]))
            true_entry = self.compute_entry_size(args[1].expr)
            false_entry = self.compute_entry_size(args[2].expr)
            self.set_entry_size(e, true_entry.union(false_entry) if true_entry is not None else None)
            return arg_costs[0].add(arg_costs[1].union(arg_costs[2])), size
        if overload in ("add_string", "add_bytes", "add_list") and len(args) == 2:
            result_size = self.size_or_unknown(args[0]).add(self.size_or_unknown(args[1]))
            lhs_entry = self.compute_entry_size(args[0].expr)
            rhs_entry = self.compute_entry_size(args[1].expr)
            if lhs_entry is not None:
                self.set_entry_size(e, lhs_entry.union(rhs_entry))
            if overload == "add_list":
                return fixed(1).add(arg_sum), result_size
            return result_size.by_factor(traversal).add(arg_sum), result_size
        if overload in _SIZED_COMPARISONS:
            lhs_size = self.size_or_unknown(args[0])
            rhs_size = self.size_or_unknown(args[1])
            smallest_max = min(lhs_size.max, rhs_size.max)
            low = 1 if smallest_max > 0 else 0
            return Estimate(low, smallest_max).by_factor(traversal).add(arg_sum), None
        return fixed(1).add(arg_sum), None  # O(1) functions

    def cost_create_list(self, e: CreateList) -> Estimate:
        total = ZERO
        item_size = Estimate(0 if not e.elements else UINT64_MAX, 0)
        for item in e.elements:
            total = total.add(self.cost(item))
            item_size = item_size.union(self.size_or_unknown(item))
        self.set_entry_size(e, EntrySize("list", fixed(1), item_size))
        return total.add(fixed(LIST_CREATE_BASE_COST))

    def cost_create_map(self, e: CreateMap) -> Estimate:
        total = ZERO
        empty = not e.entries
        key_size = Estimate(0 if empty else UINT64_MAX, 0)
        val_size = Estimate(0 if empty else UINT64_MAX, 0)
        for k, v in e.entries:
            total = total.add(self.cost(k)).add(self.cost(v))
            key_size = key_size.union(self.size_or_unknown(k))
            val_size = val_size.union(self.size_or_unknown(v))
        self.set_entry_size(e, EntrySize("map", key_size, val_size))
        return total.add(fixed(MAP_CREATE_BASE_COST))

    def cost_comprehension(self, e: Comprehension) -> Estimate:
        total = self.cost(e.iter_range).add(self.cost(e.accu_init))
        self.push(
            e.accu_var,
            _LocalVar(
                self.get_path(e.accu_init),
                self.compute_size(e.accu_init),
                self.compute_entry_size(e.accu_init),
            ),
        )
        # pushIterSingle
        entry = self.compute_entry_size(e.iter_range)
        container = entry.container if entry is not None else self.type_of(e.iter_range).kind
        if container == "list":
            var_size, subpath = (entry.val if entry is not None else None), "@items"
        else:
            var_size, subpath = (entry.key if entry is not None else None), "@keys"
        self.push(e.iter_var, _LocalVar([*self.get_path(e.iter_range), subpath], var_size, None))
        loop_cost = self.cost(e.loop_condition)
        step_cost = self.cost(e.loop_step)
        self.pop(e.iter_var)
        total = total.add(self.cost(e.result))
        self.pop(e.accu_var)
        range_count = self.size_or_unknown(e.iter_range)
        total = total.add(range_count.multiply(step_cost.add(loop_cost)))
        if isinstance(e.accu_init, Literal):
            self.set_size(e, self.compute_size(e.accu_init))
        elif isinstance(e.accu_init, CreateList | CreateMap):
            self.set_size(e, range_count)
            self.set_entry_size(e, self.compute_entry_size(e.loop_step))
        return total


_SIZED_COMPARISONS = frozenset(
    {
        "less_string", "greater_string", "less_equals_string", "greater_equals_string",
        "less_bytes", "greater_bytes", "less_equals_bytes", "greater_equals_bytes",
        "equals", "not_equals",
    }
)  # fmt: skip


def _expr_size(e: Expr) -> Estimate | None:
    """computeExprSize: sizes CEL knows from the expression itself."""
    if isinstance(e, Literal):
        if e.kind == "string":
            return fixed(len(e.value))
        if e.kind == "bytes":
            return fixed(len(e.value))
        return fixed(1)
    if isinstance(e, CreateList):
        return fixed(len(e.elements))
    if isinstance(e, CreateMap):
        return fixed(len(e.entries))
    return None
