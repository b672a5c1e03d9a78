"""The analysis' pictures: KL heatmaps (analysis.heatmap) and bar charts (eval.chart's, the evaluation's
own results chart, fed results-shaped rows: a "benchmark" per domain, a "metric" per quantity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m2rl_trainer.analysis.heatmap import render_heatmap
from m2rl_trainer.eval.chart import render_png


def draw(report: dict[str, Any], folder: Path) -> list[Path]:
    made: list[Path] = []
    if info := report.get("information"):
        names = info["models"]
        matrices = {d: v["kl"] for d, v in info["domains"].items()}
        matrices["mean"] = info["meanKl"]
        vmax = max(
            (abs(x) for m in matrices.values() for row in m.values() for x in row.values()), default=0.0
        )
        for domain, kl in matrices.items():
            made.append(
                render_heatmap(
                    names,
                    [[kl[a][b] for b in names] for a in names],
                    folder / f"information-kl-{domain}.png",
                    title=f"KL(row || column), nats per trajectory, {domain}",
                    vmax=vmax,
                    row_label="the model that sampled the trajectories",
                )
            )
    if prediction := report.get("prediction"):
        scopes = {**prediction["domains"], "all": prediction["overall"]}
        models = list(prediction["overall"]["gainCosine"])
        rows = [
            {
                "model": m,
                "results": [
                    {"benchmark": scope, "metrics": {"gain cosine": v["gainCosine"][m]}}
                    for scope, v in scopes.items()
                ],
            }
            for m in models
        ]
        made.append(
            render_png(rows, folder / "prediction-gain-cosine.png", title="cos(gain, experts' union gain)")
        )
    if sv := report.get("selfVerification"):
        rows = [
            {
                "model": judge,
                "results": [
                    {
                        "benchmark": domain,
                        "metrics": {mode: modes[mode][domain]["accuracy"] for mode in modes},
                    }
                    for domain in next(iter(modes.values()))
                ],
            }
            for judge, modes in sv["judges"].items()
        ]
        made.append(
            render_png(
                rows, folder / "self-verification-accuracy.png", title="judge accuracy (outcome, reasoning)"
            )
        )
    return made
