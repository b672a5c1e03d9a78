"""`m2rl-merge` end to end with the real mergekit on the tiny model: merged weights equal each method's
formula, the analysis equals a direct torch computation, the result message is what the operator
parses, and a failure at any stage leaves no output folder behind."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from m2rl_operator.api.mergejob import AnalysisStatus
from m2rl_operator.status import merge_analysis
from m2rl_trainer.merge.cli import main
from tests.unit.merge import mergelm_reference as ref
from tests.unit.merge.checkpoints import direct_analysis, load_tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

UP = "model.layers.0.mlp.up_proj.weight"
DOWN = "model.layers.1.mlp.down_proj.weight"
EMBED = "model.embed_tokens.weight"


def _expert(base_dir: Path, out: Path, changes: dict[str, torch.Tensor]) -> Path:
    """A copy of the base folder (tokenizer, config) whose weights differ by `changes` (tau)."""
    shutil.copytree(base_dir, out)
    tensors = load_tensors(base_dir)
    for name, tau in changes.items():
        tensors[name] = tensors[name] + tau
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model as base and two experts with known task vectors: both move layer 0's up_proj
    (independent noise, so about half its entries conflict in sign); math also moves ten embedding
    rows, code layer 1's down_proj."""
    root = tmp_path_factory.mktemp("merge-models")
    base = load_tensors(tiny_model_dir)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    embed = torch.zeros_like(base[EMBED])
    embed[:10] = 0.02 * torch.randn(10, base[EMBED].shape[1], generator=g1)
    math_tau = {UP: 0.01 * torch.randn(base[UP].shape, generator=g1), EMBED: embed}
    code_tau = {
        UP: 0.01 * torch.randn(base[UP].shape, generator=g2),
        DOWN: -0.005 * torch.rand(base[DOWN].shape, generator=g2),
    }
    return {
        "base": tiny_model_dir,
        "math": _expert(tiny_model_dir, root / "math", math_tau),
        "code": _expert(tiny_model_dir, root / "code", code_tau),
    }


def _config(tmp_path: Path, method: str, models: dict[str, Path], **extra: Any) -> Path:
    config: dict[str, Any] = {"merge_method": method}
    if method != "linear":
        config["base_model"] = str(models["base"])
    params = extra.pop("expert_parameters", [{"weight": 1.0}, {"weight": 1.0}])
    config["models"] = [
        {"model": str(models[name]), "parameters": p}
        for name, p in zip(("math", "code"), params, strict=True)
    ]
    config.update(extra)
    config["dtype"] = "float32"
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: Path, out: Path, *flags: str
) -> tuple[int, dict[str, Any] | None]:
    result = tmp_path / "termination-log"
    result.unlink(missing_ok=True)
    monkeypatch.setenv("M2RL_RESULT_PATH", str(result))
    code = main(["--config", str(config), "--output", str(out), *flags])
    return code, (json.loads(result.read_text()) if result.exists() else None)


def _loaded(models: dict[str, Path], out: Path) -> list[dict[str, torch.Tensor]]:
    """The tensors of the base, the math and code experts, and the merge in `out`."""
    return [load_tensors(p) for p in (models["base"], models["math"], models["code"], out)]


def _no_leftovers(out: Path) -> None:
    assert not out.exists()
    assert list(out.parent.glob(f".{out.name}.partial-*")) == []


