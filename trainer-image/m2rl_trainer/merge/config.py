"""The mergekit config of a merge, loaded and checked before any tensor is read.

mergekit itself finds many mistakes only while planning or merging (a missing required parameter
fails on the first tensor; an unknown parameter name is ignored silently). Here every problem is
found up front and named by its field (`models[1].parameters.densty: ...`), so a bad MergeJob
fails in a second with a message the user can act on, not after loading the experts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Files that make a folder a model mergekit can read (mergekit.io.ShardedTensorIndex.from_disk).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DTYPES = ("bfloat16", "float16", "float32", "float64")


class MergeConfigError(ValueError):
    """A config mergekit cannot run as intended; the message lists every problem, one per line."""


@dataclass(frozen=True)
class LoadedConfig:
    """A checked mergekit config and the facts the runner and the analysis need from it."""

    path: Path
    source: str  # the YAML text as given: mergekit copies it into the output (mergekit_config.yml)
    config: Any  # mergekit.config.MergeConfiguration (typed Any: mergekit ships no type hints)
    method: str
    base: str | None  # the base model's path or Hub id; None for methods without one
    experts: tuple[str, ...]  # the non-base models, in config order; empty for slices/modules configs

    @property
    def sha256(self) -> str:
        """Identity of the merge: a rerun with the same config may reuse a finished output."""
        return hashlib.sha256(self.source.encode()).hexdigest()


def load_merge_config(path: str | os.PathLike[str], *, check_paths: bool = True) -> LoadedConfig:
    """Read and check a mergekit YAML config; a MergeConfigError names every bad field.

    `check_paths` also checks that local model folders (absolute or ./ paths) exist and hold
    weights; Hub ids (ORG/NAME) are left to mergekit, which downloads them.
    """
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as error:
        raise MergeConfigError(f"config {path}: cannot be read: {error.strerror or error}") from None
    try:
        raw = yaml.safe_load(source)
    except yaml.YAMLError as error:
        raise MergeConfigError(f"config {path}: not valid YAML: {error}") from None
    loaded = check_merge_config(raw, path=path, source=source)
    if check_paths and (problems := model_path_problems(loaded.config)):
        raise MergeConfigError(_listing(path, problems))
    return loaded


def check_merge_config(raw: Any, *, path: Path, source: str = "") -> LoadedConfig:
    """Validate a parsed config against mergekit's schema and the method's declared parameters."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge_methods import registry
    from pydantic import ValidationError

    from m2rl_trainer.merge.methods import register_study_methods

    register_study_methods()  # the study's variants are mergekit methods like its own (merge/methods)
    if not isinstance(raw, dict):
        got = type(raw).__name__
        raise MergeConfigError(f"config {path}: expected a mapping at the top level, got {got}")
    method_name = raw.get("merge_method")
    if not isinstance(method_name, str) or not method_name:
        raise MergeConfigError(f"config {path}: merge_method: required (a mergekit method name, e.g. ties)")
    known = sorted(m.spec.name for m in registry.registered_methods())
    if method_name not in known:
        raise MergeConfigError(
            f"config {path}: merge_method: unknown method {method_name!r} (mergekit knows {', '.join(known)})"
        )
    try:
        config = MergeConfiguration.model_validate(raw)
    except ValidationError as error:
        problems = [f"{_loc(e['loc'])}: {e['msg']}" for e in error.errors()]
        raise MergeConfigError(_listing(path, problems)) from None
    except (RuntimeError, ValueError) as error:  # mergekit's own validators raise RuntimeError
        raise MergeConfigError(f"config {path}: {error}") from None

    spec = registry.get(method_name).spec
    problems = _structure_problems(config, raw, spec)
    problems += _parameter_problems(raw, spec)
    for field in ("dtype", "out_dtype"):
        value = raw.get(field)
        if value is not None and str(value).removeprefix("torch.") not in DTYPES:
            problems.append(f"{field}: {value!r} is not one of {', '.join(DTYPES)}")
    if problems:
        raise MergeConfigError(_listing(path, problems))

    base = str(config.base_model) if config.base_model is not None else None
    experts = tuple(str(m.model) for m in config.models or () if str(m.model) != base)
    return LoadedConfig(
        path=path, source=source, config=config, method=method_name, base=base, experts=experts
    )


