"""Plain values across the sandbox boundary: a strict, type-tagged JSON encoding and strict equality.

Standard library only, Python >= 3.9: the host imports this module, and the sandbox runner loads
its source (sandbox.runner_argv), so the program under test, the checker process and the host
encode and decode values with the same code.

Encoding (one JSON value): null, true/false, numbers (an int stays an int and a float a float;
ints beyond 10**300 as {"I": hex}), strings and lists as JSON; every other plain type is a one-key
object: {"t": [...]} tuple, {"s": [...]} set, {"f": [...]} frozenset, {"d": [[key, value], ...]}
dict, {"y": latin-1 text} bytes, {"c": [real, imag]} complex, and {"h": [id, "TypeName"]} a
reference to an object that stays in the solution's process (an instance of its own class, a
function, a generator). A subclass of a built-in type travels as its built-in value: its own
methods (an __eq__ that says yes to anything) are left behind.

Decoding builds only built-in objects and references, so comparing a decoded value never runs
code of the solution: no __eq__, __hash__, __bool__ or __del__ of its classes. It refuses anything
malformed (unknown tags, unhashable set members, nesting past the JSON parser's recursion limit)
and sets or dict keys made to share one hash (which would make building them quadratic).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

BIG_INT = 10**300  # beyond this an int travels as hex: decimal parsing is capped at 4300 digits
MAX_DEPTH = 200  # nesting of an encoded value; deeper values are refused, not truncated
EQ_OVERRIDE = 1  # flag: the value holds an object whose class defines __eq__, __ne__ or __hash__
_HEX = re.compile(r"-?[0-9a-f]{1,2000000}")
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by Python code, not a built-in type
# Built-in types a program may subclass, most specific first (bool cannot be subclassed).
_SUBCLASSABLE = (int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset)


class Reference:
    """An object that stayed in the solution's process: only its type name crossed.

    Equal to nothing but itself; the checker's proxies (the _checker module) subclass it to reach
    the object remotely.
    """

    __slots__ = ("m2rl_ref_id", "m2rl_type_name")  # prefixed: a proxy's other attributes are the solution's

    def __init__(self, ref_id: int, type_name: str) -> None:
        self.m2rl_ref_id = ref_id
        self.m2rl_type_name = type_name

    def resolved(self) -> Any:
        """A plain value for this reference if there is one (a proxy asks the solution); else itself."""
        return self

    def __bool__(self) -> bool:  # an object's own truth value would be its code deciding a check
        raise TypeError(f"an object of the solution ({self.m2rl_type_name}) has no truth value here")

    def __repr__(self) -> str:
        return f"<{self.m2rl_type_name} object of the solution>"


def defines_equality(cls: type) -> bool:
    """True when a class made by Python code in `cls`'s MRO defines __eq__, __ne__ or __hash__."""
    for klass in cls.__mro__:
        if not klass.__flags__ & _HEAP_TYPE:
            return False  # built-in types from here on
        if "__eq__" in klass.__dict__ or "__ne__" in klass.__dict__ or "__hash__" in klass.__dict__:
            return True
    return False


def _as_builtin(value: Any, base: type) -> Any:
    """The built-in value of an instance of a subclass, read with the built-in type's own methods."""
    if base is int:
        return int.__index__(value)
    if base is float:
        return float.__float__(value)
    if base is complex:
        return complex(complex.real.__get__(value), complex.imag.__get__(value))  # type: ignore[attr-defined]
    if base is str:
        return str.__str__(value)
    if base in (bytes, bytearray):
        return b"".join([value])
    if base is list:
        return list.copy(value)
    if base is tuple:
        return tuple.__getnewargs__(value)[0]  # type: ignore[attr-defined]
    if base is dict:
        return dict.copy(value)
    return base.copy(value)  # set, frozenset


