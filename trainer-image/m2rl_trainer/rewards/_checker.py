"""Assert-style tests, checked outside the solution's process.

A test's code (dataset asserts, a HumanEval-style `check(candidate)` function, LeetCode-style
`Solution().method(...)` calls) is checked in one of two places, neither of them the solution's
process:
  - plain asserts (`host_plan`): the calls, with literal arguments, are made in the solution's
    process like function-call tests, and the host evaluates each assert's expression over the
    decoded values (`evaluate`);
  - anything else (`run_check`): the sandbox's checker process runs the test code, where every name
    the test takes from the solution is a proxy (`Remote`) whose calls run in the solution's
    process and come back as plain values.
Either way the values are `_values`-encoded built-in objects and `==`, `!=` and `is` in the test
are rewritten to strict comparisons; the asserts, the values they compare and the comparison
itself are the host's or the checker's, so nothing the solution does to its own process (patching
builtins, exiting early, returning objects that equal anything, reading its memory) can make a
failing check pass.

`analyse` runs on the host when a reference is loaded (what cannot be checked outside the
solution's process is an error naming the test) and again in the checker, which compiles what it
returns. Standard library only, Python >= 3.9: the sandbox runner loads this source
(sandbox.runner_argv).

Wire protocol with the solution's process, one JSON line each way (see _sandbox_runner.serve):
  request  [op, target, attrs, args, kwargs, sync]  op: call | get | iter | next | len | getitem;
           target: a global name of the solution, a reference {"h": [id, type]}, or ["r", k]: what
           request k returned (function-call tests: `Solution()`, then its method); attrs: attribute
           names applied to it; sync: report arguments the call changed in place
  reply    ["v", value, flags, changed]  or  ["e", exception type name, flags, message, is_base]
  report   ["L", flags, names]  its first line: how its code ended, which builtins it redefined
"""

from __future__ import annotations

import ast
import builtins
import operator
import os
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from . import _values

EQ_NAME, IS_NAME, CHAIN_NAME = "__m2rl_strict_eq__", "__m2rl_identical__", "__m2rl_compare_chain__"
# Report and reply flags (bits), beside _values.EQ_OVERRIDE = 1.
BUILTINS_CHANGED, EXITED, RAISED = 2, 4, 8

# Calls a test may not make: they would reach names or objects the checker cannot see or proxy.
FORBIDDEN_NAMES = frozenset(
    {"exec", "eval", "compile", "globals", "locals", "vars", "__import__", "breakpoint", "setattr", "delattr"}
)
# Modules that reach into a process (the solution's, in the original harness): not translatable.
FORBIDDEN_MODULES = frozenset(
    {"builtins", "inspect", "gc", "ctypes", "importlib", "unittest", "mock", "__main__", "solution"}
)
SYS_READ_ONLY = frozenset(
    {"maxsize", "float_info", "int_info", "hash_info", "maxunicode", "byteorder", "version_info"}
)
_BUILTIN_NAMES = frozenset(dir(builtins))
_BUILTIN_EXCEPTIONS = {
    name: value
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, Exception)
}


class Untranslatable(Exception):
    """The test cannot be checked outside the solution's process; the message says why."""


@dataclass(frozen=True)
class Analysis:
    tree: ast.Module  # the test with == and != made strict
    remote: tuple[str, ...]  # names the test takes from the solution (proxies in the checker)
    builtins_used: frozenset[str]  # built-in names the test uses (a solution may not redefine them)


def _bound_names(tree: ast.AST) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif type(node).__name__ in ("MatchAs", "MatchStar") and getattr(node, "name", None):
            bound.add(node.name)  # type: ignore[attr-defined]
        elif type(node).__name__ == "MatchMapping" and getattr(node, "rest", None):
            bound.add(node.rest)  # type: ignore[attr-defined]
    return bound


def _root(node: ast.AST) -> ast.AST:
    """The object an attribute, subscript or call chain starts from (`f().x[1]` -> `f`)."""
    while True:
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return node


