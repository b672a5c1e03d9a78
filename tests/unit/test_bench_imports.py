"""The benches are run by hand, not by the suite: importing each one here catches a helper they use
whose signature changed (the frozen legacy harness imports the trainer's reward helpers)."""

from __future__ import annotations

import importlib
import sys

import pytest

from tests.support.paths import REPO_ROOT

BENCH = REPO_ROOT / "bench"


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_a_bench_script_imports(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(name)
    assert module.__file__ is not None and module.__file__.startswith(str(BENCH))
    sys.modules.pop(name, None)


def test_the_legacy_harness_runs_its_verdict_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frozen verifier's own front half (think gate, code extraction), as the speed bench runs
    it: a response without code is scored before any sandbox is asked."""
    monkeypatch.syspath_prepend(str(BENCH))
    from legacy_harness import code_verifier

    def no_sandbox(job: object, cap: float) -> object:
        raise AssertionError("no code: nothing to run")

    result = code_verifier.verify("no code here", [], code_verifier.CodeOptions(), no_sandbox)
    assert result.reward == 0.0 and result.details == {"reason": "no fenced Python code block"}
