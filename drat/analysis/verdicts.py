"""The plain sentences of the paper's "Where DRAT wins, and where it does not": per benched size,
DRAT against `full` and against each `torch.compile` memory budget, decided from the one-process
bench rows (`results/paper/tables/bench.csv`). Imported by notebooks/tables.py; a module of its own
so that tests/analysis/test_verdicts.py can hold every sentence to the rows it is decided from."""

from __future__ import annotations

from .report import finite, num, tex_escape

SPREAD_NOTE_PCT = 15.0  # a row's p10-p90 step spread (% of median) above which a verdict says so


def bench_verdicts(b, source: str = "bench") -> list[str]:
    """b: the bench rows of one size (a DataFrame); `source` "profile" for profiled plans."""
    gpu_v = finite(b["peak_gib"].iloc[0]) if len(b) else False
    mem = (b["peak_gib"] if gpu_v else b["saved_activation_bytes"] / 2**20).astype(float)
    unit = "GiB" if gpu_v else "MiB of activations"
    b = b.assign(mem=mem)

    def pt(r):
        return f"{num(r['mem'], 2)} {unit}, {num(r['step_ms'], 1)} ms"

    def pct(x, ref):  # signed % change of x against ref, "0.0\%" when it rounds to nothing
        r = 100 * (x / ref - 1)
        return "0.0\\%" if num(abs(r), 1) == "0.0" else f"{'+' if r > 0 else ''}{num(r, 1)}\\%"

    def memory(x, ref):  # "7.3\% more memory" / "the same memory"
        r = 100 * (x / ref - 1)
        return "the same memory" if num(abs(r), 1) == "0.0" else \
            f"{num(abs(r), 1)}\\% {'more' if r > 0 else 'less'} memory"

    def step(x, ref):  # "a 24.5\% faster step" / "an equally fast step"
        r = 100 * (x / ref - 1)
        return "an equally fast step" if num(abs(r), 1) == "0.0" else \
            f"a {num(abs(r), 1)}\\% {'slower' if r > 0 else 'faster'} step"

    def spread(*rows):  # a caveat where the compared rows' own steps spread widely (p10-p90)
        wide = [r for r in rows if finite(r.get("step_spread_pct", float("nan")))
                and r["step_spread_pct"] > SPREAD_NOTE_PCT]
        if not wide:
            return ""
        return (" The steps of " + ", ".join(f"\\texttt{{{tex_escape(r['name'])}}}" for r in wide)
                + " spread by " + ", ".join(f"{num(r['step_spread_pct'], 0)}\\%" for r in wide)
                + " of the median within the row (p10 to p90), so this time comparison is that coarse.")

    out = []
    drat_e = b[b["name"].str.startswith("drat-") & (b["mode"] == "eager")]
    full = b[b["name"] == "full"]
    if len(full) and len(drat_e):
        f = full.iloc[0]
        fit = drat_e[drat_e["mem"] <= f["mem"] * 1.001]
        if len(fit):
            d = fit.sort_values("step_ms").iloc[0]
            verdict = "beats" if d["step_ms"] <= f["step_ms"] else "does not beat"
            out.append(f"Eager DRAT {verdict} \\texttt{{full}}: at no more memory "
                       f"(\\texttt{{{tex_escape(d['name'])}}}: {pt(d)}) its step is "
                       f"{pct(d['step_ms'], f['step_ms'])} against \\texttt{{full}}'s ({pt(f)}).")
        else:
            d = drat_e.sort_values("mem").iloc[0]
            out.append(f"No eager DRAT point keeps as little memory as \\texttt{{full}} ({pt(f)}); the "
                       f"smallest, \\texttt{{{tex_escape(d['name'])}}} ({pt(d)}), keeps "
                       f"{memory(d['mem'], f['mem'])} at {step(d['step_ms'], f['step_ms'])}.")
        out[-1] += spread(f, d)
    drat_any = b[b["name"].str.startswith("drat-")]
    comp = b[b["name"].str.startswith("compile-budget")]
    if not len(comp):
        out.append("No \\texttt{torch.compile} rows in this run (they are measured on CUDA only)."
                   if source == "bench" else
                   "The compiler's budgets are measured by the one-process bench only, not run here.")
    for _, c in comp.iterrows():
        dom = drat_any[(drat_any["mem"] <= c["mem"] * 1.001) & (drat_any["step_ms"] <= c["step_ms"] * 1.001)]
        name = tex_escape(c["name"])
        if len(dom):
            d = dom.sort_values("mem").iloc[0]
            out.append(f"DRAT dominates \\texttt{{{name}}} ({pt(c)}): \\texttt{{{tex_escape(d['name'])}}} "
                       f"keeps {pt(d)}: {memory(d['mem'], c['mem'])} at {step(d['step_ms'], c['step_ms'])}.")
        else:
            near = drat_any[drat_any["mem"] <= c["mem"] * 1.001]
            if len(near):
                d = near.sort_values("step_ms").iloc[0]
                out.append(f"DRAT does not dominate \\texttt{{{name}}} ({pt(c)}): the fastest DRAT point "
                           f"with no more memory, \\texttt{{{tex_escape(d['name'])}}} ({pt(d)}), keeps "
                           f"{memory(d['mem'], c['mem'])} at {step(d['step_ms'], c['step_ms'])}.")
            else:
                d = None
                out.append(f"DRAT does not dominate \\texttt{{{name}}} ({pt(c)}); no DRAT point keeps as "
                           "little memory.")
        if d is not None:
            out[-1] += spread(c, d)
    # DRAT's budget rows against the oracle's plan for the same budget, timed in alternating steps
    # (the rows' own medians drift between rows; the paired ratio does not)
    if "paired_vs_oracle" in b:
        pv = b["paired_vs_oracle"].astype(float)
        pv = pv[pv.map(finite)]
        if len(pv):
            out.append(f"Timed in alternating steps against the oracle's plan for the same budget, "
                       f"the steps of DRAT's {len(pv)} budget-mode plans differ from the oracle's by "
                       f"{pct(1 + pv.min(), 1)} to {pct(1 + pv.max(), 1)} (negative: DRAT is faster).")
    return out
