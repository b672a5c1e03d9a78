"""Read Kubernetes YAML the way kubectl does.

PyYAML follows YAML 1.1, where `2e-6` (no dot) is a string; kubectl's parser reads it as the
number 2e-06. Learning rates are written that way, so this loader resolves such floats as kubectl
does. Everything else (booleans, ints, strings) is PyYAML's SafeLoader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubeYAMLLoader(yaml.SafeLoader):
    """SafeLoader plus floats written without a dot (1e-6, 2E+3)."""


KubeYAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Document:
    """One YAML document of a file: its source, its position in the file (0-based) and content."""

    source: Path
    index: int
    content: Any

    @property
    def label(self) -> str:
        """`path` for a single-document file position 0, else `path#index`."""
        return f"{self.source}#{self.index}" if self.index else str(self.source)


def loads_all(text: str) -> list[Any]:
    """All documents of a YAML stream, skipping empty ones."""
    return [doc for doc in yaml.load_all(text, Loader=KubeYAMLLoader) if doc is not None]


def yaml_files(path: Path) -> list[Path]:
    """`path` itself if it is a file, else every *.yaml/*.yml below it, sorted."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
    return [path]


def iter_documents(path: Path) -> Iterator[Document]:
    """Documents of a file or of every YAML file below a directory (raises yaml.YAMLError)."""
    for file in yaml_files(path):
        for index, doc in enumerate(yaml.load_all(file.read_text(), Loader=KubeYAMLLoader)):
            if doc is not None:
                yield Document(file, index, doc)
