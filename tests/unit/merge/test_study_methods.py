"""The study's merge variants (m2rl_trainer.merge.methods) against MergeLM's code transcribed
(tests/unit/merge/mergelm_reference.py) on the same tensors, the whole-model trim thresholds against
kthvalue on the concatenated task vectors, and what mergekit's own methods do differently."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mergekit.merge_methods.base import TensorGroup
from mergekit.merge_methods.sce import sce_weight
from mergekit.sparsify import RescaleNorm, SparsificationMethod, sparsify

from m2rl_trainer.merge.config import MergeConfigError, load_merge_config
from m2rl_trainer.merge.methods import register_study_methods
from m2rl_trainer.merge.methods.common import dare, drop_generator, elect_and_average
from m2rl_trainer.merge.methods.mergelm_sce import mergelm_sce
from m2rl_trainer.merge.methods.mergelm_task_arithmetic import mergelm_task_arithmetic
from m2rl_trainer.merge.methods.mergelm_ties import mergelm_ties
from m2rl_trainer.merge.trim import TrimExpert, study_config, whole_model_trim
from tests.unit.merge import mergelm_reference as ref
from tests.unit.merge.checkpoints import write_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

SHAPES = {"model.layers.0.mlp.w": (16, 12), "model.layers.1.attn.q": (8, 8), "model.norm.weight": (12,)}
MODELS = ("/m/math", "/m/code", "/m/science")


def _models(
    seed: int = 0, scale: float = 0.01
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    base = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    experts = [{n: t + scale * torch.randn(t.shape, generator=g) for n, t in base.items()} for _ in MODELS]
    return base, experts


def _merge(method, base, experts, name: str, **parameters) -> torch.Tensor:  # type: ignore[no-untyped-def]
    group = TensorGroup.from_tensors(
        [base[name], *(e[name] for e in experts)], ids=("base", *MODELS), base_index=0, name=name
    )
    (out,) = method([group], parameters=parameters)
    return out


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0], ids=["trim80", "trim50", "keep-all"])
def test_ties_per_tensor_equals_mergelm_on_that_tensor(density: float) -> None:
    base, experts = _models()
    for name in SHAPES:
        flat = ref.task_vectors(base, experts, [name])
        want = (
            base[name] + ref.ties_merging(flat, 1 - density).reshape(base[name].shape)
            if density < 1
            else None
        )
        got = _merge(mergelm_ties, base, experts, name, trim_scope="tensor", density=density)
        if want is None:  # MergeLM's kthvalue(k=0) fails; keeping everything is what density 1 means
            flat_all = ref.task_vectors(base, experts, [name])
            signs = torch.sign(flat_all.sum(0))
            keep = ((signs > 0) & (flat_all > 0)) | ((signs < 0) & (flat_all < 0))
            want = base[name] + ((flat_all * keep).sum(0) / keep.sum(0).clamp(min=1)).reshape(
                base[name].shape
            )
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_ties_lambda_scales_the_merged_task_vector() -> None:
    base, experts = _models()
    name = "model.layers.0.mlp.w"
    one = _merge(mergelm_ties, base, experts, name, trim_scope="tensor")
    half = _merge(mergelm_ties, base, experts, name, trim_scope="tensor", **{"lambda": 0.5})
    torch.testing.assert_close(half - base[name], (one - base[name]) / 2, rtol=0, atol=1e-6)  # ulps of base


def test_a_zero_sum_takes_the_majority_sign_as_in_mergelm() -> None:
    # Position 0: +1 and -1 sum to 0. Positions 1-2 elect -, position 3 elects +: majority -.
    trimmed = torch.tensor([[1.0, -2.0, -1.0, 3.0], [-1.0, 0.0, -1.0, 0.0]])
    assert elect_and_average(trimmed).tolist() == [-1.0, -2.0, -1.0, 3.0]
    assert ref.ties_merging(trimmed, 0.25).tolist() == [-1.0, -2.0, -1.0, 3.0]  # k = 1: keeps all here
    # A majority of 0 (as many + as -) keeps nothing at a zero-sum position, as MergeLM.
    assert elect_and_average(torch.tensor([[1.0, 2.0, -2.0], [-1.0, 0.0, 0.0]])).tolist() == [0.0, 2.0, -2.0]
    # mergekit's ties elects + for a zero sum instead.
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask

    assert get_mask(trimmed, "sum")[:, 0].tolist() == [True, False]


def _write(tmp_path: Path, base, experts) -> tuple[Path, list[Path]]:  # type: ignore[no-untyped-def]
    b = write_checkpoint(tmp_path / "base", base)
    return b, [write_checkpoint(tmp_path / Path(m).name, e) for m, e in zip(MODELS, experts, strict=True)]


@pytest.mark.parametrize("dare_density", [1.0, 0.8], ids=["ties", "dare-ties"])
def test_whole_model_ties_equals_mergelm_on_the_flattened_model(tmp_path: Path, dare_density: float) -> None:
    base, experts = _models(seed=3)
    b, paths = _write(tmp_path, base, experts)
    trim = whole_model_trim(
        b, [TrimExpert(m, p, 0.2, dare_density) for m, p in zip(MODELS, paths, strict=True)], dtype="float32"
    )
    keeps = [ref.drops(base, m, dare_density) if dare_density < 1 else None for m in MODELS]
    flat = ref.task_vectors(base, experts, list(SHAPES), keeps, dare_density)
    n = flat.shape[1]
    assert trim.parameters == n == 16 * 12 + 64 + 12
    # The thresholds are MergeLM's kthvalue over the whole flattened task vector, exactly.
    kth = flat.abs().kthvalue(k=int(n * 0.8), dim=1).values
    assert [trim.thresholds[m] for m in MODELS] == kth.tolist()
    signs = torch.sign((flat * (flat.abs() >= kth[:, None])).sum(0))
    assert trim.majority_sign == int(torch.sign(signs.sum()))
    merged = ref.unflatten(ref.ties_merging(flat, 0.8), base, list(SHAPES))
    for name in SHAPES:
        got = _merge(
            mergelm_ties, base, experts, name,
            density=0.2, dare_density=dare_density, majority_sign=trim.majority_sign,
            trim_threshold=[trim.thresholds[m] for m in MODELS],
        )  # fmt: skip
        torch.testing.assert_close(got, base[name] + merged[name], rtol=0, atol=1e-6)
    # Whole-model and per-tensor trims keep different entries: the option matters.
    per_tensor = _merge(mergelm_ties, base, experts, "model.norm.weight", trim_scope="tensor")
    assert not torch.equal(per_tensor, base["model.norm.weight"] + merged["model.norm.weight"])


def test_whole_model_thresholds_in_bfloat16_match_kthvalue(tmp_path: Path) -> None:
    base, experts = _models(seed=5, scale=0.05)
    base = {n: t.to(torch.bfloat16) for n, t in base.items()}
    experts = [{n: t.to(torch.bfloat16) for n, t in e.items()} for e in experts]
    b, paths = _write(tmp_path, base, experts)
    trim = whole_model_trim(
        b, [TrimExpert(m, p, 0.3) for m, p in zip(MODELS, paths, strict=True)], dtype=None
    )
    flat = ref.task_vectors(base, experts, list(SHAPES))
    kth = flat.abs().kthvalue(k=int(flat.shape[1] * 0.7), dim=1).values
    assert [trim.thresholds[m] for m in MODELS] == kth.tolist()


def test_whole_model_trim_needs_the_thresholds_from_m2rl_merge() -> None:
    base, experts = _models()
    with pytest.raises(
        ValueError, match=r"trim_scope model needs trim_threshold .* run the config with m2rl-merge"
    ):
        _merge(mergelm_ties, base, experts, "model.norm.weight")


def test_dare_keeps_density_of_the_entries_and_rescales_by_one_over_density() -> None:
    delta = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    out = dare(delta, 0.8, rescale=True, generator=drop_generator(0, "w", "/m/math"))
    kept = out != 0
    # Binomial(200000, 0.8): standard deviation 179 entries; 5 sigma.
    assert abs(int(kept.sum()) - 160_000) < 5 * 179
    torch.testing.assert_close(out[kept], delta[kept] / 0.8, rtol=0, atol=0)
    plain = dare(delta, 0.8, rescale=False, generator=drop_generator(0, "w", "/m/math"))
    assert torch.equal(plain != 0, kept) and torch.equal(plain[kept], delta[kept])  # same seed, same drops
    other = dare(delta, 0.8, rescale=True, generator=drop_generator(0, "w2", "/m/math"))
    assert not torch.equal(other != 0, kept)  # another tensor, other drops


def test_dare_task_arithmetic_equals_mergelm() -> None:
    base, experts = _models(seed=7)
    keeps = [ref.drops(base, m, 0.8, seed=4) for m in MODELS]
    flat = ref.task_vectors(base, experts, list(SHAPES), keeps, 0.8)
    want = ref.unflatten(flat.sum(0), base, list(SHAPES))
    for name in SHAPES:
        got = _merge(
            mergelm_task_arithmetic, base, experts, name, dare_density=0.8, seed=4, **{"lambda": 0.5}
        )
        torch.testing.assert_close(got, base[name] + 0.5 * want[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("select_topk", [1.0, 0.5], ids=["all", "top-half"])
def test_sce_equals_mergelm(select_topk: float) -> None:
    base, experts = _models(seed=11)
    for name in SHAPES:
        got = _merge(mergelm_sce, base, experts, name, select_topk=select_topk)
        want = ref.sce(base[name], [e[name] for e in experts], select_topk)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_sce_weighs_small_rl_task_vectors_where_mergekit_falls_back_to_equal_weights() -> None:
    # Task vectors of 1e-4 (RL at small learning rates): mean squares near 1e-8, their sum below 1e-6.
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 64, generator=g)
    scales = (1e-4, 2e-4, 4e-4)
    experts = [base + s * torch.randn(64, 64, generator=g) for s in scales]
    deltas = torch.stack([e - base for e in experts])
    assert sce_weight(deltas).tolist() == pytest.approx(
        [1 / 3] * 3
    )  # mergekit 0.1.5: |sum| < 1e-6 -> equal weights
    from m2rl_trainer.merge.methods.mergelm_sce import sce_weights

    weights = sce_weights(deltas, 1.0)
    squares = torch.tensor([s**2 for s in scales])
    torch.testing.assert_close(weights, squares / squares.sum(), rtol=0.05, atol=0)  # about 1 : 4 : 16
    names = {"w": base}
    got = _merge(mergelm_sce, names, [{"w": e} for e in experts], "w")
    torch.testing.assert_close(got, ref.sce(base, experts), rtol=0, atol=1e-7)


def test_mergekit_rescale_matches_l1_norms_not_one_over_density() -> None:
    """What `rescale` means in mergekit 0.1.5 (sparsify.rescaled_masked_tensor, RescaleNorm.l1): the kept
    entries are multiplied so the tensor's L1 norm is unchanged. For TIES' magnitude trim of Gaussian
    entries at density 0.2 that is E|x| / E[|x|; top 20%] = 2.27, not 1 / 0.2 = 5."""
    x = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    trimmed = sparsify(x, 0.2, SparsificationMethod.magnitude, rescale_norm=None)
    rescaled = sparsify(x, 0.2, SparsificationMethod.magnitude, rescale_norm=RescaleNorm.l1)
    factor = float(rescaled.abs().sum() / trimmed.abs().sum())
    assert factor == pytest.approx(float(x.abs().sum() / trimmed.abs().sum()), rel=1e-6)
    assert factor == pytest.approx(2.27, abs=0.01)
    # DARE's random drop with the same L1 match lands near 1/density only on average.
    torch.manual_seed(0)
    dropped = sparsify(x, 0.2, SparsificationMethod.random, rescale_norm=RescaleNorm.l1)
    assert float(dropped.abs().sum()) == pytest.approx(float(x.abs().sum()), rel=1e-5)


def _config(tmp_path: Path, models: list[Path], base: Path, **parameters) -> Path:  # type: ignore[no-untyped-def]
    raw = {
        "merge_method": "mergelm_ties",
        "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"density": 0.2}} for m in models],
        "parameters": parameters,
        "dtype": "float32",
    }
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_study_config_adds_the_seed_thresholds_and_majority(tmp_path: Path) -> None:
    base, experts = _models(seed=3)
    b, paths = _write(tmp_path, base, experts)
    loaded = load_merge_config(_config(tmp_path, paths, b, dare_density=0.8))
    config, source = study_config(loaded, seed=9)
    raw = yaml.safe_load(source)
    assert raw["parameters"]["seed"] == 9 and raw["parameters"]["majority_sign"] in (-1, 1)
    trim = whole_model_trim(b, [TrimExpert(str(p), p, 0.2, 0.8) for p in paths], dtype="float32", seed=9)
    assert [m["parameters"]["trim_threshold"] for m in raw["models"]] == [
        trim.thresholds[str(p)] for p in paths
    ]
    assert config.models[0].parameters["trim_threshold"] == trim.thresholds[str(paths[0])]


@pytest.mark.parametrize(
    ("models_parameters", "parameters", "message"),
    [
        (
            {"density": 0.2, "trim_threshold": 0.1},
            {},
            r"models\[0\].parameters.trim_threshold: computed by m2rl-merge",
        ),
        ({"density": [0.1, 0.3]}, {}, r"models\[0\].parameters.density: trim_scope model needs one number"),
        ({"density": 0.2}, {"majority_sign": 1}, "parameters.majority_sign: computed by m2rl-merge"),
    ],
    ids=["threshold-given", "gradient-density", "majority-given"],
)
def test_study_config_refuses_what_it_computes(
    tmp_path: Path, models_parameters, parameters, message
) -> None:  # type: ignore[no-untyped-def]
    base, experts = _models()
    b, paths = _write(tmp_path, base, experts)
    raw = yaml.safe_load(_config(tmp_path, paths, b, **parameters).read_text())
    raw["models"][0]["parameters"] = models_parameters
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(raw))
    loaded = load_merge_config(tmp_path / "merge.yaml")
    with pytest.raises(MergeConfigError, match=message):
        study_config(loaded, seed=0)


def test_the_config_check_knows_the_study_methods_and_their_parameters(tmp_path: Path) -> None:
    register_study_methods()
    base, experts = _models()
    b, paths = _write(tmp_path, base, experts)
    path = _config(tmp_path, paths, b, trim_scope="layer")
    with pytest.raises(MergeConfigError, match=r"parameters.trim_scope: 'layer' is not valid"):
        load_merge_config(path)
    raw = yaml.safe_load(path.read_text())
    raw["merge_method"], raw["parameters"] = "mergelm_sce", {"select_topk": 0.5, "lambda": 2.0}
    raw["models"] = [{"model": str(p)} for p in paths]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        MergeConfigError, match=r"parameters\.lambda: merge_method mergelm_sce does not read it"
    ):
        load_merge_config(path)
