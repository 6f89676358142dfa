"""The performance tables of `docs/performance.md` and the index of `results/bench/`, generated from
the committed bench results (never typed).

    python -m drat.analysis.performance --out docs/performance.md --index results/bench/README.md

Every `drat bench` output under `results/bench/h200/` and `results/bench/h100/` (`frontier.json`,
`capacity.json`, `trace.json`, `offload.json`) and the paper's one-process benches under
`results/paper/bench/` become one section each: the command that makes it (rebuilt from the JSON's
meta and its row names), its folder, its provenance (device, torch, commit, read from the JSON) and
its rows. A frontier of a transformers model wrapped by `drat.wrap` (`--hf`; its meta's config has
`hf`) also gets its targets, computed from the rows: whether DRAT's plans dominate transformers'
own checkpointing, what the wrapping costs against the `unwrapped` model, how close each budget
row's peak came to its budget, and how much of the stored activations no site owns. Every ratio is
taken against the `none` row of the same process, and every row shows how far its own timed steps
spread (p10 to p90 of `step_ms_all`, as % of the median). Figures go to `figures/` next to `--out`.
`tests/analysis/test_performance.py` regenerates both files and compares them with the committed
ones, so neither can drift from the data.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..model import SIZES
from .adapt_tables import ADAPT_HEADER, adapt_args, adapt_headline, adapt_rows
from .aggregate import step_spread
from .capacity_tables import (
    CAPACITY_HEADER,
    LONG_CONTEXT_TITLE,
    capacity_args,
    capacity_headline,
    capacity_panel,
    capacity_rows,
    card_of,
    long_context_section,
)
from .cells import (
    MINUS,
    fmt_list,
    kilo,
    md_table,
    mfu_cell,
    num,
    pct,
    ratio,
    sites_cell,
    slug,
    spread_cell,
    spread_frac,
)
from .offload_tables import (
    OFFLOAD_HEADER,
    TRACED_HEADER,
    offload_args,
    offload_headline,
    offload_panel,
    offload_rows,
    offload_targets,
    traced_rows,
)
from .planner_tables import planner_section

BENCH_ROOT = Path("results/bench/h200")
# benches run on other cards, each its own group (their numbers are not compared with the H200's)
OTHER_BENCH_ROOTS = {"h100": Path("results/bench/h100"), "cpu": Path("results/bench/cpu")}
PAPER_BENCH_ROOT = Path("results/paper/bench")
STEMS = ("frontier", "capacity", "trace", "offload", "adapt")  # the JSON each `drat bench` command writes

# `drat bench` defaults the command lines are rebuilt against (tests hold them to the parsers')
FRONTIER_DEFAULTS = {"lambdas": (0.05, 0.2, 0.5, 1.0, 2.0, 5.0),
                     "compiled_lambdas": (0.0, 0.2, 0.5, 1.0, 2.0, 5.0),
                     "compile_budgets": (1.0, 0.5, 0.2), "peak_cuts": (0.45,), "steps": 12,
                     "warmup": 3, "rounds": 3}
BUDGET_FRACS = (0.25, 0.5, 0.75)  # run_frontier's budget_fracs (no flag)
TRACE_DEFAULTS = {"lambdas": (0.5,), "trace_steps": 3}


@dataclass(frozen=True)
class Entry:
    """What a bench folder shows, in words (the numbers come from its files)."""

    title: str
    shows: str
    # warm-up steps a row ran before its timed ones, where the JSON's meta does not record them
    # (`--warmup`; the meta's own "warmup" wins where it has one)
    warmup: int = FRONTIER_DEFAULTS["warmup"]
    # `drat bench offload --trace-steps` of a bench whose meta does not record it (None: 0)
    trace_steps: int | None = None


_FRONTIER_EAGER = Entry(
    "eager frontier",
    "Every eager strategy in one process: `none`, `full` (a checkpoint per block), `selective` "
    "(Megatron's core attention), `sac` (save matmuls and SDPA), DRAT with every gate on store, DRAT's "
    "λ sweep, and budget plans at ¼, ½ and ¾ of the activations and at −45% of `none`'s peak, each "
    "beside the oracle's plan on the same cost table. The JSON also holds that cost table and the "
    "oracle's predicted frontier (`oracle_curve`).")
_FRONTIER_COMPILED = Entry(
    "compiled frontier",
    "DRAT's plans as SAC policies inside `torch.compile` (λ=0 stores every site: plain "
    "`torch.compile`) against the compiler's own `activation_memory_budget`, with eager `none` as "
    "the reference.")
_PAIRED = Entry(
    "eager budget plans, timed in alternation",
    "DRAT's and the oracle's eager budget plans; each pair is also timed in alternating steps under "
    "one optimizer (`step_ms_paired`, `paired_vs_oracle`), so their ratio is free of the drift "
    "between consecutive rows.")
_CAPACITY = "The largest batch whose training steps run under a hard allocator cap " \
            "(`set_per_process_memory_fraction`), found per strategy by probing batches, then timed."

CATALOGUE: dict[str, Entry] = {
    "medium-s2048-b8/frontier": _FRONTIER_EAGER,
    "medium-s2048-b8/frontier-compiled": _FRONTIER_COMPILED,
    "medium-s2048-b8/frontier-compiled-budgets-0.25-0.5": Entry(
        "compiled budget plans, quarter and half",
        "DRAT's budget mode under `torch.compile`, closed on the measured compiled peak (at most three "
        "compiles a row; the fitting round with the highest peak is kept), beside the oracle's plan on "
        "the same compiled cost table. Targets ¼ and ½ of the activations; ¾ and −45% are in "
        "`frontier-compiled-budgets-0.75-cut45/`, a second process with its own `none` row."),
    "medium-s2048-b8/frontier-compiled-budgets-0.75-cut45": Entry(
        "compiled budget plans, three quarters and cut45",
        "As `frontier-compiled-budgets-0.25-0.5/`, for the targets ¾ of the activations and −45% of "
        "eager `none`'s peak; the compiled store-all peak that sets the budget base is measured in "
        "this process."),
    "medium-s2048-b8/paired-budgets": _PAIRED,
    "gpt-12x1024-v32k-s2048-b8/frontier": _FRONTIER_EAGER,
    "gpt-12x1024-v32k-s2048-b8/frontier-compiled": _FRONTIER_COMPILED,
    "gpt-12x1024-v32k-s2048-b8/frontier-compiled-budgets": Entry(
        "compiled budget plans",
        "DRAT's budget mode under `torch.compile` at the four targets, without the oracle's compiled "
        "plans. Each row's `budget_trace` has a single round: the first plan that fitted was kept, "
        "however far under its budget."),
    "gpt-12x1024-v32k-s2048-b8/paired-budgets": _PAIRED,
    "gpt-12x1024-v32k-s2048-b8/trace": Entry(
        "where a step's time goes",
        "`torch.profiler` over a few steps per row: GPU busy time, kernel launches, DRAT's rebuilds "
        "and their CPU and GPU time. Whether recomputation costs GPU work or host time."),
    "large-s4096/capacity": Entry(
        "largest batch under 40 GiB",
        _CAPACITY + " `none` and DRAT (budget mode at the cap, planned per batch, a plan only ever "
                    "shrunk); the allocator's default settings."),
    "large-s4096/capacity-compile-budget0.5": Entry(
        "largest batch under 40 GiB, compiled",
        _CAPACITY + " `torch.compile` with activation memory budget 0.5, in its own process, with the "
                    "same cap and allocator settings as `capacity/`."),
    "large-s4096/capacity-expandable-segments": Entry(
        "largest batch under 40 GiB, expandable segments",
        _CAPACITY + " `none` and DRAT with `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` "
                    "(`--alloc-conf`)."),
    "large-s4096/capacity-with-full": Entry(
        "largest batch under 40 GiB, with full AC",
        _CAPACITY + " `none`, DRAT and `full`. DRAT's search here starts from the cost model's "
                    "activation floor: the meta's `drat_reference` has no measured `floor_plan_peaks`."),
    "llama-1b-s4096-b6/frontier": Entry(
        "eager frontier, a wrapped transformers model",
        "A random-init Hugging Face Llama wrapped by `drat.wrap`, every eager strategy in one process: "
        "`unwrapped` (the model before `drat.wrap`), `none`, `full`, `selective`, `sac`, "
        "`hf-checkpointing` (transformers' own `gradient_checkpointing_enable()`), DRAT with every gate "
        "on store, DRAT's λ sweep, and budget plans at ¼, ½ and ¾ of the activations beside the "
        "oracle's plan on the same cost table, each pair also timed in alternating steps. No compiled "
        "DRAT rows: the compiled plans run DRAT's own GPT only.",
        warmup=2),
    "llama-1b-s4096-b6/frontier-compile-budgets": Entry(
        "the compiler's memory budgets on the same model",
        "The same Llama, in a second process: `unwrapped` and wrapped `none` for reference, and "
        "`torch.compile` of the model before `drat.wrap` at activation-memory budgets 1.0, 0.5 and 0.2 "
        "(the model compiles). Compare with the eager frontier above through each process's `none`.",
        warmup=2),
}
_OFFLOAD = ("The offload arm against the offload baselines in one process: `none`, `full`, `save-on-cpu` "
            "(PyTorch's synchronous `save_on_cpu`), `offload-all` (every site, streams and prefetch) and "
            "`full-offload` (checkpointed blocks whose inputs are offloaded), then two-arm (`drat-cut*`) and "
            "three-arm (`drat3-cut*`) DRAT budgeted at (1 − cut) × `none`'s peak on the measured host link; "
            "where present, `drat3-at-<baseline>`: three-arm DRAT planned for the least memory whose "
            "predicted step fits each slower offload baseline's measured one. "
            "Every row timed in alternation, in a new random order per round.")
CATALOGUE.update({
    "gpt-12x1024-v32k-s2048-b8/offload": Entry(
        "the offload arm", _OFFLOAD + " The compiled rows failed on this torch (a configuration knob it "
        "lacks, since fixed); `compiled-offload-probe/` measures the compiler's own offloading instead.",
        warmup=2),
    "medium-s2048-b8/offload": Entry("the offload arm", _OFFLOAD, warmup=2),
    "large-s4096-b4/offload": Entry("the offload arm", _OFFLOAD, warmup=2),
})

CATALOGUE["h100-gpt-12x1024-v32k-s2048-b8/offload-traced"] = Entry(
    "the offload arm, traced, on an H100",
    _OFFLOAD + " Each row that moves bytes, and `none`, then ran three steps under `torch.profiler`: "
               "the compute stream's idle time, the part of it under a copy, and the share of copy time "
               "hidden under compute. This process ran on an H100, so its numbers stand beside this "
               "folder's own rows only.", warmup=2, trace_steps=3)
CATALOGUE["h100-large-s4096-b4/offload-deep"] = Entry(
    "the offload arm at deeper cuts, on an H100",
    _OFFLOAD + " Cuts 0.55 and 0.65, about `full` and `full-offload`'s peaks, each traced for two "
               "steps. This process ran on an H100.", warmup=2, trace_steps=2)
CATALOGUE["h100-large-s4096/capacity-offload"] = Entry(
    "largest batch under 40 GiB, on an H100",
    _CAPACITY + " Asked for `none`, `full`, `drat` and `drat3` in one process on an H100; the device "
                "call's ten minutes ended during DRAT's search, so only `none` and `full` have rows.")
_ASKED = (" DRAT's rows are timed at batch sizes given with `--drat-batches` (rows `drat-b<B>`, "
          "`drat3-b<B>`), each planned in budget mode at the cap and closed on the measured peak: the "
          "user picks DRAT's batch, and the batch that fits most is rarely the fastest per token.")
CATALOGUE["h100-large-s4096/capacity-drat3-batches"] = Entry(
    "the offload arm at chosen batches under 40 GiB, on an H100",
    _CAPACITY + _ASKED + " `none` and three-arm DRAT at B=8, 10 and 14, planned on the link measured "
                         "in this process, without a re-plan on the measured step.")
for _card, _where in (("h100-", "an H100"), ("", "the H200")):
    CATALOGUE[f"{_card}large-s4096/capacity-drat3-replan"] = Entry(
        f"the offload arm at a chosen batch under 40 GiB, re-planned on the measured step, on {_where}",
        _CAPACITY + _ASKED + " `none` and three-arm DRAT: a plan whose measured step misses its predicted "
                             "one by more than 2% of `none`'s is re-planned once on a link rescaled by "
                             "what the step showed, and the faster plan kept (`plan_trace` holds both). "
                             "The row records the allocator's retries over the timed steps, the reserved "
                             "peak and the last step's transfers.")
    CATALOGUE[f"{_card}large-s4096/capacity-none-cap78"] = Entry(
        f"`none`'s largest batch under 78 GiB, on {_where}",
        _CAPACITY + " `none` alone under a 78 GiB cap: what a larger batch buys in tokens/s with no "
                    "recomputation or transfer at all, the ceiling for any strategy that only frees memory.")
    CATALOGUE[f"{_card}large-s4096/capacity-drat3-expandable"] = Entry(
        f"the offload arm at a chosen batch under 40 GiB with expandable segments, on {_where}",
        _CAPACITY + _ASKED + " As `capacity-drat3-replan/`, with the allocator's expandable segments "
                             "(`--alloc-conf expandable_segments:True`): whether the allocator's retries "
                             "under the cap are what slows the arm.")
for _key in ("capacity-drat3-replan", "capacity-drat3-expandable", "capacity-none-cap78"):
    # these H100 runs warmed up one step per row (their meta predates recording it)
    CATALOGUE[f"h100-large-s4096/{_key}"] = replace(CATALOGUE[f"h100-large-s4096/{_key}"], warmup=1)
CATALOGUE["h100-medium-s2048-b8/offload-cut64"] = Entry(
    "the offload arm at a deeper cut, on an H100",
    _OFFLOAD + " One cut, at about `full-offload`'s peak; this process ran on an H100, so its "
               "numbers stand beside this folder's own rows only.", warmup=2)
_HELD = (" The offloader holds a copy's device storage until the copy's event has completed, so the "
         "bytes in flight count in the measured peak that budget mode closes on, and reloads are "
         "allocated on the compute stream.")
for _card, _where in (("h100-", "an H100"), ("", "the H200")):
    CATALOGUE[f"{_card}large-s4096/capacity-drat3-held"] = Entry(
        f"the offload arm at a chosen batch under 40 GiB, bytes in flight held, on {_where}",
        _CAPACITY + _ASKED + _HELD + " Otherwise as `capacity-drat3-replan/`: the comparison says what "
                                     "holding the bytes in flight, rather than `record_stream`, does under "
                                     "the cap.")
    CATALOGUE[f"{_card}medium-s2048-b8/offload-matched"] = Entry(
        f"the offload arm at each baseline's step time, on {_where}", _OFFLOAD + _HELD, warmup=2)
    for _model in ("large-s4096-b4", "gpt-12x1024-v32k-s2048-b8"):
        CATALOGUE[f"{_card}{_model}/offload-held"] = Entry(
            f"the offload arm, bytes in flight held, on {_where}", _OFFLOAD + _HELD, warmup=2)
    CATALOGUE[f"{_card}small-b16/adapt-s256-1024"] = Entry(
        f"a sequence-length warm-up under one budget, on {_where}",
        "`drat bench adapt`: S grows 256 → 512 → 1024 under one peak budget (−45% of `none`'s peak at "
        "S=1024). The exact program solved once for S=1024 (`ilp-once`), re-solved at every length on "
        "the first table scaled (`ilp-scaled`) or on a re-profiled table (`ilp-reprofile`), and the gates "
        "fitted afresh on the scaled table (`drat-refit`), all closed on the measured peak, against the "
        "gates driven by the trainer's own loop (`drat-online`).")
_THROTTLED = (" The host waits for a block's copies out once it has queued `run_ahead_blocks` (1) "
              "blocks past them, and the backward starts after the last copy: before, the host ran "
              "so far ahead of the GPU that every byte offloaded in a forward was still allocated "
              "at its end (`offload-matched/`, measured on the same card).")
_DEVICE_WAIT = (" Copies out are let go of behind a wait queued on the compute stream "
                "(`Stream.wait_event`), so the host never waits for a copy (in `offload-throttled/` "
                "it did, `Event.synchronize`, and the GPU idled while it queued the next block); "
                "how many bytes of copies each block may still hold is the plan's allowance "
                "(`costs.hold_bytes_by_block`: what the blocks after it will store, plus what the "
                "peak holds), in these runs instead of one block behind (the code now applies it "
                "on top). The plans charge each offloaded site the compute its copies slow "
                "(`costs.offload_site_ms`).")
_ALLOWANCE = (" Copies out are let go of behind a wait queued on the compute stream, and the plan's "
              "allowance (`costs.hold_bytes_by_block`) applies on top of letting go one block behind "
              "(a copy more than a block back is let go of only while the bytes held exceed it), looked "
              "up at the block the forward is in; a reload a rebuild reads before its own block is "
              "prefetched by the block whose backward runs that rebuild; the link "
              "probe's figures are medians of three pairs timed in turn; and the rows matched to a "
              "baseline are planned at steps timed in alternation with `none`'s (`matched_step_ms`). "
              "The plans charge each offloaded site the compute its copies slow (`costs.offload_site_ms`).")
_MECHANISMS = (("throttled", "the host throttled to the copies", _THROTTLED),
               ("device-wait", "the compute stream waiting for the copies", _DEVICE_WAIT),
               ("allowance", "the allowance on top of the distance", _ALLOWANCE))
for _card, _where in (("h100-", "an H100"), ("", "the H200")):
    for _suffix, _how, _text in _MECHANISMS:
        for _model in ("medium-s2048-b8", "gpt-12x1024-v32k-s2048-b8", "large-s4096-b4"):
            CATALOGUE[f"{_card}{_model}/offload-{_suffix}"] = Entry(
                f"the offload arm, {_how}, on {_where}", _OFFLOAD + _HELD + _text, warmup=2)
        if _suffix == "throttled":
            continue
        CATALOGUE[f"{_card}large-s4096/capacity-drat-drat3-{_suffix}"] = Entry(
            f"two and three arms at chosen batches under 40 GiB, {_how}, on {_where}",
            _CAPACITY + _ASKED + _HELD + _text + " `none`, two-arm and three-arm DRAT at B=8 and B=10 "
            "in one process (a row that runs out of memory over its timed steps falls back a batch).",
            warmup=1)
    CATALOGUE[f"{_card}large-s4096/capacity-drat3-device-wait"] = Entry(
        f"the offload arm at a chosen batch under 40 GiB, the compute stream waiting for the copies, "
        f"on {_where}",
        _CAPACITY + _ASKED + _HELD + _DEVICE_WAIT + " `none` and three-arm DRAT at B=8.", warmup=1)
CATALOGUE["cpu-tiny-b4/adapt-s64-256"] = Entry(
    "a sequence-length warm-up under one budget, on the CPU",
    "`drat bench adapt` on the CPU: S grows 64 → 128 → 256 under −30% of `none`'s peak at S=256, "
    "peaks counted as the bytes saved for backward plus the model state (no allocator). The same "
    "planners as on the GPU; the plans are not closed on a measured peak here.", warmup=1)

PAPER_ENTRY = Entry(
    "the paper's bench",
    "The `bench` rule of `workflow/config/paper.yaml`: every strategy at the paper's profile "
    "configuration (S=1024, vocabulary 8192) in one process; `nb_frontier` and the paper's bench "
    "figure and verdicts read it.")


# --------------------------------------------------------------------------- a bench folder


@dataclass
class Bench:
    folder: Path  # relative to the repository root
    stem: str  # frontier | capacity | trace
    meta: dict
    rows: list[dict]
    key: str = ""  # <model>/<bench> under results/bench/h200, or paper-<size>
    entry: Entry | None = None
    files: list[str] = field(default_factory=list)  # the folder's files, by name

    @property
    def none(self) -> dict | None:
        return next((r for r in self.rows if r["name"] == "none"), None)

    def row(self, name: str) -> dict | None:
        return next((r for r in self.rows if r["name"] == name), None)

    @property
    def model_dir(self) -> str:
        return self.key.split("/")[0]

    @property
    def heading(self) -> str:
        return f"{self.model_dir}: {self.entry.title}" if self.entry else self.key


def load_bench(root: Path, folder: Path, key: str, entry: Entry | None) -> Bench:
    for stem in STEMS:
        p = root / folder / f"{stem}.json"
        if p.is_file():
            d = json.loads(p.read_text())
            files = sorted(f.name for f in (root / folder).iterdir() if f.is_file())
            return Bench(folder, stem, d["meta"], d["rows"], key, entry, files)
    raise FileNotFoundError(f"no {'/'.join(STEMS)}.json in {folder}")


def discover(root: Path) -> list[Bench]:
    """Every bench folder under results/bench/h200 (catalogue order first), then the paper's."""
    found = sorted({str(p.parent.relative_to(root / BENCH_ROOT)) for stem in STEMS
                    for p in (root / BENCH_ROOT).glob(f"*/*/{stem}.json")})
    order = [k for k in CATALOGUE if k in found] + [k for k in found if k not in CATALOGUE]
    out = [load_bench(root, BENCH_ROOT / k, k, CATALOGUE.get(k)) for k in order]
    for card, other in OTHER_BENCH_ROOTS.items():
        keys = sorted({str(p.parent.relative_to(root / other)) for stem in STEMS
                       for p in (root / other).glob(f"*/*/{stem}.json")})
        out += [load_bench(root, other / k, f"{card}-{k}", CATALOGUE.get(f"{card}-{k}")) for k in keys]
    for size in SIZES:
        if (root / PAPER_BENCH_ROOT / size / "frontier.json").is_file():
            b = load_bench(root, PAPER_BENCH_ROOT / size, f"paper-{size}", PAPER_ENTRY)
            out.append(b)
    return out


