"""LiveCodeBench's stdout comparison (lcb_runner/evaluation/testing_util.py, grade_stdio), case by case."""

from __future__ import annotations

import pytest

from m2rl_trainer.rewards import code_verifier
from m2rl_trainer.rewards.lcb_compare import stdout_matches


@pytest.mark.parametrize(
    ("got", "want", "ok"),
    [
        ("3\n", "3", True),  # stripped
        ("  1 2  \n3 4\n\n", "1 2\n3 4", True),  # each line stripped, trailing blank lines gone
        ("1.0\n", "1", True),  # numbers equal as decimals
        ("1.50 2\n", "1.5 2.0", True),
        ("0.1", "0.10000001", False),  # exact decimals: no tolerance
        ("50000000000000001", "50000000000000000", False),  # the np.isclose gotcha LCB avoids
        ("1  2", "1 2", True),  # whitespace-separated numbers
        ("a b", "a  b", False),  # text lines compare as text
        ("1\n2", "1 2", False),  # line count differs
        ("1\n\n2", "1\n2", False),  # an inner blank line is a line
        ("YES", "yes", False),
        ("sNaN", "1", False),  # a signalling NaN never compares equal (nor raises)
        ("nan", "nan", True),  # equal as text
    ],
)
def test_livecodebench_stdout_comparison(got: str, want: str, ok: bool) -> None:
    assert stdout_matches(got, want) is ok


def test_the_code_verifier_uses_it_and_strip() -> None:
    lcb = code_verifier.CodeOptions(output_match="livecodebench")
    strip = code_verifier.CodeOptions(output_match="strip")
    assert code_verifier.stdout_matches("2.0\n", "2", lcb)
    assert not code_verifier.stdout_matches("2.0\n", "2", strip)
    assert code_verifier.stdout_matches(" 1 2\n", "1 2", strip)  # the study's sandbox: str.strip equality
    assert not code_verifier.stdout_matches("1  2", "1 2", strip)
