"""Statistics of the paper: bootstrap CIs over seeds, TOST equivalence, the frontier with CIs.

Library (numpy/scipy only):

    bootstrap_ci(values)                      CI of a statistic of one sample (seeds, timed steps)
    paired_bootstrap_ci(a, b, stat)           CI of a two-sample statistic, resampling seed pairs
    ratio_ci(a, b, paired=True)               per-seed ratios a_i/b_i (paired) or mean(a)/mean(b)
    tost(a, b, margin)                        two one-sided t-tests: is mean(a) − mean(b) within ±margin?
    pareto_mask(x, y)                         which points no other point beats on both axes
    pareto_beyond_spread(x, lo, hi, y)        the same, where the step-time spread supports the mark
    seed_ci(values)                           bootstrap_ci over seeds, only from MIN_CI_SEEDS seeds on

Pipeline step (`python -m drat.analysis.stats --tables DIR --out DIR ...`, needs pandas): reads the tidy
CSVs of `drat.analysis.aggregate` and writes summary.csv, paired.csv, frontier.csv, budget.csv,
curves_ci.csv and stats.json (every number the notebooks plot or typeset).

Conventions. Confidence intervals are two-sided percentile/BCa bootstrap intervals from
`scipy.stats.bootstrap` (BCa from 10 observations on, percentile below: BCa's jackknife is
unstable with 2-3 seeds). A sample whose values are all equal has the degenerate interval
[v, v] (on the CPU the gated and ungated losses are bitwise equal, so their difference is
exactly 0 for every seed). One observation gives the value with a NaN interval.

An interval over seeds is drawn only from `MIN_CI_SEEDS` seeds on (`seed_ci`): with 2 seeds a
percentile bootstrap interval is the [min, max] of the two values and covers the mean about
half the time (about two thirds with 3), so below 5 the value comes with a NaN interval and the
per-seed values (`<name>_seeds`) are reported instead.

The equivalence test is Schuirmann's TOST at level α on the difference of final validation loss,
gated minus `none`: paired by seed (same init and batches) when both arms have the same seeds,
Welch otherwise. Equivalence is declared when both one-sided p-values are below α, which is the
same as the (1 − 2α) confidence interval of the difference lying inside (−margin, +margin).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

MIN_CI_SEEDS = 5  # fewer seeds: the per-seed values, no interval (module docstring)
DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 9999
BCA_MIN_N = 10


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval."""

    value: float
    lo: float
    hi: float
    n: int
    method: str

    def to_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _clean(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def _bootstrap(data, statistic, **kw):
    """scipy.stats.bootstrap with a seeded generator (`rng` from scipy 1.15 on, `random_state` before)."""
    gen = np.random.default_rng(kw.pop("seed"))
    key = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"
    return sps.bootstrap(data, statistic, **{key: gen}, **kw)


def _pick_method(n: int, method: str) -> str:
    if method == "auto":
        return "BCa" if n >= BCA_MIN_N else "percentile"
    return method


def bootstrap_ci(values: Sequence[float], statistic: Callable = np.mean,
                 confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 method: str = "auto") -> Estimate:
    """Bootstrap CI of `statistic` (vectorised over `axis`) of one sample; NaNs are dropped."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "empty")
    value = float(statistic(x, axis=-1))
    if n == 1:
        return Estimate(value, math.nan, math.nan, 1, "single")
    if np.all(x == x[0]):
        return Estimate(value, value, value, n, "degenerate")
    m = _pick_method(n, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the fallback below
        res = _bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                         method=m, seed=seed, vectorized=True)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if m == "BCa" and not (math.isfinite(lo) and math.isfinite(hi)):
        return bootstrap_ci(x, statistic, confidence, n_resamples, seed, "percentile")
    return Estimate(value, lo, hi, n, m)


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], statistic: Callable,
                        confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0, method: str = "auto") -> Estimate:
    """CI of statistic(a, b, axis) resampling the pairs (a_i, b_i) together (seeds)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "empty")
    value = float(statistic(a, b, axis=-1))
    if n == 1:
        return Estimate(value, math.nan, math.nan, 1, "single")
    if np.all(a == a[0]) and np.all(b == b[0]):
        return Estimate(value, value, value, n, "degenerate")
    m = _pick_method(n, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _bootstrap((a, b), statistic, paired=True, confidence_level=confidence,
                         n_resamples=n_resamples, method=m, seed=seed, vectorized=True)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if m == "BCa" and not (math.isfinite(lo) and math.isfinite(hi)):
        return paired_bootstrap_ci(a, b, statistic, confidence, n_resamples, seed, "percentile")
    if not (math.isfinite(lo) and math.isfinite(hi)):  # every resample degenerate in one arm
        return Estimate(value, value, value, n, "degenerate")
    return Estimate(value, lo, hi, n, m)


def ratio_ci(a: Sequence[float], b: Sequence[float], paired: bool = True, **kw) -> Estimate:
    """Paired: the mean of the per-seed ratios a_i/b_i. Unpaired: mean(a)/mean(b), both bootstrapped."""
    if paired:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape:
            raise ValueError(f"paired samples need equal lengths, got {a.shape} and {b.shape}")
        with np.errstate(divide="ignore", invalid="ignore"):
            return bootstrap_ci(a / b, **kw)
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "empty")
    value = float(np.mean(a) / np.mean(b))
    if len(a) == 1 or len(b) == 1:
        return Estimate(value, math.nan, math.nan, min(len(a), len(b)), "single")
    if np.all(a == a[0]) and np.all(b == b[0]):
        return Estimate(value, value, value, min(len(a), len(b)), "degenerate")
    m = _pick_method(min(len(a), len(b)), kw.get("method", "auto"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _bootstrap((a, b), lambda x, y, axis: np.mean(x, axis=axis) / np.mean(y, axis=axis),
                         confidence_level=kw.get("confidence", DEFAULT_CONFIDENCE),
                         n_resamples=kw.get("n_resamples", DEFAULT_RESAMPLES), method=m,
                         seed=kw.get("seed", 0), vectorized=True)
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high),
                    min(len(a), len(b)), m)


