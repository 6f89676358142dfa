"""Helpers shared by the notebooks: loading the pipeline's CSVs, saving figures with provenance,
writing booktabs tables and `\\newcommand` macros. Not a notebook itself (no jupytext header)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..provenance import provenance  # noqa: E402
from .stats import MIN_CI_SEEDS  # noqa: E402

SIZE_ORDER = ["tiny", "small", "medium", "large"]
BASELINE_ORDER = ["none", "full", "selective", "sac"]


def read_csv(path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def collapse_processes(bench: pd.DataFrame) -> pd.DataFrame:
    """One row per (size, name) of bench.csv, whichever number of processes ran the bench: the
    step the median across processes (and peak, tokens/s with it), `n_processes`, the step's range
    across processes as `step_proc_spread_pct` (% of the median), and `step_spread_pct` the larger
    of that and the row's own p10-p90, so a verdict's caveat covers both. One process: unchanged."""
    if not len(bench) or "process" not in bench or bench["process"].nunique() < 2:
        return bench
    out = []
    for _, g in bench.groupby(["size", "name"], sort=False):
        row = g.iloc[0].to_dict()
        step = float(g["step_ms"].median())
        row["step_proc_spread_pct"] = 100 * (g["step_ms"].max() - g["step_ms"].min()) / step
        row["step_spread_pct"] = max(row["step_proc_spread_pct"], float(g.get("step_spread_pct",
                                                                               pd.Series([0.0])).max()))
        if finite(row.get("tokens_per_s")):
            row["tokens_per_s"] = row["tokens_per_s"] * row["step_ms"] / step
        row["step_ms"], row["n_processes"] = step, len(g)
        if "peak_gib" in g:
            row["peak_gib"] = float(g["peak_gib"].median())
        out.append(row)
    return pd.DataFrame(out)


def sizes_in(*dfs) -> list[str]:
    found = set()
    for df in dfs:
        if len(df) and "size" in df:
            found |= set(df["size"].dropna())
    return [s for s in SIZE_ORDER if s in found] + sorted(found - set(SIZE_ORDER))


def data_provenance(tables_dir) -> dict:
    p = Path(tables_dir) / "provenance.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def footer_text(data_prov: dict) -> str:
    render = provenance("cpu")
    devices = ", ".join(data_prov.get("device", [])) or "?"
    torch_v = ", ".join(data_prov.get("torch_version", [])) or "?"
    commits = ", ".join(c[:10] for c in data_prov.get("git_commit", [])) or "?"
    return (f"data: {devices} · torch {torch_v} · commit {commits}  |  "
            f"rendered: torch {render['torch_version']} · commit {render['git_commit'][:10]}")


def save_figure(fig, name: str, figures_dir, data_prov: dict, sources: list[str], note: str = "") -> None:
    """PDF (for LaTeX) + PNG (for a quick look) + a sidecar JSON with the provenance of the data.
    The PNG carries a provenance footer (devices, torch, commits); the PDF, which the paper
    includes, does not: a reader's figure shows data, and the paper names the artifact once."""
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight", pad_inches=0.05)
    # the footer goes below everything already drawn (tick labels included)
    bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
    fig.text(0.005, bottom - 0.01, footer_text(data_prov), fontsize=5.5, color="0.35", ha="left", va="top")
    fig.savefig(out / f"{name}.png", dpi=130, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    side = {"figure": name, "files": [f"{name}.pdf", f"{name}.png"], "sources": [str(s) for s in sources],
            "data_provenance": data_prov, "render_provenance": provenance("cpu"), "note": note}
    (out / f"{name}.json").write_text(json.dumps(side, indent=2) + "\n")


def empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def size_panels(df, sizes: list[str], empty_text: str, width: float = 5.2, height: float = 4.2):
    """One panel per size in a row: (fig, [(ax, size, that size's rows), ...]). A size without rows
    gets an empty panel saying `empty_text`; no sizes at all, one panel for all of `df`."""
    n = max(1, len(sizes))
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    panels = []
    for ax, size in zip(axes[0], sizes or [None]):
        d = df[df["size"] == size] if size and len(df) else df
        if d.empty:
            empty_panel(ax, empty_text)
            continue
        panels.append((ax, size, d))
    return fig, panels


# ---------------------------------------------------------------------------------------------- LaTeX
_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def tex_escape(s) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in str(s))


def finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x, digits: int = 2, pct: bool = False) -> str:
    if not finite(x):
        return "--"
    x = float(x) * (100 if pct else 1)
    return f"{x:.{digits}f}"


def ci_phrase(conf_pct: str, r: dict, col: str, shift: float = 0.0) -> str:
    """The interval of a percentage in words for the text: the CI where the stats drew one (from
    MIN_CI_SEEDS seeds on), else the per-seed values, else nothing. Values equal in every seed
    are said to be so: the bootstrap's [x, x] there is no confidence interval."""
    lo, hi, seeds = r.get(f"{col}_lo"), r.get(f"{col}_hi"), r.get(f"{col}_seeds")
    vals = [float(x) for x in seeds.split(";")] if isinstance(seeds, str) and seeds else []
    if len(vals) > 1 and len(set(vals)) == 1:
        return f"(the same in each of the {len(vals)} seeds)"
    if finite(lo) and finite(hi):
        return f"({conf_pct}\\% CI [{num(lo + shift, 1, pct=True)}, {num(hi + shift, 1, pct=True)}]\\%)"
    if len(vals) > 1:
        shown = ", ".join(num(x + shift, 1, pct=True) for x in vals)
        return f"(per seed: {shown}\\%; no interval under {MIN_CI_SEEDS} seeds)"
    return ""


def with_ci(v, lo, hi, digits: int = 2, pct: bool = False, seeds=None, shift: float = 0.0) -> str:
    """'v [lo, hi]' (or 'v' when the interval is degenerate, '--' when unknown). Without an
    interval, `seeds` (the stats' ';'-joined per-seed values, each plus `shift`) follow in
    parentheses: 'v (a/b)', the values a reader can judge the spread by."""
    if not finite(v):
        return "--"
    s = num(v, digits, pct)
    if finite(lo) and finite(hi):
        if not (num(lo, digits, pct) == s == num(hi, digits, pct)):
            s += f" [{num(lo, digits, pct)}, {num(hi, digits, pct)}]"
    elif isinstance(seeds, str) and seeds.count(";") >= 1:
        vals = [num(float(x) + shift, digits, pct) for x in seeds.split(";")]
        if len(set(vals)) > 1:
            s += f" ({'/'.join(vals)})"
    return s


def booktabs(columns: list[str], rows: list[list[str]], align: str | None = None,
             caption_note: str = "") -> str:
    align = align or "l" + "r" * (len(columns) - 1)
    lines = [f"% generated by the notebooks: do not edit ({caption_note})" if caption_note
             else "% generated by the notebooks: do not edit",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(columns) + r" \\", r"\midrule"]
    if rows:
        lines += [" & ".join(r) + r" \\" for r in rows]
    else:
        lines.append(rf"\multicolumn{{{len(columns)}}}{{c}}{{\emph{{no results}}}} \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_tex(path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


class Macros:
    """Collects `\\newcommand`s; names must be letters only (TeX control words)."""

    def __init__(self):
        self.items: dict[str, str] = {}

    def add(self, name: str, value, comment: str = "") -> None:
        if not re.fullmatch(r"[A-Za-z]+", name):
            raise ValueError(f"macro name {name!r} must be letters only")
        self.items[name] = (str(value), comment)

    def render(self) -> str:
        lines = ["% generated by notebooks/tables.py: every number the paper text quotes", ""]
        for name, (value, comment) in self.items.items():
            lines.append(rf"\newcommand{{\{name}}}{{{value}}}" + (f"  % {comment}" if comment else ""))
        return "\n".join(lines) + "\n"


def size_word(size: str) -> str:
    return size.capitalize()