def _problems(tree: ast.Module, remote: set[str]) -> list[str]:
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    sys_names = set()
    problems = []
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    problems.append(f"{where}: imports {alias.name}")
                if top == "sys":
                    sys_names.add(alias.asname or "sys")
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if node.level or top in FORBIDDEN_MODULES:
                problems.append(f"{where}: imports from {'.' * node.level}{node.module or ''}")
            for alias in node.names:
                if alias.name == "*":
                    problems.append(f"{where}: 'from {node.module} import *' hides which names it binds")
                elif top == "sys" and alias.name not in SYS_READ_ONLY:
                    problems.append(f"{where}: uses sys.{alias.name}")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in FORBIDDEN_NAMES:
            problems.append(f"{where}: uses {node.id}()")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr.endswith("__"):
            problems.append(f"{where}: uses the special attribute {node.attr}")
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
            root = _root(node)
            if isinstance(root, ast.Name) and root.id in remote:
                problems.append(f"{where}: changes the solution's {root.id} (assignment or del)")
        elif isinstance(node, ast.Call):
            root = _root(node.func)
            if isinstance(root, ast.Name) and root.id in remote:
                values = [*node.args, *(k.value for k in node.keywords)]
                if any(isinstance(v, (ast.Lambda, ast.GeneratorExp)) for v in values):
                    problems.append(f"{where}: passes a function or generator to the solution's {root.id}")
    for node in ast.walk(tree):  # every use of sys must read one of the read-only facts
        if isinstance(node, ast.Name) and node.id in sys_names and isinstance(node.ctx, ast.Load):
            parent = parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.attr in SYS_READ_ONLY):
                attr = f"sys.{parent.attr}" if isinstance(parent, ast.Attribute) else "sys itself"
                problems.append(f"line {node.lineno}: uses {attr}")
    return problems


class _StrictCompare(ast.NodeTransformer):
    """`a == b` -> strict_eq(a, b), `a != b` -> not strict_eq(a, b), `a is b` -> identical(a, b)
    (an object of the solution is the same object under two references); chains stay lazy."""

    REWRITTEN: ClassVar[dict[type, str]] = {
        ast.Eq: EQ_NAME,
        ast.NotEq: EQ_NAME,
        ast.Is: IS_NAME,
        ast.IsNot: IS_NAME,
    }

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if not any(type(op) in self.REWRITTEN for op in node.ops):
            return node
        if len(node.ops) == 1:
            helper = self.REWRITTEN[type(node.ops[0])]
            call = ast.Call(ast.Name(helper, ast.Load()), [node.left, node.comparators[0]], [])
            negated = isinstance(node.ops[0], (ast.NotEq, ast.IsNot))
            result: ast.expr = ast.UnaryOp(ast.Not(), call) if negated else call
        else:
            no_args = ast.arguments(
                posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
            )
            thunks = [ast.Lambda(no_args, operand) for operand in [node.left, *node.comparators]]
            ops = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
            result = ast.Call(ast.Name(CHAIN_NAME, ast.Load()), [ops, *thunks], [])
        return ast.copy_location(result, node)


def analyse(code: str, entry_point: str | None = None, *, validated: bool = False) -> Analysis:
    """Check that a test can run outside the solution's process and prepare it; else Untranslatable.
    `validated`: the host already checked it (at load time): only prepare it."""
    try:
        tree = ast.parse(code, "test.py")
    except SyntaxError as exc:
        raise Untranslatable(f"does not compile: {exc}") from None
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound = _bound_names(tree)
    free = sorted(loaded - bound - _BUILTIN_NAMES)
    problems = [] if validated else _problems(tree, set(free))
    if problems:
        raise Untranslatable("; ".join(problems[:5]))
    defines_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
    if entry_point is not None:
        if not defines_check:
            raise Untranslatable(
                f"entry_point {entry_point!r} given, but the code defines no check(candidate)"
            )
        others = [name for name in free if name != entry_point]
        if others:
            raise Untranslatable(
                f"uses {', '.join(others)} without defining it; with entry_point only the entry point comes "
                "from the solution (put helpers such as HumanEval's prompt functions in the test code)"
            )
    else:
        calls_check = any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "check"
            for n in ast.walk(tree)
        )
        if defines_check and not calls_check:
            raise Untranslatable(
                "defines check() but never calls it: give 'entry_point' (the function to check)"
            )
        if not free:
            raise Untranslatable("never uses a name of the solution, so it would pass any program")
    tree = ast.fix_missing_locations(_StrictCompare().visit(tree))
    return Analysis(tree, tuple(free), frozenset(loaded & _BUILTIN_NAMES - bound))


