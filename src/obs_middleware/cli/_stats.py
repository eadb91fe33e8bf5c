"""Plain-text tables shared by ``obs check`` and ``obs report``, and how they write dollars."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["table", "usd"]


def usd(value: float) -> str:
    """A cost with the digits it needs: ``$1,234.50``, ``$0.0123``, ``$0.000036``, ``$0``.

    Below a cent, two significant digits: a cost that is not zero never reads ``$0.0000``.
    The dashboard's ``fmtUsd`` writes the same (``dashboard/static/app.js``).
    """
    if value < 0:
        return "-" + usd(-value)
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    if value >= 0.01:
        return f"${value:.4f}"
    if value < 1e-10:  # below what pricing rounds to
        return "<$0.0000000001"
    return f"${value:.{1 - math.floor(math.log10(value))}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    """Render rows as an aligned text table (numbers right-aligned)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(out).rstrip()

    lines = [title] if title else []
    lines.append(line(headers))
    lines.append("  ".join("─" * w for w in widths))
    lines.extend(line(row) for row in cells)
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
