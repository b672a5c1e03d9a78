"""CEL expressions as cel-go's checker sees them: parsed, macros expanded.

cel-python's Lark parser reads the text; this module turns its parse tree into the shape of
cel-go's `common/ast` (Ident, Select, Call with operator names such as `_&&_`, CreateList,
CreateMap, Comprehension) and expands the macros exactly as cel-go's `parser/macro.go` does
(`has`, `all`, `exists`, `exists_one`, `map`, `filter`), because the cost estimator prices the
expanded comprehension, not the macro call.
"""

from __future__ import annotations

import ast as pyast
import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

from celpy.celparser import CELParseError, CELParser
from lark import Token, Tree
from lark.exceptions import LarkError

# cel-go parser/macro.go: AccumulatorName / HiddenAccumulatorName ("@result" in cel-go >= 0.22).
ACCUMULATOR = "@result"

_ids = itertools.count(1)


@dataclass(eq=False)
class Expr:
    """A node; `id` keys the checker's and the coster's side tables, like cel-go's expression ids."""

    id: int = field(default_factory=lambda: next(_ids), init=False)


@dataclass(eq=False)
class Literal(Expr):
    value: Any
    kind: str  # int, uint, double, string, bytes, bool, null


@dataclass(eq=False)
class Ident(Expr):
    name: str


@dataclass(eq=False)
class Select(Expr):
    operand: Expr
    field: str
    test_only: bool = False


@dataclass(eq=False)
class Call(Expr):
    function: str
    args: list[Expr]
    target: Expr | None = None


@dataclass(eq=False)
class CreateList(Expr):
    elements: list[Expr]


@dataclass(eq=False)
class CreateMap(Expr):
    entries: list[tuple[Expr, Expr]]


@dataclass(eq=False)
class Comprehension(Expr):
    iter_range: Expr
    iter_var: str
    accu_var: str
    accu_init: Expr
    loop_condition: Expr
    loop_step: Expr
    result: Expr


class CelSyntaxError(ValueError):
    """The expression does not parse (or uses syntax cel-go rejects, e.g. a macro misuse)."""


_PARSER = CELParser()

_BINARY = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}


@functools.lru_cache(maxsize=2048)
def _tree(text: str) -> Tree:
    """The Lark parse tree (cached: CRDs repeat rules, and every profile parses them again)."""
    return _PARSER.parse(text)


def parse(text: str) -> Expr:
    """Parse and expand macros (fresh nodes each call); CelSyntaxError on bad syntax."""
    try:
        tree = _tree(text)
    except CELParseError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise CelSyntaxError(f"Syntax error: {first}") from exc
    except (LarkError, AssertionError) as exc:  # cel-python's error formatting can fail on some tokens
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise CelSyntaxError(f"Syntax error: {first}") from exc
    return _Builder().expr(tree)


