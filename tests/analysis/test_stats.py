"""drat.analysis.stats: bootstrap CIs, TOST, ratios, the Pareto mask, the pipeline step on small tables."""

import json
import math

import numpy as np
import pytest

from drat.analysis import stats


def test_bootstrap_ci_covers_the_mean_and_is_reproducible():
    x = np.random.default_rng(1).normal(3.0, 1.0, size=40)
    a = stats.bootstrap_ci(x, n_resamples=2000, seed=0)
    b = stats.bootstrap_ci(x, n_resamples=2000, seed=0)
    assert a == b
    assert a.method == "BCa" and a.n == 40
    assert a.lo < x.mean() < a.hi
    assert a.value == pytest.approx(x.mean())
    # about ±1.96·σ/√n
    assert a.hi - a.lo == pytest.approx(2 * 1.96 * x.std(ddof=1) / math.sqrt(40), rel=0.35)


def test_bootstrap_ci_small_and_degenerate_samples():
    assert stats.bootstrap_ci([1.0, 2.0, 3.0]).method == "percentile"
    e = stats.bootstrap_ci([5.0, 5.0, 5.0])
    assert (e.value, e.lo, e.hi, e.method) == (5.0, 5.0, 5.0, "degenerate")
    one = stats.bootstrap_ci([2.0])
    assert one.value == 2.0 and math.isnan(one.lo) and one.method == "single"
    assert stats.bootstrap_ci([]).method == "empty"
    assert stats.bootstrap_ci([1.0, float("nan"), 3.0]).n == 2  # NaNs are dropped


def test_bootstrap_ci_of_median():
    x = np.arange(1.0, 31.0)
    e = stats.bootstrap_ci(x, statistic=np.median, n_resamples=999)
    assert e.value == 15.5 and e.lo < 15.5 < e.hi


def test_paired_bootstrap_and_ratios():
    a = np.array([2.0, 4.0, 6.0, 8.0])
    b = np.array([1.0, 2.0, 3.0, 4.0])
    r = stats.ratio_ci(a, b, paired=True)
    assert (r.value, r.lo, r.hi) == (2.0, 2.0, 2.0)  # every per-seed ratio is exactly 2
    d = stats.paired_bootstrap_ci(a, b, lambda x, y, axis: np.mean(x - y, axis=axis), n_resamples=999)
    assert d.value == 2.5 and d.lo <= 2.5 <= d.hi
    u = stats.ratio_ci([2.0, 2.2, 1.8], [1.0, 1.1, 0.9], paired=False, n_resamples=999)
    assert u.value == pytest.approx(2.0) and u.lo < 2.0 < u.hi
    with pytest.raises(ValueError, match="equal lengths"):
        stats.ratio_ci([1.0, 2.0], [1.0], paired=True)


def test_tost_equivalent_when_differences_are_small_and_precise():
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.05, size=20)
    gated = base + rng.normal(0.0, 0.002, size=20)
    t = stats.tost(gated, base, margin=0.01)
    assert t.method == "paired" and t.equivalent and t.p < 0.05
    assert -0.01 < t.ci_lo <= t.diff <= t.ci_hi < 0.01
    # the same data under a margin smaller than the noise is not equivalent
    assert not stats.tost(gated, base, margin=1e-5).equivalent


def test_tost_not_equivalent_for_a_real_shift_and_matches_the_ci_rule():
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.01, size=10)
    shifted = base + 0.05 + rng.normal(0.0, 0.005, size=10)
    t = stats.tost(shifted, base, margin=0.02)
    assert not t.equivalent and t.p > 0.05
    # TOST at α is the (1 − 2α) CI inside the margins
    assert t.equivalent == (t.ci_lo > -0.02 and t.ci_hi < 0.02)


def test_tost_bitwise_equal_losses_and_too_few_seeds():
    x = [3.1, 3.2]
    t = stats.tost(x, x, margin=0.01)
    assert t.method == "degenerate" and t.equivalent and t.p == 0.0 and t.diff == 0.0
    t2 = stats.tost([3.0], [3.0], margin=0.01)
    assert t2.method == "insufficient" and not t2.equivalent
    with pytest.raises(ValueError, match="margin"):
        stats.tost(x, x, margin=0.0)


def test_tost_welch_for_unpaired_arms():
    rng = np.random.default_rng(3)
    a, b = rng.normal(2.0, 0.01, 12), rng.normal(2.0, 0.01, 9)
    t = stats.tost(a, b, margin=0.05, paired=False)
    assert t.method == "welch" and t.equivalent and (t.n_a, t.n_b) == (12, 9)


def test_pareto_mask():
    x = [1.0, 2.0, 3.0, 2.5, float("nan")]
    y = [3.0, 2.0, 1.0, 2.5, 0.0]
    assert stats.pareto_mask(x, y).tolist() == [True, True, True, False, False]


