"""`drat bench capacity`: the batch search and the CSV schema (CPU, tiny model; no timing asserts)."""

import csv
import json
import random

import pytest

from drat.bench.capacity import CAPACITY_FIELDS, largest_fitting, run_capacity


def test_largest_fitting_matches_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        max_batch = rng.randint(1, 80)
        threshold = rng.randint(0, max_batch)  # fits(b) iff b <= threshold
        guess = rng.randint(-3, max_batch + 5)
        calls = []

        def fits(b, max_batch=max_batch, threshold=threshold, calls=calls):
            assert 1 <= b <= max_batch
            calls.append(b)
            return b <= threshold

        assert largest_fitting(fits, guess, max_batch) == threshold
        assert len(calls) <= 4 * max_batch.bit_length() + 2  # bracketing + bisection, not a scan


@pytest.mark.slow
def test_capacity_cpu_schema_and_consistency(tmp_path):
    out = tmp_path / "cap"
    rows = run_capacity("tiny", seq_len=32, cap_gib=0.09, device="cpu", vocab_size=256, max_batch=24,
                        steps=1, warmup=0, out=out, log=lambda *a: None)
    assert [r["name"] for r in rows] == ["none", "full", "drat"]  # compiled row is CUDA-only
    with open(out / "capacity.csv") as f:
        got = list(csv.DictReader(f))
    assert list(got[0].keys()) == CAPACITY_FIELDS
    meta = json.loads((out / "capacity.json").read_text())["meta"]
    assert {"device", "torch_version", "git_commit"} <= set(meta)
    assert (out / "capacity.png").stat().st_size > 0
    by = {r["name"]: r for r in rows}
    for r in rows:
        assert 1 <= r["batch_size"] <= 24
        assert r["peak_gib"] <= 0.09
        # the next batch up was probed and did not fit (or the search hit max_batch)
        above = [p for p in r["probes"] if p["batch_size"] == r["batch_size"] + 1]
        over = above and (above[0]["peak_gib"] is None or above[0]["peak_gib"] > 0.09)
        assert r["batch_size"] == 24 or over
        assert r["tokens_per_step"] == 32 * r["batch_size"]
    # recomputation only ever buys batch: full and DRAT fit at least what `none` fits
    assert by["full"]["batch_size"] >= by["none"]["batch_size"]
    assert by["drat"]["batch_size"] >= by["none"]["batch_size"]


@pytest.mark.slow
def test_drat_capacity_guess_comes_from_the_least_memory_plans_measured_peaks(tmp_path):
    """The DRAT search starts where the least-memory plan's peak line (B=1, 2) meets the cap,
    and each probe keeps what the planner did for it."""
    from drat.bench.capacity import _drat_guess

    rows = run_capacity("tiny", seq_len=32, cap_gib=0.09, device="cpu", vocab_size=256, max_batch=24,
                        strategies=("none", "drat"), steps=1, warmup=0, out=tmp_path / "cap",
                        log=lambda *a: None)
    meta = json.loads((tmp_path / "cap" / "capacity.json").read_text())["meta"]
    peaks = {int(k): v for k, v in meta["drat_reference"]["floor_plan_peaks"].items()}
    assert set(peaks) == {1, 2} and 0 < peaks[1] < peaks[2]
    guess = _drat_guess({"floor_plan_peaks": peaks}, 0.09 * 2**30)
    assert guess == 1 + int((0.09 * 2**30 - peaks[1]) // (peaks[2] - peaks[1]))
    drat = next(r for r in rows if r["name"] == "drat")
    assert drat["probes"][0]["batch_size"] == min(guess, 24)
    # on the CPU a probe's "peak" is model states + saved activations, linear in the batch, and no
    # DRAT plan keeps less than the least-memory plan: nothing above the guess can fit
    assert drat["batch_size"] <= guess
    # without measured peaks the guess falls back to the modelled floor
    ref = {"floor_per_sample": 2**20, "transient_per_sample": 0.0, "s0": 2**30}
    assert _drat_guess(ref, 2**31) == 1024
    assert _drat_guess({**ref, "floor_plan_peaks": {1: None, 2: None}}, 2**31) == 1024


@pytest.mark.slow
def test_alloc_conf_reaches_the_allocator_and_the_meta(tmp_path, monkeypatch):
    """`--alloc-conf` sets PYTORCH_CUDA_ALLOC_CONF before anything starts CUDA, and the meta
    records it: under a hard cap the allocator's fragmentation decides the batch."""
    from drat.cli import main

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)  # restored after the test
    out = tmp_path / "cap"
    assert main(["bench", "capacity", "--size", "tiny", "--seq-len", "32", "--vocab-size", "256",
                 "--cap-gib", "0.09", "--device", "cpu", "--strategies", "none", "--max-batch", "8",
                 "--steps", "1", "--warmup", "0", "--alloc-conf", "expandable_segments:True",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "capacity.json").read_text())["meta"]
    assert meta["cuda_alloc_conf"] == "expandable_segments:True"


