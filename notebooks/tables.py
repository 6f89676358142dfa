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
# # Tables and macros of the paper
#
# Writes booktabs tables and `\newcommand` macros into `generated_dir`; the LaTeX sources in
# `paper/` `\input` them. No number in the paper is typed by hand: every result quoted in the
# text is one of the macros below.
#
# * `results_table.tex` — per size at the headline λ: activation-memory reduction, change of
#   final validation loss and of step time against `none` (paired by seed, bootstrap CIs), and
#   the TOST equivalence verdict.
# * `baselines_table.tex` — every run group of the headline size against `none`.
# * `frontier_table.tex` — the profiled plans of the headline size (memory, median step time).
# * `setup_table.tex` — model sizes and training settings of this configuration.
# * `claims_table.tex` — the claims of DRAT's first release against the one-process bench.
# * `planners_table.tex` — the ILP, the gates, local search and greedy on the cost tables.
# * `extra_tables.tex` — the extra benches (offload, capacity, a wrapped model), one paragraph and
#   table each, with the rows docs/performance.md gives them.
# * `macros.tex` — the numbers of the text.

# %% tags=["parameters"]
tables_dir = "results/smoke/tables"
stats_dir = "results/smoke/stats"
generated_dir = "results/smoke/paper/generated"
config_json = "{}"
headline_size = "tiny"
headline_lambda = 0.05
planners_json = "results/smoke/planners/planners.json"

# %%
import json
from pathlib import Path

from drat.analysis.extra_tables import adapt_sentence, extra_sections
from drat.analysis.report import (
    BASELINE_ORDER,
    Macros,
    booktabs,
    ci_phrase,
    collapse_processes,
    data_provenance,
    finite,
    num,
    read_csv,
    size_word,
    sizes_in,
    tex_escape,
    with_ci,
    write_tex,
)
from drat.analysis.stats import MIN_CI_SEEDS
from drat.analysis.verdicts import bench_verdicts

cfg = json.loads(config_json)
gen = Path(generated_dir)
paired = read_csv(Path(stats_dir) / "paired.csv")
summary = read_csv(Path(stats_dir) / "summary.csv")
frontier = read_csv(Path(stats_dir) / "frontier.csv")
runs = read_csv(Path(tables_dir) / "runs.csv")
stats_json = json.loads((Path(stats_dir) / "stats.json").read_text())
missing = json.loads((Path(tables_dir) / "missing.json").read_text())
prov = data_provenance(tables_dir)
P = stats_json["parameters"]
conf_pct = f"{100 * P['confidence']:g}"


def headline_rows(df):
    if df.empty:
        return df
    return df[(df["strategy"] == "drat") & df["budget_gib"].isna()
              & ((df["lam"] - headline_lambda).abs() < 1e-12)]


head = headline_rows(paired)
print(head.T if len(head) else "no headline rows")

# %% [markdown]
# ## Results table (seed-style): memory, accuracy, speed at the headline λ

# %%
rows = []
for size in sizes_in(head):
    r = head[head["size"] == size].iloc[0]
    params = runs[runs["size"] == size]["params"].iloc[0] if len(runs) else float("nan")
    tost = ("equivalent" if r["tost_equivalent"] else "not shown") + \
        f" ($p={num(r['tost_p'], 3)}$, df {num(r.get('tost_df'), 1)})"
    rows.append([size_word(size), f"{num(params / 1e6, 2)}M" if finite(params) else "--",
                 with_ci(r["mem_reduction"], r["mem_reduction_lo"], r["mem_reduction_hi"], 1, pct=True,
                         seeds=r.get("mem_reduction_seeds")),
                 with_ci(r["val_loss_diff"], r["val_loss_diff_lo"], r["val_loss_diff_hi"], 4,
                         seeds=r.get("val_loss_diff_seeds")),
                 with_ci(r["step_time_ratio"] - 1, r["step_time_ratio_lo"] - 1, r["step_time_ratio_hi"] - 1,
                         1, pct=True, seeds=r.get("step_time_ratio_seeds"), shift=-1.0),
                 tost, str(int(r["n_pairs"]))])
write_tex(gen / "results_table.tex", booktabs(
    ["size", "params", r"memory red. (\%)", r"$\Delta$ val loss", r"step time (\%)", "TOST", "seeds"], rows,
    caption_note=f"lambda={headline_lambda:g}, {conf_pct}% bootstrap CIs from {MIN_CI_SEEDS} seeds, "
                 "per-seed values below"))
print(open(gen / "results_table.tex").read())

# %% [markdown]
# ## Baselines of the headline size against `none`

# %%
def run_key(run):
    if run in BASELINE_ORDER:
        return (0, BASELINE_ORDER.index(run), 0.0)
    kind, _, value = run.partition("-")
    return (1 if "lam" in run else 2, 0, float(value.lstrip("lambudget")))


