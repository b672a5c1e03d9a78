"""The URI scheme shared by the whole project for models, checkpoints and datasets.

    pvc://CLAIM[/PATH]        a path inside a PersistentVolumeClaim of the resource's namespace
    hf://ORG/NAME[@REVISION]  a Hugging Face Hub repository (model or dataset), optionally pinned
    file:///ABS/PATH          a local path: for the local runner, or a hostPath/image path in a pod

One regular expression (`URI_PATTERN`) is both the CRD's `pattern` (checked at admission) and the
first check of `parse_uri`, so the API server, `m2rl validate` and the code that opens a model
accept the same strings. The pattern is written in the common subset of Python `re` and Go RE2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

Scheme = Literal["pvc", "hf", "file"]
ALL_SCHEMES: tuple[Scheme, ...] = ("pvc", "hf", "file")
WRITABLE_SCHEMES: tuple[Scheme, ...] = ("pvc", "file")

# A path segment: not "." or "..", no spaces, no shell or URL metacharacters.
_SEGMENT = r"\.?[A-Za-z0-9_+=@,~-][A-Za-z0-9_.+=@,~-]*"
# A PVC name is a DNS-1123 subdomain.
_CLAIM = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
# Hub ids: "org/name"; a revision is a branch, tag, commit or "refs/pr/N".
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_REVISION = r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"

_PVC = rf"pvc://{_CLAIM}(/{_SEGMENT})*/?"
_HF = rf"hf://{_HUB_PART}/{_HUB_PART}(@{_REVISION})?"
_FILE = rf"file://(/{_SEGMENT})+/?"

URI_PATTERN = rf"^({_PVC}|{_HF}|{_FILE})$"
"""Any model or dataset URI."""
WRITABLE_URI_PATTERN = rf"^({_PVC}|{_FILE})$"
"""A location the operator can write to (merge outputs): no Hub repositories."""

_FORMS = "pvc://CLAIM/PATH, hf://ORG/NAME[@REVISION] or file:///ABSOLUTE/PATH"


class InvalidURIError(ValueError):
    """A string that is not a URI of the project's scheme; the message says which part is wrong.

    `reason` is the explanation without the URI itself (for messages that already show it).
    """

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ParsedURI:
    """A parsed URI. `path` is relative for pvc (may be empty: the volume root), absolute for file."""

    scheme: Scheme
    claim: str = ""
    path: str = ""
    repo: str = ""
    revision: str | None = None

    def __str__(self) -> str:
        if self.scheme == "pvc":
            return f"pvc://{self.claim}/{self.path}" if self.path else f"pvc://{self.claim}"
        if self.scheme == "hf":
            return f"hf://{self.repo}@{self.revision}" if self.revision else f"hf://{self.repo}"
        return f"file://{self.path}"

    def local_path(self, pvc_root: str) -> str | None:
        """Where this URI lives on a filesystem that mounts each claim at `pvc_root/CLAIM`.

        Returns None for Hub repositories (they are downloaded, not mounted).
        """
        if self.scheme == "pvc":
            return str(PurePosixPath(pvc_root, self.claim, self.path))
        if self.scheme == "file":
            return self.path
        return None


def parse_uri(text: str, *, schemes: tuple[Scheme, ...] = ALL_SCHEMES) -> ParsedURI:
    """Parse a model/dataset URI; raise InvalidURIError naming what is wrong.

    `schemes` restricts the accepted schemes (e.g. WRITABLE_SCHEMES for outputs).
    """
    if not isinstance(text, str) or not text:
        raise InvalidURIError(str(text), f"expected a URI of the form {_FORMS}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise InvalidURIError(text, f"no scheme: expected {_FORMS}")
    if scheme not in ALL_SCHEMES:
        raise InvalidURIError(text, f"unknown scheme {scheme}://: expected {_FORMS}")
    if scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise InvalidURIError(text, f"scheme {scheme}:// is not allowed here (allowed: {allowed})")
    if re.fullmatch(URI_PATTERN, text) is None:
        raise InvalidURIError(text, _explain(scheme, rest))
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return ParsedURI(scheme="pvc", claim=claim, path=path.rstrip("/"))
    if scheme == "file":
        path = rest.rstrip("/")
        return ParsedURI(scheme="file", path=path)
    repo, _, revision = rest.partition("@")
    return ParsedURI(scheme="hf", repo=repo, revision=revision or None)


parse_model_uri = parse_uri
"""Models and datasets share one grammar; this name reads better where a model is meant."""


def _explain(scheme: str, rest: str) -> str:
    """Say which part of a URI with a known scheme breaks the grammar."""
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        if re.fullmatch(_CLAIM, claim) is None:
            return (
                f"{claim!r} is not a PersistentVolumeClaim name "
                "(lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
            )
        return _explain_path(path)
    if scheme == "file":
        if not rest.startswith("/"):
            return "a file URI needs an absolute path, i.e. three slashes: file:///abs/path"
        return _explain_path(rest.lstrip("/"))
    repo, _, revision = rest.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(re.fullmatch(_HUB_PART, p) for p in parts):
        return f"a Hub URI names a repository as hf://ORG/NAME, got {repo!r}"
    return f"{revision!r} is not a valid revision (branch, tag or commit)"


def _explain_path(path: str) -> str:
    for segment in path.rstrip("/").split("/"):
        if segment in {".", ".."}:
            return "path segments '.' and '..' are not allowed"
        if re.fullmatch(_SEGMENT, segment) is None:
            return (
                f"path segment {segment!r} is empty or has characters outside "
                "letters, digits and _ . + = @ , ~ -"
            )
    return "the path is not valid"
