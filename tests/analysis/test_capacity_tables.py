"""The capacity sections of docs/performance.md (drat.analysis.capacity_tables): DRAT timed at
the user's batches, rows that did not fit, and the long-context summary across processes."""

from pathlib import Path

from drat.analysis import capacity_tables as ct
from drat.analysis import performance as perf


def cap_bench(rows, key="large-s4096/x", cap_gib=40.0, **meta):
    m = {"config": {"vocab_size": 32000, "block_size": 4096, "n_layer": 28, "n_head": 16, "n_embd": 1024,
                    "tie_weights": True}, "seq_len": 4096, "cap_gib": cap_gib, "device": "NVIDIA H200",
         "torch_version": "2.11.0", "git_commit": "test-commit", "git_dirty": False, **meta}
    root = "h100" if key.startswith("h100-") else "h200"
    folder = Path(f"results/bench/{root}/{key.removeprefix('h100-')}")
    return perf.Bench(folder, "capacity", m, rows, key, None, ["capacity.json"])


def cap_row(name, batch, tokens_per_s, search="largest", spread=0.0, fits=True):
    step = batch * 4096 / tokens_per_s * 1e3 if tokens_per_s else None
    r = {"name": name, "mode": "eager", "batch_size": batch, "search": search, "fits": fits,
         "probes": [{"batch_size": batch, "peak_gib": 30.0 if fits else None}]}
    if fits:
        # ten steps whose p10–p90 width is `spread` of the median
        r.update(peak_gib=30.0, step_ms=step, tokens_per_s=tokens_per_s, mfu=0.4,
                 step_ms_all=[step * (1 - spread / 2)] + [step] * 8 + [step * (1 + spread / 2)])
    return r


def test_family_strips_the_asked_batch():
    assert ct.family("drat3-b14") == "drat3" and ct.family("drat-b8") == "drat"
    assert ct.family("compile-budget0.5") == "compile-budget0.5" and ct.family("none") == "none"


def test_rows_that_did_not_fit_say_so_and_the_command_rebuilds_the_batches():
    b = cap_bench([cap_row("none", 7, 120e3), cap_row("drat3-b8", 8, 121e3, "fixed"),
                   cap_row("drat3-b40", 40, None, "fixed", fits=False)],
                  drat_batches=[8, 40])
    none, b8, b40 = ct.capacity_rows(b)
    assert b8[1] == "8 (asked)" and b8[7] == "+0.8%"
    assert b40[3] == "does not fit" and b40[6] == "—" and b40[9] == "40✗"
    head = ct.capacity_headline(b)
    assert "`drat3-b8` runs B=8 at +0.8% tokens/s" in head and "`drat3-b40` does not fit B=40" in head
    cmd = perf.command(b)
    assert "--strategies none,drat3" in cmd and "--drat-batches 8,40" in cmd


def test_best_rows_pick_each_strategys_fastest_row_per_card():
    h200 = [cap_bench([cap_row("none", 7, 120e3), cap_row("full", 27, 100e3)], "large-s4096/a"),
            cap_bench([cap_row("none", 7, 123e3), cap_row("drat3-b8", 8, 119e3, "fixed"),
                       cap_row("drat3-b10", 10, 121e3, "fixed"),
                       cap_row("drat3-b30", 30, None, "fixed", fits=False)],
                      "large-s4096/b"),
            cap_bench([cap_row("compile-budget0.5", 12, 130e3)], "large-s4096/c"),
            cap_bench([cap_row("none", 15, 124e3)], "large-s4096/ceiling", cap_gib=78.0)]
    h100 = [cap_bench([cap_row("none", 7, 110e3)], "h100-large-s4096/a")]
    best = ct.best_rows(h200 + h100)
    assert set(best) == {"h200", "h100"}
    by = {i["strategy"]: i for i in best["h200"]}
    assert set(by) == {"none", "full", "drat3", "compile-budget0.5"}  # the 78 GiB folder is not a contender
    assert by["drat3"]["row"]["name"] == "drat3-b10"  # DRAT at its fastest batch
    assert by["none"]["row"]["tokens_per_s"] == 123e3  # the baselines at their best process too
    assert by["compile-budget0.5"]["vs_none"] is None  # its process ran no `none`
    assert abs(by["drat3"]["vs_none"] - (121 / 123 - 1)) < 1e-12
    drift = (123 - 120) / 123
    assert abs(ct.none_drift(h200[:2]) - drift) < 1e-12
    assert abs(by["full"]["width"] - drift) < 1e-9  # steady steps: only the drift between processes
    # verdicts clear the spread: 121k against 100k is more; against 123k and 130k within or fewer
    verdicts = ct.long_context_verdicts(best["h200"], "drat3")
    full = next(v for v in verdicts if "`full`" in v)
    none = next(v for v in verdicts if "`none`" in v)
    comp = next(v for v in verdicts if "`compile-budget0.5`" in v)
    assert full.endswith(": more tokens/s") and "+21.0%" in full
    assert none.endswith("no more and no fewer tokens/s")  # −1.6% inside the 2.4% drift
    assert comp.endswith(": fewer tokens/s")  # −6.9%
    text = ct.long_context_section(h200 + h100)
    assert "### H200" in text and "### H100" in text
    assert "The ceiling: `none` at its largest batch under 78 GiB (B=15)" in text
    assert ct.long_context_verdicts(best["h100"], "drat3") == []  # no offload row on that card


def test_old_rows_without_the_fits_column_still_count():
    r = cap_row("drat", 19, 116e3)
    del r["fits"], r["search"]
    assert ct.fitted(r)
    b = cap_bench([cap_row("none", 7, 123e3), r])
    assert ct.best_rows([b])["h200"][1]["row"] is r
