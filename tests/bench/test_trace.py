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
