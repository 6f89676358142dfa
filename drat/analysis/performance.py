"""The performance tables of `docs/performance.md` and the index of `results/bench/`, generated from
the committed bench results (never typed).

    python -m drat.analysis.performance --out docs/performance.md --index results/bench/README.md

Every `drat bench` output under `results/bench/h200/` (`frontier.json`, `capacity.json`,
`trace.json`) and the paper's one-process benches under `results/paper/bench/` become one section
each: the command that makes it (rebuilt from the JSON's meta and its row names), its folder, its
provenance (device, torch, commit, read from the JSON) and its rows. Every ratio is taken against
the `none` row of the same process, and every row shows how far its own timed steps spread
(p10 to p90 of `step_ms_all`, as % of the median). Figures go to `figures/` next to `--out`.
`tests/analysis/test_performance.py` regenerates both files and compares them with the committed
ones, so neither can drift from the data.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..model import SIZES
from .aggregate import step_spread

BENCH_ROOT = Path("results/bench/h200")
PAPER_BENCH_ROOT = Path("results/paper/bench")
STEMS = ("frontier", "capacity", "trace")  # the JSON each `drat bench` command writes
MINUS = "\u2212"

# `drat bench` defaults the command lines are rebuilt against (tests hold them to the parsers')
FRONTIER_DEFAULTS = {"lambdas": (0.05, 0.2, 0.5, 1.0, 2.0, 5.0),
                     "compiled_lambdas": (0.0, 0.2, 0.5, 1.0, 2.0, 5.0),
                     "compile_budgets": (1.0, 0.5, 0.2), "peak_cuts": (0.45,), "steps": 12}
BUDGET_FRACS = (0.25, 0.5, 0.75)  # run_frontier's budget_fracs (no flag)
CAPACITY_DEFAULTS = {"strategies": ("none", "full", "compile-budget0.5", "drat"), "cap_gib": 40.0,
                     "steps": 10}
TRACE_DEFAULTS = {"lambdas": (0.5,), "trace_steps": 3}


@dataclass(frozen=True)
class Entry:
    """What a bench folder shows, in words (the numbers come from its files)."""

    title: str
    shows: str


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
}
PAPER_ENTRY = Entry(
    "the paper's bench",
    "The `bench` rule of `workflow/config/paper.yaml`: every strategy at the paper's profile "
    "configuration (S=1024, vocabulary 8192) in one process; `nb_frontier` and the paper's bench "
    "figure and verdicts read it.")


# --------------------------------------------------------------------------- formatting


def pct(x: float | None, digits: int = 1) -> str:
    """A signed percentage with a true minus sign; a value that rounds to zero has no sign."""
    if x is None or x != x:
        return "—"
    v = round(100 * x, digits)
    if v == 0:
        return f"{0:.{digits}f}%"
    return f"{'+' if v > 0 else MINUS}{abs(v):.{digits}f}%"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b − 1, None where either side is missing."""
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b - 1


def num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    return f"{x:.{digits}f}"


def kilo(x) -> str:
    return "—" if x is None or x != x else f"{x / 1e3:.1f}k"


def spread_cell(step_ms_all) -> str:
    """p10–p90 of a row's timed steps in ms, and that width as % of the median."""
    s = step_spread(step_ms_all)
    if not s:
        return "—"
    return f"{s['step_ms_p10']:.1f}–{s['step_ms_p90']:.1f} ({s['step_spread_pct']:.0f}%)"


def sites_cell(row: dict) -> str:
    n = row.get("n_recomputed") or 0
    return f"{n}: {row['recomputed_sites']}" if n and row.get("recomputed_sites") else (str(n) if n else "—")


def mfu_cell(row: dict) -> str:
    m = row.get("mfu")
    return "—" if m is None or m != m else f"{100 * m:.0f}%"


def fmt_list(xs) -> str:
    return ",".join(f"{x:g}" for x in xs) if xs else "''"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


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
    for size in SIZES:
        if (root / PAPER_BENCH_ROOT / size / "frontier.json").is_file():
            b = load_bench(root, PAPER_BENCH_ROOT / size, f"paper-{size}", PAPER_ENTRY)
            out.append(b)
    return out


# --------------------------------------------------------------------------- the command line


