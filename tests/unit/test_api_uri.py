"""The shared URI scheme: the parser and the CRD pattern accept exactly the same strings."""

from __future__ import annotations

import re

import pytest

from m2rl_operator.api.uri import (
    URI_PATTERN,
    WRITABLE_SCHEMES,
    WRITABLE_URI_PATTERN,
    InvalidURIError,
    ParsedURI,
    parse_model_uri,
    parse_uri,
)

VALID = [
    ("pvc://models/qwen3-4b", ParsedURI("pvc", claim="models", path="qwen3-4b")),
    (
        "pvc://checkpoints/runs/math/step-000200",
        ParsedURI("pvc", claim="checkpoints", path="runs/math/step-000200"),
    ),
    ("pvc://models", ParsedURI("pvc", claim="models", path="")),
    ("pvc://models/qwen/", ParsedURI("pvc", claim="models", path="qwen")),
    (
        "pvc://my.claim-1/data/.cache/x.jsonl",
        ParsedURI("pvc", claim="my.claim-1", path="data/.cache/x.jsonl"),
    ),
    ("hf://Qwen/Qwen3-4B", ParsedURI("hf", repo="Qwen/Qwen3-4B")),
    ("hf://Qwen/Qwen3-4B@main", ParsedURI("hf", repo="Qwen/Qwen3-4B", revision="main")),
    ("hf://org/name@refs/pr/12", ParsedURI("hf", repo="org/name", revision="refs/pr/12")),
    ("hf://allenai/IFBench_test@5f3a2c1", ParsedURI("hf", repo="allenai/IFBench_test", revision="5f3a2c1")),
    ("file:///tmp/tiny", ParsedURI("file", path="/tmp/tiny")),
    ("file:///home/me/models/tiny-0.4m/", ParsedURI("file", path="/home/me/models/tiny-0.4m")),
]

INVALID = [
    ("s3://bucket/model", "unknown scheme s3://"),
    ("models/qwen", "no scheme"),
    ("", "expected a URI"),
    ("pvc://Models/qwen", "'Models' is not a PersistentVolumeClaim name"),
    ("pvc://-models/qwen", "is not a PersistentVolumeClaim name"),
    ("pvc://models/../secrets", "'.' and '..' are not allowed"),
    ("pvc://models/./x", "'.' and '..' are not allowed"),
    ("pvc://models//x", "empty or has characters"),
    ("pvc://models/my model", "'my model'"),
    ("file://relative/path", "absolute path"),
    ("file:///", "empty or has characters"),
    ("file:///a/$(rm -rf)", "has characters outside"),
    ("hf://gpt2", "hf://ORG/NAME"),
    ("hf://org/name/extra", "hf://ORG/NAME"),
    ("hf://org/name@", "not a valid revision"),
    ("hf://org/name@a b", "not a valid revision"),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[v[0] for v in VALID])
def test_valid_uris_parse_and_match_the_crd_pattern(text, expected):
    assert parse_uri(text) == expected
    assert re.search(URI_PATTERN, text)
    # The canonical form parses to the same thing (trailing slashes are dropped).
    assert parse_uri(str(expected)) == expected


@pytest.mark.parametrize(("text", "reason"), INVALID, ids=[v[0] or "empty" for v in INVALID])
def test_invalid_uris_are_rejected_by_both_with_a_reason(text, reason):
    with pytest.raises(InvalidURIError) as info:
        parse_uri(text)
    assert reason in str(info.value)
    assert repr(text) not in info.value.reason  # the reason alone, for messages that show the value
    assert re.search(URI_PATTERN, text) is None


def test_writable_uris_exclude_the_hub():
    assert re.search(WRITABLE_URI_PATTERN, "pvc://checkpoints/merges/ties")
    assert re.search(WRITABLE_URI_PATTERN, "file:///tmp/out")
    assert re.search(WRITABLE_URI_PATTERN, "hf://org/merged") is None
    with pytest.raises(
        InvalidURIError, match=r"scheme hf:// is not allowed here \(allowed: pvc://, file://\)"
    ):
        parse_uri("hf://org/merged", schemes=WRITABLE_SCHEMES)


def test_local_paths():
    assert parse_uri("pvc://checkpoints/runs/a").local_path("/mnt/pvc") == "/mnt/pvc/checkpoints/runs/a"
    assert parse_uri("pvc://models").local_path("/mnt/pvc") == "/mnt/pvc/models"
    assert parse_uri("file:///tmp/tiny").local_path("/mnt/pvc") == "/tmp/tiny"
    assert parse_uri("hf://Qwen/Qwen3-4B").local_path("/mnt/pvc") is None


def test_model_alias_is_the_same_parser():
    assert parse_model_uri is parse_uri
