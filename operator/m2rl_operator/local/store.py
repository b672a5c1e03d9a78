"""The workdir's record of each resource: the object with its status, as `kubectl get -o json` shows it.

WORKDIR/<plural>/<name>/resource.json holds apiVersion, kind, metadata, spec and status (checked
against the CRD's status model before every write), and WORKDIR/<plural>/<name>/local.json what
only the local runner keeps: the spec digest (a finished resource is skipped only if its spec is
unchanged) and the CPU-seconds and wall-clock seconds of its processes. Writes are atomic
(temporary file, then rename), so an interrupted runner never leaves half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from m2rl_operator import naming
from m2rl_operator.api.crd import KINDS_BY_NAME


@dataclass
class Usage:
    """What a resource's processes cost, summed over every attempt."""

    cpu_seconds: dict[str, float] = field(default_factory=dict)  # component -> CPU-seconds
    wall_seconds: float = 0.0  # from the first process started to the last one ended
    attempts: int = 0  # times the runner started the resource

    @property
    def total_cpu_seconds(self) -> float:
        return sum(self.cpu_seconds.values())


@dataclass
class Record:
    """One resource as the workdir holds it."""

    obj: dict[str, Any]  # apiVersion, kind, metadata, spec, status
    digest: str
    usage: Usage = field(default_factory=Usage)

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.obj.setdefault("status", {})
        return status

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """Records under a workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def folder(self, kind: str, name: str) -> Path:
        return self.workdir / naming.PLURALS[kind] / name

    def load(self, kind: str, name: str) -> Record | None:
        folder = self.folder(kind, name)
        try:
            obj = json.loads((folder / "resource.json").read_text())
            local = json.loads((folder / "local.json").read_text())
        except FileNotFoundError:
            return None
        return Record(obj, local["digest"], Usage(**local.get("usage", {})))

    def save(self, record: Record) -> None:
        """Write the record; the status must fit the CRD's status schema (a ValueError if not)."""
        KINDS_BY_NAME[record.kind].status.model_validate(record.status)
        folder = self.folder(record.kind, record.name)
        _write_json(folder / "local.json", {"digest": record.digest, "usage": asdict(record.usage)})
        _write_json(folder / "resource.json", record.obj)

    def save_settings(self, data_root: Path) -> None:
        """WORKDIR/run.json: the data root (where pvc:// URIs point), for `m2rl report`."""
        _write_json(self.workdir / "run.json", {"dataRoot": str(data_root.resolve())})

    def data_root(self) -> Path:
        try:
            return Path(json.loads((self.workdir / "run.json").read_text())["dataRoot"])
        except (OSError, ValueError, KeyError) as error:
            raise FileNotFoundError(f"{self.workdir}/run.json: not a `m2rl run` workdir ({error})") from None

    def all(self) -> list[Record]:
        """Every record of the workdir, RLVRRuns first, then MergeJobs and EvalSuites, by name."""
        records = []
        for kind in ("RLVRRun", "MergeJob", "EvalSuite"):
            root = self.workdir / naming.PLURALS[kind]
            if not root.is_dir():
                continue
            for folder in sorted(root.iterdir()):
                record = self.load(kind, folder.name)
                if record is not None:
                    records.append(record)
        return records
