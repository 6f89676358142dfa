# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (drat)
#     language: python
#     name: drat
# ---

# %% [markdown]
# # The memory/time frontier and the λ sweep
#
# Reads the statistics of the pipeline (`stats/frontier.csv`, `stats/summary.csv`) and draws
#
# * **frontier**: memory of every profiled plan against its step time — the baselines, DRAT's λ
#   curve, DRAT under budgets and the ILP oracle at the same λ/budgets, and (dashed) the oracle's
#   frontier *predicted* on the size's cost table (`stats/oracle_curve.csv`): the best any gate
#   setting can do on those costs, so the distance of a measured point from it is cost-model
#   error and host noise, and a target below it is out of reach. On CUDA memory is the
#   peak allocated; on the CPU the exact saved-activation bytes. Error bars: bootstrap CI of the
#   median step time over the timed steps.
# * **lambda_sweep**: final-plan activation memory, step time and final validation loss of the
#   trained runs against λ (mean over seeds, bootstrap CI), with `none` as the reference.
# * **bench**: the one-process benches (`tables/bench.csv`), every strategy side by side on one
#   batch per size, compiled rows included. Bars span the 10th to 90th percentile of the row's
#   own steps: two rows whose bars overlap are not told apart by their medians.
#
# Executed by papermill from the Snakefile; the parameters below are overridden there.

# %% tags=["parameters"]
tables_dir = "results/smoke/tables"
stats_dir = "results/smoke/stats"
figures_dir = "results/smoke/paper/figures"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from drat.analysis.report import (
    collapse_processes,
    data_provenance,
    empty_panel,
    read_csv,
    save_figure,
    size_panels,
    sizes_in,
)

frontier = read_csv(Path(stats_dir) / "frontier.csv")
bench = collapse_processes(read_csv(Path(tables_dir) / "bench.csv"))  # median over processes
ocurve = read_csv(Path(stats_dir) / "oracle_curve.csv")
summary = read_csv(Path(stats_dir) / "summary.csv")
prov = data_provenance(tables_dir)
prof = frontier[frontier["source"] == "profile"] if len(frontier) else frontier
sizes = sizes_in(prof, summary)
print("sizes:", sizes, "| profiled points:", len(prof), "| run groups:", len(summary))


# %%
def mem_scale(df):
    gpu = len(df) and (df["memory_metric"] == "peak_memory_bytes").any()
    return (2**30, "peak allocated (GiB)") if gpu else (2**20, "saved activations (MiB)")


