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
# # Training: loss curves, learned gates, budget tracking
#
# * **loss_curves**: validation loss over training, mean over seeds with a bootstrap CI band
#   (`stats/curves_ci.csv`). Recomputation is exact, so gated and ungated curves coincide up to
#   the run-to-run noise of the device (bitwise on the CPU).
# * **gate_heatmap**: probability that each site is *stored* at the end of training (layer × site,
#   mean over seeds), one panel per λ, for the headline size (`tables/gates.csv`).
# * **budget_tracking**: the requested peak budget against what the run used
#   (`stats/budget.csv`): the CUDA peak of the steady state, with the maximum and the 99th
#   percentile of every step's own peak, or on the CPU model states + kept activations.
# * **long_run**: the longer runs (`long_run` in the config), validation loss against tokens
#   seen, and each run's difference from `none` at every evaluation (`tables/long_curves.csv`).

# %% tags=["parameters"]
tables_dir = "results/smoke/tables"
stats_dir = "results/smoke/stats"
figures_dir = "results/smoke/paper/figures"
headline_size = "tiny"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from drat.analysis.report import (
    BASELINE_ORDER,
    data_provenance,
    empty_panel,
    read_csv,
    save_figure,
    size_panels,
    sizes_in,
)

bands = read_csv(Path(stats_dir) / "curves_ci.csv")
curves = read_csv(Path(tables_dir) / "curves.csv")  # per seed: drawn where no band is
gates = read_csv(Path(tables_dir) / "gates.csv")
budget = read_csv(Path(stats_dir) / "budget.csv")
long_curves = read_csv(Path(tables_dir) / "long_curves.csv")
long_runs = read_csv(Path(tables_dir) / "long_runs.csv")
prov = data_provenance(tables_dir)
sizes = sizes_in(bands)
print("sizes:", sizes, "| curve points:", len(bands), "| gate rows:", len(gates),
      "| budget runs:", len(budget))


# %%
def run_order(runs):
    base = [r for r in BASELINE_ORDER if r in runs]
    lam = sorted((r for r in runs if r.startswith("drat-lam")), key=lambda r: float(r[len("drat-lam"):]))
    bud = sorted((r for r in runs if r.startswith("drat-budget")),
                 key=lambda r: float(r[len("drat-budget"):]))
    return base + lam + bud