# --- plain asserts: checked on the host ------------------------------------------------------------
#
# Most dataset asserts are `assert f(<literals>) == <literal>` (MBPP, APPS/TACO call tests written as
# asserts, most HumanEval checks, `Solution().method(...)`). For those no checker process is needed:
# the program's process makes the calls (a function-call job) and the host evaluates each assert's
# expression over the decoded values. Expected values then never enter the sandbox at all.

# What a host-checked assert may use. Each costs at most about linear time and memory in the size of
# the values (bounded by the output cap): a program's value must not make the host's own evaluation
# slow. Anything else (set() or dict() of a program's list, which it may fill with integers sharing
# one hash; **, <<, *, range() over a program's number; %, // and divmod, quadratic in the digits of
# two big numbers; other math functions) is left to the
# checker process, which runs under the run's time and memory limits.
SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in (
        "abs", "all", "any", "bool", "float", "int", "isinstance", "len", "list", "max", "min",
        "repr", "reversed", "round", "sorted", "str", "sum", "tuple", "type", "True", "False", "None",
    )
}  # fmt: skip
SAFE_MATH = frozenset(
    {"ceil", "copysign", "e", "fabs", "floor", "fsum", "inf", "isclose", "isfinite", "isinf", "isnan"}
    | {"log", "log10", "log2", "nan", "pi", "sqrt", "tau", "trunc"}
)
UNSAFE_OPERATORS = (ast.Pow, ast.LShift, ast.Mult, ast.MatMult, ast.Mod, ast.FloorDiv)
VALUES_NAME = "__m2rl_values__"


@dataclass(frozen=True)
class HostCheck:
    expression: Any  # code object of the assert's expression, calls replaced by VALUES_NAME[k]
    calls: tuple[int, ...]  # the calls it uses, in evaluation order
    line: int
    source: str


@dataclass(frozen=True)
class HostPlan:
    """Calls to make in the program's process, in order, and the asserts to evaluate over them.

    A call is (target, attrs, args, kwargs): target a global name of the solution or ["r", k], the
    object call k returned (`Solution()` then `.method(...)` on it)."""

    calls: tuple[tuple[Any, tuple[str, ...], tuple[Any, ...], dict[str, Any]], ...]
    checks: tuple[HostCheck, ...]
    builtins_used: frozenset[str]  # a solution that redefines one of them makes the test ambiguous


class _NotPlain(Exception):
    pass


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _NotPlain() from None


class _HostCalls(ast.NodeTransformer):
    """Replace the solution's calls in one assert by VALUES_NAME[k], in evaluation order."""

    ALLOWED = (
        ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Set, ast.UnaryOp, ast.BinOp, ast.Compare,
        ast.BoolOp, ast.Call, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.keyword, ast.Load,
        ast.unaryop, ast.operator, ast.cmpop, ast.boolop,
    )  # fmt: skip

    def __init__(self, solution: dict[str, str], calls: list[Any]) -> None:
        self.solution, self.calls, self.used = solution, calls, []  # name in the test -> in the solution

    def visit(self, node: ast.AST) -> Any:
        if not isinstance(node, self.ALLOWED):
            raise _NotPlain()
        return super().visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.solution or (node.id not in SAFE_BUILTINS and node.id != "math"):
            raise _NotPlain()  # the solution's names only as calls; nothing else of the test's own
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if not (isinstance(node.value, ast.Name) and node.value.id == "math") or node.attr not in SAFE_MATH:
            raise _NotPlain()
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        if isinstance(node.op, UNSAFE_OPERATORS):
            raise _NotPlain()
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        first = self.visit(node.values[0])
        at = len(self.calls)
        rest = [self.visit(v) for v in node.values[1:]]
        if len(self.calls) > at:  # a call that short-circuiting may skip: the checker's job
            raise _NotPlain()
        node.values = [first, *rest]
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        func = node.func
        target: Any = None
        attrs: tuple[str, ...] = ()
        if isinstance(func, ast.Name) and func.id in self.solution:
            target = self.solution[func.id]
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.solution
        ):
            target, attrs = self.solution[func.value.id], (func.attr,)  # Class.static_method(...)
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id in self.solution
            and not func.value.args
            and not func.value.keywords
        ):
            self.calls.append((self.solution[func.value.func.id], (), (), {}))  # Solution()
            target, attrs = ["r", len(self.calls) - 1], (func.attr,)
        if target is None:
            return self.generic_visit(node)  # a built-in's or math's call
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise _NotPlain()
        args = tuple(_literal(a) for a in node.args)
        kwargs = {k.arg: _literal(k.value) for k in node.keywords}
        self.calls.append((target, attrs, args, kwargs))
        self.used.append(len(self.calls) - 1)
        index = ast.Constant(len(self.calls) - 1)
        return ast.copy_location(ast.Subscript(ast.Name(VALUES_NAME, ast.Load()), index, ast.Load()), node)


