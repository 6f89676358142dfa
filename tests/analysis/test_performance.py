"""docs/performance.md and results/bench/README.md are generated from the committed bench results
(drat.analysis.performance): regenerated here, they must equal the committed files, and the rows,
ratios and command lines they are made of are held to hand-made benches."""

import re
import shlex
from pathlib import Path

import pytest

from drat.analysis import performance as perf
from drat.analysis.capacity_tables import CAPACITY_DEFAULTS
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
    for fig in re.findall(r"\]\((figures/[^)]+\.png)\)", doc):  # a wrapped model's own figure too
        assert (ROOT / "docs" / fig).is_file(), fig


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
                                                ("capacity", CAPACITY_DEFAULTS),
                                                ("trace", perf.TRACE_DEFAULTS)])
def test_defaults_are_the_parsers(bench_name, defaults):
    """The command lines leave out what equals the parser's default: the two must agree."""
    args = build_parser().parse_args(["bench", bench_name, "--out", "x"])
    for key, want in defaults.items():
        got = getattr(args, key)
        if isinstance(want, tuple):  # comma-separated on the command line
            got = tuple(x if bench_name == "capacity" else float(x) for x in got.split(",") if x)
        assert got == want, key


# --------------------------------------------------------------------------- a wrapped transformers model

HF_CFG = {"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab_size": 32000, "hf": "llama",
          "model": "LlamaForCausalLM", "transformers_version": "5.0.0", "intermediate_size": 768,
          "num_key_value_heads": 4, "tie_word_embeddings": False}
GIB = 2**30


def wrapped_bench(rows, costs=None, **meta):
    costs = costs or {"mem_bytes": [4 * GIB, 2 * GIB], "owned_bytes": [4 * GIB, 3 * GIB]}
    return bench(rows, config=HF_CFG, seq_len=4096, batch_size=6, params=953_223_168, costs=costs, **meta)


def wrapped_rows(drat_least=(40.0, 480.0)):
    """none at 60 GiB with 20 GiB saved; hf-checkpointing at 20 GiB, 550 ms; DRAT's least-memory
    rows at `drat_least` (two λ rows on one peak); budget rows at ¼, ½ and ¾, the ½ pair 1% over
    and 3% under their budget, the others 1% under."""
    saved = {"saved_activation_bytes": 20 * GIB}
    least_peak, least_step = drat_least
    rows = [row("unwrapped", 60.0, 440.0, **saved), row("none", 60.0, 444.0, **saved),
            row("full", 20.0, 560.0), row("selective", 59.0, 445.0), row("sac", 40.0, 490.0),
            row("hf-checkpointing", 20.0, 550.0), row("drat-store-all", 60.0, 446.0, **saved),
            row("drat-lam0.2", least_peak, least_step, lam=0.2),
            row("drat-lam1.0", least_peak, least_step - 2, lam=1.0)]
    for frac, budget, (drat, oracle) in ((0.25, 55.5, (0.99, 0.99)), (0.5, 57.0, (1.01, 0.97)),
                                         (0.75, 58.5, (0.99, 0.99))):
        for name, over in ((f"drat-budget{frac}", drat), (f"oracle-budget{frac}", oracle)):
            rows.append(row(name, budget * over, 450.0, budget_gib=budget, budget_trace=[{"kept": True}]))
    return rows


def test_a_wrapped_models_command_parses_and_rebuilds_its_shape():
    b = wrapped_bench(wrapped_rows())
    b.entry = perf.Entry("t", "s", warmup=2)
    args = parse(perf.command(b))
    # every shape flag given (no --size), the row set complete: no --only; cut45 (33 GiB) lies below
    # the floor (60 − 6 GiB of stored activations), so its rows are missing without --peak-cuts
    assert args.hf == "llama" and args.only is None and args.peak_cuts == "0.45"
    assert {k: getattr(args, k) for k in ("n_layer", "n_embd", "n_head", "vocab_size")} == \
        {k: HF_CFG[k] for k in ("n_layer", "n_embd", "n_head", "vocab_size")}
    assert (args.seq_len, args.batch_size, args.steps, args.warmup, args.lambdas) == (4096, 6, 10, 2, "0.2,1")
    assert perf.skipped_cuts(b) == [(0.45, pytest.approx(33.0))]
    assert perf.feasible_floor_gib(b) == pytest.approx(54.0)
    # a bench without the unwrapped row or a budget row ran with --only, listing what it has
    rows = [r for r in wrapped_rows() if r["name"] not in ("unwrapped", "drat-budget0.25")]
    args = parse(perf.command(wrapped_bench(rows)))
    assert args.only.split(",")[:2] == ["none", "full"] and "hf-checkpointing" in args.only.split(",")
    assert "drat-budget0.5" in args.only.split(",") and "oracle-budget" in args.only.split(",")
    assert "compile" not in args.only
    assert perf.describe_model(HF_CFG, 953_223_168) == (
        "Llama (`LlamaForCausalLM`, transformers 5.0.0, random init, wrapped by `drat.wrap`), 4 layers, "
        "h=256, 4 heads, MLP width 768, 32k vocabulary, untied embeddings; 953M parameters")