fig, size_axes = size_panels(bands, sizes, "no evaluation records", width=5.5, height=4)
for ax, size, d in size_axes:
    for i, run in enumerate(run_order(set(d["run"]))):
        r = d[d["run"] == run].sort_values("step")
        ls = "-" if run == "none" else "--" if run.startswith("drat") else ":"
        ax.plot(r["step"], r["val_loss"], ls, color=f"C{i % 10}", label=run, lw=1.2)
        if r["val_loss_lo"].notna().any():  # a band only from five seeds on (the stats' rule)
            ax.fill_between(r["step"], r["val_loss_lo"].fillna(r["val_loss"]),
                            r["val_loss_hi"].fillna(r["val_loss"]), color=f"C{i % 10}", alpha=0.15)
        elif len(curves):  # fewer seeds: each seed's own curve, thin
            c = curves[(curves["size"] == size) & (curves["run"] == run) & (curves["kind"] == "eval")]
            for _, cs in c.groupby("seed"):
                cs = cs.sort_values("step")
                ax.plot(cs["step"], cs["val_loss"], ls, color=f"C{i % 10}", lw=0.5, alpha=0.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(size, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
fig.tight_layout(rect=(0, 0.04, 1, 1))
save_figure(fig, "loss_curves", figures_dir, prov, [f"{stats_dir}/curves_ci.csv"],
            note="mean over seeds; CI band from five seeds, else each seed thin")

# %%
g = gates[(gates["size"] == headline_size) & gates["lam"].notna()] if len(gates) else gates
lams = sorted(set(g["lam"])) if len(g) else []
fig, axes = plt.subplots(1, max(1, len(lams)), figsize=(3.4 * max(1, len(lams)) + 1.2, 3.4), squeeze=False)
if not lams:
    empty_panel(axes[0][0], f"no DRAT λ runs for size {headline_size}")
else:
    site_order = ["attn_norm", "qkv", "attn_core", "attn_out", "mlp_norm", "mlp_up", "mlp_act", "mlp_down",
                  "embed", "final_norm", "lm_head_loss"]
    sites = [s for s in site_order if s in set(g["site"])] + sorted(set(g["site"]) - set(site_order))
    layers = sorted({l for l in g["layer"].astype(str) if l != "model"}, key=int) + ["model"]
    for ax, lam in zip(axes[0], lams):
        m = g[g["lam"] == lam].groupby(["layer", "site"])["p_store"].mean()
        grid = np.full((len(layers), len(sites)), np.nan)
        for (layer, site), p in m.items():
            grid[layers.index(str(layer)), sites.index(site)] = p
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(sites)), sites, rotation=70, fontsize=6)
        ax.set_yticks(range(len(layers)), [f"L{l}" if l != "model" else "model" for l in layers], fontsize=6)
        ax.set_title(f"λ = {lam:g}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label="P(store) at the end of training", shrink=0.85)
save_figure(fig, "gate_heatmap", figures_dir, prov, [f"{tables_dir}/gates.csv"],
            note=f"size {headline_size}; mean over seeds of the last logged gate probabilities")

# %%
fig, ax = plt.subplots(figsize=(4.8, 4.2))
if budget.empty:
    empty_panel(ax, "no budget runs in this configuration")
else:
    for i, size in enumerate(sizes_in(budget)):
        b = budget[budget["size"] == size]
        ax.scatter(b["budget_gib"], b["measured_gib"], color=f"C{i}", label=f"{size}: steady state", zorder=3)
        if "max_step_gib" in b:  # every step's own peak: a line up to the maximum, a cross at p99
            per_step = b["n_steps"].notna().all()  # else one peak per logged interval of steps
            what = "step" if per_step else "logged interval"
            ax.vlines(b["budget_gib"], b["measured_gib"], b["max_step_gib"], color=f"C{i}", lw=0.8)
            ax.scatter(b["budget_gib"], b["p99_step_gib"], color=f"C{i}", marker="x", s=18, zorder=3,
                       label=f"{size}: p99 {what} (line: max)")
    cols = [c for c in ("budget_gib", "measured_gib", "max_step_gib") if c in budget]
    lo = float(budget[cols].min().min()) * 0.9
    hi = float(budget[cols].max().max()) * 1.1
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="measured = requested")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("requested budget (GiB)")
    ax.set_ylabel(f"measured ({budget['metric'].iloc[0].replace('_', ' ')}, GiB)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout(rect=(0, 0.04, 1, 1))
save_figure(fig, "budget_tracking", figures_dir, prov, [f"{stats_dir}/budget.csv"])

# %%
fig, (ax, axd) = plt.subplots(1, 2, figsize=(9.5, 3.8))
ev = long_curves[long_curves["kind"] == "eval"] if len(long_curves) else long_curves
if ev.empty:
    empty_panel(ax, "no long run in this configuration")
    empty_panel(axd, "no long run in this configuration")
else:
    lr = long_runs.set_index("run")
    tokens_per_step = (lr["tokens_seen"] / lr["step"]).to_dict()
    ref = ev[ev["run"] == "none"].set_index("step")["val_loss"]
    for i, run in enumerate(run_order(set(ev["run"]))):
        r = ev[ev["run"] == run].sort_values("step")
        tok_m = r["step"] * tokens_per_step.get(run, float("nan")) / 1e6
        ls = "-" if run == "none" else "--"
        ax.plot(tok_m, r["val_loss"], ls, color=f"C{i % 10}", label=run, lw=1.4 if run == "none" else 1.0)
        if run != "none" and len(ref):
            d = r.set_index("step")["val_loss"] - ref
            axd.plot(d.index * tokens_per_step.get(run, float("nan")) / 1e6, d.values, "o-", ms=2.5,
                     color=f"C{i % 10}", label=f"{run} − none")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"{ev['size'].iloc[0]}, seed {int(ev['seed'].iloc[0])}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    axd.axhline(0.0, color="k", lw=0.8)
    axd.set_xlabel("tokens seen (millions)")
    axd.set_ylabel("difference of validation loss (nats)")
    axd.grid(alpha=0.3)
    axd.legend(fontsize=7)
fig.tight_layout(rect=(0, 0.04, 1, 1))
save_figure(fig, "long_run", figures_dir, prov, [f"{tables_dir}/long_curves.csv"],
            note="one seed per run; the difference at each evaluation step")
