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
