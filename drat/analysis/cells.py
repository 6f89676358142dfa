"""Table cells shared by the generated documents: signed percentages with a true minus sign,
ratios that tolerate missing values, spreads, and Markdown tables and anchors."""

from __future__ import annotations

import re

from .aggregate import step_spread

MINUS = "\u2212"


def pct(x: float | None, digits: int = 1) -> str:
    """A signed percentage with a true minus sign; a value that rounds to zero has no sign."""
    if x is None or x != x:
        return "—"
    v = round(100 * x, digits)
    if v == 0:
        return f"{0:.{digits}f}%"
    return f"{'+' if v > 0 else MINUS}{abs(v):.{digits}f}%"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b − 1, None where either side is missing."""
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b - 1


def num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    return f"{x:.{digits}f}"


def kilo(x) -> str:
    return "—" if x is None or x != x else f"{x / 1e3:.1f}k"


def spread_cell(step_ms_all) -> str:
    """p10–p90 of a row's timed steps in ms, and that width as % of the median."""
    s = step_spread(step_ms_all)
    if not s:
        return "—"
    return f"{s['step_ms_p10']:.1f}–{s['step_ms_p90']:.1f} ({s['step_spread_pct']:.0f}%)"


def spread_frac(r: dict) -> float:
    """A row's p10–p90 step width as a fraction of its median (0 without timed steps)."""
    s = step_spread(r.get("step_ms_all"))
    return s["step_spread_pct"] / 100 if s else 0.0


def sites_cell(row: dict) -> str:
    n = row.get("n_recomputed") or 0
    return f"{n}: {row['recomputed_sites']}" if n and row.get("recomputed_sites") else (str(n) if n else "—")


def mfu_cell(row: dict) -> str:
    m = row.get("mfu")
    return "—" if m is None or m != m else f"{100 * m:.0f}%"


def fmt_list(xs) -> str:
    return ",".join(f"{x:g}" for x in xs) if xs else "''"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")
