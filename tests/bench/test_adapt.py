"""`drat bench adapt`: a shape change under one budget. The re-profiled exact plan is the floor of
every stage, the plans the bench calls within budget are, the online trajectory is the trainer's
gate loop step by step, and bad input is refused in one line."""

import json

import pytest

from drat.bench.adapt import ADAPT_FIELDS, PLANNERS, run_adapt, scaled_table
from drat.costs import SiteCosts
from drat.sites import SiteGraph


def test_scaled_table_scales_bytes_per_site_and_time_with_length():
    g = SiteGraph(2, 2)
    n = len(g.keys)
    c = SiteCosts.build(g, [float(i + 1) for i in range(n)], [1.0] * n, step_ms=30.0, kind="t")
    c.rebuild_overhead_ms = 0.25
    same = scaled_table(c, [1.0] * n, [1.0] * n, 1.0)
    assert same.mem_bytes == c.mem_bytes and same.time_ms == c.time_ms and same.step_ms == c.step_ms
    grown = scaled_table(c, [1.0] * n, [3.0] * (n - 1) + [2.0], 2.0)
    assert grown.mem_bytes[:-1] == [3 * m for m in c.mem_bytes[:-1]]
    assert grown.mem_bytes[-1] == 2 * c.mem_bytes[-1]
    # the kernel time doubles, the per-rebuild overhead does not
    assert grown.time_ms == [(t - 0.25 * k) * 2 + 0.25 * k for t, k in zip(c.time_ms, c.instances)]
    assert grown.step_ms == 60.0


@pytest.fixture(scope="module")
def adapt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt")
    rows = run_adapt("tiny", (16, 64), batch_size=4, device="cpu", peak_cut=0.25, steps_per_stage=4,
                     rounds=1, steps=1, warmup=0, out=out, log=lambda *a: None)
    return rows, json.loads((out / "adapt.json").read_text()), out


def test_every_stage_has_every_planner_and_the_files_are_written(adapt_run):
    rows, data, out = adapt_run
    want = [(s, n) for s in (16, 64) for n in ("none", *PLANNERS)]
    assert [(r["seq_len"], r["name"]) for r in rows] == want
    assert (out / "adapt.csv").read_text().splitlines()[0] == ",".join(ADAPT_FIELDS)
    assert (out / "adapt.png").stat().st_size > 0
    online = data["meta"]["online"]
    assert [o["step"] for o in online] == list(range(8))
    assert [o["seq_len"] for o in online] == [16] * 4 + [64] * 4


def test_the_reprofiled_plan_is_within_budget_and_no_plan_recomputes_less_within_it(adapt_run):
    rows, data, _ = adapt_run
    budget = data["meta"]["budget_gib"]
    none_final = next(r for r in rows if r["seq_len"] == 64 and r["name"] == "none")
    assert none_final["peak_gib"] > budget  # the budget binds at the final length
    for s in (16, 64):
        stage = {r["name"]: r for r in rows if r["seq_len"] == s}
        fresh = stage["ilp-reprofile"]
        assert fresh["within_budget"] and fresh["peak_gib"] <= budget * 1.01
        assert stage["ilp-scaled"]["within_budget"] and stage["drat-refit"]["within_budget"]
        # the exact program on the stage's own table: any other plan within budget costs no less
        for name in ("ilp-once", "ilp-scaled", "drat-refit", "drat-online"):
            if stage[name]["within_budget"]:
                assert fresh["recompute_frac"] <= stage[name]["recompute_frac"] + 1e-12, name
        assert fresh["step_vs_reprofile"] == 0.0
    # the plan solved once for the final length is the re-profiled one there
    final = {r["name"]: r for r in rows if r["seq_len"] == 64}
    assert final["ilp-once"]["recompute_frac"] == pytest.approx(final["ilp-reprofile"]["recompute_frac"])


def test_the_rebuilt_command_line_knows_the_parser_defaults():
    import argparse

    from drat.analysis.adapt_tables import ADAPT_DEFAULTS
    from drat.bench.adapt import add_adapt_parser

    sub = argparse.ArgumentParser().add_subparsers()
    add_adapt_parser(sub)
    args = sub.choices["adapt"].parse_args(["--seq-lens", "16,32", "--out", "x"])
    assert {k: getattr(args, k) for k in ADAPT_DEFAULTS} == ADAPT_DEFAULTS


def test_bad_lengths_are_one_line_and_exit_2(tmp_path, capsys):
    from drat.cli import main

    for bad in (["--seq-lens", "64,32"], ["--seq-lens", "64"], ["--seq-lens", "16,64", "--peak-cut", "1.5"]):
        rc = main(["bench", "adapt", "--size", "tiny", "--device", "cpu", "--out", str(tmp_path / "x"), *bad])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and err, bad
        assert not (tmp_path / "x").exists()


def test_the_papers_sentence_cites_its_table_and_says_who_ran_over_budget(adapt_run):
    from drat.analysis.extra_tables import adapt_sentence, extra_section

    _, data, out = adapt_run
    entry = {"name": "warmup", "kind": "adapt", "title": "warm-up", "path": str(out / "adapt.json")}
    text = adapt_sentence([{"name": "x", "kind": "offload", "path": "nowhere.json"}, entry])
    assert text.endswith(r"(Table~\ref{tab:extra-warmup}).")
    over = sum(o["peak_gib"] > 1.01 * data["meta"]["budget_gib"] for o in data["meta"]["online"])
    assert f"the online gates ran {over} of 8 steps over the budget" in text
    assert r"\label{tab:extra-warmup}" in extra_section(entry)
    assert adapt_sentence([]) == ""
