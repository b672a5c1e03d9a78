"""Reward-hacking hygiene: per domain, the share of rewarded samples whose program showed a sign of
working on the harness rather than on the task (issue 11 item 3).

The code verifier records, per sample, flags of what its program did (details["hygiene"], see
code_verifier.run_hygiene): early_exit, eq_override, builtins_touched, stderr_only. A rise in these
shares among rewarded samples shows a policy drifting toward the harness before benchmark numbers
do. The harness does not reward these tricks; a share above zero means rewarded programs use them
beside a correct answer (or that a new trick works: look at those samples).

Pure functions over results; the trainer sums the counts over ranks and logs the shares as
`hygiene_<flag>_ratio` per domain (JSONL and the Prometheus gauge
m2rl_train_domain_hygiene_<flag>_ratio{domain=...}).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from m2rl_trainer.rewards.code_verifier import HYGIENE_FLAGS
from m2rl_trainer.rewards.types import Result

CHECKED = "rewarded_checked"  # rewarded samples that carry hygiene flags (the shares' denominator)
SHORT = {"early_exit": "exit", "eq_override": "eq", "builtins_touched": "builtins", "stderr_only": "stderr"}


def count(domains: Sequence[str], results: Sequence[Result]) -> Counter[str]:
    """Counts '<domain>/rewarded_checked' and '<domain>/<flag>' over rewarded samples with flags."""
    counts: Counter[str] = Counter()
    for domain, result in zip(domains, results, strict=True):
        flags = result.details.get("hygiene")
        if result.reward <= 0 or not isinstance(flags, Mapping):
            continue
        counts[f"{domain}/{CHECKED}"] += 1
        for flag in HYGIENE_FLAGS:
            if flags.get(flag):
                counts[f"{domain}/{flag}"] += 1
    return counts


def keys(domains: Sequence[str]) -> list[str]:
    """Every count key of these domains, in a fixed order (to sum them over ranks)."""
    return [f"{domain}/{name}" for domain in domains for name in (CHECKED, *HYGIENE_FLAGS)]


def shares(totals: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """{domain: {"hygiene_<flag>_ratio": share}} for domains with rewarded, checked samples."""
    per_domain: dict[str, dict[str, float]] = {}
    for key, checked in totals.items():
        domain, name = key.rsplit("/", 1)
        if name != CHECKED or checked <= 0:
            continue
        per_domain[domain] = {
            f"hygiene_{flag}_ratio": totals.get(f"{domain}/{flag}", 0.0) / checked for flag in HYGIENE_FLAGS
        }
    return per_domain


def progress(per_domain: Mapping[str, Mapping[str, float]]) -> str:
    """' hygiene code: exit 0.02 eq 0.00 builtins 0.00 stderr 0.01' for the step's log line."""
    parts = []
    for domain, values in per_domain.items():
        if f"hygiene_{HYGIENE_FLAGS[0]}_ratio" in values:
            figures = " ".join(f"{SHORT[f]} {values[f'hygiene_{f}_ratio']:.2f}" for f in HYGIENE_FLAGS)
            parts.append(f"{domain}: {figures}")
    return f" hygiene {'; '.join(parts)}" if parts else ""
