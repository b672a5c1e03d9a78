"""LiveCodeBench's own stdout comparison and import prelude (pure; the code verifier's hook uses them).

From LiveCodeBench `lcb_runner/evaluation/testing_util.py`:
- `grade_stdio`: both outputs are stripped, split on "\\n" and each line stripped
  (`get_stripped_lines`); the line counts must match; a line passes when it is equal as text, or
  when both lines are whitespace-separated numbers that are equal as `decimal.Decimal`s
  (`convert_line_to_decimals`: exact decimal comparison, so 1.0 equals 1 but 0.1 does not equal
  0.10000001; there is no tolerance).
- `import_string`: the star-imports and imports every LiveCodeBench solution runs after (LeetCode
  starter code uses `List[int]` without importing it), and `sys.setrecursionlimit(50000)`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n"
    "from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\n"
    "from builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\n"
    "import statistics\nimport itertools\nimport functools\nimport operator\nimport io\nimport sys\n"
    "import json\nsys.setrecursionlimit(50000)\n"
)


def stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except InvalidOperation:
        return None


def stdout_matches(got: str, want: str) -> bool:
    """True when LiveCodeBench's `grade_stdio` would accept output `got` for expected `want`."""
    got_lines, want_lines = stripped_lines(got), stripped_lines(want)
    if len(got_lines) != len(want_lines):
        return False
    for got_line, want_line in zip(got_lines, want_lines, strict=True):
        if got_line == want_line:
            continue
        got_numbers, want_numbers = _decimals(got_line), _decimals(want_line)
        if got_numbers is None or want_numbers is None:
            return False
        try:
            if got_numbers != want_numbers:
                return False
        except InvalidOperation:  # a signalling NaN ("sNaN") refuses comparison
            return False
    return True