class _Builder:
    def expr(self, node: Tree) -> Expr:
        handler = getattr(self, "_" + str(node.data))
        result: Expr = handler(node.children)
        return result

    # ---- operators ---------------------------------------------------------------------------------

    def _expr(self, children: list[Any]) -> Expr:
        if len(children) == 1 or children[1] is None:
            return self.expr(children[0])
        cond, if_true, if_false = (self.expr(c) for c in children)
        return Call("_?_:_", [cond, if_true, if_false])

    def _conditionalor(self, children: list[Any]) -> Expr:
        return self._chain(children, "_||_")

    def _conditionaland(self, children: list[Any]) -> Expr:
        return self._chain(children, "_&&_")

    def _chain(self, children: list[Any], op: str) -> Expr:
        if len(children) == 1 or children[0] is None:
            return self.expr(children[-1])
        return Call(op, [self.expr(children[0]), self.expr(children[1])])

    def _relation(self, children: list[Any]) -> Expr:
        return self._binary(children)

    def _addition(self, children: list[Any]) -> Expr:
        return self._binary(children)

    def _multiplication(self, children: list[Any]) -> Expr:
        return self._binary(children)

    def _binary(self, children: list[Any]) -> Expr:
        if len(children) == 1 or children[0] is None:
            return self.expr(children[-1])
        left, right = children
        (lhs,) = left.children
        return Call(_BINARY[str(left.data)], [self.expr(lhs), self.expr(right)])

    def _unary(self, children: list[Any]) -> Expr:
        if len(children) == 1:
            return self.expr(children[0])
        # `!!x` is `x` and `--x` is `x` in cel-go (parser.go VisitLogicalNot, VisitNegate).
        ops = []
        node: Tree = Tree("unary", children)
        while len(node.children) == 2:
            ops.append(str(node.children[0].data))
            node = node.children[1]
        operand = self.expr(node)
        if len(set(ops)) != 1:
            for op in reversed(ops):
                operand = self._apply_unary(op, operand)
            return operand
        if len(ops) % 2 == 0:
            return operand
        return self._apply_unary(ops[0], operand)

    def _apply_unary(self, op: str, operand: Expr) -> Expr:
        if op == "unary_neg":
            # CEL.g4 reads `-` before a number as part of the literal.
            if isinstance(operand, Literal) and operand.kind in ("int", "double"):
                return Literal(-operand.value, operand.kind)
            return Call("-_", [operand])
        return Call("!_", [operand])

    # ---- members -----------------------------------------------------------------------------------

    def _member(self, children: list[Any]) -> Expr:
        return self.expr(children[0])

    def _member_dot(self, children: list[Any]) -> Expr:
        operand, name = children
        return Select(self.expr(operand), str(name))

    def _member_dot_arg(self, children: list[Any]) -> Expr:
        target, name, *rest = children
        arg_nodes = list(rest[0].children) if rest and rest[0] is not None else []
        return self._call(str(name), [self.expr(a) for a in arg_nodes], self.expr(target))

    def _member_index(self, children: list[Any]) -> Expr:
        operand, index = children
        return Call("_[_]", [self.expr(operand), self.expr(index)])

    def _member_object(self, children: list[Any]) -> Expr:
        raise CelSyntaxError("message construction (Type{...}) is not supported in CRD rules")

    def _primary(self, children: list[Any]) -> Expr:
        return self.expr(children[0])

    def _dot_ident_arg(self, children: list[Any]) -> Expr:
        raise CelSyntaxError("leading-dot identifiers are not supported in CRD rules")

    _dot_ident = _dot_ident_arg

    def _ident_arg(self, children: list[Any]) -> Expr:
        name, *rest = children
        arg_nodes = list(rest[0].children) if rest and rest[0] is not None else []
        return self._call(str(name), [self.expr(a) for a in arg_nodes], None)

    def _ident(self, children: list[Any]) -> Expr:
        return Ident(str(children[0]))

    def _paren_expr(self, children: list[Any]) -> Expr:
        return self.expr(children[0])

    def _list_lit(self, children: list[Any]) -> Expr:
        args = children[0] if children else None
        return CreateList([self.expr(a) for a in args.children] if args is not None else [])

    def _map_lit(self, children: list[Any]) -> Expr:
        inits = children[0] if children else None
        items = [self.expr(a) for a in inits.children] if inits is not None else []
        return CreateMap(list(zip(items[0::2], items[1::2], strict=True)))

    def _literal(self, children: list[Any]) -> Expr:
        token: Token = children[0]
        return _literal(token)

    # ---- calls and macros (parser/macro.go) --------------------------------------------------------

    def _call(self, name: str, args: list[Expr], target: Expr | None) -> Expr:
        if target is None and name == "has" and len(args) == 1:
            if not isinstance(args[0], Select):
                raise CelSyntaxError("invalid argument to has() macro")
            return Select(args[0].operand, args[0].field, test_only=True)
        if target is not None and name in ("all", "exists", "exists_one") and len(args) == 2:
            return _quantifier(name, target, args)
        if target is not None and name == "map" and len(args) in (2, 3):
            return _map(target, args)
        if target is not None and name == "filter" and len(args) == 2:
            return _filter(target, args)
        return Call(name, args, target)