# --------------------------------------------------------------------------- the command line


def wrapped(cfg: dict) -> bool:
    """A transformers model wrapped by `drat.wrap` (`--hf`), not DRAT's own GPT."""
    return bool(cfg.get("hf"))


def model_flags(cfg: dict, seq_len: int) -> list[str]:
    """--size and the overrides that rebuild `cfg` (bench_model: block_size = max(S, the size's));
    for a wrapped transformers model, --hf and its four shape flags (every one given: no --size)."""
    if wrapped(cfg):
        return ["--hf", cfg["hf"], "--layers", str(cfg["n_layer"]), "--hidden", str(cfg["n_embd"]),
                "--heads", str(cfg["n_head"]), "--vocab-size", str(cfg["vocab_size"])]
    fields = ("n_layer", "n_head", "n_embd")
    candidates = [s for s, c in SIZES.items() if max(seq_len, c.block_size) == cfg["block_size"]]
    size = max(candidates, key=lambda s: (sum(getattr(SIZES[s], f) == cfg[f] for f in fields),
                                          -list(SIZES).index(s)))
    base = SIZES[size]
    flags = ["--size", size]
    for f, flag in (("n_layer", "--layers"), ("n_embd", "--hidden"), ("n_head", "--heads"),
                    ("vocab_size", "--vocab-size")):
        if getattr(base, f) != cfg[f]:
            flags += [flag, str(cfg[f])]
    if not cfg.get("tie_weights", True):
        flags.append("--untied")
    return flags