@dataclass(frozen=True)
class TOSTResult:
    """Two one-sided tests of H0: |mean(a) − mean(b)| ≥ margin."""

    diff: float  # mean(a) − mean(b) (paired: mean of the per-seed differences)
    ci_lo: float  # (1 − 2α) confidence interval of the difference
    ci_hi: float
    margin: float
    alpha: float
    p_lower: float  # H0: diff <= −margin
    p_upper: float  # H0: diff >= +margin
    p: float  # max of the two: the TOST p-value
    equivalent: bool
    n_a: int
    n_b: int
    method: str  # paired | welch | degenerate | insufficient
    df: float = math.nan  # degrees of freedom of the t statistic (n − 1 paired, Welch–Satterthwaite)

    def to_dict(self) -> dict:
        return asdict(self)


def tost(a: Sequence[float], b: Sequence[float], margin: float, alpha: float = 0.05,
         paired: bool = True) -> TOSTResult:
    """Schuirmann's TOST of mean(a) − mean(b) ∈ (−margin, margin); see the module docstring."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired samples need equal lengths, got {a.shape} and {b.shape}")
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        d = a - b
        n = len(d)
        diff = float(np.mean(d)) if n else math.nan
        sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
        se, df = (sd / math.sqrt(n) if n > 1 else math.nan), n - 1
        method = "paired"
        if n > 1 and se > 0:
            p_lower = float(sps.ttest_1samp(d, -margin, alternative="greater").pvalue)
            p_upper = float(sps.ttest_1samp(d, margin, alternative="less").pvalue)
    else:
        a, b = _clean(a), _clean(b)
        n = min(len(a), len(b))
        diff = float(np.mean(a) - np.mean(b)) if n else math.nan
        va = np.var(a, ddof=1) / len(a) if len(a) > 1 else math.nan
        vb = np.var(b, ddof=1) / len(b) if len(b) > 1 else math.nan
        se = float(math.sqrt(va + vb)) if n > 1 else math.nan
        df = math.nan
        if n > 1 and se > 0:
            df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
        method = "welch"
        if n > 1 and se > 0:
            p_lower = float(sps.ttest_ind(a, b - margin, equal_var=False, alternative="greater").pvalue)
            p_upper = float(sps.ttest_ind(a, b + margin, equal_var=False, alternative="less").pvalue)
    n_a, n_b = len(a), len(b)
    if n < 2:
        return TOSTResult(diff, math.nan, math.nan, margin, alpha, math.nan, math.nan, math.nan, False,
                          n_a, n_b, "insufficient", float(df) if n > 1 else math.nan)
    if se == 0:  # no spread at all (e.g. bitwise-equal losses): the difference is known exactly
        inside = abs(diff) < margin
        p_lower = 0.0 if diff > -margin else 1.0
        p_upper = 0.0 if diff < margin else 1.0
        return TOSTResult(diff, diff, diff, margin, alpha, p_lower, p_upper, max(p_lower, p_upper), inside,
                          n_a, n_b, "degenerate", float(df))
    half = float(sps.t.ppf(1 - alpha, df)) * se
    p = max(p_lower, p_upper)
    return TOSTResult(diff, diff - half, diff + half, margin, alpha, p_lower, p_upper, p, bool(p < alpha),
                      n_a, n_b, method, float(df))


def pareto_beyond_spread(x: Sequence[float], x_lo: Sequence[float], x_hi: Sequence[float],
                         y: Sequence[float]) -> np.ndarray:
    """Pareto marks that the measured spread of x supports: point i is marked only when no other
    point j could be as good on both axes, i.e. none has y_j <= y_i and x_lo_j <= x_hi_i. Two
    points of the same plan (equal y, overlapping x intervals) both go unmarked; where an
    interval is unknown the point's own value stands for it."""
    x = np.asarray(x, dtype=float)
    lo = np.where(np.isfinite(np.asarray(x_lo, dtype=float)), np.asarray(x_lo, dtype=float), x)
    hi = np.where(np.isfinite(np.asarray(x_hi, dtype=float)), np.asarray(x_hi, dtype=float), x)
    y = np.asarray(y, dtype=float)
    mask = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        rivals = (y <= y[i]) & (lo <= hi[i]) & np.isfinite(x)
        rivals[i] = False
        mask[i] = not rivals.any()
    return mask


