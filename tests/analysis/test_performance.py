"""docs/performance.md and results/bench/README.md are generated from the committed bench results
(drat.analysis.performance): regenerated here, they must equal the committed files, and the rows,
ratios and command lines they are made of are held to hand-made benches."""

import shlex
from pathlib import Path

import pytest

from drat.analysis import performance as perf
from drat.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_committed_documents_are_what_the_data_generate(tmp_path):
    benches = perf.write_docs(ROOT, tmp_path / "performance.md", tmp_path / "README.md", figures=False)
    assert benches, "no bench results found under results/bench/h200"
    regen = "python -m drat.analysis.performance --out docs/performance.md --index results/bench/README.md"
    assert (tmp_path / "performance.md").read_text() == (ROOT / "docs/performance.md").read_text(), regen
    assert (tmp_path / "README.md").read_text() == (ROOT / "results/bench/README.md").read_text(), regen
    doc = (ROOT / "docs/performance.md").read_text()
    for b in benches:  # every folder has its section, and every figure the text shows exists
        assert f"### {b.heading}\n" in doc and f"`{b.folder}/`" in doc
    for fig in perf.FIGURES.values():
        assert f"]({fig})" not in doc or (ROOT / "docs" / fig).is_file(), fig


def bench(rows, stem="frontier", **meta):
    m = {"config": {"vocab_size": 32000, "block_size": 2048, "n_layer": 18, "n_head": 12, "n_embd": 768,
                    "tie_weights": True}, "seq_len": 2048, "batch_size": 8, "device": "NVIDIA H200",
         "torch_version": "2.11.0", "git_commit": "test-commit", "git_dirty": False, **meta}
    return perf.Bench(Path("results/bench/h200/m/x"), stem, m, rows, "m/x", None, [f"{stem}.json"])


def row(name, peak, step, **kw):
    return {"name": name, "mode": "eager", "peak_gib": peak, "step_ms": step,
            "step_ms_all": [step] * 10, "tokens_per_s": 16384 / step * 1e3, "mfu": 0.4, **kw}


def test_number_formats():
    assert perf.pct(-0.5632) == "\u221256.3%" and perf.pct(0.203) == "+20.3%"
    assert perf.pct(-0.0004) == "0.0%" and perf.pct(None) == "—" and perf.pct(float("nan")) == "—"
    assert perf.ratio(6.0, 12.0) == -0.5 and perf.ratio(1.0, None) is None
    assert perf.spread_cell([10.0] * 8 + [20.0, 30.0]) == "10.0–21.0 (110%)"
    assert perf.spread_cell(None) == "—"
    assert perf.fmt_list([0.05, 1.0, 2.0]) == "0.05,1,2" and perf.fmt_list([]) == "''"
    assert perf.slug("medium-s2048-b8: eager frontier") == "medium-s2048-b8-eager-frontier"
    assert perf.slug("gpt-12x1024-v32k-s2048-b8: where a step's time goes") == \
        "gpt-12x1024-v32k-s2048-b8-where-a-steps-time-goes"


def test_rows_are_compared_with_none_of_the_same_process():
    b = bench([row("none", 12.0, 50.0), row("full", 6.0, 60.0),
               row("drat-lam0.5", 5.0, 55.0, n_recomputed=3, recomputed_sites="mlp_act qkv")])
    none, full, drat = perf.frontier_rows(b)
    assert none[3] == "—" and none[5] == "—"
    assert full[:6] == ["`full`", "eager", "6.00", "\u221250.0%", "60.0", "+20.0%"]
    assert full[6] == "60.0–60.0 (0%)" and full[8] == "40%" and full[9] == "—"
    assert drat[9] == "3: mlp_act qkv"
    # a process without a `none` row has no ratios
    (only,) = perf.frontier_rows(bench([row("compile-budget0.5", 8.0, 54.0, mode="compiled")]))
    assert only[3] == "—" and only[5] == "—"


