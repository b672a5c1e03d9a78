"""The strict value encoding, strict equality, and what assert tests the checker process accepts."""

from __future__ import annotations

import time

import pytest

from m2rl_trainer.rewards import _checker, _values
from m2rl_trainer.rewards.registry import get_verifier
from m2rl_trainer.rewards.types import ConfigError

SPEC = get_verifier("code")


def roundtrip(value):
    encoded, flags = _values.encode(value, register=lambda obj: 7)
    return _values.loads(_values.dumps(encoded)), flags


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(10**400),
        1.5,
        float("inf"),
        "x\ny",
        b"\x00\xff",
        [1, [2, (3, 4)]],
        (1,),
        {1, 2},
        frozenset({"a"}),
        {"a": 1, 2: [3], (1, 2): None},
        3 + 4j,
    ],
    ids=repr,
)
def test_plain_values_roundtrip_with_their_types(value):
    decoded, flags = roundtrip(value)
    assert type(decoded) is type(value) and flags == 0
    assert _values.strict_equal(decoded, value)


def test_subclasses_travel_as_their_builtin_value_and_are_flagged():
    class AlwaysEqual(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Row(tuple):
        pass

    decoded, flags = roundtrip([AlwaysEqual(3), Row((1, 2))])
    assert decoded == [3, (1, 2)] and type(decoded[0]) is int and type(decoded[1]) is tuple
    assert flags == _values.EQ_OVERRIDE  # AlwaysEqual defines __eq__; Row does not


def test_objects_of_the_program_become_references_equal_to_nothing():
    class Anything:
        def __eq__(self, other):
            return True

    decoded, flags = roundtrip([Anything()])
    assert isinstance(decoded[0], _values.Reference) and decoded[0].m2rl_type_name == "Anything"
    assert flags == _values.EQ_OVERRIDE
    assert not _values.strict_equal(decoded[0], 3) and decoded[0] != 3
    with pytest.raises(ValueError, match="not a plain value"):
        _values.encode(Anything())  # the checker never sends objects of its own


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (1, True, False),
        ([1, 2], (1, 2), False),
        ({1, 2}, frozenset({2, 1}), True),
        ({True}, {1}, False),
        ({1: "a"}, {True: "a"}, False),
        ("a", b"a", False),
        (float("nan"), float("nan"), False),
        ([1, [2, 3]], [1, [2, 3]], True),
        ({"a": [1]}, {"a": [1.0]}, True),
    ],
)
def test_strict_equality(a, b, equal):
    assert _values.strict_equal(a, b) is equal


@pytest.mark.parametrize(
    "line",
    [
        '{"x": 1}',
        '{"t": 1}',
        '{"s": [[1]]}',
        '{"d": [[1]]}',
        '{"I": "zz"}',
        '{"y": "\\u0100"}',
        '{"h": ["0", "A"]}',
        '{"t": [], "s": []}',
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=[
        "unknown-tag",
        "bad-payload",
        "unhashable",
        "bad-pair",
        "bad-hex",
        "not-latin1",
        "bad-ref",
        "two-keys",
        "deep",
    ],
)
def test_malformed_lines_are_value_errors(line):
    with pytest.raises(ValueError):
        _values.loads(line)


def test_sets_made_to_share_one_hash_are_refused_quickly():
    prime = (1 << 61) - 1
    line = '{"s": [' + ",".join(str(7 + k * prime) for k in range(20_000)) + "]}"
    start = time.monotonic()
    with pytest.raises(ValueError, match="hash"):
        _values.loads(line)
    assert time.monotonic() - start < 1.0  # building the set would be quadratic: ~10^8 probes
    assert _values.loads('{"s": [-1, -2]}') == {-1, -2}  # a few natural collisions are fine


# --- what the checker accepts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "entry_point", "remote"),
    [
        ("assert f(1) == 2", None, ("f",)),
        ("assert Solution().twoSum([1, 2], 3) == [0, 1]", None, ("Solution",)),
        (
            "import math\nx = f(2)\nassert math.isclose(x, 4)\nfor i in range(3):\n    assert g(i) >= 0",
            None,
            ("f", "g"),
        ),
        ("def check(candidate):\n    assert candidate(1) == 2\ncheck(add)", None, ("add",)),
        ("def check(candidate):\n    assert candidate(1) == 2", "add", ()),
        ("def check(candidate):\n    assert add(1) == candidate(1)", "add", ("add",)),  # HumanEval/33's style
        ("import sys\nassert f(sys.maxsize) > 0", None, ("f",)),
    ],
)
def test_translatable_tests(code, entry_point, remote):
    assert _checker.analyse(code, entry_point).remote == remote