def _lams(rows, prefix: str, key: str = "lam") -> list[float]:
    return [r[key] for r in rows if r["name"].startswith(prefix) and r["name"][len(prefix):][:1].isdigit()]


def feasible_floor_gib(b: Bench) -> float | None:
    """The lowest peak budget a plan can be made for (run_frontier's base: `none`'s peak less the
    cost table's stored activations); a cut whose target lies below it is skipped, no row."""
    costs, none = b.meta.get("costs"), b.none
    if not costs or none is None:
        return None
    return none["peak_gib"] - sum(costs["mem_bytes"]) / 2**30


def skipped_cuts(b: Bench) -> list[tuple[float, float]]:
    """(cut, target GiB) of the default peak cuts below the feasible floor, where the folder has no
    cut rows: run_frontier skipped them (budget infeasible), so no row was left to name them."""
    floor = feasible_floor_gib(b)
    if floor is None or any(re.fullmatch(r"(drat|oracle)(-compiled)?-cut\d+", r["name"]) for r in b.rows):
        return []
    targets = [(c, (1 - c) * b.none["peak_gib"]) for c in FRONTIER_DEFAULTS["peak_cuts"]]
    return targets if all(t < floor for _, t in targets) else []


def _frontier_args(b: Bench) -> list[str]:
    rows, names = b.rows, [r["name"] for r in b.rows]
    present = set(names)
    hf = wrapped(b.meta["config"])  # no compiled rows: run_frontier compiles DRAT's GPT only
    lams = _lams(rows, "drat-lam")
    clams = _lams(rows, "drat-compiled-lam")
    cbudgets = _lams(rows, "compile-budget", "budget_gib")
    cut_rows = (n for n in names if re.fullmatch(r"(drat|oracle)(-compiled)?-cut\d+", n))
    cuts = sorted({int(n.rsplit("cut", 1)[1]) / 100 for n in cut_rows})
    skipped = skipped_cuts(b)
    if skipped:  # the defaults, all below the floor: asked for, no rows
        cuts = [c for c, _ in skipped]
    labels = [f"budget{f}" for f in BUDGET_FRACS] + [f"cut{round(c * 100)}" for c in cuts]
    compiled_targets = any(re.match(r"(drat|oracle)-compiled-(budget|cut)", n) for n in names)
    baselines = ("none", "full", "selective", "sac", "drat-store-all")
    if hf:
        baselines = ("unwrapped", "none", "full", "selective", "sac", "hf-checkpointing", "drat-store-all")
    families: list[tuple[str, list[str]]] = [(n, [n]) for n in baselines]
    families += [("drat-lam", [f"drat-lam{x}" for x in lams])]
    for kind in ("drat", "oracle"):
        families += [(f"{kind}-budget", [f"{kind}-{lab}" for lab in labels if lab.startswith("budget")])]
    for kind in ("drat", "oracle"):
        families += [(f"{kind}-cut", [f"{kind}-{lab}" for lab in labels if lab.startswith("cut")])]
    families += [("drat-compiled-lam", [f"drat-compiled-lam{x}" for x in clams])]
    for part in ("budget", "cut"):
        for kind in ("drat-compiled", "oracle-compiled"):
            families += [(f"{kind}-{part}", [f"{kind}-{lab}" for lab in labels if lab.startswith(part)])]
    families += [("compile-budget", [f"compile-budget{x}" for x in cbudgets])]
    expected = {n for fam, members in families for n in members
                if compiled_targets or not re.match(r"(drat|oracle)-compiled-(budget|cut)", n)}
    if hf:
        expected = {n for n in expected if "compile" not in n}
    if skipped:
        expected = {n for n in expected if not re.fullmatch(r"(drat|oracle)(-compiled)?-cut\d+", n)}

    def listed(flag, values, default):
        return [flag, fmt_list(values)] if tuple(values) != tuple(default) else []

    d = FRONTIER_DEFAULTS
    if expected == present and lams and hf:  # no compiled rows to list
        return listed("--lambdas", lams, d["lambdas"]) + listed("--peak-cuts", cuts, d["peak_cuts"])
    if expected == present and lams:  # the whole default row set, on these lists: no --only
        args = (listed("--lambdas", lams, d["lambdas"])
                + listed("--compiled-lambdas", clams, d["compiled_lambdas"])
                + listed("--compile-budgets", cbudgets, d["compile_budgets"])
                + listed("--peak-cuts", cuts, d["peak_cuts"]))
        return args + ([] if compiled_targets else ["--no-compiled-drat-budgets"])
    only, args = [], []
    for fam, members in families:
        have = [m for m in members if m in present]
        if not have:
            continue
        if have == members:
            only.append(fam)
            args += {"drat-lam": lambda: listed("--lambdas", lams, d["lambdas"]),
                     "drat-compiled-lam": lambda: listed("--compiled-lambdas", clams, d["compiled_lambdas"]),
                     "compile-budget": lambda: listed("--compile-budgets", cbudgets, d["compile_budgets"]),
                     }.get(fam, list)()
        else:
            only += have
        if fam == "drat-store-all" and "oracle_curve" in b.meta:
            only.append("oracle-curve")
    if any(f.endswith("-cut") for f in only) and tuple(cuts) != d["peak_cuts"]:
        args += ["--peak-cuts", fmt_list(cuts)]
    if "oracle_curve" in b.meta and "oracle-curve" not in only:
        only.insert(0, "oracle-curve")
    return args + ["--only", ",".join(only)]


