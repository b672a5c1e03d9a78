"""The quickstart end to end, reduced (fewer steps and prompts), with real processes throughout.

1. `m2rl run` on the examples/quickstart/ YAML (steps and prompts scaled down) is interrupted with
   SIGINT while runs train: it exits 130, leaves no process behind (the workdir marker is in no
   process's environment), and marks what was running Suspended (Interrupted). The same command
   resumes and finishes; `m2rl report` then writes a report whose table is the EvalSuite's results.
2. A run interrupted after its first checkpoint and resumed gives the same evaluation table (and
   the same final weights) as the same run uninterrupted.
3. A run that asks for two trainer ranks and a vLLM rollout server gets them: torchrun with two
   DeepSpeed ranks, a real vLLM CPU server, filesystem weight sync after every step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.local.processes import marked_processes
from m2rl_trainer.quickstart import PrepareOptions, prepare
from tests.support.paths import REPO_ROOT

QUICKSTART = REPO_ROOT / "examples" / "quickstart"
REDUCED = PrepareOptions(train=48, heldout=24, sft_rows=(48, 12, 48, 12), sft_steps=30)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def reduce(objects: list[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """The quickstart's objects with `steps` steps per expert (twice for the mixed and the MT-OPD
    runs), 4 prompts per step and a checkpoint after every step."""
    for obj in objects:
        if obj.get("kind") == "RLVRRun":
            spec = obj["spec"]
            spec["algorithm"]["steps"] = steps * (2 if len(spec["domains"]) > 1 else 1)  # as the study
            spec["algorithm"]["promptsPerStep"] = 4
            spec["checkpoint"]["everySteps"] = 1
    return objects


def write_folder(objects: list[dict[str, Any]], folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "resources.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return folder


def quickstart_objects() -> list[dict[str, Any]]:
    return [
        doc for f in sorted(QUICKSTART.glob("*.yaml")) for doc in yaml.safe_load_all(f.read_text()) if doc
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reduced curriculum and SFT model (copied into each test's data root: runs write there)."""
    root = tmp_path_factory.mktemp("prepared")
    prepare(root, REDUCED)
    return root / "m2rl-data"


def data_root(data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "pvc"
    shutil.copytree(data, root / "m2rl-data")
    return root


def m2rl(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "m2rl_operator.cli", *args], capture_output=True, text=True,
                          timeout=900, **kwargs)  # fmt: skip


