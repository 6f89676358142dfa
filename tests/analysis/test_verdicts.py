"""The paper's "where DRAT wins, and where it does not" sentences (drat.analysis.verdicts) and the
per-row step spread they quote (drat.analysis.aggregate.step_spread), held to hand-made bench rows."""

import pandas as pd
import pytest

from drat.analysis.aggregate import step_spread
from drat.analysis.verdicts import bench_verdicts


def test_step_spread_is_p10_to_p90_over_the_median():
    s = step_spread([10.0] * 8 + [20.0, 30.0])
    assert s["step_ms_p10"] == 10.0
    assert s["step_ms_p90"] == pytest.approx(21.0)  # inclusive quantile: 20 + 0.1 * (30 - 20)
    assert s["step_spread_pct"] == pytest.approx(110.0)
    assert step_spread([5.0, 5.0, 5.0])["step_spread_pct"] == 0.0
    assert step_spread([7.0]) == {"step_ms_p10": 7.0, "step_ms_p90": 7.0, "step_spread_pct": 0.0}
    assert step_spread(None) == {} and step_spread([]) == {}
    for n in range(1, 12):  # tied steps: interpolation must not put p10 above or p90 below the median
        s = step_spread([151.114] * n)
        assert s["step_ms_p10"] <= 151.114 <= s["step_ms_p90"]


def row(name, peak_gib, step_ms, mode="eager", spread=1.0, paired=None):
    return {"name": name, "mode": mode, "peak_gib": peak_gib, "step_ms": step_ms,
            "saved_activation_bytes": float("nan"), "step_spread_pct": spread,
            "paired_vs_oracle": paired if paired is not None else float("nan")}


def test_no_dratpoint_under_full_states_the_trade_and_a_wide_spread():
    b = pd.DataFrame([row("none", 13.0, 55.0), row("full", 6.0, 100.0, spread=10.0),
                      row("drat-budget0.25", 6.6, 75.0, spread=44.0, paired=-0.02),
                      row("drat-budget0.5", 8.0, 62.0, paired=0.01),
                      row("drat-compiled-lam0.2", 6.9, 55.0, mode="compiled"),
                      row("compile-budget0.5", 9.3, 54.0, mode="compiled")])
    v = " ".join(bench_verdicts(b))
    assert "No eager DRAT point keeps as little memory as \\texttt{full} (6.00 GiB, 100.0 ms)" in v
    # the smallest eager DRAT point, its memory and time against full's, in words
    assert ("\\texttt{drat-budget0.25} (6.60 GiB, 75.0 ms), keeps 10.0\\% more memory at a 25.0\\% "
            "faster step") in v
    # full's spread (10%) is under the note's threshold, drat-budget0.25's (44%) is not
    assert "The steps of \\texttt{drat-budget0.25} spread by 44\\%" in v
    assert "\\texttt{full}, " not in v
    # 54 ms at 9.3 GiB is not dominated: the fastest DRAT point at no more memory is 1.9% slower
    assert ("DRAT does not dominate \\texttt{compile-budget0.5} (9.30 GiB, 54.0 ms): the fastest DRAT point "
            "with no more memory, \\texttt{drat-compiled-lam0.2} (6.90 GiB, 55.0 ms), keeps 25.8\\% less "
            "memory at a 1.9\\% slower step.") in v
    assert "DRAT's 2 budget-mode plans differ from the oracle's by -2.0\\% to +1.0\\%" in v


def test_dominating_and_beating_full_are_said_so():
    b = pd.DataFrame([row("full", 3.4, 57.0), row("drat-budget0.25", 3.3, 55.0),
                      row("drat-compiled-lam0.2", 4.3, 43.6, mode="compiled"),
                      row("compile-budget0.5", 7.0, 45.9, mode="compiled")])
    v = " ".join(bench_verdicts(b))
    assert ("Eager DRAT beats \\texttt{full}: at no more memory (\\texttt{drat-budget0.25}: 3.30 GiB, "
            "55.0 ms) its step is -3.5\\% against \\texttt{full}'s (3.40 GiB, 57.0 ms).") in v
    # the eager budget row is smaller but slower than the compiler's: the compiled λ row dominates
    assert ("DRAT dominates \\texttt{compile-budget0.5} (7.00 GiB, 45.9 ms): \\texttt{drat-compiled-lam0.2} "
            "keeps 4.30 GiB, 43.6 ms: 38.6\\% less memory at a 5.0\\% faster step.") in v
    assert "alternating" not in v  # no paired rows, no sentence about them


def test_a_tie_is_called_a_tie_not_minus_zero():
    b = pd.DataFrame([row("full", 2.0, 40.0), row("drat-budget0.25", 2.2, 40.001, paired=-0.0001),
                      row("drat-compiled-lam0.2", 1.5, 30.0, mode="compiled"),
                      row("compile-budget0.5", 1.5, 30.0, mode="compiled")])
    v = " ".join(bench_verdicts(b))
    assert "keeps 10.0\\% more memory at an equally fast step" in v
    assert "keeps 1.50 GiB, 30.0 ms: the same memory at an equally fast step" in v
    assert "by 0.0\\% to 0.0\\%" in v and "-0.0" not in v


def test_slower_dratpoint_under_full_is_not_called_a_win():
    b = pd.DataFrame([row("full", 1.64, 42.1), row("drat-budget0.25", 1.60, 43.0)])
    v, no_compile = bench_verdicts(b)
    assert v.startswith("Eager DRAT does not beat \\texttt{full}")
    assert "its step is +2.1\\% against" in v
    assert no_compile.startswith("No \\texttt{torch.compile} rows")