def command(b: Bench, out: str | None = None) -> str:
    """The `drat bench` command line that writes this folder, rebuilt from its meta and row names."""
    m = b.meta
    device = "cpu" if str(m.get("device", "cpu")).startswith("cpu") else "cuda"  # the GPU's name on CUDA
    parts = ["drat", "bench", b.stem, *model_flags(m["config"], m["seq_len"]), "--seq-len", str(m["seq_len"])]
    steps = len(b.rows[0].get("step_ms_all") or []) if b.rows else 0
    if b.stem == "adapt":  # the lengths are the warm-up's: no --seq-len
        parts = [*parts[:-2], "--device", device, *adapt_args(b)]
    elif b.stem == "frontier":
        parts += ["--batch-size", str(m["batch_size"]), "--device", device]
        if steps and steps != FRONTIER_DEFAULTS["steps"]:
            parts += ["--steps", str(steps)]
        if warmup_steps(b) != FRONTIER_DEFAULTS["warmup"]:
            parts += ["--warmup", str(warmup_steps(b))]
        parts += _frontier_args(b)
        rounds = m.get("rounds", 0)  # benches from before the interleaved rounds timed rows alone
        if rounds != FRONTIER_DEFAULTS["rounds"]:
            parts += ["--rounds", str(rounds)]
        if any(r["name"].startswith("drat3-") for r in b.rows):
            parts += ["--arms", "store,recompute,offload"]
    elif b.stem == "capacity":
        parts += ["--device", device, *capacity_args(b, steps)]
        if warmup_steps(b) != FRONTIER_DEFAULTS["warmup"]:
            parts += ["--warmup", str(warmup_steps(b))]
    elif b.stem == "offload":
        parts += ["--batch-size", str(m["batch_size"]), "--device", device, *offload_args(b)]
    elif b.stem == "trace":
        parts += ["--batch-size", str(m["batch_size"]), "--device", device]
        lams = tuple(float(r["name"][len("drat-lam"):]) for r in b.rows if r["name"].startswith("drat-lam"))
        if lams != TRACE_DEFAULTS["lambdas"]:
            parts += ["--lambdas", fmt_list(lams)]
        if m.get("trace_steps", 3) != TRACE_DEFAULTS["trace_steps"]:
            parts += ["--trace-steps", str(m["trace_steps"])]
    return " ".join(parts + ["--out", out or str(b.folder)])


# --------------------------------------------------------------------------- provenance and model


HF_NAMES = {"llama": "Llama", "gpt2": "GPT-2", "qwen2": "Qwen2"}


def warmup_steps(b: Bench) -> int:
    """Warm-up steps before each row's timed ones: the meta's, else the catalogue's, else the default."""
    return b.meta.get("warmup", b.entry.warmup if b.entry else FRONTIER_DEFAULTS["warmup"])


def _vocab(v: int) -> str:
    return f"{v // 1000}k" if v % 1000 == 0 else f"{v:,}"


def describe_model(cfg: dict, params: int | None) -> str:
    if wrapped(cfg):
        name = HF_NAMES.get(cfg["hf"], cfg["hf"])
        arch = f"`{cfg['model']}`, " if cfg.get("model") else ""
        version = f"transformers {cfg['transformers_version']}, " if cfg.get("transformers_version") else ""
        kv = cfg.get("num_key_value_heads")
        heads = f"{cfg['n_head']} heads" + (f" ({kv} key/value)" if kv and kv != cfg["n_head"] else "")
        mlp = f", MLP width {cfg['intermediate_size']}" if cfg.get("intermediate_size") else ""
        tied = cfg.get("tie_word_embeddings")
        emb = "" if tied is None else f", {'tied' if tied else 'untied'} embeddings"
        s = (f"{name} ({arch}{version}random init, wrapped by `drat.wrap`), {cfg['n_layer']} layers, "
             f"h={cfg['n_embd']}, {heads}{mlp}, {_vocab(cfg['vocab_size'])} vocabulary{emb}")
        return s + (f"; {params / 1e6:.0f}M parameters" if params else "")
    s = (f"{cfg['n_layer']} layers, h={cfg['n_embd']}, {cfg['n_head']} heads, vocabulary "
         f"{cfg['vocab_size']:,}, {'tied' if cfg.get('tie_weights', True) else 'untied'} embeddings")
    return s + (f"; {params / 1e6:.1f}M parameters" if params else "")