def _skippable(node: ast.stmt) -> bool:
    """Statements a plain test may have besides asserts: docstrings, pass, `import math`."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True
    if isinstance(node, ast.Import):
        return [(a.name, a.asname) for a in node.names] == [("math", None)]
    return isinstance(node, ast.Pass)


def _host_statements(
    tree: ast.Module, entry_point: str | None
) -> tuple[list[ast.stmt], dict[str, str]] | None:
    """The asserts of a test made only of asserts (at module level, or in a check(candidate) called
    once or named by entry_point), and which of its names stand for the solution's."""
    body = [
        n
        for n in tree.body
        if not _skippable(n)
        and not (  # HumanEval's unused METADATA = {...}
            isinstance(n, ast.Assign)
            and len(n.targets) == 1
            and isinstance(n.targets[0], ast.Name)
            and n.targets[0].id == "METADATA"
        )
    ]
    checks = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        if entry_point is not None or not all(isinstance(n, ast.Assert) for n in body):
            return None
        return list(body), {name: name for name in _free_names(tree)}
    check = checks[0]
    rest = [n for n in body if n is not check]
    if entry_point is None:
        call = rest[0].value if len(rest) == 1 and isinstance(rest[0], ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "check"):
            return None
        if len(call.args) != 1 or call.keywords or not isinstance(call.args[0], ast.Name):
            return None
        entry_point = call.args[0].id
    elif rest:
        return None
    args = check.args
    if len(args.args) != 1 or args.posonlyargs or args.kwonlyargs or args.vararg or args.kwarg:
        return None
    statements = [n for n in check.body if not _skippable(n)]
    if check.decorator_list or not all(isinstance(n, ast.Assert) for n in statements):
        return None
    return statements, {args.args[0].arg: entry_point}


def _free_names(tree: ast.Module) -> list[str]:
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return sorted(loaded - _bound_names(tree) - _BUILTIN_NAMES - {"math"})