@pytest.mark.slow
def test_drat_batches_time_drat_at_the_users_batches(tmp_path):
    """`--drat-batches`: DRAT's rows are timed at the given batches (the user picks DRAT's batch);
    a batch no plan fits under the cap gets a row that says so, with nothing timed."""
    out = tmp_path / "cap"
    rows = run_capacity("tiny", seq_len=32, cap_gib=0.018, device="cpu", vocab_size=256, max_batch=200,
                        strategies=("none", "drat"), steps=1, warmup=0, out=out, log=lambda *a: None,
                        drat_batches=(1, 200))
    by = {r["name"]: r for r in rows}
    assert list(by) == ["none", "drat-b1", "drat-b200"]
    assert by["none"]["search"] == "largest" and by["none"]["fits"]
    ok, too_big = by["drat-b1"], by["drat-b200"]
    assert ok["search"] == too_big["search"] == "fixed"
    assert ok["fits"] and ok["batch_size"] == 1 and ok["peak_gib"] <= 0.018 and ok["tokens_per_s"] > 0
    # 200 sequences' activations cannot fit beside the model state: no plan, and nothing timed
    assert not too_big["fits"] and too_big["batch_size"] == 200 and too_big.get("tokens_per_s") is None
    assert [p["batch_size"] for p in too_big["probes"]] == [200] and not too_big["probes"][0]["planned"]
    with open(out / "capacity.csv") as f:
        got = {r["name"]: r for r in csv.DictReader(f)}
    assert got["drat-b200"]["fits"] == "False" and got["drat-b200"]["tokens_per_s"] == ""
    meta = json.loads((out / "capacity.json").read_text())["meta"]
    assert meta["drat_batches"] == [1, 200]
    # what the docs need to rebuild the command line
    assert (meta["steps"], meta["warmup"], meta["max_batch"], meta["trace_steps"]) == (1, 0, 200, 0)
    with pytest.raises(ValueError, match="drat-batches"):
        run_capacity("tiny", seq_len=32, cap_gib=0.018, device="cpu", vocab_size=256, max_batch=8,
                     strategies=("drat",), drat_batches=(9,), log=lambda *a: None)


@pytest.mark.slow
def test_drat3_guess_comes_from_the_offloaded_floor_plans_measured_peaks(tmp_path):
    """With the offload arm the search starts from the checkpointed-blocks-with-offloaded-inputs
    plan's peak line, not the cost model's floor (near zero once bytes can leave the device)."""
    from drat.bench.capacity import _drat_guess

    rows = run_capacity("tiny", seq_len=32, cap_gib=0.025, device="cpu", vocab_size=256, max_batch=64,
                        strategies=("none", "drat3"), steps=1, warmup=0, out=tmp_path / "cap",
                        log=lambda *a: None)
    meta = json.loads((tmp_path / "cap" / "capacity.json").read_text())["meta"]
    peaks = {int(k): v for k, v in meta["drat_reference"]["floor_plan_peaks_drat3"].items()}
    assert set(peaks) == {1, 2} and all(p > 0 for p in peaks.values())
    guess = _drat_guess({"floor_plan_peaks": peaks, **meta["drat_reference"]}, 0.025 * 2**30)
    drat3 = next(r for r in rows if r["name"] == "drat3")
    assert drat3["probes"][0]["batch_size"] == min(guess, 64)
    assert "link" in meta
    # a row that moves bytes reports its link utilisation: bytes each way ÷ step ÷ slower direction
    link = meta["link"]
    if drat3.get("d2h_bytes"):
        bw = min(link["d2h_gbps"], link["h2d_gbps"]) * 1e9
        assert drat3["link_utilisation"] == pytest.approx(drat3["d2h_bytes"] / (drat3["step_ms"] / 1e3) / bw)
    else:
        assert drat3.get("link_utilisation") is None


def test_scaled_costs_take_the_measured_step_for_time_and_the_batch_for_bytes():
    """Bytes scale with the batch; kernel time with the step measured at that batch when there is
    one (a B=1 step is far less efficient per sequence), the per-rebuild overhead not at all."""
    from drat.bench.capacity import _scaled_costs
    from drat.measure import build_costs

    from ..conftest import make_batch, make_model

    model = make_model()
    idx, targets = make_batch()
    costs = build_costs(model, idx, targets, "activation_size")
    linear = _scaled_costs(costs, 8.0)
    measured = _scaled_costs(costs, 8.0, step_ms=costs.step_ms * 5.0)
    assert measured.mem_bytes == linear.mem_bytes == [m * 8.0 for m in costs.mem_bytes]
    assert linear.step_ms == pytest.approx(costs.step_ms * 8.0)
    assert measured.step_ms == pytest.approx(costs.step_ms * 5.0)
    c = costs.rebuild_overhead_ms
    for t0, t, n in zip(costs.time_ms, measured.time_ms, costs.instances):
        assert t == pytest.approx((t0 - c * n) * 5.0 + c * n)