def provenance_line(meta: dict) -> str:
    t = meta.get("time_utc", "")
    when = f", {t[:10]} {t[11:16]} UTC" if t else ""
    dirty = meta.get("git_dirty")
    tree = "clean tree" if dirty is False else "uncommitted changes" if dirty else "tree state unrecorded"
    return (f"{meta.get('device', '?')}, torch {meta.get('torch_version', '?')}, commit "
            f"`{(meta.get('git_commit') or '?')[:10]}` ({tree}){when}")


def details(b: Bench) -> list[str]:
    """The bullet lines under a section heading: command, folder, provenance, model, timing."""
    m, cfg = b.meta, b.meta["config"]
    lines = [f"- command: `{command(b)}`",
             f"- folder: `{b.folder}/` ({', '.join(b.files)})",
             f"- provenance: {provenance_line(m)}"]
    shape = f"S={m['seq_len']}" + (f", B={m['batch_size']}" if "batch_size" in m else "")
    if b.stem == "capacity":
        conf = m.get("cuda_alloc_conf")
        shape += f", cap {m['cap_gib']:g} GiB, " + (f"allocator `{conf}`" if conf else "allocator defaults")
    lines.append(f"- model: {describe_model(cfg, m.get('params'))}; {shape}")
    steps = {len(r["step_ms_all"]) for r in b.rows if r.get("step_ms_all")}
    timing = []
    if steps:
        timing.append(f"median of {'/'.join(str(s) for s in sorted(steps))} CUDA-event-timed steps per row "
                      f"after {warmup_steps(b)} warm-up steps")
        if b.stem == "frontier" and any(r.get("step_ms_rounds") for r in b.rows):
            timing.append(f"then the eager rows timed in alternation, in a new random order in each of "
                          f"{m.get('rounds')} rounds: their step is the median of the round medians "
                          "(peaks from the rows' own steps)")
    elif b.stem == "trace":
        timing.append(f"median of the timed steps per row; {m.get('trace_steps', 3)} more steps under "
                      "`torch.profiler`")
    elif b.stem == "adapt":
        timing.append(f"at the end of each stage its rows timed in alternation, in a new random order in "
                      f"each of {m.get('rounds', 3)} rounds of {m.get('steps', 10)} steps; a row's step is "
                      "the median of its round medians, its spread their max − min; peaks from one step of "
                      f"each row; {m.get('steps_per_stage')} online steps per stage")
    elif b.stem == "offload":
        timing.append(f"every row timed in alternation, in a new random order in each of "
                      f"{m.get('rounds', 3)} rounds of {m.get('steps', 12)} steps; a row's step is the "
                      "median of its round medians, its spread their max − min; peaks from each row's "
                      "own steps")
    paused = {r.get("gc_paused", False) for r in b.rows}
    timing.append("Python's garbage collector paused while timing" if paused == {True}
                  else "Python's garbage collector active while timing (no row has `gc_paused`)"
                  if paused == {False} else "garbage collector paused in some rows only")
    if m.get("matmul_tflops") == m.get("matmul_tflops") and m.get("matmul_tflops"):
        timing.append(f"MFU against {m['matmul_tflops']:.0f} TFLOP/s, the bf16 matmul rate measured in "
                      "this process")
    lines.append("- timing: " + "; ".join(timing))
    costs = m.get("costs")
    if costs:
        lines.append("- cost table: " + (
            "peak-aware LM head (charged the measured drop of the peak when it is recomputed; "
            "`owned_bytes` differ from `mem_bytes`)" if costs.get("owned_bytes")
            else "every site charged the bytes it owns (no peak-aware LM head)")
            + f", per-rebuild overhead {costs.get('rebuild_overhead_ms', 0):.3f} ms")
    return lines


# --------------------------------------------------------------------------- tables


def frontier_rows(b: Bench) -> list[list[str]]:
    none = b.none
    out = []
    for r in b.rows:
        # a compiled λ row closed on the measured sweep names the row whose plan it took
        name = f"`{r['name']}`" + (f" (plan of `{r['plan_from']}`)" if r.get("plan_from") else "")
        out.append([name, r.get("mode", ""), num(r["peak_gib"]),
                    pct(ratio(r["peak_gib"], none and none["peak_gib"])) if r is not none else "—",
                    num(r["step_ms"], 1),
                    pct(ratio(r["step_ms"], none and none["step_ms"])) if r is not none else "—",
                    spread_cell(r.get("step_ms_all")), kilo(r.get("tokens_per_s")), mfu_cell(r),
                    sites_cell(r)])
    return out


FRONTIER_HEADER = ["row", "mode", "peak GiB", "peak vs none", "step ms", "step vs none",
                   "step p10–p90 ms (% of median)", "tokens/s", "MFU", "sites recomputed: kinds"]


def _rounds(trace: list[dict]) -> str:
    cells = []
    for t in trace:
        if "measured_peak_bytes" in t:
            c = f"{t['measured_peak_bytes'] / 2**30:.2f}"
            cells.append(f"**{c}**" if t.get("kept") else c)
        elif t.get("same_plan"):
            cells.append("same plan")
        elif "infeasible" in t:
            cells.append("infeasible")
    return " → ".join(cells) or "—"


def _reference(b: Bench, r: dict) -> dict | None:
    """The oracle row a DRAT budget row is held to, in the same process."""
    if r["name"].startswith("drat-"):
        return b.row("oracle-" + r["name"][len("drat-"):])
    return None


def budget_rows(b: Bench) -> list[list[str]]:
    out = []
    for r in b.rows:
        if "budget_trace" not in r:
            continue
        ref = _reference(b, r)
        budget = r["budget_gib"]
        out.append([f"`{r['name']}`", num(budget), num(r["peak_gib"]), pct(ratio(r["peak_gib"], budget)),
                    _rounds(r["budget_trace"]), num(r["step_ms"], 1), num(r.get("step_ms_paired"), 1),
                    pct(r.get("paired_vs_oracle")),
                    pct(ratio(r["step_ms"], ref["step_ms"])) if ref else "—"])
    return out


BUDGET_HEADER = ["row", "budget GiB", "peak GiB", "peak vs budget",
                 "closed-loop rounds: measured peak GiB (**kept**)", "step ms", "alternating step ms",
                 "vs oracle, alternating steps", "vs oracle, consecutive rows"]


def trace_rows(b: Bench) -> list[list[str]]:
    none = b.none
    return [[f"`{r['name']}`", num(r["step_ms"], 1),
             pct(ratio(r["step_ms"], none["step_ms"])) if none is not None and r is not none else "—",
             num(r["gpu_busy_ms"], 1), f"{100 * r['gpu_busy_frac']:.0f}%", f"{r['kernels']:.0f}",
             f"{r['rebuilds']:.0f}", num(r["rebuild_cpu_ms"], 1), num(r["rebuild_gpu_ms"], 1),
             num(r["peak_gib"]), num(r["reserved_minus_allocated_gib"]), str(r.get("n_recomputed", 0))]
            for r in b.rows]


TRACE_HEADER = ["row", "step ms", "step vs none", "GPU busy ms", "GPU busy", "kernels", "rebuilds",
                "rebuild CPU ms", "rebuild GPU ms", "peak GiB", "reserved − allocated GiB",
                "sites recomputed"]


KEY_ROWS = ("unwrapped", "full", "hf-checkpointing", "sac", "drat-store-all", "drat-cut45", "oracle-cut45",
            "drat-compiled-lam0.0", "compile-budget1.0", "drat-compiled-lam0.2", "compile-budget0.5")


def _span(xs: list[float]) -> str:
    lo, hi = min(xs), max(xs)
    return pct(lo) if pct(lo) == pct(hi) else f"{pct(lo)} to {pct(hi)}"