def _check_analysis(out: Path, result: dict[str, Any], models: dict[str, Path]) -> None:
    """The report and the result against the direct computation, and the operator's parse of it."""
    base = load_tensors(models["base"])
    want = direct_analysis(
        base, [load_tensors(models["math"]), load_tensors(models["code"])], load_tensors(out)
    )
    report = json.loads((out / "m2rl-analysis" / "report.json").read_text())
    s = report["summary"]
    assert s["parameters"] == want["parameters"] > 400_000
    assert list(s["taskVectorNorms"].values()) == pytest.approx(want["norms"], rel=1e-12)
    assert s["cosineMatrix"][0][1] == pytest.approx(want["cosine"][0][1], rel=1e-9)
    assert s["signConflictFraction"] == pytest.approx(want["signConflictFraction"], rel=1e-12)
    # About half of up_proj's 32,768 entries conflict; nothing else is moved by both experts.
    assert 0.4 * 32768 < s["signConflictFraction"] * s["parameters"] < 0.6 * 32768
    assert list(s["merged"]["cosineWithExperts"].values()) == pytest.approx(want["mergedCosine"], rel=1e-9)
    assert report["mergedModel"] == str(out)
    assert (out / "m2rl-analysis" / "cosine-heatmap.svg").read_text().startswith("<svg ")

    assert list(s["updateFraction"].values()) == pytest.approx(want["updateFraction"], rel=1e-12)
    assert s["jaccardMatrix"][0][1] == pytest.approx(want["jaccard"][0][1], rel=1e-12)
    assert s["projectedCosineMatrix"][0][1] == pytest.approx(want["projectedCosine"][0][1], rel=1e-9)
    # Both experts move up_proj only partly above eta (the embeddings: math's ten rows; down_proj: code).
    assert 0 < s["jaccardMatrix"][0][1] < 1
    assert (out / "m2rl-analysis" / "jaccard-heatmap.svg").is_file()

    assert set(result) == {"analysis"}
    analysis = result["analysis"]
    assert set(analysis) == {
        "taskVectorNorms", "updateFraction", "pairwiseCosine", "signConflictFraction", "eta", "reportFile",
    }  # fmt: skip
    assert analysis["reportFile"] == "m2rl-analysis/report.json"
    assert analysis["taskVectorNorms"] == {
        "math": pytest.approx(want["norms"][0], rel=1e-5),
        "code": pytest.approx(want["norms"][1], rel=1e-5),
    }
    (pair,) = analysis["pairwiseCosine"]
    assert (pair["first"], pair["second"]) == ("math", "code")
    assert pair["cosine"] == pytest.approx(want["cosine"][0][1], rel=1e-5, abs=1e-9)
    assert pair["jaccard"] == pytest.approx(want["jaccard"][0][1], rel=1e-5)
    assert analysis["signConflictFraction"] == pytest.approx(want["signConflictFraction"], rel=1e-5)
    # What the operator makes of it is a valid MergeJob status.analysis.
    status = merge_analysis([result], "pvc://ckpt/merges/x")
    assert status is not None and status["reportUri"] == "pvc://ckpt/merges/x/m2rl-analysis/report.json"
    AnalysisStatus.model_validate(status)


