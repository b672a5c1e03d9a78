"""The real helm binary, hermetic (own config/cache dirs, no kubeconfig), for the chart's tests."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO_ROOT, tool

CHART = REPO_ROOT / "charts" / "m2rl"
KUBE_VERSION = "1.33.0"  # validated against this version's official schemas (and rendered for it)


@dataclass
class Rendered:
    """`helm template` output of one configuration, by kind."""

    manifests: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = self.of(kind)
        return found


def helm_env(home: Path) -> dict[str, str]:
    """Environment for helm with its config/cache under `home` and no kubeconfig: offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


def helm(
    env: dict[str, str],
    *args: str,
    values: dict[str, Any] | None = None,
    tmp: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    command = [str(tool("helm")), *args]
    if values is not None:
        assert tmp is not None
        path = tmp / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(values))
        command += ["-f", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done


def render(
    env: dict[str, str], tmp: Path, values: dict[str, Any] | None = None, namespace: str = "m2rl-system"
) -> Rendered:
    done = helm(
        env,
        "template",
        "m2rl",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        values=values or {},
        tmp=tmp,
    )
    return Rendered([d for d in yaml.safe_load_all(done.stdout) if d])