def _structure_problems(config: Any, raw: dict[str, Any], spec: Any) -> list[str]:
    """Base model and input counts against the method's input contract (models form only)."""
    from mergekit.merge_methods.base import BasePolicy

    problems = []
    contract = spec.contract
    has_base = config.base_model is not None
    if contract.base == BasePolicy.REQUIRED and not has_base:
        problems.append(f"base_model: required by merge_method {spec.name} (it merges differences from it)")
    if contract.base == BasePolicy.FORBIDDEN and has_base:
        problems.append(f"base_model: merge_method {spec.name} does not accept a base model")
    if not config.models:
        return problems  # slices/modules: mergekit checks each slice itself
    base = str(config.base_model) if has_base else None
    non_base = [str(m.model) for m in config.models if str(m.model) != base]
    counted_base = has_base and contract.base != BasePolicy.IGNORED
    inputs = len(non_base) + int(counted_base)
    for what, count, low, high in (
        ("inputs (models plus the base)", inputs, contract.min_inputs, contract.max_inputs),
        ("models besides the base", len(non_base), contract.min_non_base, contract.max_non_base),
    ):
        if low is not None and count < low:
            problems.append(f"models: merge_method {spec.name} needs at least {low} {what}, got {count}")
        if high is not None and count > high:
            problems.append(f"models: merge_method {spec.name} takes at most {high} {what}, got {count}")
    if len(set(non_base)) != len(non_base):
        problems.append("models: the same model is listed twice")
    return problems


def _parameter_problems(raw: dict[str, Any], spec: Any) -> list[str]:
    """Unknown names (mergekit would ignore them), bad scalar values, and missing required values."""
    from mergekit.merge_methods.base import ParameterScope

    shared = {p.name: p for p in spec.parameters if p.scope == ParameterScope.SHARED}
    per_model = {p.name: p for p in spec.parameters if p.scope != ParameterScope.SHARED}
    problems = []
    global_params = raw.get("parameters") or {}
    # Global `parameters` also give per-model defaults in mergekit, so both kinds are valid there.
    problems += _check_values("parameters", global_params, {**shared, **per_model}, spec.name)
    base = raw.get("base_model")
    for i, entry in enumerate(raw.get("models") or []):
        params = (entry.get("parameters") if isinstance(entry, dict) else None) or {}
        problems += _check_values(f"models[{i}].parameters", params, per_model, spec.name)
        is_base = isinstance(entry, dict) and entry.get("model") == base
        for name, p in per_model.items():
            needed = p.scope == ParameterScope.INPUT or not is_base
            if p.required and needed and name not in params and name not in global_params:
                problems.append(
                    f"models[{i}].parameters.{name}: required by merge_method {spec.name} "
                    "(set it here or under the top-level parameters)"
                )
    for name, p in shared.items():
        if p.required and name not in global_params:
            problems.append(f"parameters.{name}: required by merge_method {spec.name}")
    return problems


def _check_values(where: str, params: Any, allowed: dict[str, Any], method: str) -> list[str]:
    if not isinstance(params, dict):
        return [f"{where}: expected a mapping of parameter names to values"]
    problems = []
    for name, value in params.items():
        if name not in allowed:
            reads = ", ".join(sorted(allowed)) or "no parameters"
            problems.append(f"{where}.{name}: merge_method {method} does not read it (it reads {reads})")
            continue
        # Scalars and gradients (lists of scalars) are checked; filtered conditions are left to mergekit.
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool | int | float | str):
                try:
                    allowed[name].validate(v)
                except Exception as error:  # pydantic's ValidationError, or the validator's own
                    problems.append(f"{where}.{name}: {v!r} is not valid: {_first_line(error)}")
                    break
    return problems


def model_path_problems(config: Any) -> list[str]:
    """Local model folders that are missing or hold no weights, named by their config field."""
    refs: list[tuple[str, Any]] = []
    if config.base_model is not None:
        refs.append(("base_model", config.base_model))
    for i, m in enumerate(config.models or []):
        refs.append((f"models[{i}].model", m.model))
    for s, out_slice in enumerate(config.slices or []):
        for j, source in enumerate(out_slice.sources):
            refs.append((f"slices[{s}].sources[{j}].model", source.model))
    problems = []
    for field, ref in refs:
        for part in (ref.model, ref.lora):
            if part is None or not is_local_path(part.path):
                continue
            folder = Path(part.path).expanduser()
            if not folder.exists():
                problems.append(f"{field}: {part.path} does not exist")
            elif not folder.is_dir():
                problems.append(f"{field}: {part.path} is not a folder")
            elif part is ref.model and not any((folder / f).exists() for f in WEIGHT_FILES):
                problems.append(f"{field}: {part.path} holds no weights (none of {', '.join(WEIGHT_FILES)})")
    return problems


def is_local_path(path: str) -> bool:
    """True for paths that can only mean a folder; ORG/NAME is a Hub id unless it exists locally."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


def _loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # pydantic: "1 validation error for X" / "  Input should be ..." -> the second line says why.
    return lines[1] if len(lines) > 1 and "validation error" in lines[0] else (lines[0] if lines else "")


def _listing(path: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"config {path}: {problems[0]}"
    return f"config {path}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)
