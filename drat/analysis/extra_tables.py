"""The paper's tables of the extra benches: the offload arm, the largest batch under a cap, a
wrapped Hugging Face model, a larger shape, or a shape change under one budget (`extra_benches` in
the pipeline config).

The rows are the ones docs/performance.md shows for results/bench/, built by the same functions
(`frontier_rows`, `offload_rows`, `capacity_rows`) and set in LaTeX here, so the paper and the
docs cannot disagree about a number. Each bench becomes a paragraph: its title, the model and
batch it ran, the headline the docs give it, and a table of the columns a reader compares.
"""

from __future__ import annotations

import re
from pathlib import Path

from .adapt_tables import ADAPT_HEADER, adapt_headline, adapt_rows
from .capacity_tables import CAPACITY_HEADER, capacity_headline, capacity_rows
from .offload_tables import OFFLOAD_HEADER, offload_headline, offload_rows
from .performance import FRONTIER_HEADER, describe_model, frontier_rows, load_bench
from .report import booktabs, tex_escape

# the columns of each kind the paper prints (the docs print them all)
COLUMNS = {
    "frontier": ["row", "mode", "peak GiB", "peak vs none", "step ms", "step vs none",
                 "step p10–p90 ms (% of median)", "tokens/s"],
    "offload": ["row", "arms", "budget GiB", "peak GiB", "peak vs none", "step ms", "spread ms",
                "step vs none", "sites rec./off.", "GiB each way (host)", "link util."],
    "capacity": ["row", "batch", "peak GiB", "step ms", "tokens/s", "tokens/s vs none", "MFU"],
    "adapt": ["S", "planner", "peak GiB", "within budget", "step ms", "step vs ilp-reprofile",
              "beyond spread", "sites recomputed", "planning s"],
}
_HEADERS = {"frontier": FRONTIER_HEADER, "offload": OFFLOAD_HEADER, "capacity": CAPACITY_HEADER,
            "adapt": ADAPT_HEADER}
_ROWS = {"frontier": frontier_rows, "offload": offload_rows, "capacity": capacity_rows, "adapt": adapt_rows}
_HEADLINES = {"offload": offload_headline, "capacity": capacity_headline, "adapt": adapt_headline}
# characters of the docs' cells that pdflatex does not take as text
_SYMBOLS = {"×": r"$\times$", "✗": r"$^{\ast}$", "≤": r"$\leq$", "≥": r"$\geq$", "→": r"$\to$",
            "−": r"$-$", "λ": r"$\lambda$", "≈": r"$\approx$", "±": r"$\pm$"}


def md_to_tex(text: str) -> str:
    """A docs cell or sentence in LaTeX: `code` as \\texttt, ** dropped, the rest escaped."""
    out = []
    for part in re.split(r"(`[^`]*`)", str(text)):
        code = len(part) >= 2 and part[0] == part[-1] == "`"
        t = tex_escape(part[1:-1] if code else part.replace("**", ""))
        for ch, tex in _SYMBOLS.items():
            t = t.replace(ch, tex)
        out.append(rf"\texttt{{{t}}}" if code else t)
    return "".join(out)


def _column_index(header: list[str], name: str) -> int:
    for i, h in enumerate(header):
        if h == name or h.startswith(name):
            return i
    raise KeyError(f"no column {name!r} in {header}")


def bench_table(kind: str, rows: list[list[str]]) -> str:
    """The paper's columns of a kind's docs rows, as a booktabs tabular."""
    header = _HEADERS[kind]
    idx = [_column_index(header, c) for c in COLUMNS[kind]]
    body = [[md_to_tex(r[i]) for i in idx] for r in rows]
    return booktabs([md_to_tex(header[i]) for i in idx], body, caption_note=f"drat bench {kind}")


def extra_section(entry: dict, root: Path = Path(".")) -> str:
    """One extra bench as a paragraph and a table (`entry`: a row of tables/extra.json)."""
    path = Path(entry["path"])
    b = load_bench(root, path.parent, entry["name"], None)
    meta = b.meta
    shape = f"S={meta.get('seq_len')}" + (f", B={meta['batch_size']}" if meta.get("batch_size") else "")
    cap = f", under a {meta['cap_gib']:g} GiB cap" if meta.get("cap_gib") else ""
    lines = [rf"\paragraph{{{md_to_tex(entry.get('title') or entry['name'])}.}}",
             md_to_tex(f"{describe_model(meta['config'], meta.get('params'))}; {shape}{cap}; "
                       f"{meta.get('device', '?')}.")]
    headline = _HEADLINES.get(b.stem)
    if headline is not None and (h := headline(b)):
        lines.append(md_to_tex(h[0].upper() + h[1:]))
    lines += ["", r"\begin{table}[htbp]", r"  \centering\small",
              r"  \resizebox{\linewidth}{!}{%", bench_table(b.stem, _ROWS[b.stem](b)) + "}",
              rf"  \caption{{{md_to_tex(entry.get('title') or entry['name'])}: the rows of "
              rf"\texttt{{drat bench {b.stem}}}, side by side in one process.}}",
              rf"  \label{{tab:extra-{entry['name']}}}", r"\end{table}", ""]
    return "\n".join(lines)


def adapt_sentence(entries: list[dict], root: Path = Path(".")) -> str:
    """The first shape-change bench's key numbers as a LaTeX sentence citing its table (the
    limitations' answer to what learning adds); empty when there is none."""
    for e in entries:
        if e.get("kind") == "adapt":
            path = Path(e["path"])
            h = adapt_headline(load_bench(root, path.parent, e["name"], None))
            return (md_to_tex(h[0].upper() + h[1:]).rstrip(".")
                    + rf" (Table~\ref{{tab:extra-{e['name']}}}).")
    return ""


def extra_sections(entries: list[dict], root: Path = Path(".")) -> str:
    """Every extra bench, in config order; empty when there is none."""
    return "\n".join(extra_section(e, root) for e in entries)


__all__ = ["COLUMNS", "adapt_sentence", "bench_table", "extra_section", "extra_sections", "md_to_tex"]