def model_flags(cfg: dict, seq_len: int) -> list[str]:
    """--size and the overrides that rebuild `cfg` (bench_model: block_size = max(S, the size's))."""
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


def _frontier_args(b: Bench) -> list[str]:
    rows, names = b.rows, [r["name"] for r in b.rows]
    present = set(names)
    lams = _lams(rows, "drat-lam")
    clams = _lams(rows, "drat-compiled-lam")
    cbudgets = _lams(rows, "compile-budget", "budget_gib")
    cut_rows = (n for n in names if re.fullmatch(r"(drat|oracle)(-compiled)?-cut\d+", n))
    cuts = sorted({int(n.rsplit("cut", 1)[1]) / 100 for n in cut_rows})
    labels = [f"budget{f}" for f in BUDGET_FRACS] + [f"cut{round(c * 100)}" for c in cuts]
    compiled_targets = any(re.match(r"(drat|oracle)-compiled-(budget|cut)", n) for n in names)
    families: list[tuple[str, list[str]]] = [(n, [n]) for n in ("none", "full", "selective", "sac",
                                                                 "drat-store-all")]
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

    def listed(flag, values, default):
        return [flag, fmt_list(values)] if tuple(values) != tuple(default) else []

    d = FRONTIER_DEFAULTS
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
    device = "cpu" if m.get("device", "cpu") == "cpu" else "cuda"  # provenance: the GPU's name on CUDA
    parts = ["drat", "bench", b.stem, *model_flags(m["config"], m["seq_len"]), "--seq-len", str(m["seq_len"])]
    steps = len(b.rows[0].get("step_ms_all") or []) if b.rows else 0
    if b.stem == "frontier":
        parts += ["--batch-size", str(m["batch_size"]), "--device", device]
        if steps and steps != FRONTIER_DEFAULTS["steps"]:
            parts += ["--steps", str(steps)]
        parts += _frontier_args(b)
    elif b.stem == "capacity":
        parts += ["--device", device]
        if m.get("cap_gib", 40.0) != CAPACITY_DEFAULTS["cap_gib"]:
            parts += ["--cap-gib", f"{m['cap_gib']:g}"]
        strategies = tuple(r["name"] for r in b.rows)
        if strategies != CAPACITY_DEFAULTS["strategies"]:
            parts += ["--strategies", ",".join(strategies)]
        if m.get("cuda_alloc_conf"):
            parts += ["--alloc-conf", m["cuda_alloc_conf"]]
        if steps and steps != CAPACITY_DEFAULTS["steps"]:
            parts += ["--steps", str(steps)]
    elif b.stem == "trace":
        parts += ["--batch-size", str(m["batch_size"]), "--device", device]
        lams = tuple(float(r["name"][len("drat-lam"):]) for r in b.rows if r["name"].startswith("drat-lam"))
        if lams != TRACE_DEFAULTS["lambdas"]:
            parts += ["--lambdas", fmt_list(lams)]
        if m.get("trace_steps", 3) != TRACE_DEFAULTS["trace_steps"]:
            parts += ["--trace-steps", str(m["trace_steps"])]
    return " ".join(parts + ["--out", out or str(b.folder)])


# --------------------------------------------------------------------------- provenance and model


def describe_model(cfg: dict, params: int | None) -> str:
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
                      "after 3 warm-up steps")
    elif b.stem == "trace":
        timing.append(f"median of the timed steps per row; {m.get('trace_steps', 3)} more steps under "
                      "`torch.profiler`")
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
            "`owned_bytes` differ from `mem_bytes`)" if "owned_bytes" in costs
            else "every site charged the bytes it owns (no peak-aware LM head)")
            + f", per-rebuild overhead {costs.get('rebuild_overhead_ms', 0):.3f} ms")
    return lines


# --------------------------------------------------------------------------- tables


