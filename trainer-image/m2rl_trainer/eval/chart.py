"""A PNG bar chart of one or more models' results (Pillow; its built-in bitmap font, no font files).

One horizontal bar per (benchmark, metric) cell, grouped by cell, one colour per model, on a fixed
0..1 axis so charts of different runs compare by eye; each bar prints its value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROW = 18  # px per bar
GAP = 8  # px between groups
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def cells(results: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """(models, cell labels, {(model, label): value}) from results.json-shaped mappings."""
    models: list[str] = []
    labels: list[str] = []
    values: dict[tuple[str, str], float] = {}
    for result in results:
        model = str(result.get("model", "?"))
        models.append(model)
        for row in result.get("results") or []:
            numbers = {**(row.get("metrics") or {}), **(row.get("figures") or {})}
            for metric, value in numbers.items():
                label = f"{row['benchmark']} {metric}"
                if label not in labels:
                    labels.append(label)
                values[(model, label)] = float(value)
    return models, labels, values


def render_png(results: Sequence[Mapping[str, Any]], path: Path, title: str = "m2rl-eval") -> Path:
    from PIL import Image, ImageDraw, ImageFont

    models, labels, values = cells(results)
    font = ImageFont.load_default()
    label_width = max([len(label) for label in labels] + [10]) * 7 + 16
    bar_width = 420
    legend = 20 * len(models)
    height = 40 + legend + len(labels) * (len(models) * ROW + GAP) + 30
    width = label_width + bar_width + 80
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black", font=font)
    for i, model in enumerate(models):
        y = 30 + 20 * i
        draw.rectangle([10, y, 22, y + 12], fill=PALETTE[i % len(PALETTE)])
        draw.text((28, y), model, fill="black", font=font)
    y = 40 + legend
    for label in labels:
        draw.text((10, y + 2), label, fill="black", font=font)
        for i, model in enumerate(models):
            value = values.get((model, label))
            top = y + i * ROW
            if value is None:
                draw.text((label_width, top + 2), "-", fill="gray", font=font)
                continue
            length = round(bar_width * max(0.0, min(1.0, value)))
            draw.rectangle(
                [label_width, top, label_width + length, top + ROW - 4], fill=PALETTE[i % len(PALETTE)]
            )
            draw.text((label_width + length + 4, top + 2), f"{value:.3f}", fill="black", font=font)
        y += len(models) * ROW + GAP
    axis = height - 24
    draw.line([label_width, axis, label_width + bar_width, axis], fill="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = label_width + round(bar_width * tick)
        draw.line([x, axis, x, axis + 4], fill="black")
        draw.text((x - 8, axis + 6), f"{tick:g}", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