def host_plan(code: str, entry_point: str | None = None) -> HostPlan | None:
    """The test as calls + host-evaluated asserts, when it is only plain asserts over calls of the
    solution's functions with literal arguments; None when it needs the checker process."""
    try:
        tree = ast.parse(code, "test.py")
        found = _host_statements(tree, entry_point)
        if found is None:
            return None
        statements, solution = found
        if not solution:
            return None
        calls: list[Any] = []
        checks = []
        lines = code.splitlines()
        for statement in statements:
            assert isinstance(statement, ast.Assert)
            if statement.msg is not None:
                _HostCalls(solution, []).visit(ast.Expression(statement.msg))  # no calls, nothing odd
            transformer = _HostCalls(solution, calls)
            expression = transformer.visit(ast.Expression(statement.test))
            expression = ast.fix_missing_locations(_StrictCompare().visit(expression))
            line = statement.lineno
            source = lines[line - 1].strip()[:200] if 0 < line <= len(lines) else ""
            checks.append(
                HostCheck(compile(expression, "test.py", "eval"), tuple(transformer.used), line, source)
            )
    except (_NotPlain, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not calls or len(calls) > 10_000:
        return None
    used = {n.id for s in statements for n in ast.walk(s) if isinstance(n, ast.Name)} & set(SAFE_BUILTINS)
    return HostPlan(tuple(calls), tuple(checks), frozenset(used))


def host_namespace() -> dict[str, Any]:
    import math

    return {
        "__builtins__": SAFE_BUILTINS,
        "math": math,
        EQ_NAME: _values.strict_equal,
        IS_NAME: identical,
        CHAIN_NAME: _compare_chain,
    }


def evaluate(plan: HostPlan, replies: list[list[Any]], shadowed: list[str]) -> tuple[str, str]:
    """Run the plan's asserts over the program's replies (["v", value, ...] / ["e", name, flags,
    message, is_base], one per call): (status, reason) with the checker's statuses. `shadowed`: the
    built-in names the program redefined (its report)."""
    clash = sorted(plan.builtins_used & set(shadowed))
    if clash:
        return (
            "test_error",
            f"the test uses {', '.join(clash)}, which the solution redefines: which one does it mean?",
        )
    namespace = host_namespace()
    values = [reply[1] if reply[0] == "v" else None for reply in replies]
    for check in plan.checks:
        where = f" (test line {check.line}: {check.source})"
        for k in check.calls:
            if replies[k][0] == "e":
                if len(replies[k]) > 4 and replies[k][4] is True:
                    return "candidate_exited", f"the solution raised {replies[k][1]} during a call{where}"
                return "candidate_error", f"{replies[k][1]}: {str(replies[k][3])[:300]}{where}"
        try:
            held = eval(check.expression, namespace, {VALUES_NAME: values})
            if isinstance(held, _values.Reference):
                return "wrong_type", f"the solution returned a {held.m2rl_type_name} object{where}"
            if not held:
                return "failed", f"AssertionError{where}"
        except TypeError as exc:
            if "object of the solution" in str(exc):
                return "wrong_type", f"{exc}{where}"
            return "error", f"TypeError: {str(exc)[:300]}{where}"
        except Exception as exc:
            return "error", f"{type(exc).__name__}: {str(exc)[:300]}{where}"
    return "passed", ""


# --- the checker process ---------------------------------------------------------------------------


class CandidateGone(BaseException):
    """The solution's process stopped answering (exited, crashed, closed its pipe, broke the protocol).

    A BaseException, so that a test's `except Exception` cannot swallow it.
    """


class WrongType(TypeError):
    """The solution returned an object of its own where the test needs a plain value."""


class RemoteError(Exception):
    """The solution raised an exception that is not one of Python's built-in ones."""


def _compare_chain(ops: tuple[str, ...], *operands: Callable[[], Any]) -> bool:
    compare = {
        "Eq": _values.strict_equal,
        "NotEq": lambda a, b: not _values.strict_equal(a, b),
        "Lt": operator.lt,
        "LtE": operator.le,
        "Gt": operator.gt,
        "GtE": operator.ge,
        "In": lambda a, b: a in b,
        "NotIn": lambda a, b: a not in b,
        "Is": identical,
        "IsNot": lambda a, b: not identical(a, b),
    }
    left = operands[0]()
    for index, op in enumerate(ops):
        right = operands[index + 1]()
        if not compare[op](left, right):
            return False
        left = right
    return True


class LineReader:
    """Lines from a pipe, each at most `max_line` bytes (a longer one is a ValueError)."""

    def __init__(self, fd: int, max_line: int) -> None:
        self.fd, self.max_line, self.buffer, self.searched = fd, max_line, bytearray(), 0

    def readline(self) -> bytes | None:
        """The next line without its newline; None at the end of the stream."""
        while True:
            end = self.buffer.find(b"\n", self.searched)
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                self.searched = 0
                return line
            self.searched = len(self.buffer)
            if len(self.buffer) > self.max_line:
                raise ValueError("line too long")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk


class Connection:
    """The checker's end of the two pipes to the solution's process."""

    def __init__(self, request_fd: int, reply_fd: int, max_line: int) -> None:
        self.request_fd = request_fd
        self.reader = LineReader(reply_fd, max_line)
        self.flags = 0  # hygiene bits from the report and every reply
        self.calls = 0
        self.failure: tuple[str, str] | None = None  # (status, reason), sticky: the test cannot pass

    def fail(self, status: str, reason: str) -> None:
        if self.failure is None:
            self.failure = (status, reason)

    def _read_line(self) -> bytes:
        try:
            line = self.reader.readline()
        except ValueError:
            raise self._gone("the solution's reply exceeds the output limit") from None
        except OSError:
            line = None
        if line is None:
            raise self._gone("the solution's process ended")
        return line

    def _gone(self, reason: str) -> CandidateGone:
        self.fail("candidate_exited", reason)
        return CandidateGone(reason)

    def read_report(self) -> list[str]:
        """The solution's first line: how its code ended and which built-in names it redefined."""
        line = self._read_line()
        try:
            report = _values.loads(line)
        except ValueError:
            raise self._gone("the solution's process broke the protocol") from None
        if not (type(report) is list and len(report) == 3 and report[0] == "L" and type(report[1]) is int):
            raise self._gone("the solution's process broke the protocol")
        self.flags |= report[1]
        if report[1] & (EXITED | RAISED):
            how = "exited (SystemExit)" if report[1] & EXITED else "raised an exception"
            raise self._gone(f"the solution's code {how} before the test ran")
        return [n for n in report[2] if type(n) is str] if type(report[2]) is list else []

    def request(
        self, op: str, target: Any, attrs: tuple[str, ...], args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if self.failure is not None:
            raise CandidateGone(self.failure[1])
        originals, original_kwargs = list(args), dict(kwargs or {})
        args, kwargs = _materialise(originals), _materialise(original_kwargs)
        try:
            line, _ = _values.encode([op, target, list(attrs), args, kwargs, True])
        except ValueError as exc:
            self.fail(
                "test_error",
                f"cannot send to the solution: {exc} (only plain values and its own objects cross)",
            )
            raise Untranslatable(str(exc)) from None
        data = (_values.dumps(line) + "\n").encode()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.request_fd, view) :]
        except OSError:
            raise self._gone("the solution's process stopped reading") from None
        self.calls += 1
        try:
            reply = _values.loads(self._read_line(), self._reference)
        except ValueError:
            raise self._gone("the solution's process broke the protocol") from None
        if not (type(reply) is list and len(reply) >= 4 and reply[0] in ("v", "e") and type(reply[2]) is int):
            raise self._gone("the solution's process broke the protocol")
        self.flags |= reply[2]
        if reply[0] == "e":
            return self._raise(reply)
        for position, value in reply[3] if type(reply[3]) is list else []:
            _apply_change(originals, original_kwargs, position, value)
        return reply[1]

    def _raise(self, reply: list[Any]) -> Any:
        name = reply[1] if type(reply[1]) is str else "Exception"
        message = reply[3] if len(reply) > 3 and type(reply[3]) is str else ""
        if len(reply) > 4 and reply[4] is True:  # SystemExit, KeyboardInterrupt, GeneratorExit
            self.flags |= EXITED
            raise self._gone(f"the solution raised {name} during a call")
        cls = _BUILTIN_EXCEPTIONS.get(name)
        error = cls(message) if cls is not None else RemoteError(f"{name}: {message}")
        error.m2rl_from_solution = True  # type: ignore[attr-defined]
        raise error

    def _reference(self, ref_id: int, type_name: str) -> Remote:
        return Remote(self, ref_id, type_name)