def _tables(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = []
    for seed in (0, 1, 2):
        for run, strategy, lam, mem, ms, loss in [("none", "none", None, 100.0, 10.0, 3.0),
                                                  ("drat-lam0.05", "drat", 0.05, 60.0, 11.0, 3.0),
                                                  ("full", "full", None, 30.0, 13.0, 3.0)]:
            rows.append({"size": "tiny", "run": run, "strategy": strategy, "lam": lam, "budget_gib": None,
                         "seed": seed, "finished": True, "final_val_loss": loss + 0.001 * seed,
                         "saved_activation_bytes": mem, "peak_memory_bytes": None,
                         "step_ms": ms * (1 + 0.01 * seed), "tokens_per_s": 1000.0 / ms, "params": 10})
    rows.append({"size": "tiny", "run": "drat-budget0.1", "strategy": "drat", "lam": 0.3, "budget_gib": 1e-7,
                 "seed": 0, "finished": True, "final_val_loss": 3.0, "saved_activation_bytes": 40.0,
                 "peak_memory_bytes": None, "step_ms": 12.0, "tokens_per_s": 80.0, "params": 10})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    curves = [{"size": "tiny", "run": "none", "seed": s, "kind": "eval", "step": st,
               "val_loss": 4.0 - st / 10 + s / 100, "loss": None} for s in (0, 1) for st in (0, 5, 10)]
    pd.DataFrame(curves).to_csv(tmp_path / "curves.csv", index=False)
    pd.DataFrame([{"size": "tiny", "point": p, "kind": k, "strategy": s, "lam": lam, "budget_gib": None,
                   "saved_activation_bytes": m, "peak_memory_bytes": None, "step_ms": t}
                  for p, k, s, lam, m, t in [("none", "baseline", "none", None, 100, 10),
                                             ("drat-lam0.05", "drat", "drat", 0.05, 60, 11),
                                             ("oracle-lam0.05", "oracle", "fixed", 0.05, 55, 11.5),
                                             ("full", "baseline", "full", None, 30, 13)]]
                 ).to_csv(tmp_path / "profile.csv", index=False)
    pd.DataFrame([{"size": "tiny", "point": p, "step": i, "step_ms": t + 0.1 * i}
                  for p, t in [("none", 10), ("drat-lam0.05", 11), ("oracle-lam0.05", 11.5), ("full", 13)]
                  for i in range(5)]).to_csv(tmp_path / "profile_steps.csv", index=False)
    return pd


def test_run_stats_pipeline_step(tmp_path):
    pd = _tables(tmp_path)
    out = tmp_path / "stats"
    res = stats.run_stats(tmp_path, out, margin=0.01, n_resamples=999, headline_lambda=0.05)
    assert res["n_runs"] == 10
    paired = pd.read_csv(out / "paired.csv")
    head = paired[paired["run"] == "drat-lam0.05"].iloc[0]
    assert head["mem_reduction"] == pytest.approx(0.4)
    assert head["step_time_ratio"] == pytest.approx(1.1)
    assert head["tost_equivalent"] and head["val_loss_diff"] == 0.0
    assert len(res["headline"]) == 1
    # the budget run has no `none` partner of its own seeds set: compared unpaired
    assert not paired[paired["run"] == "drat-budget0.1"].iloc[0]["paired"]
    frontier = pd.read_csv(out / "frontier.csv")
    prof = frontier[frontier["source"] == "profile"].set_index("point")
    assert prof.loc["none", "step_ms"] == pytest.approx(10.2)  # median of 10.0 .. 10.4
    assert prof.loc["none", "pareto"] and prof.loc["full", "pareto"]
    budget = pd.read_csv(out / "budget.csv")
    assert budget.iloc[0]["measured_gib"] == pytest.approx((10 * 16 + 40) / 2**30)
    assert not budget.iloc[0]["within"]
    bands = pd.read_csv(out / "curves_ci.csv")
    # two seeds: no band, the mean alone (an interval needs MIN_CI_SEEDS seeds)
    assert len(bands) == 3 and bands["val_loss_lo"].isna().all() and (bands["n"] == 2).all()
    params = json.loads((out / "stats.json").read_text())["parameters"]
    assert params["tost_margin"] == 0.01 and params["min_ci_seeds"] == stats.MIN_CI_SEEDS
    # per-seed values stand where the interval does not, and TOST says its degrees of freedom
    assert len(str(head["step_time_ratio_seeds"]).split(";")) == head["n_pairs"]
    assert head["tost_df"] == head["n_pairs"] - 1 or head["tost_method"] == "degenerate"


def test_stats_cli(tmp_path, capsys):
    _tables(tmp_path)
    assert stats.main(["--tables", str(tmp_path), "--out", str(tmp_path / "s"), "--margin", "0.02",
                       "--n-resamples", "499"]) == 0
    assert json.loads(capsys.readouterr().out)["n_runs"] == 10


def test_a_seed_interval_needs_five_seeds():
    """With 2 seeds the percentile interval is [min, max] of the two and covers the mean about half
    the time: below MIN_CI_SEEDS no interval is drawn; equal values keep their exact interval."""
    assert stats.MIN_CI_SEEDS == 5
    few = stats.seed_ci([1.0, 2.0, 4.0])
    assert few.value == pytest.approx(7 / 3) and np.isnan(few.lo) and few.method == "per-seed"
    assert stats.seed_ci([3.0, 3.0]).lo == 3.0  # degenerate: known exactly
    many = stats.seed_ci([1.0, 2.0, 4.0, 3.0, 5.0], n_resamples=999)
    assert many.lo < many.value < many.hi
    assert np.isnan(stats.per_seed(stats.ratio_ci([2.0, 3.0], [1.0, 1.0], n_resamples=99)).hi)


def test_welch_tost_reports_its_degrees_of_freedom():
    t = stats.tost([1.0, 1.1, 0.9, 1.05], [1.0, 1.2, 0.8], margin=0.5, paired=False)
    assert t.method == "welch" and 2 < t.df < 5
    assert stats.tost([1.0, 1.1, 0.9], [1.0, 1.0, 1.0], margin=0.5).df == 2


def test_pareto_marks_need_the_spread():
    """Two rows of one plan (same memory, overlapping step intervals) get no mark; a point faster
    beyond the spread at the same memory keeps it; a point with less memory keeps its own."""
    x, lo, hi = [28.4, 20.5, 19.0, 40.0], [26.4, 20.5, 18.9, 39.0], [29.1, 20.6, 19.1, 41.0]
    y = [4.7, 4.7, 6.0, 2.0]
    m = stats.pareto_beyond_spread(x, lo, hi, y)
    assert list(m) == [False, True, True, True]
    same = stats.pareto_beyond_spread([20.5, 20.6], [20.0, 20.1], [21.0, 21.1], [4.7, 4.7])
    assert not same.any()


def test_bench_rows_of_several_processes_collapse_to_their_median():
    """Two processes of one bench: each row's step is the median across them, its spread at least
    their range; one process leaves the table as it is."""
    import pandas as pd

    from drat.analysis.report import collapse_processes

    b = pd.DataFrame([{"size": "s", "name": "none", "process": 0, "step_ms": 10.0, "tokens_per_s": 100.0,
                       "peak_gib": 2.0, "step_spread_pct": 1.0},
                      {"size": "s", "name": "none", "process": 1, "step_ms": 12.0, "tokens_per_s": 100 / 1.2,
                       "peak_gib": 2.0, "step_spread_pct": 1.0},
                      {"size": "s", "name": "full", "process": 0, "step_ms": 20.0, "tokens_per_s": 50.0,
                       "peak_gib": 1.0, "step_spread_pct": 30.0},
                      {"size": "s", "name": "full", "process": 1, "step_ms": 20.0, "tokens_per_s": 50.0,
                       "peak_gib": 1.0, "step_spread_pct": 2.0}])
    c = collapse_processes(b).set_index("name")
    assert list(c.index) == ["none", "full"] and (c["n_processes"] == 2).all()
    assert c.loc["none", "step_ms"] == 11.0 and c.loc["none", "tokens_per_s"] == pytest.approx(100 / 1.1)
    assert c.loc["none", "step_spread_pct"] == pytest.approx(100 * 2 / 11)
    assert c.loc["full", "step_spread_pct"] == 30.0  # a row's own spread wins where it is wider
    assert collapse_processes(b[b["process"] == 0]).equals(b[b["process"] == 0])


def test_budget_runs_are_judged_on_every_steps_peak(tmp_path):
    """A budget run's maximum and p99 step peak come from every step's own CUDA peak (the
    trainer logs them per interval), so an early overshoot shows even when the steady state
    is within the budget."""
    import pandas as pd

    from drat.analysis.aggregate import summarize_run

    run = tmp_path / "run"
    run.mkdir()
    gib = 2**30
    steps = [[int(3.3 * gib)] + [int(2.9 * gib)] * 9] + [[int(2.9 * gib)] * 10] * 19  # 200 steps
    recs = [{"kind": "train", "step": 10 * (i + 1), "loss": 1.0, "saved_activation_bytes": 1.0,
             "step_ms": 1.0, "tokens_per_s": 1.0, "peak_memory_bytes": max(p), "step_peak_bytes": p}
            for i, p in enumerate(steps)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "summary.json").write_text(json.dumps({"finished": True, "step": 200, "params": 10}))
    row, _, _ = summarize_run(run, {"size": "small", "run": "drat-budget3", "strategy": "drat",
                                    "lam": None, "budget_gib": 3.0, "seed": 0})
    assert row["n_step_peaks"] == 200 and row["step_peak_max_bytes"] == int(3.3 * gib)
    assert row["step_peak_p99_bytes"] == pytest.approx(2.9 * gib, rel=0.01)  # one step in 200
    b = stats.budget_table(pd.DataFrame([row]))
    r = b.iloc[0]
    assert r["measured_gib"] == pytest.approx(2.9, rel=1e-6) and r["within"]
    assert r["max_step_gib"] == pytest.approx(3.3, rel=1e-6) and not r["within_max"]
    assert r["within_p99"] and r["n_steps"] == 200
    assert list(b.columns) == stats.BUDGET_FIELDS
