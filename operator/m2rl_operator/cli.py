"""The `m2rl` command line: thin subcommands over library functions.

Each subcommand is a `Command` in `COMMANDS`: a name, a one-line help, a function that declares
its arguments and a function that runs it and returns the exit code. Adding one means writing
those two functions and appending a `Command`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """One subcommand."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _add_filename_argument(
    parser: argparse.ArgumentParser, more_help: str = "", required: bool = True
) -> None:
    """`-f/--filename FILE_OR_DIR`, repeatable, as kubectl spells it."""
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        type=Path,
        required=required,
        metavar="FILE_OR_DIR",
        help="a YAML file, or a directory searched recursively for *.yaml/*.yml (repeatable)" + more_help,
    )


# ---- m2rl validate ---------------------------------------------------------------------------------


def _configure_validate(parser: argparse.ArgumentParser) -> None:
    _add_filename_argument(parser, "; with --crds, files with CustomResourceDefinitions", required=False)
    parser.add_argument(
        "--crds",
        action="store_true",
        help="check CustomResourceDefinitions as kube-apiserver does when they are created (structural "
        "schema, fieldPaths, CEL compilation and cost, rules on defaults); without -f, the CRDs the API "
        "models generate",
    )
    parser.add_argument(
        "--old",
        type=Path,
        metavar="FILE_OR_DIR",
        help="validate as updates of these objects (same kind/namespace/name): runs immutability rules",
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems and the summary")


def _run_validate(args: argparse.Namespace) -> int:
    from m2rl_operator.api.offline import validate_path

    if args.crds:
        return _run_validate_crds(args)
    if not args.paths:
        print("error: -f/--filename is required (or --crds)", file=sys.stderr)
        return 2
    reports = [r for path in args.paths for r in validate_path(path, args.old)]
    if args.output == "json":
        print(
            json.dumps(
                [
                    {
                        "source": r.source,
                        "object": r.identity,
                        "ok": r.ok,
                        "skipped": r.skipped,
                        "violations": [
                            {"path": v.path, "message": v.message, "rule": v.rule} for v in r.violations
                        ],
                        "notEvaluated": [
                            {"path": n.path, "rule": n.rule, "reason": n.reason} for n in r.not_evaluated
                        ],
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    else:
        for r in reports:
            where = f"{r.source}: {r.identity}"
            if r.skipped:
                if not args.quiet:
                    print(f"{where}: skipped ({r.skipped})")
            elif r.violations:
                count = len(r.violations)
                print(f"{where}: invalid, {count} violation{'s' if count != 1 else ''}")
                for v in r.violations:
                    print(f"  {v}")
            elif not args.quiet:
                print(f"{where}: valid")
            for n in r.not_evaluated:
                print(f"  warning: {n}")
        checked = [r for r in reports if not r.skipped]
        invalid = [r for r in checked if r.violations]
        total = sum(len(r.violations) for r in invalid)
        skipped = len(reports) - len(checked)
        print(
            f"{len(checked)} checked, {len(invalid)} invalid ({total} violation{'s' if total != 1 else ''}), "
            f"{skipped} skipped"
        )
    return 1 if any(r.violations for r in reports) else 0


def _run_validate_crds(args: argparse.Namespace) -> int:
    from m2rl_operator.api.admission import check_crd, crds_in
    from m2rl_operator.api.crd import crd_manifests

    if args.paths:
        sources = [found for path in args.paths for found in crds_in(path)]
        if not sources:
            print("error: no CustomResourceDefinition found in the given files", file=sys.stderr)
            return 1
    else:
        sources = [("generated", crd) for crd in crd_manifests()]
    reports = [(source, check_crd(crd)) for source, crd in sources]
    if args.output == "json":
        print(
            json.dumps(
                [
                    {
                        "source": source,
                        "crd": r.name,
                        "ok": r.ok,
                        "errors": [
                            {"field": e.field, "type": e.type, "message": e.body(), "kubernetes": profiles}
                            for e, profiles in r.errors
                        ],
                        "totalCost": r.total_cost,
                        "largestRuleCost": r.largest().cost if r.largest() else 0,
                    }
                    for source, r in reports
                ],
                indent=2,
            )
        )
    else:
        for source, r in reports:
            versions = ", ".join(p.profile.name for p in r.reports)
            if r.ok:
                largest = r.largest()
                where = f" ({largest.path})" if largest and not args.quiet else ""
                print(
                    f"{source}: CustomResourceDefinition/{r.name}: accepted (Kubernetes {versions}); "
                    f"estimated "
                    f"rule cost: total {r.total_cost} of 100000000, largest "
                    f"{largest.cost if largest else 0} of 10000000{where}"
                )
            else:
                print(f"{source}: CustomResourceDefinition/{r.name}: rejected")
                for line in r.lines():
                    print(f"  {line}")
    return 0 if all(r.ok for _, r in reports) else 1


# ---- m2rl crds -------------------------------------------------------------------------------------


def _configure_crds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("crds"), help="directory for the CRD files (default crds/)"
    )
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="CHART_DIR",
        help="also write the chart's CRD templates into CHART_DIR/templates/crds/",
    )
    parser.add_argument(
        "--docs", type=Path, metavar="FILE", help="also write the API reference (docs/api.md)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 and list the files that are stale"
    )


def _run_crds(args: argparse.Namespace) -> int:
    from m2rl_operator.api.crd import chart_crd_texts, crd_file_texts, stale_files, write_files
    from m2rl_operator.api.docs import api_markdown

    targets: list[tuple[dict[str, str], Path]] = [(crd_file_texts(), args.out)]
    if args.chart:
        targets.append((chart_crd_texts(), args.chart / "templates" / "crds"))
    if args.docs:
        targets.append(({args.docs.name: api_markdown()}, args.docs.parent))
    if args.check:
        stale = [p for texts, directory in targets for p in stale_files(texts, directory)]
        for path in stale:
            print(f"stale: {path} (run `m2rl crds` to regenerate)")
        return 1 if stale else 0
    for texts, directory in targets:
        for path in write_files(texts, directory):
            print(f"wrote {path}")
    return 0


# ---- m2rl render ------------------------------------------------------------------------------------


def _configure_render(parser: argparse.ArgumentParser) -> None:
    _add_filename_argument(parser, "; references resolve against the resources of all of them")
    parser.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace of resources that do not name one (default: default)",
    )


def _run_render(args: argparse.Namespace) -> int:
    from m2rl_operator.api.yaml_io import iter_documents
    from m2rl_operator.render import render_objects, to_yaml
    from m2rl_operator.settings import OperatorOptions

    objects = [doc.content for path in args.paths for doc in iter_documents(path)]
    # The chart's default images; the operator in a cluster reads M2RL_IMAGE_* instead.
    rendered = render_objects(objects, OperatorOptions(metrics_port=None), namespace=args.namespace)
    for problem in rendered.problems:
        print(f"error: {problem}", file=sys.stderr)
    if rendered.manifests:
        sys.stdout.write(to_yaml(rendered.manifests))
    return 1 if rendered.problems else 0


# ---- m2rl run / get / report (the local runner) ------------------------------------------------------


def _configure_run(parser: argparse.ArgumentParser) -> None:
    _add_filename_argument(parser, "; references resolve against all of them and the workdir")
    parser.add_argument(
        "-w", "--workdir", type=Path, default=Path("m2rl-work"),
        help="where statuses, configs and logs go; the same command there resumes (default m2rl-work)",
    )  # fmt: skip
    parser.add_argument(
        "--data-root", type=Path, metavar="R",
        help="pvc://CLAIM/PATH is the file R/CLAIM/PATH (default WORKDIR/pvc)",
    )  # fmt: skip
    parser.add_argument(
        "--parallel", type=int, default=max(1, os.cpu_count() or 1),
        help="main processes at once: trainers, merges, evaluated models (default: the CPU count)",
    )  # fmt: skip
    parser.add_argument(
        "--eval-engine", choices=("hf", "vllm"), default="hf",
        help="how m2rl-eval generates: hf (in-process, fast to start; default) or vllm (a server per model)",
    )  # fmt: skip
    parser.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")


def _run_run(args: argparse.Namespace) -> int:
    from m2rl_operator.local import PlanError, RunnerOptions, run_local

    if args.parallel < 1:
        print("error: --parallel must be at least 1", file=sys.stderr)
        return 2
    options = RunnerOptions(
        workdir=args.workdir,
        data_root=args.data_root or args.workdir / "pvc",
        parallel=args.parallel,
        eval_engine=args.eval_engine,
    )
    try:
        return run_local(args.paths, options, plain=args.plain)
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _configure_get(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-w", "--workdir", type=Path, default=Path("m2rl-work"), help="a `m2rl run` workdir")
    parser.add_argument(
        "-o", "--output", choices=("wide", "yaml", "json"), default="",
        help="wide: more columns and the evaluation tables; yaml/json: the objects with their status",
    )  # fmt: skip


def _run_get(args: argparse.Namespace) -> int:
    from m2rl_operator.local.get import render
    from m2rl_operator.local.store import Store

    if not args.workdir.is_dir():
        print(f"error: {args.workdir}: no such workdir", file=sys.stderr)
        return 1
    print(render(Store(args.workdir).all(), args.output))
    return 0


def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "workdirs", nargs="+", type=Path, metavar="WORKDIR",
        help="`m2rl run` workdirs; several (the same YAML with different seeds) add the seed-to-seed spread",
    )  # fmt: skip
    parser.add_argument(
        "-o", "--out", type=Path, help="folder for report.md and the figures (default: WORKDIR/report)"
    )


def _run_report(args: argparse.Namespace) -> int:
    from m2rl_operator.local.report import ReportError, write_report

    out = args.out or args.workdirs[0] / "report"
    try:
        path = write_report(args.workdirs, out)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


COMMANDS: list[Command] = [
    Command(
        "validate",
        "check M2RL resources offline against the CRD schemas and CEL rules",
        _configure_validate,
        _run_validate,
    ),
    Command(
        "crds",
        "generate the CRDs (and optionally chart templates and docs) from the API models",
        _configure_crds,
        _run_crds,
    ),
    Command(
        "render",
        "print the manifests the operator would create for resources, without a cluster",
        _configure_render,
        _run_render,
    ),
    Command(
        "run",
        "run resources with local processes instead of pods (resumes in the same workdir)",
        _configure_run,
        _run_run,
    ),
    Command(
        "get", "print the resources of an `m2rl run` workdir like `kubectl get`", _configure_get, _run_get
    ),
    Command(
        "report",
        "write report.md and figures (results table, reward curves, task vectors, costs) from workdirs",
        _configure_report,
        _run_report,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2rl", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
