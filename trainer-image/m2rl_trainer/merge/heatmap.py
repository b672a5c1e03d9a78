"""A cosine-similarity heatmap as a self-contained SVG (no plotting dependency in the image).

Diverging colours on the fixed range [-1, 1] (blue negative, white 0, red positive), so pictures
of different merges compare by eye; each cell also prints its value.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

CELL = 56  # px per cell: room for "-0.99" at 12 px
FONT = 12
CHAR = 7.2  # approximate width of one character at FONT px (sans-serif), for label margins
_NEGATIVE = (59, 76, 192)
_ZERO = (247, 247, 247)
_POSITIVE = (180, 4, 38)


def colour(value: float) -> str:
    """Hex colour of a cosine in [-1, 1] (values outside are clamped)."""
    v = max(-1.0, min(1.0, value))
    end = _POSITIVE if v >= 0 else _NEGATIVE
    t = abs(v)
    r, g, b = (round(z + (e - z) * t) for z, e in zip(_ZERO, end, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def cosine_heatmap_svg(names: Sequence[str], matrix: Sequence[Sequence[float]], *, title: str) -> str:
    """An SVG document: one square per (row, column) of `matrix`, labelled with `names`."""
    n = len(names)
    if any(len(row) != n for row in matrix) or len(matrix) != n:
        raise ValueError(f"matrix must be {n} x {n} for {n} names")
    label = round(max((len(s) for s in names), default=1) * CHAR) + 12
    top = 28 + label  # title line, then column labels written upwards
    legend = 44
    bar = max(n * CELL, 120)  # the colour bar under the grid
    width = label + bar + 16
    height = top + n * CELL + legend
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{FONT}">',
        f"<title>{escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
    ]
    for i, name in enumerate(names):
        cy = top + i * CELL + CELL / 2
        cx = label + i * CELL + CELL / 2
        parts.append(
            f'<text x="{label - 6}" y="{cy:.1f}" text-anchor="end" dominant-baseline="middle">'
            f"{escape(name)}</text>"
        )
        parts.append(
            f'<text x="{cx:.1f}" y="{top - 6}" transform="rotate(-90 {cx:.1f} {top - 6})" '
            f'dominant-baseline="middle">{escape(name)}</text>'
        )
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            x, y = label + j * CELL, top + i * CELL
            ink = "white" if abs(value) > 0.6 else "black"
            parts.append(
                f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{colour(value)}" '
                f'stroke="white"><title>{escape(names[i])} / {escape(names[j])}: {value:.6f}</title></rect>'
            )
            parts.append(
                f'<text x="{x + CELL / 2:.1f}" y="{y + CELL / 2:.1f}" text-anchor="middle" '
                f'dominant-baseline="middle" fill="{ink}">{value:.2f}</text>'
            )
    # Colour bar: -1 .. 1 under the grid.
    y = top + n * CELL + 14
    parts += [
        '<defs><linearGradient id="cosine">'
        f'<stop offset="0" stop-color="{colour(-1)}"/><stop offset="0.5" stop-color="{colour(0)}"/>'
        f'<stop offset="1" stop-color="{colour(1)}"/></linearGradient></defs>',
        f'<rect x="{label}" y="{y}" width="{bar}" height="10" fill="url(#cosine)" stroke="#999"/>',
        f'<text x="{label}" y="{y + 24}" text-anchor="start">-1</text>',
        f'<text x="{label + bar / 2:.1f}" y="{y + 24}" text-anchor="middle">0</text>',
        f'<text x="{label + bar}" y="{y + 24}" text-anchor="end">1</text>',
        "</svg>",
    ]
    return "\n".join(parts) + "\n"