def _iter_var(arg: Expr, message: str) -> str:
    if not isinstance(arg, Ident):
        raise CelSyntaxError(message)
    if arg.name in (ACCUMULATOR, "__result__"):
        raise CelSyntaxError("iteration variable overwrites accumulator variable")
    return arg.name


def _quantifier(kind: str, target: Expr, args: list[Expr]) -> Expr:
    """makeQuantifier: all, exists, exists_one."""
    var = _iter_var(args[0], "argument must be a simple name")
    accu = lambda: Ident(ACCUMULATOR)  # noqa: E731 - a fresh node each time, as eh.NewAccuIdent()
    if kind == "all":
        init: Expr = Literal(True, "bool")
        condition: Expr = Call("@not_strictly_false", [accu()])
        step: Expr = Call("_&&_", [accu(), args[1]])
        result: Expr = accu()
    elif kind == "exists":
        init = Literal(False, "bool")
        condition = Call("@not_strictly_false", [Call("!_", [accu()])])
        step = Call("_||_", [accu(), args[1]])
        result = accu()
    else:
        init = Literal(0, "int")
        condition = Literal(True, "bool")
        step = Call("_?_:_", [args[1], Call("_+_", [accu(), Literal(1, "int")]), accu()])
        result = Call("_==_", [accu(), Literal(1, "int")])
    return Comprehension(target, var, ACCUMULATOR, init, condition, step, result)


def _map(target: Expr, args: list[Expr]) -> Expr:
    """MakeMap: `list.map(x, f)` and `list.map(x, p, f)`."""
    var = _iter_var(args[0], "argument is not an identifier")
    fn = args[-1]
    step: Expr = Call("_+_", [Ident(ACCUMULATOR), CreateList([fn])])
    if len(args) == 3:
        step = Call("_?_:_", [args[1], step, Ident(ACCUMULATOR)])
    return Comprehension(
        target, var, ACCUMULATOR, CreateList([]), Literal(True, "bool"), step, Ident(ACCUMULATOR)
    )


def _filter(target: Expr, args: list[Expr]) -> Expr:
    """MakeFilter."""
    var = _iter_var(args[0], "argument is not an identifier")
    step: Expr = Call("_+_", [Ident(ACCUMULATOR), CreateList([Ident(var)])])
    step = Call("_?_:_", [args[1], step, Ident(ACCUMULATOR)])
    return Comprehension(
        target, var, ACCUMULATOR, CreateList([]), Literal(True, "bool"), step, Ident(ACCUMULATOR)
    )


def _literal(token: Token) -> Literal:
    text = str(token)
    kind = token.type
    if kind == "INT_LIT":
        return Literal(int(text, 0) if "x" not in text else int(text.replace("0x", ""), 16), "int")
    if kind == "UINT_LIT":
        return Literal(int(text[:-1], 0), "uint")
    if kind == "FLOAT_LIT":
        return Literal(float(text), "double")
    if kind == "BOOL_LIT":
        return Literal(text == "true", "bool")
    if kind == "NULL_LIT":
        return Literal(None, "null")
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        return Literal(_string(text), "string")
    if kind == "BYTES_LIT":
        return Literal(_string(text[1:]).encode("utf-8", "surrogateescape"), "bytes")
    raise CelSyntaxError(f"unsupported literal {text!r}")


def _string(text: str) -> str:
    raw = text[0] in "rR"
    body = text[1:] if raw else text
    quote = body[:3] if body[:3] in ('"""', "'''") else body[0]
    inner = body[len(quote) : -len(quote)]
    if raw:
        return inner
    # CEL escapes are a superset-compatible subset of Python's; \u and \x agree.
    try:
        value = pyast.literal_eval(quote + inner + quote)
    except (SyntaxError, ValueError) as exc:
        raise CelSyntaxError(f"invalid string literal {text!r}") from exc
    return str(value)