def headline(b: Bench) -> str:
    """The folder's key numbers in one sentence, from its rows (ratios within the process)."""
    none, out = b.none, []
    if b.stem == "offload":
        return offload_headline(b)
    if b.stem == "adapt":
        return adapt_headline(b)
    if b.stem == "trace":
        for r in b.rows:
            if r["name"].startswith("drat") and none is not None:
                out.append(f"`{r['name']}` runs {r['step_ms'] - none['step_ms']:+.1f} ms a step against "
                           f"`none`, {r['gpu_busy_ms'] - none['gpu_busy_ms']:+.1f} ms of it GPU busy time "
                           f"(busy {100 * r['gpu_busy_frac']:.0f}% against "
                           f"{100 * none['gpu_busy_frac']:.0f}%; "
                           f"{r['kernels']:.0f} against {none['kernels']:.0f} kernels)")
    elif b.stem == "capacity":
        return capacity_headline(b)
    else:
        if none is not None:
            out += [f"`{n}` {pct(ratio(r['peak_gib'], none['peak_gib']))} peak, "
                    f"{pct(ratio(r['step_ms'], none['step_ms']))} step" for n in KEY_ROWS if (r := b.row(n))]
        budget = [r for r in b.rows if "budget_trace" in r]
        if budget:
            out.append("peaks " + _span([ratio(r["peak_gib"], r["budget_gib"]) for r in budget])
                       + " against their budgets")
        paired = [r["paired_vs_oracle"] for r in b.rows if r.get("paired_vs_oracle") is not None]
        consecutive = [ratio(r["step_ms"], ref["step_ms"]) for r in budget
                       if "compiled" in r["name"] and (ref := _reference(b, r))]
        if paired:
            out.append("DRAT's step against the oracle's, alternating: " + _span(paired))
        elif consecutive:
            out.append("DRAT's compiled step against the oracle's, consecutive rows: " + _span(consecutive))
    return "; ".join(out) + "." if out else ""


# --------------------------------------------------------------------------- a wrapped model's targets

WITHIN_PCT = 2.0  # the wrapped store-all plan's step against the unwrapped model's; a peak's over its budget
# the tensors made between a family's sites (outputs of no site, so never recomputed)
BETWEEN_SITES = {"llama": "the residual stream, the rotary-embedded q and k, the SwiGLU product",
                 "qwen2": "the residual stream, the rotary-embedded q and k, the SwiGLU product"}


def beyond_spread(a: dict, b: dict) -> bool:
    """Whether a's step differs from b's by more than the wider of the two rows' p10–p90 widths."""
    return abs(a["step_ms"] / b["step_ms"] - 1) > max(spread_frac(a), spread_frac(b))


def unowned_share(b: Bench) -> float | None:
    """The share of `none`'s saved activation bytes that no site owns: 1 − Σ owned / none's saved."""
    costs, none = b.meta.get("costs"), b.none
    if not costs or none is None or not none.get("saved_activation_bytes"):
        return None
    owned = costs.get("owned_bytes") or costs["mem_bytes"]
    return 1 - sum(owned) / none["saved_activation_bytes"]


def _beyond(a: dict, b: dict) -> str:
    """Whether a's step difference from b's exceeds the rows' spread, in words, with that spread."""
    width = 100 * max(spread_frac(a), spread_frac(b))
    return f"{'beyond' if beyond_spread(a, b) else 'within'} the rows' spread of {width:.1f}%"


def _names(rows: list[dict]) -> str:
    return ", ".join(f"`{r['name']}`" for r in rows)


def targets(b: Bench) -> list[str]:
    """A wrapped model's targets, computed from its rows: DRAT against `hf-checkpointing`, the
    wrapped store-all plan against `unwrapped`, each budget row's peak against its budget, and the
    share of the stored activations no site owns. A step difference counts only beyond the wider
    of the two rows' p10–p90 widths."""
    if not wrapped(b.meta["config"]) or b.stem != "frontier":
        return []
    out = []
    drat = [r for r in b.rows if r["name"].startswith("drat-")]
    hf = b.row("hf-checkpointing")
    if hf and drat:
        # the fastest of the rows that keep the least (λ rows can settle on one plan's peak)
        least = min(drat, key=lambda r: (r["peak_gib"], r["step_ms"]))
        ties = [r for r in drat if r["peak_gib"] == least["peak_gib"]]
        # at hf-checkpointing's peak (or under it), faster beyond the spread; at its step time (or
        # faster, or not slower beyond the spread), less memory
        faster = [r for r in drat if r["peak_gib"] <= hf["peak_gib"] and r["step_ms"] < hf["step_ms"]
                  and beyond_spread(r, hf)]
        leaner = [r for r in drat if r["peak_gib"] < hf["peak_gib"]
                  and (r["step_ms"] <= hf["step_ms"] or not beyond_spread(r, hf))]
        at_peak = f"faster: {_names(faster)}" if faster else "no DRAT row is faster"
        at_step = f"less memory: {_names(leaner)}" if leaner else "no DRAT row keeps less memory"
        tie = f" (the fastest of {len(ties)} at that peak)" if len(ties) > 1 else ""
        verdict = "dominate" if faster or leaner else "do not dominate"
        out.append(
            f"- DRAT's eager plans {verdict} `hf-checkpointing` ({num(hf['peak_gib'])} GiB, "
            f"{num(hf['step_ms'], 1)} ms): at its peak {at_peak}; at its step time {at_step}. "
            f"DRAT's least-memory row, `{least['name']}`{tie}, peaks at "
            f"{num(least['peak_gib'])} GiB against {num(hf['peak_gib'])} "
            f"({pct(ratio(least['peak_gib'], hf['peak_gib']))}) and steps in {num(least['step_ms'], 1)} ms "
            f"against {num(hf['step_ms'], 1)} ({pct(ratio(least['step_ms'], hf['step_ms']))}, "
            f"{_beyond(least, hf)}).")
    raw = b.row("unwrapped")
    if raw:
        cells = []
        for name in ("drat-store-all", "none"):
            r = b.row(name)
            if r is None:
                continue
            d = ratio(r["step_ms"], raw["step_ms"])
            within = abs(d) <= WITHIN_PCT / 100
            cells.append(f"`{name}` {num(r['step_ms'], 1)} ms, {pct(d)}: "
                         f"{'within' if within else 'not within'} {WITHIN_PCT:g}% and {_beyond(r, raw)}")
        if cells:
            out.append(f"- the wrapped store-all plans against `unwrapped` ({num(raw['step_ms'], 1)} ms, "
                       f"{num(raw['peak_gib'])} GiB): " + "; ".join(cells) + ".")
    budget = [r for r in b.rows if "budget_trace" in r]
    if budget:
        over = [ratio(r["peak_gib"], r["budget_gib"]) for r in budget]
        ok = all(o <= WITHIN_PCT / 100 for o in over)
        line = ("- budget rows, peak against budget: "
                + ", ".join(f"`{r['name']}` {num(r['peak_gib'])}/{num(r['budget_gib'])} GiB ({pct(o)})"
                            for r, o in zip(budget, over))
                + f"; {'every one' if ok else 'not every one'} within +{WITHIN_PCT:g}%.")
        skipped = skipped_cuts(b)
        if skipped:
            cuts = ", ".join(f"{MINUS}{100 * c:g}% of `none`'s peak ({t:.2f} GiB)" for c, t in skipped)
            line += (f" No row for {cuts}: below the feasible floor of {feasible_floor_gib(b):.2f} GiB "
                     "(`none`'s peak less the cost table's stored activations), where budget mode makes "
                     "no plan")
            lowest = min((r["peak_gib"] for r in b.rows if r["name"].startswith("drat-")), default=None)
            if lowest is not None:
                above = all(lowest > t for _, t in skipped)
                line += (f"; DRAT's lowest measured peak, {num(lowest)} GiB, is "
                         f"{'above' if above else 'not above'} that target too")
            line += "."
        out.append(line)
    share = unowned_share(b)
    if share is not None:
        between = BETWEEN_SITES.get(b.meta["config"]["hf"], "the residual stream")
        key = "owned_bytes" if b.meta["costs"].get("owned_bytes") else "mem_bytes"
        out.append(f"- unowned: {100 * share:.0f}% of `none`'s saved activation bytes "
                   f"({b.none['saved_activation_bytes'] / 2**30:.2f} GiB) belong to no site (1 − the sum of "
                   f"the cost table's `{key}` over `none`'s `saved_activation_bytes`). Bytes made between "
                   f"sites ({between}) are always stored, which bounds what a site-level plan can save.")
        saved = b.none["saved_activation_bytes"]
        kept = [r for r in b.rows if r["name"].startswith("drat-") and r.get("saved_activation_bytes")]
        least = min(kept, key=lambda r: r["saved_activation_bytes"], default=None)
        if least is not None and least["saved_activation_bytes"] < share * saved:
            # a plan keeping less than the unowned bytes kept only part of them: the share is a
            # loose bound (the cost table counts fewer bytes per site than a recompute frees)
            low = least["saved_activation_bytes"]
            out[-1] += (f" That share is not a floor on what a plan keeps: `{least['name']}` keeps "
                        f"{low / 2**30:.2f} GiB ({100 * low / saved:.0f}% of `none`'s), so at least "
                        f"{(share * saved - low) / 2**30:.2f} GiB of the bytes the cost table leaves unowned "
                        "were not kept under that plan.")
    return ["Targets (computed from the rows; a step difference counts only beyond the wider p10–p90 "
            "width of the two rows):", "", *out] if out else []