def frontier_rows(b: Bench) -> list[list[str]]:
    none = b.none
    out = []
    for r in b.rows:
        out.append([f"`{r['name']}`", r.get("mode", ""), num(r["peak_gib"]),
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


def capacity_rows(b: Bench) -> list[list[str]]:
    none = b.none
    out = []
    for r in b.rows:
        probes = " ".join(f"{p['batch_size']}{'' if p.get('peak_gib') is not None else '✗'}"
                          for p in r.get("probes", []))
        other = r is not none and none is not None
        out.append([f"`{r['name']}`", str(r["batch_size"]),
                    f"{r['batch_size'] / none['batch_size']:.1f}×" if other else "—",
                    num(r["peak_gib"]), num(r["step_ms"], 1), spread_cell(r.get("step_ms_all")),
                    kilo(r.get("tokens_per_s")),
                    pct(ratio(r.get("tokens_per_s"), none["tokens_per_s"])) if other else "—",
                    mfu_cell(r), probes or "—", sites_cell(r)])
    return out


CAPACITY_HEADER = ["row", "largest batch", "batch vs none", "peak GiB", "step ms",
                   "step p10–p90 ms (% of median)", "tokens/s", "tokens/s vs none", "MFU",
                   "batches probed (✗: out of memory)", "sites recomputed: kinds"]


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


KEY_ROWS = ("full", "sac", "drat-store-all", "drat-cut45", "oracle-cut45", "drat-compiled-lam0.0",
            "compile-budget1.0", "drat-compiled-lam0.2", "compile-budget0.5")


def _span(xs: list[float]) -> str:
    lo, hi = min(xs), max(xs)
    return pct(lo) if pct(lo) == pct(hi) else f"{pct(lo)} to {pct(hi)}"


def headline(b: Bench) -> str:
    """The folder's key numbers in one sentence, from its rows (ratios within the process)."""
    none, out = b.none, []
    if b.stem == "trace":
        for r in b.rows:
            if r["name"].startswith("drat") and none is not None:
                out.append(f"`{r['name']}` runs {r['step_ms'] - none['step_ms']:+.1f} ms a step against "
                           f"`none`, {r['gpu_busy_ms'] - none['gpu_busy_ms']:+.1f} ms of it GPU busy time "
                           f"(busy {100 * r['gpu_busy_frac']:.0f}% against "
                           f"{100 * none['gpu_busy_frac']:.0f}%; "
                           f"{r['kernels']:.0f} against {none['kernels']:.0f} kernels)")
    elif b.stem == "capacity":
        for r in b.rows:
            if r is none:
                continue
            if none is None:
                out.append(f"`{r['name']}` fits B={r['batch_size']} at {kilo(r['tokens_per_s'])} tokens/s")
            else:
                out.append(f"`{r['name']}` fits {r['batch_size'] / none['batch_size']:.1f}× `none`'s batch "
                           f"(B={r['batch_size']} against {none['batch_size']}) at "
                           f"{pct(ratio(r['tokens_per_s'], none['tokens_per_s']))} tokens/s")
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


def section(b: Bench) -> str:
    key = "- key numbers" + (" (ratios against `none` of this process): " if b.none else ": ")
    parts = [f"### {b.heading}", "", b.entry.shows if b.entry else "", "", *details(b),
             *([key + headline(b)] if headline(b) else []), ""]
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
    else:
        parts.append(md_table(TRACE_HEADER, trace_rows(b)))
    return "\n".join(parts).replace("\n\n\n", "\n\n") + "\n"


# --------------------------------------------------------------------------- figures

MAIN_FRONTIERS = ("frontier", "frontier-compiled")  # the folders the S=2048 figure draws
FIGURES = {"s2048": "figures/peak-vs-step-s2048.png", "paper": "figures/peak-vs-step-paper-bench.png",
           "capacity": "figures/capacity-large-s4096.png"}


def _family(name: str) -> tuple[str, str]:
    if name.startswith("compile-budget"):
        return "torch.compile budget", "C4"
    if name.startswith("drat-compiled"):
        return "DRAT compiled", "C1"
    if name.startswith("oracle-compiled"):
        return "oracle compiled", "C8"
    if name.startswith("drat"):
        return "DRAT eager", "C3"
    if name.startswith("oracle"):
        return "oracle eager", "C2"
    return "baseline", "C0"


_UNLABELLED = re.compile(r"oracle-.*|drat-store-all|drat-lam0\.05|drat-compiled-lam0\.0")  # on top of others


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
    fig.savefig(path, dpi=130, metadata={"Software": None})


def write_figures(benches: list[Bench], figures_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frontier = [b for b in benches if b.stem == "frontier" and not b.key.startswith("paper-")]
    models = list(dict.fromkeys(b.model_dir for b in frontier))
    if models:
        fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5.5), squeeze=False)
        for ax, model in zip(axes[0], models):
            group = [b for b in frontier if b.model_dir == model and b.key.split("/")[1] in MAIN_FRONTIERS]
            _peak_vs_step(ax, group, f"{model}: " + " and ".join(f"{b.key.split('/')[1]}/" for b in group)
                          + " (two processes)")
        _save(fig, figures_dir / Path(FIGURES["s2048"]).name)
        plt.close(fig)
    paper = [b for b in benches if b.key.startswith("paper-")]
    if paper:
        fig, axes = plt.subplots(1, len(paper), figsize=(5.5 * len(paper), 4.5), squeeze=False)
        for ax, b in zip(axes[0], paper):
            _peak_vs_step(ax, [b], f"{b.key}: S={b.meta['seq_len']}, B={b.meta['batch_size']}, "
                                   f"commit {b.meta['git_commit'][:7]}")
        _save(fig, figures_dir / Path(FIGURES["paper"]).name)
        plt.close(fig)
    cap = [b for b in benches if b.stem == "capacity"]
    if cap:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        markers = "osD^vP"
        for i, b in enumerate(cap):
            for r in b.rows:
                color = {"none": "C0", "full": "C2", "drat": "C3"}.get(r["name"], "C4")
                ax.scatter(r["batch_size"], r["tokens_per_s"] / 1e3, color=color, marker=markers[i % 6],
                           label=f"{r['name']} ({b.key.split('/')[1]})")
                ax.annotate(r["name"], (r["batch_size"], r["tokens_per_s"] / 1e3), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
        ax.set_xlabel("largest batch under the cap (sequences of 4096 tokens)", fontsize=8)
        ax.set_ylabel("tokens/s (thousands) at that batch", fontsize=8)
        ax.set_title("large, S=4096, 40 GiB cap: one marker shape per folder", fontsize=8)
        ax.legend(fontsize=6)
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
  plain `torch.compile` with `activation_memory_budget=b`.
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
    out += ["", "## Figures", ""]
    if any(not b.key.startswith("paper-") and b.stem == "frontier" for b in benches):
        out += [f"![peak GiB against step ms, S=2048]({FIGURES['s2048']})", ""]
    if any(b.stem == "capacity" for b in benches):
        out += [f"![largest batch and tokens/s under a 40 GiB cap]({FIGURES['capacity']})", ""]
    if any(b.key.startswith("paper-") for b in benches):
        out += [f"![peak GiB against step ms, the paper's bench]({FIGURES['paper']})", ""]
    for g, bs in groups.items():
        if g == "paper":
            out += ["## The paper's bench configuration (S=1024, vocabulary 8192)", ""]
        else:
            out += [f"## {g}", "", f"Model: {models[g]}.", ""]
        out += [section(b) for b in bs]
    return "\n".join(out).rstrip() + "\n"


INDEX_INTRO = """\
# results/bench: the H200 benchmarks

One folder per `drat bench` process, named by what it holds:
`h200/<model>-s<S>[-b<B>]/<bench>/`, with the files the command writes: `<stem>.json` (meta with
device, torch version, commit, model config, and the cost table where plans were fitted; every
row, with `step_ms_all`, each timed step), `<stem>.csv` (the schema's columns) and, for frontier
and capacity, `<stem>.png` (the command's own plot). This index and the tables of
`docs/performance.md` are generated from those files by
`python -m drat.analysis.performance --out docs/performance.md --index results/bench/README.md`.

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
        rows.append([f"[`{b.key}/`](h200/{b.key}/)", f"`{command(b)}`", shows,
                     f"[{doc}#{slug(b.heading)}](../../{doc}#{slug(b.heading)})"])
    out.append(md_table(["folder", "command", "what it shows", "tables"], rows))
    return "\n".join(out).rstrip() + "\n"


def write_docs(root: Path, out: Path, index: Path | None = None, figures: bool = True) -> list[Bench]:
    """Write the performance document (and the folder index); returns the benches read. Paths in the
    text are relative to the repository root `root`."""
    benches = discover(Path(root))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(benches))
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
