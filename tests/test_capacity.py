"""`drat bench capacity`: the batch search and the CSV schema (CPU, tiny model; no timing asserts)."""

import csv
import json
import random

from drat.capacity import CAPACITY_FIELDS, largest_fitting, run_capacity


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