def section(b: Bench) -> str:
    key = "- key numbers" + (" (ratios against `none` of this process): " if b.none and b.stem != "adapt"
                             else ": ")
    tg = targets(b)
    parts = [f"### {b.heading}", "", b.entry.shows if b.entry else "", "", *details(b),
             *([key + headline(b)] if headline(b) else []), "", *(tg + [""] if tg else [])]
    if b.stem == "frontier":
        parts.append(md_table(FRONTIER_HEADER, frontier_rows(b)))
        budget = budget_rows(b)
        if budget:
            parts += ["", "Budget rows: the budget each plan was closed on, the peak each closed-loop round "
                          "measured (the kept round in bold where the loop marks it), and the step "
                          "against the oracle's plan for the same target.", "",
                      md_table(BUDGET_HEADER, budget)]
    elif b.stem == "capacity":
        parts.append(md_table(CAPACITY_HEADER, capacity_rows(b)))
    elif b.stem == "adapt":
        parts.append(md_table(ADAPT_HEADER, adapt_rows(b)))
    elif b.stem == "offload":
        parts += [*offload_targets(b), "", md_table(OFFLOAD_HEADER, offload_rows(b))]
        traced = traced_rows(b)
        if traced:
            parts += ["", "Traced (`torch.profiler`, per step): the step under the profiler (its hooks "
                          "slow the host, so it runs longer than the timed step), the compute stream's "
                          "idle time, the part of it while a copy was in flight (the exposed transfer, "
                          "an upper bound: a gap the host caused counts if a copy ran in it), the cost "
                          "model's predicted exposed time, and how much of the copies' time ran under "
                          "compute.", "",
                      md_table(TRACED_HEADER, traced)]
    else:
        parts.append(md_table(TRACE_HEADER, trace_rows(b)))
    return "\n".join(parts).replace("\n\n\n", "\n\n") + "\n"


# --------------------------------------------------------------------------- figures

MAIN_FRONTIERS = ("frontier", "frontier-compiled")  # the folders the S=2048 figure draws
FIGURES = {"s2048": "figures/peak-vs-step-s2048.png", "paper": "figures/peak-vs-step-paper-bench.png",
           "capacity": "figures/capacity-large-s4096.png", "offload": "figures/offload-peak-vs-step.png"}


def wrapped_figure(b: Bench) -> str:
    """A wrapped model's own figure (its S and B differ from the S=2048 figure's): named by its
    model folder less the -s<S>-b<B> suffix."""
    return f"figures/peak-vs-step-{re.sub(r'-s[0-9]+(-b[0-9]+)?$', '', b.model_dir)}.png"


def _wrapped_frontiers(benches: list[Bench]) -> list[Bench]:
    """One bench per wrapped model's figure: the first (eager) frontier of each model folder."""
    out: dict[str, Bench] = {}
    for b in benches:
        if b.stem == "frontier" and not b.key.startswith("paper-") and wrapped(b.meta["config"]):
            out.setdefault(wrapped_figure(b), b)
    return list(out.values())


def _family(name: str) -> tuple[str, str]:
    if name.startswith("compile-budget"):
        return "torch.compile budget", "C4"
    if name in ("full-compiled", "sac-compiled"):
        return "baseline compiled", "C5"
    if name.startswith("drat-compiled"):
        return "DRAT compiled", "C1"
    if name.startswith("oracle-compiled"):
        return "oracle compiled", "C8"
    if name.startswith("drat"):
        return "DRAT eager", "C3"
    if name.startswith("oracle"):
        return "oracle eager", "C2"
    return "baseline", "C0"


# drawn on top of another row's point: no label of their own
_UNLABELLED = re.compile(r"oracle-.*|drat-store-all|drat-lam0\.05|drat-compiled-lam0\.0|unwrapped")


