"""`drat bench offload` on the CPU: its rows and files, the re-plan on a mispredicted step, and the
verdicts claiming a difference only beyond the measured spread."""

import csv
import json

import pytest

from drat.bench.offload import CSV_FIELDS, verdicts


@pytest.mark.slow
def test_bench_offload_writes_its_rows_and_files(tmp_path):
    from drat.cli import main

    out = tmp_path / "b"
    rc = main(["bench", "offload", "--size", "tiny", "--layers", "2", "--hidden", "32", "--heads", "4",
               "--vocab-size", "128", "--seq-len", "16", "--device", "cpu", "--steps", "2", "--warmup", "1",
               "--rounds", "2", "--peak-cuts", "0.5", "--no-match-baselines", "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "offload.csv")))
    assert list(rows[0]) == CSV_FIELDS
    assert [r["name"] for r in rows] == ["none", "full", "save-on-cpu", "offload-all", "full-offload",
                                         "drat-cut0.5", "drat3-cut0.5"]
    d = json.loads((out / "offload.json").read_text())
    assert d["meta"]["link"]["synchronous"] and d["meta"]["rounds"] == 2 and "git_commit" in d["meta"]
    by = {r["name"]: r for r in d["rows"]}
    assert len(by["none"]["step_ms_rounds"]) == 2 and by["offload-all"]["d2h_bytes"] > 0
    # every row that offloads says how far ahead it prefetched (CPU copies: one block, the default)
    for name in ("offload-all", "full-offload"):
        assert by[name]["prefetch_blocks"] == 1 and by[name]["late_reloads"] is not None
    drat3 = by["drat3-cut0.5"]  # no offloader where its plan offloads nothing
    assert (drat3["prefetch_blocks"] == 1) == (drat3["n_offloaded"] > 0)
    assert "offloaded_labels" in by["drat3-cut0.5"] and "predicted_reload_stall_ms" in by["drat3-cut0.5"]
    assert (out / "offload.png").is_file()


def test_a_mispredicted_three_arm_step_is_replanned_and_the_faster_plan_kept(monkeypatch):
    from drat.measure import build_costs, nominal_link

    from ..conftest import make_batch, make_model

    model = make_model(n_layer=2)
    idx, tgt = make_batch()
    costs = build_costs(model, idx, tgt, "measured")
    costs.link = {**nominal_link(idx.device), "synchronous": False, "d2h_gbps": 1e-4, "h2d_gbps": 1e-4}
    measured = iter([100.0, 90.0])  # measured: far above any prediction, then faster after the re-plan

    def scripted(model_, idx_, tgt_, steps=3, warmup=1, compiled=None):
        return {"peak_gib": float("nan"), "step_ms": next(measured)}

    from drat.bench import common

    monkeypatch.setattr(common, "measure_steps", scripted)
    monkeypatch.setattr(common, "plan_under_measured_peak", lambda *a, **k: _fake_plan(a[3], k))
    plan = common.plan_with_link_check(model, idx, tgt, costs, 1.0, 0.0, "drat3", None, 10.0, lambda m: None)
    assert any("replanned_link_scale" in t for t in plan.trace)
    assert plan.trace[-1]["measured_step_ms"] == 90.0  # the re-planned one, faster, is kept
    first = [t for t in plan.trace if t.get("first_plan")]
    assert first and first[-1]["measured_step_ms"] == 100.0  # and the first plan's miss stays recorded


def _fake_plan(costs, kw):
    import torch

    from drat.bench.common import BudgetPlan
    from drat.gates import GateBank

    n = len(costs)
    gates = GateBank(n, arms=3)
    with torch.no_grad():
        gates.logits.zero_()
        gates.logits[:, 2] = 1.0  # offload everything
    return BudgetPlan([True] * n, gates, 0.0, [], None)


@pytest.mark.parametrize("spread, claim", [(0.1, "lower peak"), (30.0, "no three-arm DRAT row")])
def test_verdicts_claim_only_beyond_the_spread(spread, claim):
    rows = [{"name": "none", "peak_gib": 10.0, "step_ms": 100.0, "step_spread_ms": 0.1, "peak_vs_none": 0.0,
             "step_vs_none": 0.0},
            {"name": "offload-all", "peak_gib": 6.0, "step_ms": 120.0, "step_spread_ms": 0.1},
            {"name": "drat3-cut0.45", "peak_gib": 5.0, "step_ms": 119.0, "step_spread_ms": spread,
             "peak_vs_none": -0.5, "step_vs_none": 0.19}]
    v = verdicts(rows, (0.45,))
    assert "missed" in v[0]
    assert claim in v[1]


def test_least_memory_at_step_is_the_exact_programs_frontier_point():
    """The bisection's budget keeps the fewest bytes whose optimal added time fits the step: its
    plan is within the time, and a budget 1% of the activations smaller is not."""
    from drat.bench.offload import least_memory_at_step
    from drat.measure import build_costs
    from drat.oracle import solve_oracle3

    from ..conftest import make_batch, make_model

    model = make_model(n_layer=2)
    idx, targets = make_batch()
    costs = build_costs(model, idx, targets, "activation_size")
    costs.link = {"d2h_gbps": 20.0, "h2d_gbps": 20.0, "copy_overhead_ms": 0.001, "synchronous": False}
    total = costs.total_bytes
    for frac in (0.02, 0.1, 0.3):
        act = least_memory_at_step(costs, frac)
        assert act is not None and 0 <= act < total
        assert solve_oracle3(costs, 0.0, act).objective <= frac + 1e-9
        if act > 0.01 * total:
            try:
                tighter = solve_oracle3(costs, 0.0, act - 0.01 * total).objective
            except ValueError:
                continue
            assert tighter > frac
    assert least_memory_at_step(costs, 0.0) in (None, 0.0) or solve_oracle3(
        costs, 0.0, least_memory_at_step(costs, 0.0)).objective <= 1e-9


@pytest.mark.slow
def test_matched_rows_are_planned_at_the_baselines_steps_timed_in_alternation(monkeypatch):
    """The rows matched to the offload baselines are planned at each baseline's step timed in
    alternation with `none`'s (`matched_step_ms`), not at its own steps: here `save-on-cpu` runs 3×
    `none`'s step and `offload-all` 2×, so each gets a `drat3-at-*` row planned within that much
    added time; `full-offload`, no slower than `none` there, gets none."""
    import drat.bench.offload as bo

    ratio = {"NoneAC": 1.0, "SaveOnCPU": 3.0, "OffloadAll": 2.0, "FullOffload": 0.9}
    seen: list[list[str]] = []

    def fake_interleaved(model, idx, targets, strategies, steps, warmup):
        seen.append([type(s).__name__ for s in strategies])
        return [10.0 * ratio[type(s).__name__] for s in strategies]

    asked: list[float] = []
    real = bo.least_memory_at_step
    monkeypatch.setattr(bo, "interleaved_step_ms", fake_interleaved)
    monkeypatch.setattr(bo, "least_memory_at_step",
                        lambda c, frac, cap: asked.append(frac) or real(c, frac, cap))
    d = bo.run_offload(size="tiny", seq_len=16, batch_size=2, device="cpu", n_layer=2, n_embd=32,
                       n_head=4, vocab_size=128, cuts=(), steps=2, warmup=1, rounds=1, trace_steps=0,
                       log=lambda *a: None)
    assert seen == [["NoneAC", "SaveOnCPU", "OffloadAll", "FullOffload"]]
    by = {r["name"]: r for r in d["rows"]}
    assert [by[n]["matched_step_ms"] for n in ("none", "save-on-cpu", "offload-all", "full-offload")] == \
        pytest.approx([10.0, 30.0, 20.0, 9.0])
    assert asked == pytest.approx([2.0, 1.0])
    assert "drat3-at-full-offload" not in by
    assert {"drat3-at-save-on-cpu", "drat3-at-offload-all"} <= set(by)