def _materialise(value: Any) -> Any:
    """Remote names and attribute paths in arguments become the objects they stand for."""
    if isinstance(value, Remote) and value._m2rl_name is not None:
        return value.resolved()
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_materialise(v) for v in value)
    if type(value) is dict:
        return {k: _materialise(v) for k, v in value.items()}
    return value


def _apply_change(args: list[Any], kwargs: dict[str, Any], position: Any, value: Any) -> None:
    """Copy an in-place change the solution made to an argument back into the test's object."""
    original = args[position] if type(position) is int and 0 <= position < len(args) else kwargs.get(position)
    if type(original) is not type(value):
        return
    if type(original) is list:
        original[:] = value
    elif type(original) in (dict, set):
        original.clear()
        original.update(value)


def _wrong_type(remote: Remote, need: str) -> WrongType:
    reason = f"the solution returned a {remote.m2rl_type_name} object where the test needs {need}"
    remote._m2rl_conn.fail("wrong_type", reason)
    return WrongType(reason)


class Remote(_values.Reference):
    """A global name or an object of the solution, reached through the connection.

    A name proxy (`_m2rl_name` set) is looked up in the solution's process each time it is used; an
    object reference (m2rl_ref_id set) stands for one object there. Attribute access asks for the
    attribute at once (a plain value comes back as itself, anything else as a reference). Using a
    reference as a plain value (`==`, `<`, `+`, `bool`, `int`) is a wrong answer: the solution
    returned an object of its own where the test needs a value.
    """

    __slots__ = ("_m2rl_conn", "_m2rl_name")

    def __init__(self, conn: Connection, ref_id: int | None, type_name: str, name: str | None = None) -> None:
        object.__setattr__(self, "m2rl_ref_id", ref_id)
        object.__setattr__(self, "m2rl_type_name", type_name)
        object.__setattr__(self, "_m2rl_conn", conn)
        object.__setattr__(self, "_m2rl_name", name)

    @classmethod
    def name(cls, conn: Connection, name: str) -> Remote:
        return cls(conn, None, name, name)

    def _m2rl_request(
        self, op: str, attrs: tuple[str, ...] = (), args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        target = self._m2rl_name if self._m2rl_name is not None else self
        return self._m2rl_conn.request(op, target, attrs, args, kwargs)

    def resolved(self) -> Any:
        return self if self._m2rl_name is None else self._m2rl_request("get")

    def _m2rl_plain(self, need: str) -> Any:
        value = self.resolved()
        if isinstance(value, _values.Reference):
            raise _wrong_type(value if isinstance(value, Remote) else self, need)
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._m2rl_request("call", (), args, kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return self._m2rl_request("get", (attr,))

    def __setattr__(self, attr: str, value: Any) -> None:
        self._m2rl_conn.fail("test_error", f"the test changes the solution's object ({attr} = ...)")
        raise Untranslatable("changing the solution's objects")

    __delattr__ = __setattr__  # type: ignore[assignment]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__setattr__("[]", value)

    __delitem__ = __setitem__  # type: ignore[assignment]

    def __iter__(self) -> Any:
        iterator = self._m2rl_request("iter")
        return _RemoteIterator(self._m2rl_conn, iterator)

    def __len__(self) -> int:
        return int(self._m2rl_request("len"))

    def __getitem__(self, key: Any) -> Any:
        return self._m2rl_request("getitem", (), (key,))

    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        return _values.strict_equal(self, other)

    def __ne__(self, other: Any) -> bool:  # type: ignore[override]
        return not _values.strict_equal(self, other)

    def __hash__(self) -> int:
        value = self.resolved()
        return hash(("solution object", value.m2rl_ref_id) if isinstance(value, _values.Reference) else value)

    def __bool__(self) -> bool:
        return bool(self._m2rl_plain("a truth value"))

    def __repr__(self) -> str:
        if self._m2rl_name is not None:
            return f"<{self.m2rl_type_name} of the solution>"
        return f"<{self.m2rl_type_name} object of the solution>"


def identical(a: Any, b: Any) -> bool:
    """`a is b` in a test: two references to one object of the solution are the same object."""
    if isinstance(a, Remote):
        a = a.resolved()
    if isinstance(b, Remote):
        b = b.resolved()
    if isinstance(a, _values.Reference) and isinstance(b, _values.Reference):
        return a.m2rl_ref_id is not None and a.m2rl_ref_id == b.m2rl_ref_id
    return a is b


def _plain_operator(name: str, reflected: bool = False) -> Callable[..., Any]:
    function = getattr(operator, name)

    def method(self: Remote, other: Any = None) -> Any:
        value = self._m2rl_plain(f"a plain value for {name}")
        return function(other, value) if reflected else function(value, other)

    return method


def _plain_unary(function: Callable[[Any], Any]) -> Callable[..., Any]:
    def method(self: Remote, *args: Any) -> Any:
        return function(self._m2rl_plain(f"a plain value for {function.__name__}"), *args)

    return method


for _name in (
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "and",
    "or",
    "xor",
    "lshift",
    "rshift",
    "matmul",
):
    _op = _name + "_" if _name in ("and", "or") else _name
    setattr(Remote, f"__{_name}__", _plain_operator(_op))
    setattr(Remote, f"__r{_name}__", _plain_operator(_op, reflected=True))
for _name in ("lt", "le", "gt", "ge"):
    setattr(Remote, f"__{_name}__", _plain_operator(_name))
for _name, _function in (
    ("neg", operator.neg),
    ("pos", operator.pos),
    ("abs", abs),
    ("invert", operator.invert),
    ("int", int),
    ("float", float),
    ("index", operator.index),
    ("round", round),
    ("str", str),
    ("format", format),
    ("divmod", divmod),
    ("contains", operator.contains),
):
    setattr(Remote, f"__{_name}__", _plain_unary(_function))


class _RemoteIterator:
    """Iterates over an iterator that stays in the solution's process, a chunk per round trip."""

    CHUNK = 256

    def __init__(self, conn: Connection, iterator: Any) -> None:
        self.conn, self.iterator, self.items, self.done = conn, iterator, [], False
        if not isinstance(iterator, Remote):
            raise _wrong_type(Remote(conn, None, type(iterator).__name__), "an iterator")

    def __iter__(self) -> _RemoteIterator:
        return self

    def __next__(self) -> Any:
        if not self.items and not self.done:
            chunk = self.iterator._m2rl_request("next", (), (self.CHUNK,))
            if not (type(chunk) is tuple and len(chunk) == 2 and type(chunk[0]) is list):
                raise self.conn._gone("the solution's process broke the protocol")
            self.items, self.done = chunk[0][::-1], chunk[1] is True
        if not self.items:
            raise StopIteration
        return self.items.pop()


def _failure_line(exc: BaseException, code: str) -> str:
    """Where in the test code `exc` was raised: ' (test line N: source)'."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__, limit=50) if f.filename == "test.py"]
    if not frames or frames[-1].lineno is None:
        return ""
    lines = code.splitlines()
    number = frames[-1].lineno
    source = lines[number - 1].strip()[:200] if 0 < number <= len(lines) else ""
    return f" (test line {number}: {source})"


def run_check(code: str, entry_point: str | None, conn: Connection, seed: int) -> dict[str, Any]:
    """Run one test against the solution behind `conn`; the verdict is decided here, in this process.

    status: passed | failed (an assert) | wrong_type | candidate_error (the solution raised) |
    candidate_exited | test_error (the test cannot be checked this way) | error (the test code raised).
    """
    try:
        analysis = analyse(code, entry_point, validated=True)
        shadowed = conn.read_report()
        clash = sorted(analysis.builtins_used & set(shadowed)) if entry_point is None else []
        if clash:
            conn.fail(
                "test_error",
                f"the test uses {', '.join(clash)}, which the solution redefines: which one does it mean?",
            )
            raise CandidateGone(conn.failure[1])  # type: ignore[index]
        namespace: dict[str, Any] = {
            "__name__": "__test__",
            "__builtins__": builtins,
            EQ_NAME: _values.strict_equal,
            IS_NAME: identical,
            CHAIN_NAME: _compare_chain,
        }
        for name in analysis.remote:
            namespace[name] = Remote.name(conn, name)
        random.seed(seed)  # tests that draw random inputs draw the same ones every run
        exec(compile(analysis.tree, "test.py", "exec"), namespace)
        if entry_point is not None:
            namespace["check"](Remote.name(conn, entry_point))
        status, reason = "passed", ""
    except Untranslatable as exc:
        status, reason = "test_error", str(exc)
    except AssertionError as exc:
        status, reason = "failed", f"AssertionError: {str(exc)[:300]}{_failure_line(exc, code)}"
    except WrongType as exc:
        status, reason = "wrong_type", str(exc)
    except CandidateGone as exc:
        status, reason = "candidate_exited", str(exc)
    except BaseException as exc:
        from_solution = getattr(exc, "m2rl_from_solution", False)
        status = "candidate_error" if from_solution else "error"
        reason = f"{type(exc).__name__}: {str(exc)[:300]}{_failure_line(exc, code)}"
    if conn.failure is not None:  # sticky: whatever the test caught, it cannot pass
        status, reason = conn.failure
    return {"status": status, "reason": reason[:1000], "flags": conn.flags, "calls": conn.calls}