def encode(value: Any, register: Callable[[Any], int] | None = None) -> tuple[Any, int]:
    """(JSON-ready encoding of `value`, flags). `register` turns a non-plain object into a reference
    id; without it such an object is a ValueError (the checker may only send plain values)."""
    flags = 0

    def enc(v: Any, depth: int) -> Any:
        nonlocal flags
        if depth > MAX_DEPTH:
            raise ValueError(f"value nested deeper than {MAX_DEPTH} levels")
        t = type(v)
        if v is None or t is bool or t is str or t is float:
            return v
        if t is int:
            return v if -BIG_INT < v < BIG_INT else {"I": format(v, "x")}
        if t is list:
            return [enc(x, depth + 1) for x in v]
        if t is tuple:
            return {"t": [enc(x, depth + 1) for x in v]}
        if t is dict:
            return {"d": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if t is set or t is frozenset:
            return {"s" if t is set else "f": [enc(x, depth + 1) for x in v]}
        if t is bytes or t is bytearray:
            return {"y": bytes(v).decode("latin-1")}
        if t is complex:
            return {"c": [v.real, v.imag]}
        if defines_equality(t):
            flags |= EQ_OVERRIDE
        for base in _SUBCLASSABLE:
            if isinstance(v, base):
                return enc(_as_builtin(v, base), depth)
        if isinstance(v, Reference):
            return {"h": [v.m2rl_ref_id, v.m2rl_type_name]}
        if register is None:
            raise ValueError(f"a {t.__name__} object is not a plain value")
        return {"h": [register(v), t.__name__[:100]]}

    return enc(value, 0), flags


def dumps(obj: Any) -> str:
    """One line of JSON (no raw newlines: strings escape them)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _check_hashes(items: list[Any]) -> None:
    """Refuse members made to share hashes: distinct members with one hash make a set quadratic."""
    if len(items) > 64 and 2 * len({hash(x) for x in items}) < len(items):
        raise ValueError("set members or dict keys share too few hash values")


def _hook(make_reference: Callable[[int, str], Any]) -> Callable[[list[tuple[str, Any]]], Any]:
    def hook(pairs: list[tuple[str, Any]]) -> Any:
        if len(pairs) != 1:
            raise ValueError("a tagged value has exactly one key")
        tag, payload = pairs[0]
        kind = type(payload)
        if tag == "t" and kind is list:
            return tuple(payload)
        if tag in ("s", "f") and kind is list:
            _check_hashes(payload)
            return set(payload) if tag == "s" else frozenset(payload)
        if tag == "d" and kind is list and all(type(p) is list and len(p) == 2 for p in payload):
            _check_hashes([p[0] for p in payload])
            return {p[0]: p[1] for p in payload}
        if tag == "y" and kind is str:
            return payload.encode("latin-1")
        if (
            tag == "c"
            and kind is list
            and len(payload) == 2
            and all(type(x) in (int, float) for x in payload)
        ):
            return complex(payload[0], payload[1])
        if tag == "I" and kind is str and _HEX.fullmatch(payload):
            return int(payload, 16)
        if (
            tag == "h"
            and kind is list
            and len(payload) == 2
            and type(payload[0]) is int
            and type(payload[1]) is str
        ):
            return make_reference(payload[0], payload[1][:100])
        raise ValueError(f"not a valid tagged value: {tag!r}")

    return hook


def loads(text: str | bytes, make_reference: Callable[[int, str], Any] = Reference) -> Any:
    """Decode one line; any malformed input is a ValueError (never another exception)."""
    try:
        return json.loads(text, object_pairs_hook=_hook(make_reference))
    except ValueError:
        raise
    except (TypeError, RecursionError, MemoryError, OverflowError) as exc:
        raise ValueError(f"malformed value: {type(exc).__name__}: {exc}") from None


# --- strict equality -------------------------------------------------------------------------------

_NUMBERS = (int, float, complex)


def _key(value: Any) -> Any:
    """A hashable stand-in of a set member or dict key whose equality is strict_equal's."""
    t = type(value)
    if t is bool:
        return ("b", value)
    if t in _NUMBERS:
        return ("n", value)
    if t is tuple:
        return ("t", tuple(_key(x) for x in value))
    if t is frozenset:
        return ("f", frozenset(_key(x) for x in value))
    if isinstance(value, Reference):
        return ("r", value.m2rl_ref_id)
    return (t.__name__, value)


def strict_equal(a: Any, b: Any) -> bool:
    """Equality with types checked, decided without any code of the solution.

    bool equals only bool; int, float and complex compare by value (NaN equals nothing); str never
    equals bytes; a list never equals a tuple; a set equals a frozenset with the same members; dict
    keys and set members compare by the same rules; a Reference (an object left in the solution's
    process) equals only a reference to the same object. Objects the test code made itself compare
    with their own ==.
    """
    if isinstance(a, Reference):
        a = a.resolved()
    if isinstance(b, Reference):
        b = b.resolved()
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a is b
    if ta in _NUMBERS and tb in _NUMBERS:
        if (ta is float and math.isnan(a)) or (tb is float and math.isnan(b)):
            return False
        return bool(a == b)
    if isinstance(a, Reference) or isinstance(b, Reference):  # one object of the solution, or not
        both = isinstance(a, Reference) and isinstance(b, Reference)
        return both and a.m2rl_ref_id is not None and a.m2rl_ref_id == b.m2rl_ref_id
    sets = (set, frozenset)
    if ta in sets and tb in sets:
        return len(a) == len(b) and {_key(x) for x in a} == {_key(x) for x in b}
    if ta is not tb or ta not in _PLAIN:
        if ta in _PLAIN and tb in _PLAIN:
            return False
        return bool(a == b)  # one side made by the test code itself: its own == decides
    if ta is list or ta is tuple:
        # (no zip(strict=): this module runs in the sandbox's Python, 3.9 or later)
        return len(a) == len(b) and all(strict_equal(a[i], b[i]) for i in range(len(a)))
    if ta is dict:
        if len(a) != len(b):
            return False
        ka, kb = {_key(k): v for k, v in a.items()}, {_key(k): v for k, v in b.items()}
        return ka.keys() == kb.keys() and all(strict_equal(ka[k], kb[k]) for k in ka)
    return bool(a == b)


_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset})
