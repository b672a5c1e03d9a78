"""A PNG heatmap of a square matrix (Pillow and its built-in bitmap font, as eval/chart.py's bar chart).

Rows and columns are labelled with the models; each cell prints its value. The colour runs from white
at 0 to dark red at `vmax` (values above are clamped; negative ones, which a Monte Carlo KL estimate can
give, are drawn blue), so matrices of one report compare by eye when drawn with the same `vmax`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CELL = 64  # px per cell: room for "-12.345"
CHAR = 6  # px per character of Pillow's default font
_WHITE = (255, 255, 255)
_RED = (165, 0, 38)
_BLUE = (49, 54, 149)


def shade(value: float, vmax: float) -> tuple[int, int, int]:
    """The cell colour of `value` on a 0..vmax scale (blue below 0)."""
    end = _RED if value >= 0 else _BLUE
    t = min(1.0, abs(value) / vmax) if vmax > 0 else 0.0
    r, g, b = (round(w + (e - w) * t) for w, e in zip(_WHITE, end, strict=True))
    return r, g, b


def render_heatmap(
    names: Sequence[str],
    matrix: Sequence[Sequence[float]],
    path: Path,
    *,
    title: str,
    vmax: float | None = None,
    row_label: str = "",
    column_label: str = "",
) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    n = len(names)
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ValueError(f"matrix must be {n} x {n} for {n} names")
    top_value = vmax if vmax is not None else max((abs(v) for row in matrix for v in row), default=0.0)
    font = ImageFont.load_default()
    label = max((len(s) for s in names), default=1) * CHAR + 16
    top = 56
    width = max(label + n * CELL + 16, len(title) * CHAR + 20)
    height = top + n * CELL + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=font)
    if column_label:
        draw.text((label, 24), column_label, fill="gray", font=font)
    for j, name in enumerate(names):
        draw.text((label + j * CELL + 4, top - 14), name[: CELL // CHAR - 1], fill="black", font=font)
    for i, row in enumerate(matrix):
        y = top + i * CELL
        draw.text((8, y + CELL // 2 - 5), names[i], fill="black", font=font)
        for j, value in enumerate(row):
            x = label + j * CELL
            colour = shade(value, top_value)
            draw.rectangle([x, y, x + CELL - 2, y + CELL - 2], fill=colour)
            ink = "white" if sum(colour) < 380 else "black"
            draw.text((x + 6, y + CELL // 2 - 5), f"{value:.3g}", fill=ink, font=font)
    if row_label:
        draw.text((8, height - 30), f"rows: {row_label}", fill="gray", font=font)
    draw.text((8, height - 16), f"scale 0 .. {top_value:.3g}", fill="gray", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