def seed_ci(values: Sequence[float], **kw) -> Estimate:
    """`bootstrap_ci` over seeds, drawn only from MIN_CI_SEEDS seeds on (module docstring); with
    fewer the mean with a NaN interval ("per-seed"), unless every value is equal (degenerate)."""
    x = _clean(values)
    if len(x) >= MIN_CI_SEEDS or len(x) < 2 or np.all(x == x[0]):
        return bootstrap_ci(x, **kw)
    return Estimate(float(np.mean(x)), math.nan, math.nan, len(x), "per-seed")


def per_seed(est: Estimate) -> Estimate:
    """An interval computed over seeds (e.g. `ratio_ci`), withdrawn below MIN_CI_SEEDS seeds."""
    if est.n >= MIN_CI_SEEDS or est.method in ("degenerate", "single", "empty"):
        return est
    return Estimate(est.value, math.nan, math.nan, est.n, "per-seed")


def seeds_str(values: Sequence[float]) -> str:
    """The per-seed values, ';'-joined in seed order (full precision; the tables round them)."""
    return ";".join(repr(float(v)) for v in np.asarray(values, dtype=float))


def pareto_mask(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """True where no other point has x' <= x and y' <= y with one of them strictly smaller."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    mask = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            mask[i] = False
            continue
        dominated = (x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))
        mask[i] = not dominated.any()
    return mask


# ------------------------------------------------------------------------------------ pipeline step
# Memory of a training run: the saved-activation bytes of its final plan (exact byte accounting on
# any device). The CUDA peak in metrics.jsonl is a running maximum over the whole run, which
# includes the early steps when the gates still store everything; the peak of a plan comes from
# profiling it (frontier.csv, source "profile").
MEM_COL = "saved_activation_bytes"


def _ci_cols(e: Estimate, name: str) -> dict:
    return {name: e.value, f"{name}_lo": e.lo, f"{name}_hi": e.hi}


def summarize_runs(runs, kw: dict):
    """One row per (size, run): means over seeds with bootstrap CIs."""
    import pandas as pd

    rows = []
    for (size, run), g in runs.groupby(["size", "run"], sort=True):
        first = g.iloc[0]
        row = {"size": size, "run": run, "strategy": first["strategy"], "lam": first["lam"],
               "budget_gib": first["budget_gib"], "n_seeds": len(g), "memory_metric": MEM_COL}
        for col, name in [("final_val_loss", "val_loss"), (MEM_COL, "memory_bytes"),
                          ("step_ms", "step_ms"), ("tokens_per_s", "tokens_per_s"),
                          ("peak_memory_bytes", "peak_memory_bytes")]:
            if col not in g:
                continue
            g = g.sort_values("seed") if "seed" in g else g
            row.update(_ci_cols(seed_ci(g[col].to_numpy(float), **kw), name))
            row[f"{name}_seeds"] = seeds_str(g[col].to_numpy(float))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_vs_none(runs, margin: float, alpha: float, kw: dict):
    """Every run group against `none` of the same size, paired by seed."""
    import pandas as pd

    rows = []
    mem_col = MEM_COL
    for (size, run), g in runs.groupby(["size", "run"], sort=True):
        base = runs[(runs["size"] == size) & (runs["run"] == "none")]
        if run == "none" or base.empty:
            continue
        m = g.merge(base, on="seed", suffixes=("", "_none"))
        paired = len(m) >= 1 and len(m) == len(g) == len(base)
        first = g.iloc[0]
        row = {"size": size, "run": run, "strategy": first["strategy"], "lam": first["lam"],
               "budget_gib": first["budget_gib"], "n_pairs": len(m), "paired": paired}
        if paired:
            m = m.sort_values("seed")
            mem_ratio = per_seed(ratio_ci(m[mem_col], m[f"{mem_col}_none"], paired=True, **kw))
            time_ratio = per_seed(ratio_ci(m["step_ms"], m["step_ms_none"], paired=True, **kw))
            d = (m["final_val_loss"] - m["final_val_loss_none"]).to_numpy(float)
            dloss = seed_ci(d, **kw)
            row.update({"val_loss_diff_seeds": seeds_str(d),
                        "mem_reduction_seeds": seeds_str(1 - m[mem_col] / m[f"{mem_col}_none"]),
                        "step_time_ratio_seeds": seeds_str(m["step_ms"] / m["step_ms_none"])})
            t = tost(m["final_val_loss"], m["final_val_loss_none"], margin, alpha, paired=True)
        else:
            mem_ratio = per_seed(ratio_ci(g[mem_col], base[mem_col], paired=False, **kw))
            time_ratio = per_seed(ratio_ci(g["step_ms"], base["step_ms"], paired=False, **kw))
            dloss = Estimate(float(g["final_val_loss"].mean() - base["final_val_loss"].mean()),
                             math.nan, math.nan, len(g), "unpaired")
            t = tost(g["final_val_loss"], base["final_val_loss"], margin, alpha, paired=False)
        red = Estimate(1 - mem_ratio.value, 1 - mem_ratio.hi, 1 - mem_ratio.lo, mem_ratio.n, mem_ratio.method)
        row.update(_ci_cols(red, "mem_reduction"))
        row.update(_ci_cols(time_ratio, "step_time_ratio"))
        row.update(_ci_cols(dloss, "val_loss_diff"))
        row.update({f"tost_{k}": v for k, v in t.to_dict().items()})
        rows.append(row)
    return pd.DataFrame(rows)


def frontier_table(profile, steps, runs, kw: dict):
    """Frontier points: profiled plans (CI of the median over timed steps) and trained runs (over seeds)."""
    import pandas as pd

    rows = []
    for _, p in profile.iterrows():
        t = steps[(steps["size"] == p["size"]) & (steps["point"] == p["point"])]["step_ms"].to_numpy(float)
        est = bootstrap_ci(t, statistic=np.median, **kw) if len(t) else Estimate(
            float(p.get("step_ms", math.nan)), math.nan, math.nan, 0, "none")
        mem = p["peak_memory_bytes"] if pd.notna(p.get("peak_memory_bytes")) else p["saved_activation_bytes"]
        rows.append({"source": "profile", "size": p["size"], "point": p["point"], "kind": p["kind"],
                     "strategy": p["strategy"], "lam": p["lam"], "budget_gib": p["budget_gib"],
                     "memory_metric": "peak_memory_bytes" if pd.notna(p.get("peak_memory_bytes"))
                     else "saved_activation_bytes",
                     "memory_bytes": float(mem), "memory_bytes_lo": float(mem), "memory_bytes_hi": float(mem),
                     **_ci_cols(est, "step_ms"), "n": est.n})
    if runs is not None and len(runs):
        for _, s in summarize_runs(runs, kw).iterrows():
            rows.append({"source": "train", "size": s["size"], "point": s["run"],
                         "kind": "drat" if s["strategy"] == "drat" else "baseline", "strategy": s["strategy"],
                         "lam": s["lam"], "budget_gib": s["budget_gib"], "memory_metric": s["memory_metric"],
                         "memory_bytes": s["memory_bytes"], "memory_bytes_lo": s["memory_bytes_lo"],
                         "memory_bytes_hi": s["memory_bytes_hi"], "step_ms": s["step_ms"],
                         "step_ms_lo": s["step_ms_lo"], "step_ms_hi": s["step_ms_hi"], "n": s["n_seeds"]})
    df = pd.DataFrame(rows)
    if len(df):
        # marked only beyond the measured spread of the step time (pareto_beyond_spread)
        df["pareto"] = False
        for (_, _), g in df.groupby(["source", "size"]):
            df.loc[g.index, "pareto"] = pareto_beyond_spread(g["step_ms"], g["step_ms_lo"], g["step_ms_hi"],
                                                             g["memory_bytes"])
    return df


BUDGET_FIELDS = ["size", "run", "seed", "budget_gib", "measured_gib", "max_step_gib", "p99_step_gib",
                 "n_steps", "metric", "within", "within_max", "within_p99"]


def budget_table(runs):
    """Budget runs: the requested peak against what the run used. `measured_gib` is the steady
    state (the last logged interval's peak); `max_step_gib` and `p99_step_gib` the maximum and
    99th percentile of every step's own peak, early steps included (CUDA; on the CPU all three are
    the accounted bytes of the final plan)."""
    import pandas as pd

    b = runs[runs["budget_gib"].notna()].copy()
    if b.empty:
        return pd.DataFrame(columns=BUDGET_FIELDS)
    peak = b["last_peak_memory_bytes"] if "last_peak_memory_bytes" in b else b["peak_memory_bytes"]
    gpu = peak.notna()
    # CPU: what the budget accounts for, model states (params, grads, AdamW: 16 B/param) + kept activations
    accounted = b["params"] * 16 + b["saved_activation_bytes"]
    b["measured_gib"] = np.where(gpu, peak, accounted) / 2**30
    for col, src in (("max_step_gib", "step_peak_max_bytes"), ("p99_step_gib", "step_peak_p99_bytes")):
        steps = b[src] if src in b else b["peak_memory_bytes"]
        b[col] = np.where(gpu & steps.notna(), steps, np.where(gpu, peak, accounted)) / 2**30
    b["n_steps"] = b["n_step_peaks"] if "n_step_peaks" in b else np.nan
    b["metric"] = np.where(gpu, "peak_memory_allocated", "model_states+saved_activations")
    tol = b["budget_gib"] * (1 + 1e-9)
    b["within"] = b["measured_gib"] <= tol
    b["within_max"] = b["max_step_gib"] <= tol
    b["within_p99"] = b["p99_step_gib"] <= tol
    return b[BUDGET_FIELDS].reset_index(drop=True)


def curves_ci(curves, kw: dict):
    """Validation loss per (size, run, step): mean over seeds with a bootstrap CI band."""
    import pandas as pd

    ev = curves[curves["kind"] == "eval"]
    rows = []
    for (size, run, step), g in ev.groupby(["size", "run", "step"], sort=True):
        e = seed_ci(g["val_loss"].to_numpy(float), **{**kw, "n_resamples": min(kw["n_resamples"], 999)})
        rows.append({"size": size, "run": run, "step": step, **_ci_cols(e, "val_loss"), "n": e.n})
    return pd.DataFrame(rows)


def run_stats(tables: Path, out: Path, margin: float, alpha: float = 0.05, confidence: float = 0.95,
              n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              headline_lambda: float | None = None) -> dict:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}

    def read(name):
        p = tables / name
        return pd.read_csv(p) if p.is_file() and p.stat().st_size > 1 else pd.DataFrame()

    runs, curves = read("runs.csv"), read("curves.csv")
    profile, steps = read("profile.csv"), read("profile_steps.csv")
    if not runs.empty:
        runs = runs[runs["finished"].astype(bool)]
    summary = summarize_runs(runs, kw) if not runs.empty else pd.DataFrame()
    paired = paired_vs_none(runs, margin, alpha, kw) if not runs.empty else pd.DataFrame()
    frontier = frontier_table(profile, steps, runs, kw) if not profile.empty else frontier_table(
        pd.DataFrame(columns=["size", "point"]), steps, runs, kw)
    budget = budget_table(runs) if not runs.empty else pd.DataFrame()
    bands = curves_ci(curves, kw) if not curves.empty else pd.DataFrame()
    for name, df in [("summary", summary), ("paired", paired), ("frontier", frontier), ("budget", budget),
                     ("curves_ci", bands)]:
        df.to_csv(out / f"{name}.csv", index=False)
    result = {
        "parameters": {"confidence": confidence, "alpha": alpha, "tost_margin": margin,
                       "n_resamples": n_resamples, "seed": seed, "headline_lambda": headline_lambda,
                       "bootstrap": f"scipy.stats.bootstrap, BCa for n >= {BCA_MIN_N} else percentile",
                       "min_ci_seeds": MIN_CI_SEEDS,
                       "tost": "paired t (by seed) when both arms share seeds, else Welch"},
        "n_runs": int(len(runs)),
        "headline": [],
    }
    if headline_lambda is not None and not paired.empty:
        lam = paired["lam"].astype(float)
        head = paired[(paired["strategy"] == "drat") & np.isclose(lam, headline_lambda)
                      & paired["budget_gib"].isna()]
        result["headline"] = json.loads(head.to_json(orient="records"))
    (out / "stats.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drat.analysis.stats", description=__doc__.split("\n")[0])
    ap.add_argument("--tables", required=True, help="folder of drat.analysis.aggregate's CSVs")
    ap.add_argument("--out", required=True, help="folder for the statistics")
    ap.add_argument("--margin", type=float, required=True, help="TOST equivalence margin (val loss, nats)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE)
    ap.add_argument("--n-resamples", type=int, default=DEFAULT_RESAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--headline-lambda", type=float, default=None)
    a = ap.parse_args(argv)
    res = run_stats(Path(a.tables), Path(a.out), a.margin, a.alpha, a.confidence, a.n_resamples, a.seed,
                    a.headline_lambda)
    print(json.dumps({"n_runs": res["n_runs"], "headline": len(res["headline"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
