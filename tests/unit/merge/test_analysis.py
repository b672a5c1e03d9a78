"""The streamed task-vector analysis: numbers by hand, numbers against a direct torch computation,
every checkpoint layout mergekit reads, skipped tensors, and the report files."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from m2rl_trainer.merge.analysis import (
    AnalysisError,
    AnalysisOptions,
    analyse_task_vectors,
    group_of,
    module_type,
    summary_of,
    write_report,
)
from m2rl_trainer.merge.heatmap import colour, cosine_heatmap_svg
from m2rl_trainer.merge.runner import fit_summary
from m2rl_trainer.utils.results import MAX_MESSAGE_BYTES, encode_result
from tests.unit.merge.checkpoints import direct_analysis, write_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

SVG = "{http://www.w3.org/2000/svg}"


def _hand_made(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """Base values are multiples of 1/8, so base + 1 and base - 1 are exact in float32."""
    base = {
        "model.layers.0.mlp.w": torch.arange(12, dtype=torch.float32).reshape(4, 3) / 8,
        "model.layers.1.norm.weight": torch.arange(5, dtype=torch.float32) / 4,
        "model.embed.weight": torch.arange(4, dtype=torch.float32).reshape(2, 2) / 2,
        "model.step": torch.tensor([3], dtype=torch.int64),
    }
    w, norm = base["model.layers.0.mlp.w"], base["model.layers.1.norm.weight"]
    a = {**base, "model.layers.0.mlp.w": w + 1}  # tau_a: +1 on 12 entries
    half = torch.tensor([1.0] * 6 + [-1.0] * 6).reshape(4, 3)
    b = {**base, "model.layers.0.mlp.w": w + half, "model.layers.1.norm.weight": norm + 2}  # 6 flips, +2 on 5
    # What averaging the two gives: +1 on 6 entries, 0 on 6, +1 on 5.
    merged = {**base, "model.layers.0.mlp.w": w + (half + 1) / 2, "model.layers.1.norm.weight": norm + 1}
    return (
        write_checkpoint(tmp_path / "base", base),
        write_checkpoint(tmp_path / "a", a),
        write_checkpoint(tmp_path / "b", b),
        write_checkpoint(tmp_path / "merged", merged),
    )


def test_hand_made_task_vectors_give_the_numbers_by_hand(tmp_path: Path) -> None:
    base, a, b, merged = _hand_made(tmp_path)
    report = analyse_task_vectors(base, [("a", a), ("b", b)], merged=merged)
    s = report["summary"]
    # 12 + 5 + 4 float parameters; the int64 step counter is not a weight.
    assert s["parameters"] == 21
    assert report["skipped"] == [{"tensor": "model.step", "reason": "not floating point"}]
    assert s["taskVectorNorms"] == {
        "a": pytest.approx(math.sqrt(12)),
        "b": pytest.approx(math.sqrt(12 + 5 * 4)),
    }
    assert s["cosineMatrix"] == [[1.0, 0.0], [0.0, 1.0]]  # +6 -6: orthogonal
    assert s["signConflictFraction"] == pytest.approx(6 / 21)  # the six entries where b went down
    assert s["overlapFraction"] == pytest.approx(12 / 21)
    assert s["signConflictFractionOfOverlap"] == pytest.approx(0.5)
    # Every move here is far above eta = 1e-3 of the weights: a changed 12 entries, b 17.
    assert s["updateFraction"] == {"a": pytest.approx(12 / 21), "b": pytest.approx(17 / 21)}
    assert s["updateSparsity"] == {"a": pytest.approx(9 / 21), "b": pytest.approx(4 / 21)}
    assert s["jaccardMatrix"] == [[1.0, pytest.approx(12 / 17)], [pytest.approx(12 / 17), 1.0]]
    p, q = 12 / 21, 17 / 21
    assert s["jaccardRandomMatrix"][0][1] == pytest.approx(p * q / (p + q - p * q))  # 204 / 405
    m = s["merged"]
    assert m["taskVectorNorm"] == pytest.approx(math.sqrt(11))
    assert m["updateFraction"] == pytest.approx(11 / 21)
    assert m["cosineWithExperts"] == {
        "a": pytest.approx(6 / (math.sqrt(11) * math.sqrt(12))),
        "b": pytest.approx((6 + 10) / (math.sqrt(11) * math.sqrt(32))),
    }
    # The merge moved the six entries a and b agree on, and b's five: inside b's mask, half of a's.
    assert m["jaccardWithExperts"] == {"a": pytest.approx(6 / 17), "b": pytest.approx(11 / 17)}
    types = {t["name"]: t for t in report["moduleTypes"]}
    assert sorted(types) == ["mlp.w", "model.embed.weight", "norm.weight"]
    assert types["norm.weight"]["updateFraction"] == {"a": 0.0, "b": 1.0}
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert sorted(layers) == ["model.embed", "model.layers.0", "model.layers.1"]
    assert layers["model.layers.0"]["signConflictFraction"] == 0.5
    assert layers["model.layers.1"]["taskVectorNorms"] == {"a": 0.0, "b": pytest.approx(math.sqrt(20))}
    assert layers["model.layers.1"]["cosineMatrix"][0][1] == 0.0  # a did not move there: undefined -> 0
    assert layers["model.embed"]["taskVectorNorms"] == {"a": 0.0, "b": 0.0}
    assert [t["name"] for t in report["tensors"]] == [
        "model.embed.weight", "model.layers.0.mlp.w", "model.layers.1.norm.weight",
    ]  # fmt: skip
    assert report["tensors"][1]["shape"] == [4, 3]
    assert report["experts"] == [{"name": "a", "model": str(a)}, {"name": "b", "model": str(b)}]


def test_the_change_mask_is_relative_to_the_weights(tmp_path: Path) -> None:
    """|delta| > eta * max(|w|, |w_base|): a move of 0.5 on a weight of 1000 is no change at eta 1e-3
    (0.5 < 1.0005), a move of 0.002 on a weight of 1 is; eta 0 counts every move (delta != 0)."""
    base = {"model.layers.0.w": torch.tensor([1000.0, 1.0, 1.0, 0.0])}
    expert = {"model.layers.0.w": torch.tensor([1000.5, 1.002, 1.0005, 0.0])}
    b, e = write_checkpoint(tmp_path / "base", base), write_checkpoint(tmp_path / "e", expert)
    strict = analyse_task_vectors(b, [("e", e)])["summary"]
    assert strict["updateFraction"] == {"e": 0.25}  # only 1.0 -> 1.002
    loose = analyse_task_vectors(b, [("e", e)], options=AnalysisOptions(eta=0.0))["summary"]
    assert loose["updateFraction"] == {"e": 0.75}  # every entry that moved
    with pytest.raises(AnalysisError, match="eta must be a finite number >= 0"):
        analyse_task_vectors(b, [("e", e)], options=AnalysisOptions(eta=-1.0))


def _random_case(tmp_path: Path, dtype: torch.dtype) -> tuple[dict, list[dict]]:
    g = torch.Generator().manual_seed(7)
    base = {
        "model.embed_tokens.weight": torch.randn(9, 4, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(7, 3, generator=g),
        "model.layers.0.self_attn.q_proj.bias": torch.randn(6, generator=g),
        "model.layers.1.mlp.up_proj.weight": torch.randn(5, 2, 3, generator=g),
        "model.scale": torch.tensor(0.5),  # a 0-d tensor is one parameter
        "lm_head.weight": torch.randn(9, 4, generator=g),
    }
    experts = []
    for seed, density in ((1, 1.0), (2, 0.5), (3, 0.2)):
        ge = torch.Generator().manual_seed(seed)
        expert = {}
        for name, t in base.items():
            step = 0.05 * torch.randn(t.shape, generator=ge)
            keep = (torch.rand(t.shape, generator=ge) < density).float()  # sparse updates, like RL's
            expert[name] = (t + step * keep).to(dtype)
        experts.append(expert)
    return {k: v.to(dtype) for k, v in base.items()}, experts


@pytest.mark.parametrize("block_elements", [1, 5, 1 << 20], ids=["one-row", "small-blocks", "whole-tensors"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_streamed_numbers_equal_a_direct_torch_computation(
    tmp_path: Path, block_elements: int, dtype: torch.dtype
) -> None:
    base, experts = _random_case(tmp_path, dtype)
    merged = {
        k: (v.double() + sum(e[k].double() - v.double() for e in experts) / 3).to(dtype)
        for k, v in base.items()
    }
    names = ["math", "code", "science"]
    paths = [(n, write_checkpoint(tmp_path / n, e)) for n, e in zip(names, experts, strict=True)]
    report = analyse_task_vectors(
        write_checkpoint(tmp_path / "base", base),
        paths,
        merged=write_checkpoint(tmp_path / "merged", merged),
        options=AnalysisOptions(block_elements=block_elements),
    )
    want = direct_analysis(base, experts, merged)
    s = report["summary"]
    assert s["parameters"] == want["parameters"] == 36 + 21 + 6 + 30 + 1 + 36
    assert list(s["taskVectorNorms"].values()) == pytest.approx(want["norms"], rel=1e-12)
    assert s["cosineMatrix"] == [pytest.approx(row, rel=1e-12, abs=1e-15) for row in want["cosine"]]
    assert s["signConflictFraction"] == pytest.approx(want["signConflictFraction"], rel=1e-12)
    assert 0.05 < s["signConflictFraction"] < 0.5  # the case does have conflicts to count
    assert s["overlapFraction"] == pytest.approx(want["overlapFraction"], rel=1e-12)
    assert list(s["updateFraction"].values()) == pytest.approx(want["updateFraction"], rel=1e-12)
    # RL-like sparse updates: the masks hold 100%, 50% and 20% of the entries, as generated.
    assert list(s["updateFraction"].values()) == pytest.approx([1.0, 0.5, 0.2], abs=0.1)
    assert s["jaccardMatrix"] == [pytest.approx(row, rel=1e-12) for row in want["jaccard"]]
    assert s["projectedCosineMatrix"] == [
        pytest.approx(row, rel=1e-9, abs=1e-12) for row in want["projectedCosine"]
    ]
    assert s["merged"]["taskVectorNorm"] == pytest.approx(want["mergedNorm"], rel=1e-12)
    assert list(s["merged"]["cosineWithExperts"].values()) == pytest.approx(want["mergedCosine"], rel=1e-12)
    merged_projected = s["merged"]["projectedCosineWithExperts"].values()
    assert list(merged_projected) == pytest.approx(want["mergedProjectedCosine"], rel=1e-9)
    assert list(s["merged"]["jaccardWithExperts"].values()) == pytest.approx(want["mergedJaccard"], rel=1e-12)
    # Per tensor: the same definitions restricted to that tensor.
    for entry in report["tensors"]:
        one = direct_analysis(base, experts, only=[entry["name"]])
        assert list(entry["taskVectorNorms"].values()) == pytest.approx(one["norms"], rel=1e-12), entry[
            "name"
        ]
        assert entry["signConflictFraction"] == pytest.approx(one["signConflictFraction"]), entry["name"]
    # Per layer: the tensors of a layer together.
    layer = next(x for x in report["layers"] if x["name"] == "model.layers.0")
    both = direct_analysis(
        base, experts, only=["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias"]
    )
    assert layer["parameters"] == 27
    assert layer["cosineMatrix"][0][2] == pytest.approx(both["cosine"][0][2], rel=1e-12)
    # Per module type: the layer index removed (one q_proj here; up_proj in layer 1).
    types = {t["name"]: t for t in report["moduleTypes"]}
    q = direct_analysis(base, experts, only=["model.layers.0.self_attn.q_proj.weight"])
    assert types["self_attn.q_proj.weight"]["jaccardMatrix"][0][1] == pytest.approx(q["jaccard"][0][1])
    assert types["self_attn.q_proj.weight"]["projectedCosineMatrix"][0][1] == pytest.approx(
        q["projectedCosine"][0][1], rel=1e-9
    )


@pytest.mark.parametrize("layout", ["two-shards", "pytorch-bin"])
def test_every_checkpoint_layout_gives_the_same_numbers(tmp_path: Path, layout: str) -> None:
    base, experts = _random_case(tmp_path, torch.float32)
    plain = analyse_task_vectors(
        write_checkpoint(tmp_path / "plain" / "base", base),
        [(f"e{i}", write_checkpoint(tmp_path / "plain" / f"e{i}", e)) for i, e in enumerate(experts)],
    )
    kwargs = {"shards": 2} if layout == "two-shards" else {"fmt": "bin"}
    other = analyse_task_vectors(
        write_checkpoint(tmp_path / layout / "base", base, **kwargs),
        [
            (f"e{i}", write_checkpoint(tmp_path / layout / f"e{i}", e, **kwargs))
            for i, e in enumerate(experts)
        ],
    )
    assert other["summary"] == plain["summary"]
    assert sorted(t["name"] for t in other["tensors"]) == sorted(t["name"] for t in plain["tensors"])


def test_tensors_some_expert_lacks_or_reshapes_are_skipped_and_listed(tmp_path: Path) -> None:
    base, (a, b, _) = _random_case(tmp_path, torch.float32)
    del b["lm_head.weight"]
    b["model.embed_tokens.weight"] = torch.zeros(3, 4)
    report = analyse_task_vectors(
        write_checkpoint(tmp_path / "base", base),
        [("a", write_checkpoint(tmp_path / "a", a)), ("b", write_checkpoint(tmp_path / "b", b))],
    )
    assert report["skipped"] == [
        {"tensor": "lm_head.weight", "reason": "missing from b"},
        {"tensor": "model.embed_tokens.weight", "reason": "b has shape [3, 4], the base [9, 4]"},
    ]
    want = direct_analysis(base, [a, b])
    assert report["summary"]["parameters"] == want["parameters"] == 21 + 6 + 30 + 1
    assert list(report["summary"]["taskVectorNorms"].values()) == pytest.approx(want["norms"], rel=1e-12)


def test_a_non_finite_task_vector_is_an_error_naming_tensor_and_expert(tmp_path: Path) -> None:
    base, (a, b, _) = _random_case(tmp_path, torch.float32)
    b["model.layers.1.mlp.up_proj.weight"][2, 1, 0] = float("nan")
    with pytest.raises(AnalysisError, match=r"model\.layers\.1\.mlp\.up_proj\.weight: non-finite .* in b$"):
        analyse_task_vectors(
            write_checkpoint(tmp_path / "base", base),
            [("a", write_checkpoint(tmp_path / "a", a)), ("b", write_checkpoint(tmp_path / "b", b))],
        )


def test_duplicate_names_and_unreadable_folders_are_errors(tmp_path: Path) -> None:
    base, (a, _, _) = _random_case(tmp_path, torch.float32)
    base_dir, a_dir = write_checkpoint(tmp_path / "base", base), write_checkpoint(tmp_path / "a", a)
    with pytest.raises(AnalysisError, match="unique"):
        analyse_task_vectors(base_dir, [("x", a_dir), ("x", a_dir)])
    with pytest.raises(AnalysisError, match=f"{tmp_path / 'empty'}: Unable to find model files"):
        (tmp_path / "empty").mkdir()
        analyse_task_vectors(base_dir, [("x", tmp_path / "empty")])


def test_layer_groups() -> None:
    assert group_of("model.layers.12.self_attn.q_proj.weight") == "model.layers.12"
    assert group_of("model.embed_tokens.weight") == "model.embed_tokens"
    assert group_of("lm_head.weight") == "lm_head"
    assert group_of("scale") == "scale"
    assert module_type("model.layers.12.self_attn.q_proj.weight") == "self_attn.q_proj.weight"
    assert module_type("model.embed_tokens.weight") == "model.embed_tokens.weight"


def test_summary_report_and_heatmap_files(tmp_path: Path) -> None:
    base, a, b, merged = _hand_made(tmp_path)
    report = analyse_task_vectors(base, [("a", a), ("b<&>", b)], merged=merged)
    summary = summary_of(report, "m2rl-analysis/report.json")
    projected = report["summary"]["projectedCosineMatrix"][0][1]
    assert summary == {
        "taskVectorNorms": {"a": 3.4641, "b<&>": 5.65685},  # 6 significant digits
        "updateFraction": {"a": 0.571429, "b<&>": 0.809524},
        "pairwiseCosine": [
            {
                "first": "a",
                "second": "b<&>",
                "cosine": 0.0,
                "projectedCosine": float(f"{projected:.6g}"),
                "jaccard": 0.705882,  # 12 / 17
                "jaccardRandom": 0.503704,  # 204 / 405
            }
        ],
        "signConflictFraction": 0.285714,
        "eta": 0.001,
        "reportFile": "m2rl-analysis/report.json",
    }
    report_path, heatmap_path = write_report(report, tmp_path / "out" / "m2rl-analysis")
    assert json.loads(report_path.read_text()) == report
    jaccard = ET.parse(heatmap_path.with_name("jaccard-heatmap.svg")).getroot()
    assert next(t.text for t in jaccard.iter(f"{SVG}title")) == "Jaccard index of change masks"
    svg = ET.parse(heatmap_path).getroot()  # well-formed XML despite the name's <&>
    cells = [r for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(cells) == 9  # a, b<&> and the merged model
    fills = {r.find(f"{SVG}title").text.split(":")[0]: r.get("fill") for r in cells}
    assert fills["a / a"] == colour(1.0) == "#b40426"
    assert fills["a / b<&>"] == colour(0.0) == "#f7f7f7"
    labels = [t.text for t in svg.iter(f"{SVG}text")]
    assert labels.count("b<&>") == 2 and "(merged)" in labels


def test_heatmap_colours_and_shape_checks() -> None:
    assert colour(-1.0) == "#3b4cc0"
    assert colour(-5.0) == colour(-1.0)  # clamped
    assert colour(0.5) == "#d67e8e"
    with pytest.raises(ValueError, match="2 x 2"):
        cosine_heatmap_svg(["a", "b"], [[1.0, 0.0]], title="t")


def _summary(names: list[str]) -> dict:
    numbers = {"cosine": 0.123456789, "projectedCosine": 0.1, "jaccard": 0.2, "jaccardRandom": 0.05}
    return {
        "taskVectorNorms": {n: 1.23456789 + i for i, n in enumerate(names)},
        "updateFraction": {n: 0.123456789 for n in names},
        "pairwiseCosine": [
            {"first": x, "second": y, **numbers} for i, x in enumerate(names) for y in names[i + 1 :]
        ],
        "signConflictFraction": 0.0123456789,
        "eta": 0.001,
        "reportFile": "m2rl-analysis/report.json",
    }


def test_the_result_message_always_fits_the_termination_log() -> None:
    few = _summary(["math", "code", "science"])
    assert fit_summary(few)["pairwiseCosine"][0]["cosine"] == 0.123457  # 6 digits when it fits
    # 16 experts (the API's limit) with 63-character names: 120 pairs cannot fit 4096 bytes.
    many = _summary([f"expert-{i:02d}-" + "x" * 53 for i in range(16)])
    fitted = fit_summary(many)
    assert "pairwiseCosine" not in fitted
    assert len(fitted["taskVectorNorms"]) == 16
    assert len(encode_result({"analysis": fitted}).encode()) <= MAX_MESSAGE_BYTES
    # Medium: rounding alone is enough.
    medium = fit_summary(_summary([f"expert-{i}" for i in range(6)]))
    assert len(medium["pairwiseCosine"]) == 15


def test_no_read_exceeds_one_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded: every read is at most `block_elements` entries of one model."""
    from m2rl_trainer.merge import analysis

    base, experts = _random_case(tmp_path, torch.float32)
    reads: list[int] = []
    original = analysis.Checkpoint.rows

    def counting(self: analysis.Checkpoint, name: str, start: int, stop: int, ndim: int) -> torch.Tensor:
        block = original(self, name, start, stop, ndim)
        reads.append(block.numel())
        return block

    monkeypatch.setattr(analysis.Checkpoint, "rows", counting)
    report = analyse_task_vectors(
        write_checkpoint(tmp_path / "base", base),
        [(f"e{i}", write_checkpoint(tmp_path / f"e{i}", e)) for i, e in enumerate(experts)],
        options=AnalysisOptions(block_elements=8),
    )
    assert max(reads) == 8  # two 4-wide rows of the embeddings; the largest tensor has 36 entries
    assert sum(reads) == 4 * report["summary"]["parameters"]  # base + 3 experts, each entry read once