@pytest.mark.parametrize(
    ("code", "entry_point", "message"),
    [
        ("assert f(1) ==", None, "does not compile"),
        ("assert True", None, "never uses a name of the solution"),
        ("def check(candidate):\n    assert candidate(1) == 2", None, "never calls it: give 'entry_point'"),
        ("assert f(1) == 2", "f", "defines no check(candidate)"),
        (
            "def check(candidate):\n    assert math_helper(candidate(1))",
            "f",
            "uses math_helper without defining it",
        ),
        ("exec('assert f(1) == 2')", None, "uses exec()"),
        ("assert eval('f(1)') == 2", None, "uses eval()"),
        ("import builtins\nassert f(1) == 2", None, "imports builtins"),
        ("import sys\nsys.stdin = None\nassert f() == 1", None, "uses sys.stdin"),
        ("from sys import setrecursionlimit\nassert f() == 1", None, "uses sys.setrecursionlimit"),
        ("f.cache = {}\nassert f(1) == 2", None, "changes the solution's f"),
        ("memo[1] = 2\nassert f(1) == 2", None, "changes the solution's memo"),
        ("assert f(lambda x: x) == 2", None, "passes a function or generator"),
        ("assert f.__code__ is not None", None, "special attribute __code__"),
        ("from solution import f\nassert f(1) == 2", None, "imports from solution"),
        ("from os import *\nassert f(1) == 2", None, "import *"),
    ],
)
def test_untranslatable_tests_are_refused_with_the_reason(code, entry_point, message):
    with pytest.raises(_checker.Untranslatable, match=message.replace("(", r"\(").replace(")", r"\)")):
        _checker.analyse(code, entry_point)


def test_a_reference_with_an_untranslatable_test_is_a_config_error_naming_it():
    reference = {"tests": [{"assert": "assert f(1) == 2"}, {"assert": "exec('assert f(1) == 2')"}]}
    with pytest.raises(ConfigError) as info:
        SPEC.check_reference(reference, SPEC.parse_options({}))
    message = str(info.value)
    assert message.startswith("code reference: test 1 (\"exec('assert f(1) == 2')\"): cannot be checked")
    assert "uses exec()" in message
    with pytest.raises(ConfigError, match="'entry_point' must be a function name"):
        SPEC.check_reference(
            {"tests": [{"assert": "assert f(1)", "entry_point": "1x"}]}, SPEC.parse_options({})
        )


def test_equality_in_tests_is_rewritten_to_the_strict_one():
    namespace = {_checker.EQ_NAME: _values.strict_equal, _checker.CHAIN_NAME: _checker._compare_chain}
    code = "r = [True == 1, 1 != True, 1 == 1.0, [1] == (1,), 0 < 1 == 1.0 < 2, 0 < 1 == True, 1 in [True]]"
    ns = {**namespace, "f": None}
    exec(compile(_checker.analyse(code + "\nf", None).tree, "test.py", "exec"), ns)
    # ==/!= are strict (bool is not int, a list is not a tuple); `in` keeps Python's own ==
    assert ns["r"] == [False, True, True, False, True, False, True]


@pytest.mark.parametrize(
    ("code", "calls"),
    [
        ("assert f(1) == 2\nassert abs(f(2) - 1) < 1e-6", [("f", (), (1,), {}), ("f", (), (2,), {})]),
        (
            "assert Solution().m([1, 2], k=3) == [1]",
            [("Solution", (), (), {}), (["r", 0], ("m",), ([1, 2],), {"k": 3})],
        ),
        (
            "METADATA = {}\ndef check(candidate):\n    assert candidate('a') == 'b'\n"
            "    assert True\ncheck(f)",
            [("f", (), ("a",), {})],
        ),
        (
            "import math\nassert math.isclose(f(1), 0.5)\nassert sorted(f(2)) == [1, 2]",
            [("f", (), (1,), {}), ("f", (), (2,), {})],
        ),
    ],
    ids=["asserts", "leetcode", "humaneval-check", "math-and-sorted"],
)
def test_plain_asserts_are_checked_on_the_host(code, calls):
    plan = _checker.host_plan(code)
    assert plan is not None and [tuple(c) for c in plan.calls] == [tuple(c) for c in calls]


@pytest.mark.parametrize(
    "code",
    [
        "x = 1\nassert f(x) == 2",  # statements: the checker process
        "for i in range(3):\n    assert f(i) == i",
        "assert f(1) or f(2)",  # a call short-circuiting may skip
        "assert f(f(1)) == 2",  # a call's value as an argument
        "assert f.attr == 2",  # the solution's name not called
        "assert set(f(1)) == {1}",  # hashing a program's values: it may choose colliding ones
        "assert 2 ** f(1) == 4",  # cost exponential in a program's number
        "assert [0] * f(1) == []",
        "assert f(1) % f(2) == 0",  # quadratic in the digits of two big numbers
        "assert math.factorial(f(1)) == 1",
        "assert len(list(range(f(1)))) == 3",
    ],
)
def test_anything_else_goes_to_the_checker_process(code):
    assert _checker.host_plan(code) is None
    _checker.analyse(code)  # and the checker process takes it
