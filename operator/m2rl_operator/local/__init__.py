"""The local runner: `m2rl run` executes RLVRRun, MergeJob and EvalSuite YAML without a cluster.

The same files the operator reconciles are checked like `m2rl validate` checks them, planned with
the operator's builders (plan.py), executed as local processes (runner.py, processes.py), and
recorded with statuses in the CRDs' schema under a workdir (store.py), where `m2rl get` and
`m2rl report` read them. See docs/local.md.
"""

from __future__ import annotations

from pathlib import Path

from m2rl_operator.local.display import make_display
from m2rl_operator.local.plan import PlanError, load_resources
from m2rl_operator.local.runner import LocalRunner, RunnerOptions
from m2rl_operator.local.store import Store

__all__ = ["PlanError", "RunnerOptions", "run_local"]


def run_local(paths: list[Path], options: RunnerOptions, *, plain: bool = False) -> int:
    """Check, plan and run the resources of `paths`; the exit code of `m2rl run`."""
    store = Store(options.workdir)
    known = {f"{r.kind}/{r.name}": r for r in store.all()}
    resources = load_resources(paths, {key: r.obj for key, r in known.items() if r.phase == "Succeeded"})
    options.workdir.mkdir(parents=True, exist_ok=True)
    store.save_settings(options.data_root)
    display = make_display(options.workdir / "run.log", plain=plain)
    try:
        runner = LocalRunner(
            resources, options, display, known={k: r for k, r in known.items() if r.phase == "Succeeded"}
        )
        return runner.run()
    finally:
        display.close()
