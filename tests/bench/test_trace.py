"""`drat bench trace` on CPU: the rebuild ranges count exactly the mechanism's rebuilds."""

import csv
import json

import pytest

from drat.bench.trace import TRACE_FIELDS, run_trace
from drat.costs import rebuild_counts


@pytest.mark.slow
def test_trace_cpu_rows_and_rebuild_counts(tmp_path):
    rows = run_trace("tiny", seq_len=16, batch_size=2, device="cpu", vocab_size=128, lams=(0.5, 50.0),
                     steps=1, warmup=0, trace_steps=2, out=tmp_path, log=lambda *a: None)
    assert [r["name"] for r in rows] == ["none", "full", "drat-lam0.5", "drat-lam50"]
    with open(tmp_path / "trace.csv") as f:
        assert list(next(csv.reader(f))) == TRACE_FIELDS
    meta = json.loads((tmp_path / "trace.json").read_text())["meta"]
    assert {"device", "torch_version", "git_commit"} <= set(meta)
    by = {r["name"]: r for r in rows}
    # no DRAT ranges for plans that are not DRAT's (full is torch.utils.checkpoint)
    assert by["none"]["rebuilds"] == 0 and by["full"]["rebuilds"] == 0
    assert by["drat-lam50"]["n_recomputed"] > 0 and by["drat-lam50"]["rebuild_cpu_ms"] > 0


def test_trace_rebuilds_match_the_cost_model():
    """Per step, one profiler range per rebuild: Σ_j R_j of the hard plan (multilinear model)."""
    import torch

    from drat.bench.trace import profile_steps
    from drat.gates import fit_gates
    from drat.measure import build_costs, random_batch
    from drat.model import GPT, config_for
    from drat.strategies import DRATGates

    torch.manual_seed(0)
    model = GPT(config_for("tiny", vocab_size=128))
    idx, targets = random_batch(128, 2, 16, torch.device("cpu"))
    costs = build_costs(model, idx, targets, "uniform")
    fit = fit_gates(costs, lam=2.0)
    assert not all(fit.stored)
    model.set_strategy(DRATGates(fit.gates))
    got = profile_steps(model, idx, targets, steps=2, warmup=1)
    assert got["rebuilds"] == sum(rebuild_counts(fit.stored, costs))


def _ev(cat, name, stream, ts, dur):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": {"stream": stream}}


def test_transfer_overlap_splits_hidden_from_exposed_copy_time():
    """Compute stream 7 runs kernels at [0,10) and [14,20) and [30,40); a D→H copy on stream 20
    runs [2,16) (hidden except the gap [10,14)), an H→D copy [22,28) sits in the gap [20,30),
    which is longer than it: 6 µs of that gap are exposed, 4 are the host's."""
    events = [_ev("kernel", "gemm", 7, 0, 10), _ev("kernel", "gemm", 7, 14, 6),
              _ev("kernel", "gemm", 7, 30, 10), _ev("kernel", "small", 21, 0, 1),
              _ev("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", 20, 2, 14),
              _ev("gpu_memcpy", "Memcpy HtoD (Pinned -> Device)", 22, 22, 6)]
    from drat.bench.trace import transfer_overlap

    t = transfer_overlap(events, steps=1)
    assert t["compute_stream"] == 7
    assert t["traced_ms"] == pytest.approx(40e-3)
    assert t["d2h_ms"] == pytest.approx(14e-3) and t["h2d_ms"] == pytest.approx(6e-3)
    assert t["compute_idle_ms"] == pytest.approx(14e-3)  # gaps [10,14) and [20,30)
    assert t["exposed_transfer_ms"] == pytest.approx(10e-3)  # [10,14) under D→H, [22,28) under H→D
    assert t["copy_hidden_frac"] == pytest.approx(10 / 20)  # [2,10) and [14,16) of 20 µs of copies
    # per step: the same trace read as two steps halves every time
    assert transfer_overlap(events, steps=2)["exposed_transfer_ms"] == pytest.approx(5e-3)


def test_transfer_overlap_counts_a_synchronous_copy_on_the_compute_stream_as_exposed():
    events = [_ev("kernel", "gemm", 7, 0, 10), _ev("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", 7, 10, 5),
              _ev("kernel", "gemm", 7, 15, 5)]
    from drat.bench.trace import transfer_overlap

    t = transfer_overlap(events, steps=1)
    assert t["exposed_transfer_ms"] == pytest.approx(5e-3) and t["copy_hidden_frac"] == 0.0
    assert transfer_overlap([], steps=1) == {}  # nothing traced (no CUPTI): no columns