def start_run(folder: Path, work: Path, root: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "m2rl_operator.cli", "run", "-f", str(folder), "-w", str(work),
            "--data-root", str(root), "--parallel", "2", "--plain"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def status(work: Path, plural: str, name: str) -> dict[str, Any]:
    path = work / plural / name / "resource.json"
    return json.loads(path.read_text()).get("status", {}) if path.is_file() else {}


def held_trainers(work: Path, held: set[int]) -> None:
    """SIGSTOP each trainer process of `work` whose run has a complete checkpoint: on a loaded
    machine a short run could otherwise finish before the runner has reported it."""
    for pid in marked_processes(str(work.resolve())):
        if pid in held:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"m2rl_trainer.cli" not in argv:
            continue
        config = yaml.safe_load(Path(argv[argv.index(b"--config") + 1].decode()).read_text())
        checkpoints = Path(config["output_dir"]) / config["checkpoint"]["dir"]
        if any(checkpoints.glob("step-*[0-9]/checksums.json")):  # complete (not step-N.tmp)
            os.kill(pid, signal.SIGSTOP)
            held.add(pid)


def interrupt_after_checkpoint(process: subprocess.Popen[str], work: Path, runs: list[str]) -> dict[str, Any]:
    """SIGINT once one of `runs` is Running with a checkpoint; returns the statuses of the runs that
    were running then. Trainers past their first checkpoint are held (SIGSTOP) until the runner has
    reported them, then released after the SIGINT, which stops them for good."""
    deadline = time.monotonic() + 600
    held: set[int] = set()
    try:
        while True:
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no run reached a checkpoint in time"
            statuses = {name: status(work, "rlvrruns", name) for name in runs}
            if any(s.get("phase") == "Running" and s.get("latestCheckpoint") for s in statuses.values()):
                break
            held_trainers(work, held)
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
    finally:
        for pid in held:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    try:
        output = process.communicate(timeout=300)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("m2rl run did not stop within 300 s of SIGINT:\n" + process.communicate()[0][-3000:])
    assert process.returncode == 130, output[-3000:]
    assert "interrupted: stopping every process" in output
    return {name: s for name, s in statuses.items() if s.get("phase") == "Running"}


def table(work: Path, suite: str) -> dict[tuple[str, str], dict[str, float]]:
    results = status(work, "evalsuites", suite)["results"]
    return {(c["model"], c["benchmark"]): c["metrics"] for c in results}


def test_reduced_quickstart_interrupted_resumed_and_reported(data: Path, tmp_path: Path) -> None:
    root = data_root(data, tmp_path)
    folder = write_folder(reduce(quickstart_objects(), steps=3), tmp_path / "yaml")
    work = tmp_path / "work"
    for command in (["validate", "-f", str(folder)], ["render", "-f", str(folder)]):
        result = m2rl(*command)  # one set of YAML for the laptop and the cluster
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    runs = [f"qs-expert-{d}" for d in ("math", "code", "science", "if")] + ["qs-mixed"]
    process = start_run(folder, work, root)
    training = interrupt_after_checkpoint(process, work, runs)
    assert marked_processes(str(work.resolve())) == []  # nothing left: trainers, verifiers, workers
    for name in training:
        suspended = status(work, "rlvrruns", name)
        assert suspended["phase"] == "Suspended"
        (condition,) = [c for c in suspended["conditions"] if c["type"] == "Suspended"]
        assert (condition["status"], condition["reason"]) == ("True", "Interrupted")

    process = start_run(folder, work, root)
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output[-4000:]
    assert marked_processes(str(work.resolve())) == []
    for name, before in training.items():  # resumed from its checkpoint, not started again
        if before.get("latestCheckpoint"):
            log = (work / "rlvrruns" / name / "logs" / "trainer.log").read_text()
            assert "[m2rl-train] resumed from" in log
    get = m2rl("get", "-w", str(work))
    assert get.returncode == 0
    listed = " ".join(get.stdout.split())
    assert "rlvrrun/qs-mixed Succeeded 6 6 grpo" in listed
    assert "rlvrrun/qs-mt-opd Succeeded 6 6 mt_opd" in listed  # started once its four teachers succeeded

    report = m2rl("report", str(work))
    assert report.returncode == 0, report.stderr
    text = (work / "report" / "report.md").read_text()
    cells = table(work, "quickstart")
    benchmarks = ["math", "code", "science", "if"]
    models = ["base", "sft", "expert-math", "expert-code", "expert-science", "expert-if", "mixed", "mt-opd",
              "merge-ta", "merge-ties", "merge-dare-ties", "merge-sce", "merge-avg"]  # fmt: skip
    assert sorted(cells) == sorted((m, b) for m in models for b in benchmarks)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for model in models:
        values = [cells[(model, b)]["avg@k"] for b in benchmarks]
        shown = [cell.strip("* ") for cell in rows[model].split(" | ")[2:7]]
        assert shown == [f"{v:.3f}" for v in [*values, sum(values) / 4]], rows[model]
    assert rows["mt-opd"].split(" | ")[1] == "mt-opd (4 teachers)"
    best_math = max(cells[(m, "math")]["avg@k"] for m in models)
    assert f"**{best_math:.3f}**" in "".join(rows.values())
    assert "## Reading" in text and "**the average**: best is" in text
    for figure in ("reward-curves.png", "task-vectors.png", "cost.png", "distillation.png"):
        assert (work / "report" / figure).stat().st_size > 10_000


def test_an_interrupted_run_gives_the_same_table(data: Path, tmp_path: Path) -> None:
    objects = [o for o in reduce(quickstart_objects(), steps=4) if o["metadata"]["name"] == "qs-expert-math"]
    suite = next(o for o in quickstart_objects() if o["kind"] == "EvalSuite")
    suite["spec"]["models"] = [m for m in suite["spec"]["models"] if m["name"] == "expert-math"]
    suite["spec"]["benchmarks"] = suite["spec"]["benchmarks"][:1]  # math: one evaluation process
    folder = write_folder([*objects, suite], tmp_path / "yaml")
    tables, weights = [], []
    for attempt in ("straight", "interrupted"):
        root, work = data_root(data, tmp_path / attempt), tmp_path / attempt / "work"
        process = start_run(folder, work, root)
        if attempt == "interrupted":
            assert list(interrupt_after_checkpoint(process, work, ["qs-expert-math"])) == ["qs-expert-math"]
            assert marked_processes(str(work.resolve())) == []
            process = start_run(folder, work, root)
        output = process.communicate(timeout=900)[0]
        assert process.returncode == 0, output[-4000:]
        tables.append(table(work, "quickstart"))
        model = (
            root
            / "quickstart-checkpoints/runs/qs-expert-math/checkpoints/step-000004/model/model.safetensors"
        )
        weights.append(model.read_bytes())
    assert tables[0] == tables[1]
    assert weights[0] == weights[1]
    assert os.environ.get("M2RL_LOCAL_WORKDIR") is None  # the marker never leaks into the test itself


def test_two_ranks_and_a_vllm_server(data: Path, tmp_path: Path) -> None:
    (run,) = [o for o in reduce(quickstart_objects(), steps=2) if o["metadata"]["name"] == "qs-expert-math"]
    run["spec"]["trainer"]["nodes"] = 2  # two CPU ranks: torchrun
    run["spec"]["rollout"] = {"mode": "server", "replicas": 1, "gpusPerReplica": 0}
    folder, work = write_folder([run], tmp_path / "yaml"), tmp_path / "work"
    process = start_run(folder, work, data_root(data, tmp_path))
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output[-4000:]
    logs = work / "rlvrruns" / "qs-expert-math" / "logs"
    assert (logs / "trainer.log").read_text().count("[m2rl-train] step 2/2") == 1  # rank 0 reports
    assert "--nproc_per_node 2" in (logs / "trainer.log").read_text().splitlines()[1]
    assert "Application startup complete" in (logs / "rollout-0.log").read_text()  # vLLM's own server
    final = status(work, "rlvrruns", "qs-expert-math")
    assert (final["phase"], final["step"]) == ("Succeeded", 2)
    conditions = {c["type"]: c for c in final["conditions"]}
    assert conditions["RolloutReady"]["message"] == "1/1 vLLM servers ready"
    assert marked_processes(str(work.resolve())) == []