def _unstack(fig, step: float = 7.0, tries: int = 3) -> None:
    """Move a row's label down (in steps of `step` points) while it overlaps an earlier one: rows
    at one peak and near one step time (λ rows that settle on one plan, `full` and its twin) stay
    readable. After the layout: the labels' places on the canvas are final then."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        _unstack_axes(ax, renderer, step, tries)


def _unstack_axes(ax, renderer, step: float, tries: int) -> None:
    placed = []
    for a in ax.texts:
        for _ in range(tries):
            box = a.get_window_extent(renderer)
            if not any(box.overlaps(p) for p in placed):
                break
            a.xyann = (a.xyann[0], a.xyann[1] - step)
        placed.append(a.get_window_extent(renderer))


def _peak_vs_step(ax, benches: list[Bench], title: str) -> None:
    """Peak GiB against median step ms of every row, with the row's p10–p90 step range as a bar."""
    seen = set()
    for b in benches:
        lam = sorted((r for r in b.rows if r["name"].startswith("drat-lam")), key=lambda r: r["step_ms"])
        if len(lam) > 1:
            ax.plot([r["step_ms"] for r in lam], [r["peak_gib"] for r in lam], color="C3", lw=0.6, alpha=0.6)
        for r in b.rows:
            fam, color = _family(r["name"])
            s = step_spread(r.get("step_ms_all"))
            xerr = [[r["step_ms"] - s["step_ms_p10"]], [s["step_ms_p90"] - r["step_ms"]]] if s else None
            ax.errorbar(r["step_ms"], r["peak_gib"], xerr=xerr, fmt="s" if "compile" in r["name"] else "o",
                        color=color, ms=4, lw=0.8, capsize=2, label=None if fam in seen else fam)
            seen.add(fam)
            if not _UNLABELLED.fullmatch(r["name"]):
                ax.annotate(r["name"], (r["step_ms"], r["peak_gib"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("step ms (median; bar: p10–p90 of the row's own steps)", fontsize=7)
    ax.set_ylabel("peak allocated GiB", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper right")


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    _unstack(fig)
    fig.savefig(path, dpi=130, metadata={"Software": None})


def write_figures(benches: list[Bench], figures_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frontier = [b for b in benches if b.stem == "frontier" and not b.key.startswith("paper-")
                and not wrapped(b.meta["config"])]
    models = list(dict.fromkeys(b.model_dir for b in frontier))
    if models:
        fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5.5), squeeze=False)
        for ax, model in zip(axes[0], models):
            group = [b for b in frontier if b.model_dir == model and b.key.split("/")[1] in MAIN_FRONTIERS]
            _peak_vs_step(ax, group, f"{model}: " + " and ".join(f"{b.key.split('/')[1]}/" for b in group)
                          + " (two processes)")
        _save(fig, figures_dir / Path(FIGURES["s2048"]).name)
        plt.close(fig)
    for b in _wrapped_frontiers(benches):
        fig, ax = plt.subplots(figsize=(6.5, 5.0))
        _peak_vs_step(ax, [b], f"{b.key}/: {HF_NAMES.get(b.meta['config']['hf'], b.meta['config']['hf'])} "
                               f"wrapped by drat.wrap, S={b.meta['seq_len']}, B={b.meta['batch_size']} "
                               "(one process)")
        _save(fig, figures_dir / Path(wrapped_figure(b)).name)
        plt.close(fig)
    offload = [b for b in benches if b.stem == "offload"]
    if offload:
        fig, axes = plt.subplots(1, len(offload), figsize=(6.0 * len(offload), 5.0), squeeze=False)
        for ax, b in zip(axes[0], offload):
            offload_panel(ax, b)
        _save(fig, figures_dir / Path(FIGURES["offload"]).name)
        plt.close(fig)
    paper = [b for b in benches if b.key.startswith("paper-")]
    if paper:
        fig, axes = plt.subplots(1, len(paper), figsize=(5.5 * len(paper), 4.5), squeeze=False)
        for ax, b in zip(axes[0], paper):
            _peak_vs_step(ax, [b], f"{b.key}: S={b.meta['seq_len']}, B={b.meta['batch_size']}, "
                                   f"commit {b.meta['git_commit'][:7]}")
        _save(fig, figures_dir / Path(FIGURES["paper"]).name)
        plt.close(fig)
    cards = {}
    for b in benches:
        if b.stem == "capacity":
            cards.setdefault(card_of(b), []).append(b)
    if cards:
        fig, axes = plt.subplots(1, len(cards), figsize=(6.0 * len(cards), 4.5), squeeze=False)
        for ax, (c, bs) in zip(axes[0], cards.items()):
            capacity_panel(ax, bs, f"large, S=4096, one {c.upper()}: every capacity folder")
        _save(fig, figures_dir / Path(FIGURES["capacity"]).name)
        plt.close(fig)


# --------------------------------------------------------------------------- the documents

INTRO = """\
# Performance on one H200

Generated from the committed results by `python -m drat.analysis.performance --out
docs/performance.md --index results/bench/README.md`; `tests/analysis/test_performance.py`
regenerates it and fails if it differs. Edit the module, not this file.

How to read the tables:
- One table is one process of one `drat bench` command (given under each heading): its rows ran
  side by side on one GPU, and every "vs none" is against the `none` row of that same process.
  Tables from different processes differ by whatever the device did between them.
- peak GiB: `torch.cuda.max_memory_allocated` over a row's steps. step ms: the median of the
  row's CUDA-event-timed training steps (forward, backward, fused AdamW; bf16 autocast).
  p10–p90: the 10th to 90th percentile of the row's own timed steps, and that width as % of the
  median: how far the median can be trusted. tokens/s: B·S per step time. MFU: the model's
  FLOPs per step over the step time, against a bf16 matmul rate measured in the same process.
- Row names: `drat-lam<λ>` DRAT fitted at a price λ; `drat-budget<f>` DRAT in budget mode, its
  peak budget `none`'s peak less (1 − f) of `none`'s stored activations; `drat-cut45` a budget
  45% below `none`'s peak; `oracle-*` the exact ILP's plan for the same target on the same cost
  table; `*-compiled-*` the plan run as SAC policies under `torch.compile`; `compile-budget<b>`
  plain `torch.compile` with `activation_memory_budget=b`. Where a transformers model is wrapped
  by `drat.wrap`: `unwrapped` the model before wrapping, `hf-checkpointing` transformers' own
  `gradient_checkpointing_enable()`.
- The folder index, with what each folder shows: `results/bench/README.md`. The paper's raw
  data: `results/paper/README.md`.
"""


def models_of(benches: list[Bench]) -> dict[str, str]:
    out = {}
    for b in benches:
        if not b.key.startswith("paper-"):
            out.setdefault(b.model_dir, describe_model(b.meta["config"], b.meta.get("params")))
    return out


def _link_text(b: Bench) -> str:
    return b.key if b.key.startswith("paper-") or not b.entry else b.entry.title


def render(benches: list[Bench]) -> str:
    groups: dict[str, list[Bench]] = {}
    for b in benches:
        groups.setdefault("paper" if b.key.startswith("paper-") else b.model_dir, []).append(b)
    models = models_of(benches)
    out = [INTRO, "## Contents", ""]
    for g, bs in groups.items():
        out.append(f"- {g}: " + ", ".join(f"[{_link_text(b)}](#{slug(b.heading)})" for b in bs))
    if any(b.stem == "capacity" for b in benches):
        out.append(f"- [{LONG_CONTEXT_TITLE}](#{slug(LONG_CONTEXT_TITLE)}): across the capacity "
                   "folders")
    out += ["", "## Figures", ""]
    if any(not b.key.startswith("paper-") and b.stem == "frontier" and not wrapped(b.meta["config"])
           for b in benches):
        out += [f"![peak GiB against step ms, S=2048]({FIGURES['s2048']})", ""]
    for b in _wrapped_frontiers(benches):
        out += [f"![peak GiB against step ms, {b.model_dir}, wrapped by drat.wrap]({wrapped_figure(b)})", ""]
    if any(b.stem == "capacity" for b in benches):
        out += [f"![largest batch and tokens/s under a 40 GiB cap]({FIGURES['capacity']})", ""]
    if any(b.stem == "offload" for b in benches):
        out += [f"![the offload arm: peak GiB against step ms]({FIGURES['offload']})", ""]
    if any(b.key.startswith("paper-") for b in benches):
        out += [f"![peak GiB against step ms, the paper's bench]({FIGURES['paper']})", ""]
    for g, bs in groups.items():
        if g == "paper":
            out += ["## The paper's bench configuration (S=1024, vocabulary 8192)", ""]
        else:
            out += [f"## {g}", "", f"Model: {models[g]}.", ""]
        out += [section(b) for b in bs]
    long_context = long_context_section(benches)
    if long_context:
        out += [long_context]
    return "\n".join(out).rstrip() + "\n"


INDEX_INTRO = """\
# results/bench: the GPU benchmarks

One folder per `drat bench` process, named by the card it ran on and what it holds:
`h200/<model>-s<S>[-b<B>]/<bench>/` (`h100/...` for a process that ran on an H100), with the files
the command writes: `<stem>.json` (meta with device, torch version, commit, model config, and the
cost table where plans were fitted; every row, with `step_ms_all`, each timed step), `<stem>.csv`
(the schema's columns) and, for frontier and capacity, `<stem>.png` (the command's own plot). This
index and the tables of `docs/performance.md` are generated from those files by `python -m
drat.analysis.performance --out docs/performance.md --index results/bench/README.md`.

The paper's raw data (training runs, profiles, cost tables, exactness, its own benches) are in
`results/paper/` (see its README); one training run on the H200 is in
`results/train/small_h200_shakespeare/`.
"""


def render_index(benches: list[Bench], doc: str = "docs/performance.md") -> str:
    out = [INDEX_INTRO, "## Models", ""]
    out += [md_table(["model", "what it is"], [[f"`{k}`", v] for k, v in models_of(benches).items()]), ""]
    out += ["## Folders", ""]
    rows = []
    for b in benches:
        if b.key.startswith("paper-"):
            continue
        shows = " ".join(x for x in ((b.entry.shows if b.entry else ""), headline(b)) if x) or "—"
        link = Path(b.folder).relative_to(BENCH_ROOT.parent)
        rows.append([f"[`{link}/`]({link}/)", f"`{command(b)}`", shows,
                     f"[{doc}#{slug(b.heading)}](../../{doc}#{slug(b.heading)})"])
    out.append(md_table(["folder", "command", "what it shows", "tables"], rows))
    return "\n".join(out).rstrip() + "\n"


def write_docs(root: Path, out: Path, index: Path | None = None, figures: bool = True) -> list[Bench]:
    """Write the performance document (and the folder index); returns the benches read. Paths in the
    text are relative to the repository root `root`."""
    benches = discover(Path(root))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    planners = planner_section(Path(root))  # the CPU planners' bench, where it has been run
    out.write_text(render(benches) + ("\n" + planners if planners else ""))
    if index is not None:
        Path(index).parent.mkdir(parents=True, exist_ok=True)
        Path(index).write_text(render_index(benches))
    if figures:
        write_figures(benches, out.parent / "figures")
    return benches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drat.analysis.performance",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/performance.md", help="the Markdown document to write")
    ap.add_argument("--index", default=None, help="also write the folder index (results/bench/README.md)")
    ap.add_argument("--root", default=".", help="the repository root the results are read from")
    ap.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    args = ap.parse_args(argv)
    index = Path(args.index) if args.index else None
    benches = write_docs(Path(args.root), Path(args.out), index, args.figures)
    print(f"{args.out}: {len(benches)} tables", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
