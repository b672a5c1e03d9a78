"""Per-sample evaluation cache: what was generated and scored survives a killed pod.

Every sample is stored as one JSON line as soon as its chunk of prompts is scored, under
`OUTPUT/.cache/<model digest>/<work key>.<writer>.jsonl`:

- the model digest is SHA-256 over the model folder's files (names and contents), so two model
  entries naming the same checkpoint share their samples, and a changed checkpoint starts afresh;
- the work key is SHA-256 of what else decides a sample: the benchmark file's digest, its format,
  format options and field mapping, the sampling settings (temperature, top_p, top_k, seed, the
  benchmark's token limit), the chat-template switch and the engine;
- each line carries the prompt id, the sample index and the digest of the rendered prompt text, so
  a prompt whose text changed (another template) is generated again.

A restarted evaluation, one with an added model or an added benchmark, reads these files and
generates only the samples that are missing. Scores are cached with the key of the verifier and
its options; when those change, cached responses are re-scored without generating. Writers never
share a file (`<writer>` is host and process), so pods evaluating the same checkpoint at once do
not interleave lines; readers merge every writer's file and skip a line cut short by a kill.

Digests of large files are remembered in `OUTPUT/.cache/digests.json` by (path, size,
modification time), so a checkpoint is hashed once, not on every restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

CACHE_DIR = ".cache"
_CHUNK = 1 << 20


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_digest(value: Any) -> str:
    return text_digest(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))


class Digests:
    """SHA-256 of files and folders, remembered by (path, size, mtime_ns) in a JSON file."""

    def __init__(self, memo: Path | None) -> None:
        self.memo = memo
        self._known: dict[str, dict[str, Any]] = {}
        if memo is not None and memo.is_file():
            try:
                self._known = json.loads(memo.read_text())
            except (OSError, ValueError):
                self._known = {}  # a damaged memo only costs re-hashing

    def file(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        known = self._known.get(key)
        if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
            return str(known["sha256"])
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
        self._known[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        return digest.hexdigest()

    def path(self, path: Path) -> str:
        """A file's digest, or a folder's: its files' relative names and digests (hidden ones skipped)."""
        if path.is_file():
            return self.file(path)
        if not path.is_dir():
            # A Hub id (ORG/NAME) or a missing path: the name is all there is to key on.
            return text_digest(f"name:{path}")
        lines = []
        for file in sorted(path.rglob("*")):
            relative = file.relative_to(path)
            if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                lines.append(f"{relative.as_posix()}\t{self.file(file)}")
        return text_digest("\n".join(lines))

    def save(self) -> None:
        if self.memo is None:
            return
        self.memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.memo.parent, prefix=".digests.")
        with os.fdopen(fd, "w") as handle:
            json.dump(self._known, handle)
        os.replace(tmp, self.memo)


class SampleStore:
    """The cached samples of one (model digest, work key): read all writers' files, append to our own."""

    def __init__(self, root: Path, model_digest: str, work_key: str, settings: Mapping[str, Any]) -> None:
        self.folder = root / CACHE_DIR / model_digest[:32]
        self.key = work_key[:32]
        self.settings = dict(settings)
        self._handle: IO[str] | None = None
        self.path = self.folder / f"{self.key}.{socket.gethostname()}-{os.getpid()}.jsonl"

    def load(self) -> dict[tuple[str, int], dict[str, Any]]:
        """(prompt id, sample index) -> the stored record; the first writer's record wins."""
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for file in sorted(self.folder.glob(f"{self.key}.*.jsonl")):
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                    found.setdefault((str(record["prompt_id"]), int(record["sample"])), record)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill; its sample is generated again
        return found

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append and flush to disk (a kill after this keeps them)."""
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            settings_file = self.folder / f"{self.key}.settings.json"
            if not settings_file.exists():
                settings_file.write_text(json.dumps(self.settings, indent=2, sort_keys=True) + "\n")
            self._handle = self.path.open("a", encoding="utf-8")
        for record in records:
            self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