def test_the_committed_wrapped_bench_rebuilds_its_config():
    wrapped = [b for b in perf.discover(ROOT) if perf.wrapped(b.meta["config"])]
    assert wrapped, "no wrapped-model bench under results/bench/h200"
    for b in wrapped:
        cfg, args = b.meta["config"], parse(perf.command(b))
        assert args.hf == cfg["hf"] and args.size == "tiny"  # the default, every shape flag overriding it
        assert (args.n_layer, args.n_embd, args.n_head, args.vocab_size) == \
            (cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["vocab_size"])
        assert (args.seq_len, args.batch_size) == (b.meta["seq_len"], b.meta["batch_size"])
        lams = sorted(r["lam"] for r in b.rows if r["name"].startswith("drat-lam"))
        if lams:  # a bench with λ rows names them; one run with --only has none
            assert sorted(float(x) for x in args.lambdas.split(",")) == lams
        else:
            assert args.only
        assert "Targets (computed from the rows" in perf.section(b)


def test_the_targets_are_derived_from_the_rows():
    b = wrapped_bench(wrapped_rows())
    text = "\n".join(perf.targets(b))
    # (a) DRAT's least memory is 40 GiB, twice hf-checkpointing's 20: no dominance either way
    assert "DRAT's eager plans do not dominate `hf-checkpointing` (20.00 GiB, 550.0 ms)" in text
    assert ("`drat-lam1.0` (the fastest of 2 at that peak), peaks at 40.00 GiB against 20.00 (+100.0%) and "
            "steps in 478.0 ms against 550.0 (\u221213.1%, beyond the rows' spread of 0.0%)") in text
    # (b) the wrapped store-all plans against the unwrapped model
    assert "`drat-store-all` 446.0 ms, +1.4%: within 2% and beyond the rows' spread of 0.0%" in text
    assert "`none` 444.0 ms, +0.9%: within 2%" in text
    # (c) every budget row's peak against its budget: +1.0% and −3.0%, both within +2%
    assert "`drat-budget0.5` 57.57/57.00 GiB (+1.0%), `oracle-budget0.5` 55.29/57.00 GiB (\u22123.0%)" in text
    assert "`drat-budget0.75` 57.91/58.50 GiB (\u22121.0%)" in text and "; every one within +2%." in text
    assert "No row for \u221245% of `none`'s peak (33.00 GiB): below the feasible floor of 54.00 GiB" in text
    assert "DRAT's lowest measured peak, 40.00 GiB, is above that target too" in text
    # unowned: 1 − (4 + 3) / 20 of none's saved bytes
    assert perf.unowned_share(b) == pytest.approx(0.65) and "unowned: 65% of `none`'s" in text
    assert "`owned_bytes`" in text and "rotary" in text and "not a floor" not in text
    # a DRAT plan keeping less than the unowned bytes: the share is no floor, by how much
    rows = wrapped_rows()
    next(r for r in rows if r["name"] == "drat-lam1.0")["saved_activation_bytes"] = 10 * GIB
    assert ("`drat-lam1.0` keeps 10.00 GiB (50% of `none`'s), so at least 3.00 GiB of the bytes the cost "
            "table leaves unowned were not kept") in "\n".join(perf.targets(wrapped_bench(rows)))
    # without owned_bytes the cost table's mem_bytes are what the sites own
    assert perf.unowned_share(wrapped_bench(wrapped_rows(), costs={"mem_bytes": [4 * GIB, 2 * GIB]})) == \
        pytest.approx(0.7)

    # a DRAT row at hf-checkpointing's peak, faster beyond the spread, dominates it
    rows = wrapped_rows(drat_least=(19.0, 500.0))
    text = "\n".join(perf.targets(wrapped_bench(rows)))
    assert "DRAT's eager plans dominate `hf-checkpointing`" in text
    assert "at its peak faster: `drat-lam0.2`, `drat-lam1.0`" in text
    # ... but not where the steps spread wider than the difference (±15% around the median)
    for r in rows:
        if r["name"] in ("drat-lam0.2", "drat-lam1.0"):
            r["step_ms"], r["step_ms_all"] = 545.0, [460.0, 545.0, 630.0] * 3 + [545.0]
    text = "\n".join(perf.targets(wrapped_bench(rows)))
    assert "at its peak no DRAT row is faster; at its step time less memory: `drat-lam0.2`" in text
    # a budget row more than 2% over its budget breaks the target
    rows = wrapped_rows()
    next(r for r in rows if r["name"] == "drat-budget0.5")["peak_gib"] = 58.5
    assert "not every one within +2%" in "\n".join(perf.targets(wrapped_bench(rows)))
    # DRAT's own GPT has no such paragraph
    assert perf.targets(bench(wrapped_rows())) == []