rows = []
s_head = summary[summary["size"] == headline_size] if len(summary) else summary
for run in sorted(set(s_head["run"]) if len(s_head) else [], key=run_key):
    s = s_head[s_head["run"] == run].iloc[0]
    p = paired[(paired["size"] == headline_size) & (paired["run"] == run)] if len(paired) else paired
    p = p.iloc[0] if len(p) else None
    rows.append([tex_escape(run),
                 with_ci(s["memory_bytes"] / 2**20, s["memory_bytes_lo"] / 2**20,
                         s["memory_bytes_hi"] / 2**20, 2),
                 "--" if p is None else with_ci(p["mem_reduction"], p["mem_reduction_lo"],
                                                p["mem_reduction_hi"], 1, pct=True),
                 "--" if p is None else with_ci(p["step_time_ratio"], p["step_time_ratio_lo"],
                                                p["step_time_ratio_hi"], 3,
                                                seeds=p.get("step_time_ratio_seeds")),
                 with_ci(s["val_loss"], s["val_loss_lo"], s["val_loss_hi"], 4, seeds=s.get("val_loss_seeds")),
                 str(int(s["n_seeds"]))])
write_tex(gen / "baselines_table.tex", booktabs(
    ["run", "activations (MiB)", r"red. vs none (\%)", "time / none", "val loss", "seeds"], rows,
    caption_note=f"size {headline_size}"))
print(open(gen / "baselines_table.tex").read())

# %% [markdown]
# ## Profiled plans of the headline size

# %%
rows = []
f_head = (frontier[(frontier["source"] == "profile") & (frontier["size"] == headline_size)]
          if len(frontier) else frontier)
gpu = len(f_head) and (f_head["memory_metric"] == "peak_memory_bytes").any()
div, unit = (2**30, "peak (GiB)") if gpu else (2**20, "activations (MiB)")
for _, r in (f_head.sort_values(["kind", "lam", "budget_gib"]) if len(f_head) else f_head).iterrows():
    rows.append([tex_escape(r["point"]), num(r["memory_bytes"] / div, 3),
                 with_ci(r["step_ms"], r["step_ms_lo"], r["step_ms_hi"], 2),
                 r"\checkmark" if r["pareto"] else ""])
write_tex(gen / "frontier_table.tex", booktabs(["plan", unit, "step time (ms)", "Pareto"], rows, align="lrrc",
                                               caption_note=f"size {headline_size}"))

# %% [markdown]
# ## One-process check: `drat bench frontier` (every strategy side by side, ratios against `none`)

# %%
bench = collapse_processes(read_csv(Path(tables_dir) / "bench.csv"))  # median over processes
b_head = bench[bench["size"] == headline_size] if len(bench) else bench
rows = []
if len(b_head) and (b_head["name"] == "none").any():
    ref = b_head[b_head["name"] == "none"].iloc[0]
    gpu_b = finite(ref.get("peak_gib"))
    for _, r in b_head.iterrows():
        mem = r["peak_gib"] if gpu_b else r["saved_activation_bytes"] / 2**20
        mem_ref = ref["peak_gib"] if gpu_b else ref["saved_activation_bytes"] / 2**20
        rows.append([tex_escape(r["name"]), tex_escape(r["mode"]), num(mem, 3), num(mem / mem_ref, 3),
                     num(r["step_ms"], 2), num(r["step_ms"] / ref["step_ms"], 3)])
    mem_unit = "peak (GiB)" if gpu_b else "activations (MiB)"
else:
    mem_unit = "memory"
write_tex(gen / "bench_table.tex", booktabs(["row", "mode", mem_unit, "mem / none", "step (ms)",
                                             "time / none"],
                                            rows, align="llrrrr", caption_note=f"size {headline_size}"))

# %% [markdown]
# ## The claims of DRAT's first release, checked against the one-process bench
#
# Per size: the claimed reduction at the claimed λ, what the bench's DRAT row at that λ reached,
# and the fastest DRAT plan (eager or compiled, λ or budget) that reaches the claim, with its step
# time against `none`. Memory is the bench's peak on the GPU (saved activations on the CPU).

# %%
claims = cfg.get("claims") or {}
cl_lam = float(claims.get("lambda", headline_lambda))
rows = []
for size, want in (claims.get("reduction") or {}).items():
    b = bench[bench["size"] == size] if len(bench) else bench
    if not len(b) or not (b["name"] == "none").any():
        rows.append([size_word(size), num(-want, 0, pct=True), "--", "not measured", "--"])
        continue
    ref = b[b["name"] == "none"].iloc[0]
    col = "peak_gib" if finite(ref.get("peak_gib")) else "saved_activation_bytes"
    red = 1 - b[col] / ref[col]
    slow = b["step_ms"] / ref["step_ms"] - 1
    at = b["name"] == f"drat-lam{cl_lam:g}"
    got = (f"{num(-red[at].iloc[0], 1, pct=True)} / {num(slow[at].iloc[0], 1, pct=True)}"
           if at.any() else "not benched")
    ok = bool(at.any() and red[at].iloc[0] >= want - 5e-4)
    reach = b["name"].str.startswith("drat") & (red >= want - 5e-4)
    if reach.any():
        i = slow[reach].idxmin()
        cheapest = (f"\\texttt{{{tex_escape(b.loc[i, 'name'])}}}: "
                    f"{num(-red[i], 1, pct=True)} / {num(slow[i], 1, pct=True)}")
    else:
        cheapest = "none"
    rows.append([size_word(size), num(-want, 0, pct=True), got, "yes" if ok else "no", cheapest])