STYLE = {"none": ("o", "C0"), "full": ("s", "C1"), "selective": ("D", "C2"), "sac": ("^", "C4")}
fig, size_axes = size_panels(prof, sizes, "no profiled plans")
for ax, size, d in size_axes:
    div, ylabel = mem_scale(d)

    def pts(sel, d=d, div=div):  # this panel's rows (bound now: the loop moves on)
        return (d[sel]["step_ms"], d[sel]["memory_bytes"] / div,
                [d[sel]["step_ms"] - d[sel]["step_ms_lo"], d[sel]["step_ms_hi"] - d[sel]["step_ms"]])

    for name, (marker, color) in STYLE.items():
        sel = d["point"] == name
        if sel.any():
            x, y, xerr = pts(sel)
            ax.errorbar(x, y, xerr=np.nan_to_num(xerr), fmt=marker, color=color, label=name, capsize=2)
    for kind, color, mfc, label in [("drat", "C3", "C3", "DRAT λ curve"),
                                    ("oracle", "k", "none", "oracle (ILP), λ")]:
        lam = d[(d["kind"] == kind) & d["lam"].notna()].sort_values("lam")
        if len(lam):
            ax.errorbar(lam["step_ms"], lam["memory_bytes"] / div,
                        xerr=np.nan_to_num([lam["step_ms"] - lam["step_ms_lo"],
                                            lam["step_ms_hi"] - lam["step_ms"]]),
                        fmt="-o" if kind == "drat" else "s", color=color, mfc=mfc, label=label, capsize=2,
                        lw=1 if kind == "drat" else 0, ms=5)
            for _, r in lam.iterrows():
                if kind == "drat":
                    ax.annotate(f"λ={r['lam']:g}", (r["step_ms"], r["memory_bytes"] / div), fontsize=6,
                                xytext=(3, 3), textcoords="offset points", color="C3")
        bud = d[(d["kind"] == kind) & d["budget_gib"].notna()]
        if len(bud):
            ax.scatter(bud["step_ms"], bud["memory_bytes"] / div, marker="v", color=color,
                       facecolors=mfc if kind == "drat" else "none",
                       label=f"{'DRAT' if kind == 'drat' else 'oracle'}, budget")
    oc = ocurve[ocurve["size"] == size].sort_values("activation_bytes") if len(ocurve) else ocurve
    if len(oc):
        ax.plot(oc["step_ms"], oc["memory_bytes"] / div, ls="--", lw=1, color="0.45",
                label="oracle, predicted (cost model)")
    ax.set_xscale("log")  # one slow outlier (a busy CPU) must not squash the rest
    ax.set_xlabel("step time (ms, median; bootstrap CI; log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{size}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout(rect=(0, 0.03, 1, 1))
save_figure(fig, "frontier", figures_dir, prov,
            [f"{stats_dir}/frontier.csv", f"{stats_dir}/oracle_curve.csv"],
            note="profiled plans: memory vs median step time; dashed: the oracle predicted on the cost table")

# %%
drat_runs = summary[(summary["strategy"] == "drat") & summary["lam"].notna()] if len(summary) else summary
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
panels = [("memory_bytes", "final-plan activations (MiB)", 2**20), ("step_ms", "step time (ms)", 1.0),
          ("val_loss", "final validation loss", 1.0)]
if drat_runs.empty:
    for ax in axes:
        empty_panel(ax, "no DRAT λ runs")
else:
    pos = drat_runs["lam"][drat_runs["lam"] > 0]
    linthresh = float(pos.min()) if len(pos) else 0.01
    for i, size in enumerate(sizes_in(drat_runs)):
        d = drat_runs[drat_runs["size"] == size].sort_values("lam")
        ref = summary[(summary["size"] == size) & (summary["run"] == "none")]
        for ax, (col, label, div) in zip(axes, panels):
            y, lo, hi = d[col] / div, d[f"{col}_lo"] / div, d[f"{col}_hi"] / div
            ax.plot(d["lam"], y, "-o", color=f"C{i}", label=f"{size}: DRAT", ms=4)
            ax.fill_between(d["lam"], lo.fillna(y), hi.fillna(y), color=f"C{i}", alpha=0.2)
            if len(ref):
                ax.axhline(float(ref[col].iloc[0]) / div, color=f"C{i}", ls="--", lw=0.8,
                           label=f"{size}: none")
            ax.set_xscale("symlog", linthresh=linthresh)
            ax.set_xlim(-0.3 * linthresh, 1.6 * float(drat_runs["lam"].max()) + linthresh)
            ax.set_xlabel("λ (price of memory)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
fig.tight_layout(rect=(0, 0.04, 1, 1))
save_figure(fig, "lambda_sweep", figures_dir, prov, [f"{stats_dir}/summary.csv"],
            note="trained runs: mean over seeds with bootstrap CI")


# %%
# one panel per benched size; each group of rows one marker, its p10-p90 step spread as bars
BASELINES = ["none", "full", "selective", "sac"]
BENCH_GROUPS = [  # (label, row selector, marker, colour, filled)
    ("none / full / selective / sac", lambda d: d["name"].isin(BASELINES), "o", "C0", True),
    ("DRAT, eager (λ, budgets)",
     lambda d: d["name"].str.startswith("drat-") & (d["mode"] == "eager"), "v", "C3", True),
    ("oracle plan, eager",
     lambda d: d["name"].str.startswith("oracle-") & (d["mode"] == "eager"), "s", "k", False),
    ("oracle plan, compiled",
     lambda d: d["name"].str.startswith("oracle-") & (d["mode"] == "compiled"), "X", "k", False),
    ("DRAT, compiled",
     lambda d: d["name"].str.startswith("drat-") & (d["mode"] == "compiled"), "*", "C3", True),
    ("torch.compile memory budget", lambda d: d["name"].str.startswith("compile-budget"), "P", "C2", True),
    ("full / sac, compiled", lambda d: d["name"].isin(["full-compiled", "sac-compiled"]), "D", "C0", False),
    ("DRAT, three arms", lambda d: d["name"].str.startswith("drat3-"), "^", "C4", True),
]
fig, size_axes = size_panels(bench, sizes_in(bench), "no one-process bench")
for ax, size, d in size_axes:
    gpu_b = d["peak_gib"].map(np.isfinite).all() if "peak_gib" in d else False
    y_all = d["peak_gib"] if gpu_b else d["saved_activation_bytes"] / 2**20
    have_spread = {"step_ms_p10", "step_ms_p90"} <= set(d.columns)
    for label, sel, marker, color, filled in BENCH_GROUPS:
        g = d[sel(d)]
        if g.empty:
            continue
        xerr = (np.clip(np.nan_to_num([g["step_ms"] - g["step_ms_p10"], g["step_ms_p90"] - g["step_ms"]]),
                        0, None) if have_spread else None)
        ax.errorbar(g["step_ms"], y_all[g.index], xerr=xerr, fmt=marker, color=color,
                    mfc=color if filled else "none", label=label, capsize=2, ms=6 if marker != "*" else 9)
    labelled = BASELINES + ["full-compiled", "sac-compiled"]
    named = d[d["name"].isin(labelled) | d["name"].str.startswith("compile-")]
    for _, r in named.iterrows():
        ax.annotate(r["name"], (r["step_ms"], y_all[r.name]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("step time (ms, median; bars: p10-p90 of the row's steps; log scale)")
    ax.set_ylabel("peak allocated (GiB)" if gpu_b else "saved activations (MiB)")
    ax.set_title(f"{size}: one process, rows side by side", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout(rect=(0, 0.03, 1, 1))
save_figure(fig, "bench", figures_dir, prov, [f"{tables_dir}/bench.csv"],
            note="one-process benches: peak vs median step time; bars p10-p90 of the row's own steps")