def test_task_arithmetic_merges_by_its_formula_and_reports_the_analysis(
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    config = _config(
        tmp_path, "task_arithmetic", models, expert_parameters=[{"weight": 0.7}, {"weight": 0.3}]
    )
    out = tmp_path / "merges" / "ta"
    code, result = _run(monkeypatch, tmp_path, config, out, "--expert-names", "math,code")
    assert code == 0
    base, a, b, merged = _loaded(models, out)
    assert sorted(merged) == sorted(base)
    for name, w in base.items():
        want = w.double() + 0.7 * (a[name] - w).double() + 0.3 * (b[name] - w).double()
        torch.testing.assert_close(merged[name].double(), want, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(merged[UP], base[UP])
    for file in ("config.json", "tokenizer.json", "mergekit_config.yml", "m2rl-merge.json"):
        assert (out / file).is_file(), file
    readme = (out / "README.md").read_text()
    assert "\n# ta\n" in readme and ".partial-" not in readme  # the card names the output, not the temp
    assert result is not None
    _check_analysis(out, result, models)
    assert list(out.parent.glob(".ta.partial-*")) == []
    log = caplog.text
    assert "merge: task_arithmetic of 2 models (math=" in log
    assert "analysis: 100%" in log and "merge: output" in log

    # The Job's retry after an eviction: the finished output is recognised and reported again.
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert _run(monkeypatch, tmp_path, config, out, "--expert-names", "math,code") == (0, result)
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    assert "already holds this merge" in caplog.text


def _ties_reference(
    base: torch.Tensor, taus: list[torch.Tensor], weights: list[float], density: float
) -> torch.Tensor:
    """TIES (Yadav et al. 2023) as mergekit 0.1.5 does it: keep each task vector's top `density`
    fraction by magnitude, elect each entry's sign by the weighted sum, average the agreeing entries."""
    trimmed = []
    for tau, w in zip(taus, weights, strict=True):
        flat = tau.reshape(-1)
        k = max(1, int(density * flat.numel()))
        keep = torch.zeros_like(flat)
        keep[torch.argsort(flat.abs(), descending=True)[:k]] = 1
        trimmed.append(w * (flat * keep).double())
    deltas = torch.stack(trimmed)
    elected = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).double()
    agree = torch.sign(deltas) == elected
    w = torch.tensor(weights, dtype=torch.float64)[:, None]
    divisor = (w * agree).sum(dim=0)
    divisor[divisor == 0] = 1
    return base.double() + ((deltas * agree).sum(dim=0) / divisor).reshape(base.shape)


def test_ties_merges_by_its_formula(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(
        tmp_path,
        "ties",
        models,
        expert_parameters=[{"weight": 1.0, "density": 0.5}, {"weight": 0.5, "density": 0.5}],
    )
    out = tmp_path / "ties"
    code, result = _run(monkeypatch, tmp_path, config, out, "--expert-names", "math,code")
    assert code == 0
    base, a, b, merged = _loaded(models, out)
    for name, w in base.items():
        want = _ties_reference(w, [a[name] - w, b[name] - w], [1.0, 0.5], 0.5)
        torch.testing.assert_close(merged[name].double(), want, rtol=0, atol=1e-6, msg=name)
    # The sign election did something: where the experts disagree, the merge follows one side only.
    tau = (merged[UP] - base[UP]).double()
    assert 0 < int((tau == 0).sum()) < tau.numel()
    assert result is not None
    _check_analysis(out, result, models)


def test_mergelm_dare_ties_merges_as_mergelm_over_the_whole_model(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study's TIES+DARE through mergekit's own registry equals MergeLM's code (transcribed in
    tests/unit/merge/mergelm_reference.py) on the flattened tiny model: DARE drop 0.2 with 1/0.8
    rescale, TIES trim 80% over the whole model, sign election, disjoint mean."""
    config = _config(
        tmp_path,
        "mergelm_ties",
        models,
        expert_parameters=[{"density": 0.2, "dare_density": 0.8}] * 2,
    )
    out = tmp_path / "mergelm"
    code, _ = _run(monkeypatch, tmp_path, config, out, "--no-analysis", "--seed", "5")
    assert code == 0
    base, a, b, merged = _loaded(models, out)
    names = [n for n, t in base.items() if t.is_floating_point()]
    keeps = [ref.drops(base, str(models[m]), 0.8, seed=5) for m in ("math", "code")]
    flat = ref.task_vectors(base, [a, b], names, keeps, 0.8)
    want = ref.unflatten(ref.ties_merging(flat, 0.8), base, names)
    for name in names:
        torch.testing.assert_close(merged[name], base[name] + want[name], rtol=0, atol=1e-6, msg=name)
    # Only the moved tensors changed. Over the whole model most entries are unmoved (0), so trimming
    # 80% of the entries cuts few of up_proj's: a per-tensor trim would keep at most 2 x 20% of them.
    assert torch.equal(merged[DOWN.replace("1.mlp", "0.mlp")], base[DOWN.replace("1.mlp", "0.mlp")])
    assert int((merged[UP] != base[UP]).sum()) > 0.8 * base[UP].numel()
    recorded = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert recorded["parameters"]["seed"] == 5 and recorded["parameters"]["majority_sign"] in (-1, 1)
    kth = flat.abs().kthvalue(int(flat.shape[1] * 0.8), dim=1).values.tolist()
    assert [m["parameters"]["trim_threshold"] for m in recorded["models"]] == kth


def test_a_plain_average_is_analysed_against_the_base_given_for_it(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, "linear", models)
    out = tmp_path / "avg"
    code, result = _run(
        monkeypatch,
        tmp_path,
        config,
        out,
        "--analysis-base",
        str(models["base"]),
        "--expert-names",
        "math,code",
    )
    assert code == 0
    base, a, b, merged = _loaded(models, out)
    for name in base:  # the average of the experts: the base is not averaged in
        torch.testing.assert_close(merged[name], (a[name] + b[name]) / 2, rtol=0, atol=1e-6)
    assert result is not None
    _check_analysis(out, result, models)
    # The average's task vector is half of each expert's where only one moved: cosine with each > 0.
    report = json.loads((out / "m2rl-analysis" / "report.json").read_text())
    assert all(c > 0.5 for c in report["summary"]["merged"]["cosineWithExperts"].values())
    # A method with a base of its own takes no other base for the analysis.
    code, _ = _run(
        monkeypatch, tmp_path, _config(tmp_path, "ties", models), tmp_path / "t", "--analysis-base", "/x"
    )
    assert code == 2


@pytest.mark.parametrize(
    ("method", "flags", "reason"),
    [
        (
            "linear",
            [],
            "merge_method linear has no base_model, and task vectors are differences from a base "
            "(give one with --analysis-base)",
        ),
        ("ties", ["--no-analysis"], "analysis disabled (--no-analysis)"),
    ],
    ids=["no-base", "disabled"],
)
def test_merges_without_analysis_say_why(
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    flags: list[str],
    reason: str,
) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    code, result = _run(monkeypatch, tmp_path, _config(tmp_path, method, models), out, *flags)
    assert (code, result) == (0, {"analysisSkipped": reason})
    assert f"analysis: skipped: {reason}" in caplog.text
    assert (out / "model.safetensors").is_file()
    assert not (out / "m2rl-analysis").exists()
    assert merge_analysis([result], "pvc://c/out") is None  # the operator leaves status.analysis unset


def test_a_missing_expert_fails_before_any_tensor_work_naming_the_path(
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "runs" / "science" / "final"
    config = _config(tmp_path, "ties", {**models, "code": missing})
    out = tmp_path / "merges" / "out"
    assert _run(monkeypatch, tmp_path, config, out) == (2, None)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"m2rl-merge: error: config {config}: models[1].model: {missing} does not exist"
    _no_leftovers(out)
    assert not out.parent.exists()  # not even the parent was created


def test_a_mergekit_failure_mid_merge_leaves_no_output(
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tensors = load_tensors(models["code"])
    tensors[DOWN] = tensors[DOWN][:, :-1].contiguous()  # another architecture: mergekit refuses it
    bad = tmp_path / "bad"
    shutil.copytree(models["code"], bad)
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    assert _run(monkeypatch, tmp_path, _config(tmp_path, "ties", {**models, "code": bad}), out) == (1, None)
    assert "m2rl-merge: error: mergekit failed:" in capsys.readouterr().err
    _no_leftovers(out)


def test_an_analysis_failure_leaves_no_output(
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nan = _expert(models["base"], tmp_path / "nan", {DOWN: torch.full((1,), float("nan"))})
    out = tmp_path / "out"
    config = _config(tmp_path, "task_arithmetic", {**models, "code": nan})
    assert _run(monkeypatch, tmp_path, config, out, "--expert-names", "math,broken") == (1, None)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err == f"m2rl-merge: error: analysis failed: {DOWN}: non-finite task-vector entries in broken, merged"
    )
    _no_leftovers(out)


def test_an_occupied_output_is_never_overwritten(
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert _run(monkeypatch, tmp_path, _config(tmp_path, "ties", models), out) == (2, None)
    assert "already exists and is not a finished m2rl-merge output" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert list(tmp_path.glob(".out.partial-*")) == []


def test_wrong_expert_names_are_invalid_input(
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    config = _config(tmp_path, "ties", models)
    assert _run(monkeypatch, tmp_path, config, out, "--expert-names", "math") == (2, None)
    assert "--expert-names: 1 names for 2 models besides the base" in capsys.readouterr().err
    _no_leftovers(out)


def test_python_dash_m_runs_the_program(tmp_path: Path) -> None:
    config = tmp_path / "merge.yaml"  # missing: fails before mergekit is even imported (fast)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "m2rl_trainer.merge",
            "--config",
            str(config),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"m2rl-merge: error: config {config}: cannot be read")