write_tex(gen / "claims_table.tex", booktabs(
    ["size", "claim", rf"at $\lambda={cl_lam:g}$", "holds", "fastest DRAT plan reaching it"], rows,
    align="lrrcl", caption_note="one-process bench; memory / step time against none, in percent"))
n_claims, n_claims_ok = len(rows), sum(r[3] == "yes" for r in rows)
print(open(gen / "claims_table.tex").read())

# %% [markdown]
# ## Planning: the gates against the ILP, local search and greedy (`drat bench planners`)
#
# Per cost table and arm count: over the λ and budget targets, each planner's worst objective
# above the ILP's (points of a step) and its median planning time. Absent when not run.

# %%
pl_rows = json.loads(Path(planners_json).read_text())["rows"] if Path(planners_json).is_file() else []
PL = ("ilp", "drat", "local", "greedy")
rows = []
groups = {}
for r in pl_rows:
    groups.setdefault((r["table"], r["n_sites"], r["arms"]), []).append(r)
for (table, n_sites, arms), rs in groups.items():
    cells = []
    for k in PL:
        mine = [r for r in rs if r["planner"] == k and r["gap_pts"] is not None]
        if not mine:
            cells.append("--")
            continue
        worst = max(r["gap_pts"] for r in mine)
        t = sorted(r["plan_s"] for r in mine)[len(mine) // 2]
        cells.append(f"{'0' if abs(worst) < 5e-4 else num(worst, 2)} / {num(t, 2)}")
    rows.append([tex_escape(table), str(n_sites), str(arms), *cells])
write_tex(gen / "planners_table.tex", booktabs(
    ["cost table", "sites", "arms", *PL], rows, align="lrr" + "r" * len(PL),
    caption_note="worst gap to the ILP (points of a step) / median planning time (s)"))
pl_drat = [r for r in pl_rows if r["planner"] == "drat" and r["gap_pts"] is not None]
pl_local = [r for r in pl_rows if r["planner"] == "local" and r["gap_pts"] is not None]
pl_ilp = [r for r in pl_rows if r["planner"] == "ilp" and r["objective"] is not None]
planner_macros = {
    "PlannerCases": str(len(pl_drat)),
    "PlannerDratMatches": str(sum(abs(r["gap_pts"]) < 5e-4 for r in pl_drat)),
    "PlannerLocalMatches": str(sum(abs(r["gap_pts"]) < 5e-4 for r in pl_local)),
    "PlannerDratWorst": num(max((r["gap_pts"] for r in pl_drat), default=float("nan")), 2),
    "PlannerLocalWorst": num(max((r["gap_pts"] for r in pl_local), default=float("nan")), 2),
    "PlannerIlpSlowest": num(max((r["plan_s"] for r in pl_ilp), default=float("nan")), 1),
    "PlannerMaxSites": str(max((r["n_sites"] for r in pl_rows), default=0)),
}
print(open(gen / "planners_table.tex").read(), planner_macros)

# %% [markdown]
# ## Where DRAT beats `full` and the compiler's budgets, and where it does not
#
# Plain sentences per benched size, decided from the same one-process rows: against `full`, the
# fastest eager DRAT point that keeps no more memory than `full`; against each compile budget, a
# DRAT point (compiled or eager) with memory *and* step time no higher (domination). The sentences
# are written by `verdicts.bench_verdicts` (tests/analysis/test_verdicts.py holds them to the rows).

# %%
lines = ["% generated by the notebooks: do not edit"]
benched = sorted(bench["size"].unique()) if len(bench) else []
for size in benched:
    v = bench_verdicts(bench[bench["size"] == size].reset_index(drop=True))
    if v:
        lines.append(f"\\paragraph{{{tex_escape(size)}.}} " + " ".join(v))
# sizes without a bench: the same verdicts from their profiled plans (one process per plan)
prof = frontier[(frontier["source"] == "profile")] if len(frontier) else frontier
for size in (sorted(set(prof["size"]) - set(benched)) if len(prof) else []):
    d = prof[prof["size"] == size]
    on_gpu_p = (d["memory_metric"] == "peak_memory_bytes").all()
    rows_p = d.assign(name=d["point"], mode="eager",
                      peak_gib=d["memory_bytes"] / 2**30 if on_gpu_p else float("nan"),
                      saved_activation_bytes=d["memory_bytes"])
    v = bench_verdicts(rows_p.reset_index(drop=True), source="profile")
    if v:
        lines.append(f"\\paragraph{{{tex_escape(size)} (profiled plans, one process each).}} " + " ".join(v))
if len(lines) == 1:
    lines.append("No one-process benches in these results.")
write_tex(gen / "bench_verdicts.tex", "\n".join(lines) + "\n")
print(open(gen / "bench_verdicts.tex").read())

# %% [markdown]
# ## Setup table

# %%
from drat.model import config_for

rows = []
for size, s in cfg.get("sizes", {}).items():
    m = s.get("model", {})
    mc = config_for(size, n_layer=m.get("layers"), n_embd=m.get("hidden"), n_head=m.get("heads"))
    t = {**cfg.get("train", {}), **s.get("train", {})}
    params = runs[runs["size"] == size]["params"] if len(runs) else []
    rows.append([size_word(size), str(mc.n_layer), str(mc.n_embd), str(mc.n_head),
                 f"{num(params.iloc[0] / 1e6, 2)}M" if len(params) else "--",
                 str(t.get("steps", "--")), f"{t.get('batch_size', '--')}$\\times${t.get('seq_len', '--')}"
                 + (f"$\\times${t['grad_accum']}" if t.get("grad_accum", 1) != 1 else ""),
                 ", ".join(f"{x:g}" for x in s["lambdas"]), str(len(s["seeds"]))])
write_tex(gen / "setup_table.tex", booktabs(
    ["size", "layers", "hidden", "heads", "params", "steps", "batch", r"$\lambda$ grid", "seeds"], rows,
    caption_note="from the pipeline config"))

# %% [markdown]
# ## Exactness on the device
#
# `exactness_text.tex`: the paper's paragraph on exactness, written from what was measured
# (`drat bench exactness` per kernel mode, the repeated `none` run, the store-all pairs), so that
# a mode not run yet is said to be missing rather than described.

# %%
# Reproducibility on the device. Gated and ungated training are bitwise equal on the CPU (float32
# tests); on a GPU, kernels that accumulate in a nondeterministic order make any two runs drift.
# Measured here: |final loss of store-all DRAT (λ=0) − none| at equal seed, against the seed spread.
gaps, spreads = [], []
if len(runs):
    fin = runs.dropna(subset=["final_val_loss"])
    for _, g in fin.groupby(["size", "seed"]):
        a, b = g[g["run"] == "none"], g[g["run"] == "drat-lam0"]
        if len(a) and len(b):
            gaps.append(abs(float(a["final_val_loss"].iloc[0]) - float(b["final_val_loss"].iloc[0])))
    for _, g in fin[fin["run"] == "none"].groupby("size"):
        if len(g) > 1:
            spreads.append(float(g["final_val_loss"].max() - g["final_val_loss"].min()))
exact = read_csv(Path(tables_dir) / "exactness.csv")
reps = read_csv(Path(tables_dir) / "repeats.csv")


def sci(x) -> str:
    """3.05e-05 -> $3.1\\times 10^{-5}$ (0 -> 0)."""
    if not finite(x):
        return "--"
    if float(x) == 0:
        return "0"
    m, e = f"{float(x):.1e}".split("e")
    return f"${m}\\times 10^{{{int(e)}}}$"


def exactness_sentences(rows, mode: str) -> list[str]:
    """What one mode's bench says: recomputing strategies against `none`, and `none` against itself."""
    strat = rows[~rows["name"].isin(["none", "none-repeat"])]
    rep = rows[rows["name"] == "none-repeat"]
    n = len(strat)
    n_loss, n_grad = int(strat["loss_equal"].astype(bool).sum()), int(strat["grads_equal"].astype(bool).sum())
    stores_all = " (which stores every site at these costs)"
    names = ", ".join(f"\\texttt{{{tex_escape(x)}}}"
                      + (stores_all if x.startswith("drat") and finite(k) and int(k) == 0 else "")
                      for x, k in zip(strat["name"], strat["n_recomputed"]))
    kernels = ("with PyTorch's deterministic algorithms (strict)" if mode == "deterministic"
               else "with the kernels training uses")
    dev, size = tex_escape(str(rows["device"].iloc[0])), size_word(str(rows["size"].iloc[0])).lower()
    out = [f"On the {dev}, {kernels}, one training batch of the {size} model through {names} gives a loss "
           f"bitwise equal to \\texttt{{none}}'s in {n_loss} of {n} cases and gradients bitwise equal in "
           f"{n_grad} of {n}"]
    differ = strat[~strat["grads_equal"].astype(bool)]
    if len(differ):
        out[-1] += (f"; where they differ, in up to {int(differ['n_params_differing'].max())} parameter "
                    f"tensors by at most {sci(differ['max_abs_grad_diff'].max())}")
    out[-1] += "."
    if len(rep):
        r = rep.iloc[0]
        if bool(r["grads_equal"]) and bool(r["loss_equal"]):
            out.append("\\texttt{none} run twice on that batch reproduces itself bit for bit.")
        else:
            same = (len(differ) and float(differ["max_abs_grad_diff"].max())
                    <= float(r["max_abs_grad_diff"]) * (1 + 1e-9))
            out.append(f"\\texttt{{none}} run twice on that batch differs from itself in "
                       f"{int(r['n_params_differing'])} gradient tensors by up to "
                       f"{sci(r['max_abs_grad_diff'])}"
                       + (": recomputation's differences are no larger than the kernels' own run-to-run "
                          "nondeterminism." if same else "."))
    return out


text = ["\\paragraph{Exactness on the device.} Gated and ungated steps are bitwise equal in float32 on "
        "the CPU (the test suite checks losses and gradients for every strategy)."]
if len(exact):
    for mode in ("plain", "deterministic"):
        rows = exact[exact["mode"] == mode]
        if len(rows):
            text += exactness_sentences(rows, mode)
    if not (exact["mode"] == "deterministic").any():
        text.append("The same comparison with deterministic kernels is not measured yet.")
else:
    text.append("The same comparison on the GPU is not measured yet.")
if len(reps):
    r = reps.iloc[0]
    first = r["first_differing_step"]
    text.append(f"A \\texttt{{none}} training run repeated with its seed ends {num(r['abs_gap'], 4)} nats "
                f"from the original" + (f" (their logged training losses first differ at step {int(first)})"
                                        if finite(first) else " (every logged loss bitwise equal)") + ".")
if gaps:
    text.append(f"Store-all DRAT ($\\lambda=0$) and \\texttt{{none}} of the same seed end at most "
                f"{num(max(gaps), 4)} nats apart ({len(gaps)} seed pairs), while \\texttt{{none}} spreads "
                f"over {num(max(spreads), 4) if spreads else '--'} nats across seeds. The loss differences "
                "in Table~\\ref{tab:results} are therefore compared with the seed noise (TOST), "
                "not with zero.")
write_tex(gen / "exactness_text.tex", "% generated by the notebooks: do not edit\n" + "\n".join(text) + "\n")
print(open(gen / "exactness_text.tex").read())

# %% [markdown]
# ## Macros

# %%
M = Macros()
M.add("ClaimsLambda", f"{cl_lam:g}", "the claims table")
M.add("NumClaims", str(n_claims))
M.add("NumClaimsReproduced", str(n_claims_ok))
M.add("PlannerCases", planner_macros["PlannerCases"], "planners: targets x tables the gates planned")
M.add("PlannerDratMatches", planner_macros["PlannerDratMatches"])
M.add("PlannerLocalMatches", planner_macros["PlannerLocalMatches"])
M.add("PlannerDratWorst", planner_macros["PlannerDratWorst"], "points of a step above the ILP")
M.add("PlannerLocalWorst", planner_macros["PlannerLocalWorst"])
M.add("PlannerIlpSlowest", planner_macros["PlannerIlpSlowest"], "seconds")
M.add("PlannerMaxSites", planner_macros["PlannerMaxSites"])
M.add("ScaleName", tex_escape(cfg.get("scale", "?")), "pipeline config")
M.add("HeadSize", size_word(headline_size))
M.add("HeadLambda", f"{headline_lambda:g}")
M.add("ConfidencePct", conf_pct)
M.add("TostAlpha", f"{P['alpha']:g}")
M.add("TostMargin", f"{P['tost_margin']:g}", "nats of final validation loss")
M.add("NumResamples", str(P["n_resamples"]))
M.add("NumRuns", str(stats_json["n_runs"]))
M.add("NumExpectedRuns", str(missing["expected_runs"]))
M.add("NumMissing", str(missing["n_missing"]))
M.add("NumSizes", str(len(cfg.get("sizes", {}))))
M.add("CorpusName", tex_escape(cfg.get("corpus", {}).get("spec", "?")))
M.add("VocabSize", str(cfg.get("tokenizer", {}).get("vocab_size", "?")))
M.add("DataDevice", tex_escape(", ".join(prov.get("device", [])) or "?"))
M.add("DataTorch", tex_escape(", ".join(prov.get("torch_version", [])) or "?"))
M.add("DataCommit", tex_escape(", ".join(c[:10] for c in prov.get("git_commit", [])) or "?"))
hs = head[head["size"] == headline_size] if len(head) else head
if len(hs):
    r = hs.iloc[0]
    M.add("HeadMemRed", num(r["mem_reduction"], 1, pct=True), "% less activation memory than none")
    M.add("HeadMemRedLo", num(r["mem_reduction_lo"], 1, pct=True))
    M.add("HeadMemRedHi", num(r["mem_reduction_hi"], 1, pct=True))
    M.add("HeadTimeChange", num(r["step_time_ratio"] - 1, 1, pct=True), "% step time vs none")
    M.add("HeadTimeChangeLo", num(r["step_time_ratio_lo"] - 1, 1, pct=True))
    M.add("HeadTimeChangeHi", num(r["step_time_ratio_hi"] - 1, 1, pct=True))
    M.add("HeadLossDiff", num(r["val_loss_diff"], 4))
    M.add("HeadTostLo", num(r["tost_ci_lo"], 4), "(1-2 alpha) CI of the loss difference")
    M.add("HeadTostHi", num(r["tost_ci_hi"], 4))
    M.add("HeadTostP", num(r["tost_p"], 3))
    M.add("HeadTostVerdict", "equivalent" if r["tost_equivalent"] else "not shown to be equivalent")
    M.add("HeadTostMethod", tex_escape(r["tost_method"]))
    M.add("HeadTostDf", num(r.get("tost_df"), 1), "degrees of freedom of the TOST t statistic")
    M.add("HeadMemRedCI", ci_phrase(conf_pct, r, "mem_reduction"), "the interval, or the per-seed values")
    M.add("HeadTimeChangeCI", ci_phrase(conf_pct, r, "step_time_ratio", shift=-1.0))
    M.add("HeadSeeds", str(int(r["n_pairs"])))
    # a headline price at which the gates store every site deserves the reason next to its 0%
    stores_all = finite(r["mem_reduction"]) and abs(float(r["mem_reduction"])) < 5e-4
    note = ("At this price the gates store every site: on the measured costs of the run device no "
            f"recomputation is worth its time at $\\lambda={headline_lambda:g}$, so the step-time change "
            "is what the gates themselves cost on the host. ")
    M.add("HeadPlanNote", note if stores_all else "", "only when the headline plan stores everything")
else:
    M.add("HeadPlanNote", "")
    for name in ["HeadMemRed", "HeadMemRedLo", "HeadMemRedHi", "HeadTimeChange", "HeadTimeChangeLo",
                 "HeadTimeChangeHi", "HeadLossDiff", "HeadTostLo", "HeadTostHi", "HeadTostP",
                 "HeadTostMethod", "HeadSeeds", "HeadTostDf"]:
        M.add(name, "--", "no headline run")
    for name in ("HeadMemRedCI", "HeadTimeChangeCI"):
        M.add(name, "", "no headline run")
    M.add("HeadTostVerdict", "not tested")
# the strongest baseline memory saver (full AC) at the headline size: from the paired statistics
# of trained runs, or, where baselines are profiled rather than trained (the paper grid: they are
# exact, so they would train to the loss of none), from its profiled plan against none's
full = paired[(paired["size"] == headline_size) & (paired["run"] == "full")] if len(paired) else paired
fp = (frontier[(frontier["source"] == "profile") & (frontier["size"] == headline_size)].set_index("point")
      if len(frontier) else None)
if len(full):
    M.add("FullMemRed", num(full.iloc[0]["mem_reduction"], 1, pct=True))
    M.add("FullTimeChange", num(full.iloc[0]["step_time_ratio"] - 1, 1, pct=True))
    M.add("FullSource", "trained runs, Table~\\ref{tab:baselines}")
elif fp is not None and {"full", "none"} <= set(fp.index):
    M.add("FullMemRed", num(1 - fp.loc["full", "memory_bytes"] / fp.loc["none", "memory_bytes"], 1, pct=True))
    M.add("FullTimeChange", num(fp.loc["full", "step_ms"] / fp.loc["none", "step_ms"] - 1, 1, pct=True))
    M.add("FullSource", "profiled plans, Table~\\ref{tab:frontier}")
else:
    M.add("FullMemRed", "--")
    M.add("FullTimeChange", "--")
    M.add("FullSource", "not measured")
M.add("StoreAllLossGapMax", num(max(gaps), 4) if gaps else "--", "nats, |drat-lam0 - none| at equal seed")
M.add("StoreAllPairs", str(len(gaps)))
M.add("NoneSeedSpreadMax", num(max(spreads), 4) if spreads else "--", "nats, max-min of none over seeds")
on_gpu = len(runs) and not runs["device"].astype(str).str.lower().str.startswith("cpu").all()
M.add("RunDevice", "GPU" if on_gpu else "CPU")
# Store-all DRAT (λ=0) recomputes nothing: its step-time change against none, paired by seed, is
# what the gate machinery itself costs in training, to be read against the headline's
sa = paired[(paired["size"] == headline_size) & (paired["run"] == "drat-lam0")] if len(paired) else paired
if len(sa):
    r = sa.iloc[0]
    M.add("StoreAllTimeChange", num(r["step_time_ratio"] - 1, 1, pct=True), "% step time, drat-lam0 vs none")
    M.add("StoreAllTimeChangeLo", num(r["step_time_ratio_lo"] - 1, 1, pct=True))
    M.add("StoreAllTimeChangeHi", num(r["step_time_ratio_hi"] - 1, 1, pct=True))
    M.add("StoreAllTimeChangeCI", ci_phrase(conf_pct, r, "step_time_ratio", shift=-1.0))
else:
    for name in ("StoreAllTimeChange", "StoreAllTimeChangeLo", "StoreAllTimeChangeHi"):
        M.add(name, "--", "no store-all run")
    M.add("StoreAllTimeChangeCI", "")
# DRAT's fitted plan against the oracle at the headline λ (profiled plans of the headline size)
fh = f_head.set_index("point") if len(f_head) else None
key_d, key_o = f"drat-lam{headline_lambda:g}", f"oracle-lam{headline_lambda:g}"
if fh is not None and key_d in fh.index and key_o in fh.index:
    M.add("HeadDratActMiB", num(fh.loc[key_d, "memory_bytes"] / div, 3))
    M.add("HeadOracleActMiB", num(fh.loc[key_o, "memory_bytes"] / div, 3))
else:
    M.add("HeadDratActMiB", "--")
    M.add("HeadOracleActMiB", "--")
M.add("ProfileMemUnit", "peak GiB" if gpu else "MiB of saved activations")
# Budget mode leads: the tightest budget profiled at the headline size, DRAT's plan and the ILP's
# on the same costs, against `none` (each profiled in its own process)
bud = sorted((p for p in (fh.index if fh is not None else []) if str(p).startswith("drat-budget")),
             key=lambda p: float(str(p)[len("drat-budget"):]))
if bud and "none" in fh.index:
    p, o = bud[0], "oracle-" + bud[0][len("drat-"):]
    ref_mem, ref_ms = fh.loc["none", "memory_bytes"], fh.loc["none", "step_ms"]
    M.add("BudgetLeadGiB", f"{float(p[len('drat-budget'):]):g}", "the tightest profiled budget")
    M.add("BudgetLeadMem", num(fh.loc[p, "memory_bytes"] / div, 3), "in ProfileMemUnit")
    M.add("BudgetLeadMemRed", num(1 - fh.loc[p, "memory_bytes"] / ref_mem, 1, pct=True))
    M.add("BudgetLeadTimeChange", num(fh.loc[p, "step_ms"] / ref_ms - 1, 1, pct=True))
    M.add("BudgetLeadOracleTimeChange",
          num(fh.loc[o, "step_ms"] / ref_ms - 1, 1, pct=True) if o in fh.index else "--")
    if "full" in fh.index:
        M.add("BudgetLeadFullMemRed", num(1 - fh.loc["full", "memory_bytes"] / ref_mem, 1, pct=True))
        M.add("BudgetLeadFullTimeChange", num(fh.loc["full", "step_ms"] / ref_ms - 1, 1, pct=True))
    else:
        M.add("BudgetLeadFullMemRed", "--")
        M.add("BudgetLeadFullTimeChange", "--")
else:
    for name in ("BudgetLeadGiB", "BudgetLeadMem", "BudgetLeadMemRed", "BudgetLeadTimeChange",
                 "BudgetLeadOracleTimeChange", "BudgetLeadFullMemRed", "BudgetLeadFullTimeChange"):
        M.add(name, "--", "no budget point profiled")
# DRAT's fitted plan against the oracle's, site by site, at every λ and budget profiled for both
# (they plan on one cost table per size), and how far one plan's median step time moves between
# the separate processes that profiled it: the resolution of any time comparison between points
psites = read_csv(Path(tables_dir) / "profile_sites.csv")
prof = read_csv(Path(tables_dir) / "profile.csv")
n_pairs = n_same = 0
spread_pct = []
if len(psites) and len(prof):
    for (size, point), g in psites.groupby(["size", "point"]):
        if not str(point).startswith("drat-"):
            continue
        twin = "oracle-" + str(point)[len("drat-"):]
        o = psites[(psites["size"] == size) & (psites["point"] == twin)]
        if not len(o):
            continue
        n_pairs += 1
        if list(g["decision"]) == list(o["decision"]):
            n_same += 1
            t = prof[(prof["size"] == size) & prof["point"].isin([point, twin])]["step_ms"]
            if len(t) == 2:
                spread_pct.append(100 * (t.max() / t.min() - 1))
if n_pairs == 0:
    agree = "No $\\lambda$ or budget was profiled for both DRAT and the oracle."
elif n_same == n_pairs:
    agree = (f"Wherever a $\\lambda$ or budget was profiled for both, DRAT's fitted plan is the oracle's, "
             f"site by site ({n_same} of {n_pairs}): both plan on one measured cost table per size, and the "
             "gates find the ILP optimum on it.")
else:
    agree = (f"DRAT's fitted plan is the oracle's, site by site, in {n_same} of the {n_pairs} cases "
             "profiled for both (one measured cost table per size); in the others the gates stop short "
             "of the ILP optimum.")
if spread_pct:
    agree += (f" The same plan, executed through DRAT's gates and as the oracle's fixed plan in two "
              f"processes, differed in median step time by up to {num(max(spread_pct), 1)}\\%, so profiled "
              "time differences below that are not resolved (the one-process benchmark measures side "
              "by side).")
M.add("OracleAgreementText", agree, "generated sentences: DRAT's plans against the oracle's")
M.add("NumOraclePairs", str(n_pairs), "profiled (size, λ or budget) with both a DRAT and an oracle plan")
M.add("NumOracleSame", str(n_same), "of them, DRAT's plan equals the oracle's at every site")
M.add("SamePlanTimeSpreadMax", num(max(spread_pct), 1) if spread_pct else "--",
      "% max/min - 1 of the median step time of one plan profiled in two processes")
# How far one bench row's own steps spread (p10 to p90, % of its median), for plans that recompute
# and for plans that store everything: the resolution of a time comparison between two rows
if len(bench) and "step_spread_pct" in bench:
    sp = bench[bench["step_spread_pct"].map(finite)]
    rec = sp[(sp["n_recomputed"].fillna(0) > 0) | sp["name"].isin(["full", "selective", "sac"])]
    keep = sp[((sp["n_recomputed"].fillna(0) == 0) & sp["name"].str.startswith("drat-"))
              | (sp["name"] == "none")]
    if len(rec) and len(keep):
        r, k = rec.loc[rec["step_spread_pct"].idxmax()], keep.loc[keep["step_spread_pct"].idxmax()]
        paired_rows = "paired_vs_oracle" in bench and bench["paired_vs_oracle"].map(finite).any()
        M.add("BenchSpreadText",
              f"Within one bench row, the steps of a plan that recomputes spread by up to "
              f"{num(r['step_spread_pct'], 0)}\\% of the row's median (p10 to p90; "
              f"\\texttt{{{tex_escape(r['name'])}}}, {tex_escape(r['size'])}), those of plans that recompute "
              f"nothing by at most {num(k['step_spread_pct'], 0)}\\%. A difference between two rows' medians "
              "smaller than that spread is not resolved"
              + (": DRAT's budget plans are held to the oracle's by alternating their steps in one loop, and "
                 if paired_rows else "; ")
              + "the verdicts of Section~\\ref{sec:results} name the spread of the rows they compare where "
              "it is wide.",
              "generated sentence: step-time spread within bench rows")
if "BenchSpreadText" not in M.items:
    M.add("BenchSpreadText", "", "no bench rows with per-step times")
# Budget-mode training, judged on every step: the steady state, and the largest and the 99th
# percentile of the step peaks against each budget (stats/budget.csv)
budget = read_csv(Path(stats_dir) / "budget.csv")
if len(budget) and "max_step_gib" in budget:
    n_b, n_groups = len(budget), len(budget.groupby(["size", "budget_gib"]))
    over = budget["max_step_gib"] / budget["budget_gib"] - 1
    worst = budget.loc[over.idxmax()]
    gpu_b = (budget["metric"] == "peak_memory_allocated").all()
    per_step = gpu_b and budget["n_steps"].map(finite).all()  # else one peak per logged interval
    plural = ("s" if n_b != 1 else "", "s" if n_groups != 1 else "")
    text = (f"Over {n_b} budget run{plural[0]} ({n_groups} budget{plural[1]} "
            f"across sizes), the steady-state peak is within its budget in {int(budget['within'].sum())}")
    if per_step:
        text += (f", the 99th percentile of the step peaks in {int(budget['within_p99'].sum())} and the "
                 f"largest step peak in {int(budget['within_max'].sum())}; the largest step peak is ")
    elif gpu_b:
        text += (", and the largest peak of any logged interval of steps in "
                 f"{int(budget['within_max'].sum())}; the largest is ")
    if gpu_b:
        text += (f"{num(worst['max_step_gib'], 3)} GiB against a budget of {num(worst['budget_gib'], 3)} "
                 f"GiB ({num(over.max(), 1, pct=True)}\\%, {tex_escape(worst['size'])}, "
                 f"seed {int(worst['seed'])})")
    else:
        text += " (on the CPU the measure is the final plan's accounted bytes)"
    M.add("BudgetStepsText", text + ".", "generated sentence: budget runs against their budgets")
else:
    M.add("BudgetStepsText", "", "no budget runs")
# The longer runs (`long_run`): how far the DRAT plan's validation loss strays from `none`'s
long_runs = read_csv(Path(tables_dir) / "long_runs.csv")
long_curves = read_csv(Path(tables_dir) / "long_curves.csv")
def tokens_phrase(n):
    return f"{num(n / 1e6, 1)}M" if n >= 1e6 else f"{num(n / 1e3, 1)}k"


lr_ok = len(long_runs) and "none" in set(long_runs["run"]) and len(long_runs) > 1
M.add("HasLongRun", "1" if lr_ok else "0", "1: the long runs are among the results")
if lr_ok:
    lr = long_runs.set_index("run")
    ev = long_curves[long_curves["kind"] == "eval"]
    ev = ev.pivot_table(index="step", columns="run", values="val_loss")
    others = [r for r in lr.index if r != "none"]
    parts = []
    for run in others:
        d = (ev[run] - ev["none"]).dropna().abs() if run in ev else None
        gap = ("" if d is None or not len(d) else f" (equal at all {len(d)} evaluations)" if d.max() == 0
               else f" (largest difference over {len(d)} evaluations: {num(d.max(), 4)} nats)")
        parts.append(f"\\texttt{{{tex_escape(run)}}} {num(lr.loc[run, 'final_val_loss'], 4)}{gap}")
    M.add("LongRunText",
          f"Trained for {tokens_phrase(lr.loc['none', 'tokens_seen'])} tokens "
          f"({int(lr.loc['none', 'step'])} steps, {tex_escape(lr['size'].iloc[0])}, seed "
          f"{int(lr['seed'].iloc[0])}), \\texttt{{none}} ends at a validation loss of "
          f"{num(lr.loc['none', 'final_val_loss'], 4)} and " + "; ".join(parts) + ".",
          "generated sentence: the long runs")
else:
    M.add("LongRunText", "", "no long runs among the results")
# The extra benches (`extra_benches`): the rows of the docs, set in LaTeX
extra = json.loads((Path(tables_dir) / "extra.json").read_text())
write_tex(gen / "extra_tables.tex",
          "% generated by notebooks/tables.py: do not edit\n" + extra_sections(extra))
M.add("HasExtra", "1" if extra else "0", "1: extra benches among the results")
adapt_text = adapt_sentence(extra)
M.add("HasAdapt", "1" if adapt_text else "0", "1: a shape-change bench (drat bench adapt) among the extras")
M.add("AdaptText", adapt_text, "generated sentence: the online gates and the re-solved ILP at a shape change")
n_equiv = int(paired["tost_equivalent"].sum()) if len(paired) else 0
M.add("NumEquivalent", str(n_equiv), "run groups whose loss is TOST-equivalent to none")
M.add("NumCompared", str(len(paired)))
write_tex(gen / "macros.tex", M.render())
print(M.render())
