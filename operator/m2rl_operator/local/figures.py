"""The report's PNG figures, drawn with matplotlib (Agg: no display needed).

matplotlib is pinned in requirements/ (and the operator's `local` extra) rather than drawing with
Pillow: axes, legends, colour bars and text layout come with it, where Pillow would need a small
plotting library of our own. Only `m2rl report` imports it.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from m2rl_operator.local.report import ReportError, Study


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ReportError(
            "m2rl report draws its figures with matplotlib: pip install 'm2rl-operator[local]' "
            "(or matplotlib itself)"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _curve(ax: Any, seeds: list[list[tuple[int, float]]], label: str, style: str = "-") -> None:
    """One run's curve on `ax`: the mean over seeds, smoothed, with the raw mean faint behind it."""
    steps = sorted({s for seed in seeds for s, _ in seed})
    by_seed = [dict(seed) for seed in seeds if seed]
    mean = [statistics.fmean(seed[s] for seed in by_seed if s in seed) for s in steps]
    window = max(1, len(steps) // 10)
    (line,) = ax.plot(steps, _smooth(mean, window), style, label=label, linewidth=1.8)
    ax.plot(steps, mean, color=line.get_color(), alpha=0.25, linewidth=0.8)


def reward_curves(study: Study, path: Path) -> None:
    """One panel per domain: every run that trains it (mean over seeds, smoothed; raw faint). MT-OPD
    runs, which learn from their teachers rather than the reward, are dashed."""
    plt = _pyplot()
    domains = sorted(study.curves)
    cols = 2 if len(domains) > 1 else 1
    rows = (len(domains) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.4 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        for run, seeds in sorted(study.curves[domain].items()):
            distilled = run in study.distillation
            _curve(ax, seeds, f"{run} (MT-OPD)" if distilled else run, "--" if distilled else "-")
        ax.set_title(domain)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(domains) :]:
        ax.axis("off")
    seeds = f" (mean of {study.seeds} seeds)" if study.seeds > 1 else ""
    fig.suptitle(f"Training reward per domain{seeds}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def distillation_curves(study: Study, path: Path) -> None:
    """Each MT-OPD run's reverse KL to its teachers per step (mean over seeds, smoothed; raw faint)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run, seeds in sorted(study.distillation.items()):
        _curve(ax, seeds, run)
    ax.set_xlabel("step")
    ax.set_ylabel("reverse KL (nats per token)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    seeds = f" (mean of {study.seeds} seeds)" if study.seeds > 1 else ""
    ax.set_title(f"MT-OPD: student to teachers{seeds}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def similarity_heatmap(study: Study, path: Path) -> None:
    """Pairwise cosine similarity of the experts' task vectors."""
    plt = _pyplot()
    names = sorted({n for pair in study.cosine for n in pair})
    index = {n: i for i, n in enumerate(names)}
    matrix = [[1.0 if i == j else 0.0 for j in range(len(names))] for i in range(len(names))]
    for (a, b), values in study.cosine.items():
        matrix[index[a]][index[b]] = matrix[index[b]][index[a]] = statistics.fmean(values)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.5, 1.1 * len(names) + 1.5))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            value = matrix[i][j]
            color = "white" if abs(value) > 0.6 else "black"  # readable on the dark ends of the scale
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9, color=color)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title("Task-vector similarity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


ROLE_COLOURS = {"merge": "#dd8452", "mt-opd": "#55a868"}  # other models (runs): "#4c72b0"


def cost_bars(study: Study, path: Path) -> None:
    """CPU-seconds per model (runs; merges with the runs they merged, MT-OPD students with their
    teachers' runs)."""
    plt = _pyplot()
    models = [m for m in study.models if m.cost]
    values = [statistics.fmean(m.cost) for m in models]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(models) + 1.2))
    ax.barh(
        [m.name for m in models],
        values,
        color=[ROLE_COLOURS.get(m.role, "#4c72b0") for m in models],
    )
    ax.invert_yaxis()
    ax.set_xlabel("CPU-seconds")
    ax.set_title("Cost per model\n(merges and MT-OPD students include the runs they are made from)", size=10)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(study: Study, out: Path) -> dict[str, str]:
    """Every figure the data allows; returns figure name -> file name (relative to `out`)."""
    figures: dict[str, str] = {}
    if study.curves:
        reward_curves(study, out / "reward-curves.png")
        figures["curves"] = "reward-curves.png"
    if study.distillation:
        distillation_curves(study, out / "distillation.png")
        figures["distillation"] = "distillation.png"
    if study.cosine:
        similarity_heatmap(study, out / "task-vectors.png")
        figures["heatmap"] = "task-vectors.png"
    if any(m.cost for m in study.models):
        cost_bars(study, out / "cost.png")
        figures["cost"] = "cost.png"
    return figures
