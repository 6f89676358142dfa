"""`drat bench planners`: the ILP is the floor every planner is measured from, and the rows say
so; synthetic tables keep a real table's structure; bad input is refused."""

import json
import random

import pytest

from drat.bench.planners import FIELDS, PLANNERS, load_table, run_planners, synthetic_table
from drat.costs import SiteCosts
from drat.sites import SiteGraph


def _table(n_layer=2, link=True, seed=0) -> SiteCosts:
    rng = random.Random(seed)
    g = SiteGraph(n_layer, 2)
    c = SiteCosts.build(g, [rng.uniform(1, 100) for _ in g.keys], [rng.uniform(0.01, 1) for _ in g.keys],
                        step_ms=10.0, kind="synthetic")
    if link:
        c.link = {"d2h_gbps": 5e-6, "h2d_gbps": 5e-6, "copy_overhead_ms": 0.0}
    return c


def test_no_planner_beats_the_ilp_and_the_rows_are_complete(tmp_path):
    rows = run_planners({"t": _table()}, lams=(0.5,), budgets=(0.4,), repeats=2, out=tmp_path,
                        log=lambda *a: None)
    want = {(a, t) for a in (2, 3) for t in ("lam0.5", "budget0.4")}
    assert {(r["arms"], r["target"]) for r in rows} == want
    assert len(rows) == 4 * len(PLANNERS)
    for r in rows:
        assert r["feasible"] and r["gap_pts"] >= -1e-6 and r["plan_s"] > 0
        if r["planner"] == "ilp":
            assert r["gap_pts"] == 0.0
    three = [r for r in rows if r["arms"] == 3]
    assert all(r["n_offloaded"] is not None for r in three)
    d = json.loads((tmp_path / "planners.json").read_text())
    assert d["meta"]["repeats"] == 2 and "git_commit" in d["meta"]
    assert (tmp_path / "planners.csv").read_text().splitlines()[0] == ",".join(FIELDS)
    assert (tmp_path / "planners.png").is_file()


def test_a_synthetic_table_copies_block_zero_at_any_depth(tmp_path):
    base = _table(n_layer=2)
    deep = synthetic_table(base, 100)
    assert len(deep) == len(SiteGraph(100, 2)) and deep.link == base.link
    i, j = deep.labels.index("L0.qkv"), deep.labels.index("L99.qkv")
    b = base.mem_bytes[base.labels.index("L0.qkv")]
    assert 0.9 * b <= deep.mem_bytes[i] <= 1.1 * b and 0.9 * b <= deep.mem_bytes[j] <= 1.1 * b
    assert deep.step_ms == pytest.approx(base.step_ms * 50)
    # a bench JSON holding the table under meta.costs loads as the table
    p = tmp_path / "offload.json"
    p.write_text(json.dumps({"meta": {"costs": base.to_dict()}, "rows": []}))
    assert load_table(p).mem_bytes == base.mem_bytes


def test_the_command_refuses_a_file_without_a_table(tmp_path, capsys):
    from drat.cli import main

    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert main(["bench", "planners", "--costs", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no cost table" in err[0]
    assert not (tmp_path / "o").exists()


def test_the_performance_document_renders_every_planners_folder(tmp_path):
    from drat.analysis.planner_tables import planner_section

    assert planner_section(tmp_path) == ""
    out = tmp_path / "results/bench/cpu/p"
    run_planners({"t": _table(link=False)}, lams=(1.0,), budgets=(0.5,), repeats=1, out=out,
                 sources=["x.json"], log=lambda *a: None)
    md = planner_section(tmp_path)
    assert "#### t (" in md and "2 arms" in md and "3 arms" not in md
    cmd = "drat bench planners --costs x.json --lambdas 1 --budgets 0.5 --repeats 1 --out results/bench/cpu/p"
    assert f"`{cmd}`" in md
    assert "| lam1 | 0 · " in md  # the ILP's own cell: no gap


def test_a_gpu_bench_table_is_also_planned_at_the_eager_target(tmp_path):
    """A bench JSON with a `none` row gives the `peakcut` targets: the activations less c × that
    peak, which every feasible plan keeps to; the metadata and the document give the link's
    reach (the forward's time × the device-to-host bandwidth) beside the predicted step times."""
    from drat.analysis.planner_tables import planner_section
    from drat.bench.planners import link_reach_bytes, none_peak_bytes
    from drat.cli import main

    c = _table(n_layer=2)
    peak_gib = 1.5 * c.total_bytes / 2**30  # the peak holds more than the activations
    src = tmp_path / "results/bench/h200/m/offload/offload.json"
    src.parent.mkdir(parents=True)
    src.write_text(json.dumps({"meta": {"costs": c.to_dict()},
                               "rows": [{"name": "none", "peak_gib": peak_gib}, {"name": "full"}]}))
    assert none_peak_bytes(src) == pytest.approx(peak_gib * 2**30)
    assert link_reach_bytes(c) == pytest.approx(sum(c.time_ms) * c.link["d2h_gbps"] * 1e6)
    assert link_reach_bytes(_table(link=False)) is None
    out = tmp_path / "results/bench/cpu/p"
    assert main(["bench", "planners", "--costs", str(src), "--lambdas", "", "--budgets", "",
                 "--peak-cuts", "0.3,0.9", "--repeats", "1", "--out", str(out)]) == 0
    d = json.loads((out / "planners.json").read_text())
    rows, t = d["rows"], d["meta"]["tables"]["m"]
    # 0.9 × the peak is more than the activations hold: no such target
    assert {(r["arms"], r["target"]) for r in rows} == {(2, "peakcut0.3"), (3, "peakcut0.3")}
    budget = c.total_bytes - 0.3 * peak_gib * 2**30
    ilp3 = next(r for r in rows if r["arms"] == 3 and r["planner"] == "ilp")
    assert ilp3["feasible"] and ilp3["offloaded_bytes"] is not None and budget > 0
    assert t["none_peak_bytes"] == pytest.approx(peak_gib * 2**30)
    assert t["link_reach_bytes"] == pytest.approx(link_reach_bytes(c))
    md = planner_section(tmp_path)
    assert "--peak-cuts 0.3,0.9" in md
    line = next(x for x in md.splitlines() if x.startswith("| m | peakcut0.3 |"))
    assert f"+{100 * ilp3['objective']:.1f}%" in line
    cells = [x.strip() for x in line.split("|")]
    assert cells[-2] == f"{ilp3['offloaded_bytes'] / 1e9:.2f} GB"
    assert cells[5] == f"{link_reach_bytes(c) / 1e9:.2f} GB"