def test_budget_rows_show_rounds_and_the_oracle_of_the_same_process():
    trace = [{"measured_peak_bytes": 4.85 * 2**30}, {"measured_peak_bytes": 5.02 * 2**30, "kept": True},
             {"activation_budget_bytes": 1.0, "same_plan": True}]
    b = bench([row("none", 12.0, 50.0),
               row("drat-budget0.25", 5.02, 66.0, budget_gib=5.04, budget_trace=trace, step_ms_paired=64.0,
                   paired_vs_oracle=-0.01),
               row("oracle-budget0.25", 5.02, 60.0, budget_gib=5.04, budget_trace=trace[:2],
                   step_ms_paired=64.6)])
    d, o = perf.budget_rows(b)
    assert d == ["`drat-budget0.25`", "5.04", "5.02", "\u22120.4%", "4.85 → **5.02** → same plan", "66.0",
                 "64.0", "\u22121.0%", "+10.0%"]
    assert o[7] == "—" and o[8] == "—"


def test_capacity_rows_mark_the_batches_that_ran_out_of_memory():
    probes = [{"batch_size": 7, "peak_gib": 37.2}, {"batch_size": 8, "peak_gib": None}]
    b = bench([row("none", 37.2, 230.0, batch_size=7, probes=probes),
               row("drat", 38.0, 880.0, batch_size=24, probes=[{"batch_size": 24, "peak_gib": 38.0}])],
              stem="capacity", cap_gib=40.0)
    none, drat = perf.capacity_rows(b)
    assert none[9] == "7 8✗" and none[2] == "—"
    assert drat[2] == "3.4×" and drat[7] == "\u221273.9%"  # row(): tokens/s of a fixed 16384-token step
    assert perf.headline(b) == "`drat` fits 3.4× `none`'s batch (B=24 against 7) at \u221273.9% tokens/s."


def parse(cmd: str):
    argv = shlex.split(cmd)
    assert argv[:2] == ["drat", "bench"]
    return build_parser().parse_args(argv[1:])


def test_rebuilt_commands_parse_and_name_the_rows():
    rows = [row(n, 1.0, 1.0) for n in ("none", "drat-compiled-budget0.75", "oracle-compiled-budget0.75",
                                       "drat-compiled-cut45", "oracle-compiled-cut45")]
    args = parse(perf.command(bench(rows)))
    assert args.only == ("none,drat-compiled-budget0.75,oracle-compiled-budget0.75,drat-compiled-cut,"
                         "oracle-compiled-cut")
    assert (args.size, args.seq_len, args.batch_size, args.device) == ("medium", 2048, 8, "cuda")
    # an untied, non-standard model: the closest named size and its overrides
    cfg = {"vocab_size": 32000, "block_size": 2048, "n_layer": 12, "n_head": 16, "n_embd": 1024,
           "tie_weights": False}
    assert perf.model_flags(cfg, 2048) == ["--size", "small", "--hidden", "1024", "--heads", "16", "--untied"]


def test_every_committed_command_parses():
    for b in perf.discover(ROOT):
        args = parse(perf.command(b))
        assert args.bench == b.stem and args.out == str(b.folder)


@pytest.mark.parametrize("bench_name,defaults", [("frontier", perf.FRONTIER_DEFAULTS),
                                                ("capacity", perf.CAPACITY_DEFAULTS),
                                                ("trace", perf.TRACE_DEFAULTS)])
def test_defaults_are_the_parsers(bench_name, defaults):
    """The command lines leave out what equals the parser's default: the two must agree."""
    args = build_parser().parse_args(["bench", bench_name, "--out", "x"])
    for key, want in defaults.items():
        got = getattr(args, key)
        if isinstance(want, tuple):  # comma-separated on the command line
            got = tuple(x if bench_name == "capacity" else float(x) for x in got.split(",") if x)
        assert got == want, key
