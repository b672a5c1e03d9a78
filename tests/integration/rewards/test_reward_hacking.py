"""The reward-hacking corpus (reward_hacks.py) against every test style: no attempt is rewarded, the
honest control passes everything, and the host stays quick whatever the program returns."""

from __future__ import annotations

import time

import pytest

from m2rl_trainer.rewards import Scorer, ScorerConfig
from tests.integration.rewards.reward_hacks import HACKS, HONEST, TESTS, WRONG

# Short limits: several attempts are meant to hang or to be stopped.
OPTIONS = {"timeout_s": 1.0, "max_wall_factor": 2.0, "memory_mb": 256, "scoring": "fraction"}


def _sample(code: str, style: str) -> dict:
    return {
        "id": style,
        "verifier": "code",
        "response": f"```python\n{code}\n```",
        "reference": {"tests": [TESTS[style]]},
        "options": OPTIONS,
    }


# Hygiene flags (rewards/hygiene.py) some attempts must raise: the signs an operator watches.
FLAGGED = {
    ("os_exit_at_import", "stdio"): "early_exit",
    ("sys_exit_at_import", "call"): "early_exit",
    ("exit_inside_the_call", "call"): "early_exit",
    ("exception_tricks", "assert"): "early_exit",
    ("always_equal_object", "call"): "eq_override",
    ("always_equal_int_subclass", "assert"): "eq_override",
    ("always_equal_metaclass", "call-class"): "eq_override",
    ("patch_builtins_exec", "stdio"): "builtins_touched",
    ("shadow_test_builtins", "call"): "builtins_touched",
    ("answer_on_stderr", "stdio"): "stderr_only",
}


def test_the_honest_control_passes_every_style(scorer):
    results = scorer.score([_sample(HONEST, style) for style in TESTS])
    assert {r.id: r.verdict for r in results} == dict.fromkeys(TESTS, "correct")
    assert all(not any(r.details["hygiene"].values()) for r in results)


def test_rewarded_programs_still_carry_their_hygiene_flags(scorer):
    """The flags do not decide rewards: a correct program that exits through sys.exit or rebinds a
    builtin is rewarded, and counted in the shares the trainer logs."""
    exits = HONEST + "\nimport sys\nsys.exit(0)\n"
    rebinds = "import builtins\nbuiltins.answer = 10\n" + HONEST
    results = scorer.score([_sample(exits, "stdio"), _sample(rebinds, "call")])
    assert [r.verdict for r in results] == ["correct", "correct"]
    assert [k for k, v in results[0].details["hygiene"].items() if v] == ["early_exit"]
    assert [k for k, v in results[1].details["hygiene"].items() if v] == ["builtins_touched"]


@pytest.mark.usefixtures("clean_sandboxes")
def test_no_hack_is_rewarded_in_any_style(scorer):
    samples = [
        {**_sample(hack.code, style), "id": f"{hack.name}/{style}"} for hack in HACKS for style in TESTS
    ]
    start = time.monotonic()
    results = scorer.score(samples)
    elapsed = time.monotonic() - start
    rewarded = {r.id: (r.verdict, r.details["tests"][0]) for r in results if r.reward > 0}
    assert rewarded == {}, rewarded
    flags = {tuple(r.id.split("/")): r.details["hygiene"] for r in results}
    assert {key: flags[key][flag] for key, flag in FLAGGED.items()} == dict.fromkeys(FLAGGED, True)
    # bounded work per run: hangs end at the run's limits, not at the host's grace period
    assert elapsed < 2.0 * len(samples), elapsed
    assert len(HACKS) >= 20 and len({h.category for h in HACKS}) >= 12


def test_a_sample_cannot_sabotage_the_checks_of_the_next_one():
    """The sandbox's checker outlives a run: a program that stops or kills it after its own verdict,
    or makes its test loop for ever, costs the next sample nothing (one sandbox: same checker)."""
    stop_after = (
        WRONG + "import atexit, os, signal\n"
        "def stop_everyone():\n"
        "    spare, pid = {os.getpid(), 1}, os.getpid()\n"
        "    while pid > 1:\n"
        "        pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "        spare.add(pid)\n"
        "    for name in os.listdir('/proc'):\n"
        "        if name.isdigit() and int(name) not in spare:\n"
        "            os.kill(int(name), signal.{sig})\n"
        "atexit.register(stop_everyone)\n"
    )
    loops = "def f(x):\n    return 1\n"  # a test looping `while f(x)` never ends
    looping_test = {"assert": "x = 0\nwhile f(x):\n    x += 1\nassert x > 0"}
    config = ScorerConfig(verifiers={"code": {}}, sandbox_workers=1)
    with Scorer(config) as scorer:
        for hostile in (stop_after.replace("{sig}", "SIGSTOP"), stop_after.replace("{sig}", "SIGKILL")):
            results = scorer.score([_sample(hostile, "assert"), _sample(HONEST, "assert")])
            assert [r.verdict for r in results] == ["incorrect", "correct"]
        loop = {**_sample(loops, "assert"), "reference": {"tests": [looping_test]}}
        results = scorer.score([loop, _sample(HONEST, "assert-check")])
        assert [r.verdict for r in results] == ["timeout", "correct"]
