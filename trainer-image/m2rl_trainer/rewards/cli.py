"""`m2rl-verifier`: score a JSONL file of samples, serve the verifiers over HTTP, list them.

  m2rl-verifier score FILE.jsonl [-o OUT.jsonl] [--config CONFIG]   one result per line, in order
  m2rl-verifier serve [--host H] [--port P] [--config CONFIG]
  m2rl-verifier list                                                verifier types and options (JSON)
  m2rl-verifier prepare-nltk-data DIR                               IFEval's Punkt data, for images

CONFIG is YAML or JSON: the scorer's keys (verifiers, python_workers, sandbox_workers, sandbox,
warm_up) plus an optional `service` block (ServiceConfig's limits). The CLI only parses, validates
and calls the library. Exit codes: 0 done, 2 invalid input or configuration (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TextIO

from m2rl_trainer.rewards.types import ConfigError


def _load_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    text = Path(path).read_text(encoding="utf-8")
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:
        data = json.loads(text)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return dict(data)


def _scorer_config(raw: Mapping[str, Any], args: argparse.Namespace, *, service: bool = False) -> Any:
    from m2rl_trainer.rewards.scorer import ScorerConfig

    scorer_raw = {k: v for k, v in raw.items() if k != "service"}
    if service:  # the service runs programs at low priority unless its config says otherwise
        scorer_raw["sandbox"] = {"low_priority": True, **(scorer_raw.get("sandbox") or {})}
    for key in ("python_workers", "sandbox_workers"):
        if getattr(args, key, None) is not None:
            scorer_raw[key] = getattr(args, key)
    return ScorerConfig.from_dict(scorer_raw)


def _read_samples(path: str) -> list[dict[str, Any]]:
    """Parse the JSONL file; a malformed line is an error naming the file and line."""
    samples = []
    with open(path, encoding="utf-8") if path != "-" else sys.stdin as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: malformed JSON: {exc}") from None
            if not isinstance(sample, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object per line")
            sample.setdefault("id", f"line{number}")
            samples.append(sample)
    return samples


def cmd_score(args: argparse.Namespace) -> int:
    from m2rl_trainer.rewards.scorer import Scorer

    raw = _load_config(args.config)
    config = _scorer_config(raw, args)
    samples = _read_samples(args.file)
    if config.verifiers is None:  # enable only the types the file uses: no pool starts for nothing
        config = replace(config, verifiers={str(s.get("verifier")): {} for s in samples})
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    rewards: dict[str, list[float]] = defaultdict(list)
    verdicts: Counter[tuple[str, str]] = Counter()
    try:
        with Scorer(config) as scorer:
            prepared = scorer.prepare(samples)
            for future in scorer.submit(prepared):
                result = future.result()
                out.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                rewards[result.verifier].append(result.reward)
                verdicts[(result.verifier, result.verdict)] += 1
    finally:
        if out is not sys.stdout:
            out.close()
    for verifier, values in sorted(rewards.items()):
        counts = ", ".join(f"{v}={n}" for (name, v), n in sorted(verdicts.items()) if name == verifier)
        mean = sum(values) / len(values)
        print(f"{verifier}: {len(values)} samples, mean reward {mean:.4f} ({counts})", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from m2rl_trainer.rewards.service import ServiceConfig, serve

    raw = _load_config(args.config)
    service_raw = dict(raw.get("service") or {})
    allowed = {f.name for f in fields(ServiceConfig)} - {"scorer"}
    unknown = sorted(set(service_raw) - allowed)
    if unknown:
        raise ConfigError(f"service config: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    for key in ("host", "port", "max_inflight_requests", "max_pending_samples"):
        if getattr(args, key) is not None:
            service_raw[key] = getattr(args, key)
    config = ServiceConfig(**service_raw, scorer=_scorer_config(raw, args, service=True))
    serve(config)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from m2rl_trainer.rewards.registry import VERIFIERS

    json.dump([spec.describe() for spec in VERIFIERS.values()], sys.stdout, indent=2)
    print()
    return 0


def cmd_prepare_nltk_data(args: argparse.Namespace) -> int:
    from m2rl_trainer.rewards.nltk_data import TAGGER, write_nltk_data

    root = write_nltk_data(Path(args.dir))
    print(
        f"wrote NLTK's punkt_tab (english), punkt placeholder and English stop words under {root}; "
        f"set M2RL_NLTK_DATA={root} (copy {TAGGER}/ there for IFBench's words:start_verb)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2rl-verifier", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score a JSONL file of samples (fields: docs/verifiers.md)")
    score.add_argument("file", help="JSONL samples, one per line ('-' for stdin)")
    score.add_argument("-o", "--output", help="write results here (default: stdout)")
    score.add_argument("--config", help="YAML/JSON scorer configuration")
    score.add_argument("--python-workers", type=int, help="math/IFEval worker processes")
    score.add_argument("--sandbox-workers", type=int, help="warm code sandboxes")
    score.set_defaults(func=cmd_score)

    serve = sub.add_parser("serve", help="serve the verifiers over HTTP")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--config", help="YAML/JSON scorer + service configuration")
    serve.add_argument("--python-workers", type=int, help="math/IFEval worker processes")
    serve.add_argument("--sandbox-workers", type=int, help="warm code sandboxes")
    serve.add_argument("--max-inflight-requests", type=int, help="concurrent score requests before 429")
    serve.add_argument("--max-pending-samples", type=int, help="queued samples per pool before 429")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("list", help="print the verifier types and their options as JSON").set_defaults(
        func=cmd_list
    )

    prep = sub.add_parser(
        "prepare-nltk-data", help="write the NLTK data IFEval/IFBench read to DIR (image builds)"
    )
    prep.add_argument("dir")
    prep.set_defaults(func=cmd_prepare_nltk_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    from m2rl_trainer.rewards.sandbox import SandboxUnavailable
    from m2rl_trainer.rewards.workers import WorkerStartError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, OSError, SandboxUnavailable, WorkerStartError) as exc:
        print(f"m2rl-verifier: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
