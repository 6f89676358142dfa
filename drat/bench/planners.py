"""`drat bench planners`: how good and how fast each planner is, on the cost table alone.

A plan is chosen on a cost table (`costs.SiteCosts`), and the task loss does not depend on it
(recomputation and offload are exact), so planning is an optimisation over that table. This
command puts four planners side by side on the same tables and targets:

    ilp      the exact optimum: scipy `milp` (`oracle.solve_oracle`, three arms `solve_oracle3`)
    drat     the gates: an annealed Gumbel relaxation trained on the table, rounded by greedy
             repair and finished by local search (`gates.fit_gates`)
    local    local search alone, started from the greedy plan (`search.local_search[3]`)
    greedy   λ mode: best single flips from store-all (`search.greedy_descent`; with three arms,
             store-all itself, from which `local` starts); budget mode: recompute (or offload)
             best bytes per ms first until the budget holds (`search.greedy_repair[3]`)

Targets: λ values (objective λ·memory + time, both as fractions) and budgets as fractions of the
activations' bytes (objective: the time a plan adds). A table from a GPU bench that measured
`none`'s peak is also planned at the eager targets `--peak-cuts` (`peakcut0.45`: the activations
less 0.45 × that peak, which is what the bench's `drat-cut0.45` rows ask for), and its metadata
gives the bytes the host link can move before the peak (`link_reach_bytes`: the forward's time ×
the device-to-host bandwidth), which bounds what offloading can take off that peak. Per planner
and target it reports the objective, its gap to the ILP in points of a step (an objective is a
fraction of one), whether the plan meets the budget, and the planning time in seconds (median of
`--repeats`, one process, planners in a new random order per repeat).

Tables: the measured tables given with `--costs` (a cost table JSON, or a bench/profile JSON
that holds one under `costs` or `meta.costs`), and synthetic tables of `--synthetic-layers`
blocks, each block's sites copied from the first measured table's block 0 with ±10% noise (the
structure of a real model, at depths no device here could profile). A table with a host link
is also planned with three arms.

Outputs in --out: planners.csv, planners.json (rows + provenance), planners.png.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..costs import SiteCosts, held_at_peak, plan_cost, plan_prefetch_blocks, reload_stall_ms
from ..gates import fit_gates
from ..oracle import solve_oracle, solve_oracle3
from ..provenance import provenance
from ..search import (
    OFFLOAD,
    STORE,
    greedy_descent,
    greedy_repair,
    greedy_repair3,
    local_search,
    local_search3,
)
from ..sites import SiteGraph
from ..validate import FRACTION, NONNEG, OUT_DIR, POSITIVE_INT, NumberList
from .common import write_rows

FIELDS = ["table", "n_sites", "arms", "target", "planner", "objective", "gap_pts", "feasible", "plan_s",
          "plan_s_spread", "n_recomputed", "n_offloaded", "offloaded_bytes", "prefetch_blocks",
          "reload_stall_ms", "reload_stall_d1_ms", "prefetched_at_head_bytes"]
PLANNERS = ("ilp", "drat", "local", "greedy")


def load_table(path: Path) -> SiteCosts:
    """A SiteCosts from a JSON that is one, or holds one under `costs` or `meta.costs`."""
    d = json.loads(Path(path).read_text())
    for c in (d, d.get("costs"), d.get("meta", {}).get("costs")):
        if isinstance(c, dict) and "mem_bytes" in c:
            return SiteCosts(**c)
    raise ValueError(f"{path}: no cost table (mem_bytes) in it, nor under costs or meta.costs")


def none_peak_bytes(path: Path) -> float | None:
    """`none`'s measured peak in a GPU bench JSON (its `none` row), else None."""
    d = json.loads(Path(path).read_text())
    rows = d.get("rows") if isinstance(d, dict) else None
    r = next((r for r in rows or [] if isinstance(r, dict) and r.get("name") == "none"), None)
    return None if r is None or r.get("peak_gib") is None else float(r["peak_gib"]) * 2**30


def link_reach_bytes(costs: SiteCosts) -> float | None:
    """The bytes the device-to-host link moves during the forward: offloaded bytes that have not
    crossed by the end of the forward, where the peak is, are still on the device there."""
    lk = costs.link
    if lk is None or lk.get("synchronous"):
        return None
    return sum(max(t, 0.0) for t in costs.time_ms) * lk["d2h_gbps"] * 1e6


def synthetic_table(base: SiteCosts, n_layer: int, seed: int = 0) -> SiteCosts:
    """A `n_layer`-block table whose sites copy `base`'s by name (block 0 for block sites), ±10%."""
    rng = random.Random(seed)
    by_name = {lb.split(".", 1)[-1]: (m, t) for lb, m, t in zip(base.labels, base.mem_bytes, base.time_ms)
               if lb.startswith("L0.") or not lb.startswith("L")}
    chunks = max(base.instances)
    g = SiteGraph(n_layer, chunks)
    mem, tm = [], []
    for k in g.keys:
        m, t = by_name[k.name]
        mem.append(m * rng.uniform(0.9, 1.1))
        tm.append(t * rng.uniform(0.9, 1.1))
    n_base = sum(lb.startswith("L") and lb.endswith(".qkv") for lb in base.labels)
    step = base.step_ms * n_layer / max(n_base, 1)
    c = SiteCosts.build(g, mem, tm, step_ms=step, kind=f"synthetic-{n_layer}x")
    c.link = dict(base.link) if base.link else None
    return c


def _plans(costs: SiteCosts, arms: int, lam: float | None, budget: float | None) -> dict:
    """{planner: callable returning (stored, offloaded)} for one table and target."""
    n = len(costs)
    if arms == 2:
        def greedy():
            if budget is None:
                return greedy_descent(costs, lam), None
            return greedy_repair([True] * n, costs, budget), None

        def local():
            return local_search(greedy()[0], costs, lam or 0.0, budget), None

        return {"ilp": lambda: (solve_oracle(costs, lam or 0.0, budget).stored, None),
                "drat": lambda: (fit_gates(costs, lam=lam, budget_act_bytes=budget).stored, None),
                "local": local, "greedy": greedy}

    def split(a):
        return [x == STORE for x in a], [x == OFFLOAD for x in a]

    def greedy3():
        return [STORE] * n if budget is None else greedy_repair3([STORE] * n, costs, budget)

    def ilp3():
        p = solve_oracle3(costs, lam or 0.0, budget)
        return p.stored, p.offloaded

    def drat3():
        f = fit_gates(costs, lam=lam, budget_act_bytes=budget, arms=3)
        return f.stored, f.offloaded

    def local3():
        return split(local_search3(greedy3(), costs, lam or 0.0, budget))

    return {"ilp": ilp3, "drat": drat3, "local": local3, "greedy": lambda: split(greedy3())}


def run_planners(tables: dict[str, SiteCosts], lams=(0.2, 1.0, 5.0), budgets=(0.25, 0.5, 0.75),
                 repeats: int = 3, seed: int = 0, out: str | Path | None = None, sources=(),
                 synthetic_layers=(), peak_cuts=(0.45,), none_peaks: dict[str, float] | None = None,
                 log=print) -> list[dict]:
    """`none_peaks`: {table: `none`'s measured peak in bytes}, for the `peak_cuts` targets."""
    rng = random.Random(seed)
    none_peaks = none_peaks or {}
    meta = {"tables": {k: {"n_sites": len(c), "kind": c.kind, "step_ms": c.step_ms, "link": c.link,
                           "act_bytes": c.total_bytes, "none_peak_bytes": none_peaks.get(k),
                           "forward_ms": sum(c.time_ms), "link_reach_bytes": link_reach_bytes(c)}
                       for k, c in tables.items()}, "repeats": repeats, "lambdas": list(lams),
            "budgets": list(budgets), "peak_cuts": list(peak_cuts), "sources": [str(x) for x in sources],
            "synthetic_layers": list(synthetic_layers), **provenance(torch.device("cpu"))}
    rows: list[dict] = []
    for name, costs in tables.items():
        for arms in (2, 3) if costs.link else (2,):
            targets = [(f"lam{x:g}", x, None) for x in lams] + \
                      [(f"budget{b:g}", None, b * costs.total_bytes) for b in budgets]
            if name in none_peaks:  # what the GPU bench's drat-cut rows ask of the activations
                targets += [(f"peakcut{c:g}", None, costs.total_bytes - c * none_peaks[name])
                            for c in peak_cuts if costs.total_bytes - c * none_peaks[name] > 0]
            for tag, lam, budget in targets:
                fns = _plans(costs, arms, lam, budget)
                times: dict[str, list[float]] = {k: [] for k in fns}
                plans: dict[str, tuple] = {}
                for _ in range(repeats):
                    order = list(fns)
                    rng.shuffle(order)
                    for k in order:
                        t0 = time.perf_counter()
                        try:
                            plans[k] = fns[k]()
                        except ValueError as e:  # an infeasible target: every planner says so
                            plans[k] = e
                        times[k].append(time.perf_counter() - t0)
                ref = _objective(plans.get("ilp"), costs, lam)
                for k in PLANNERS:
                    obj = _objective(plans[k], costs, lam)
                    stored, off = plans[k] if not isinstance(plans[k], Exception) else (None, None)
                    on_dev = None if stored is None else [s and not o for s, o in
                                                          zip(stored, off or [False] * len(stored))]
                    kept = None if on_dev is None else sum(m for m, d in zip(costs.mem_bytes, on_dev) if d)
                    cap = float("inf") if budget is None else budget * (1 + 1e-9)
                    rows.append({"table": name, "n_sites": len(costs), "arms": arms, "target": tag,
                                 "planner": k, "objective": obj,
                                 "gap_pts": None if obj is None or ref is None else 100 * (obj - ref),
                                 "feasible": kept is not None and kept <= cap,
                                 "plan_s": statistics.median(times[k]),
                                 "plan_s_spread": max(times[k]) - min(times[k]),
                                 "n_recomputed": None if stored is None else len(stored) - sum(stored),
                                 "n_offloaded": None if off is None else sum(off),
                                 "offloaded_bytes": None if off is None else
                                 sum(m for m, o in zip(costs.mem_bytes, off) if o),
                                 **_prefetch(off, costs)})
                by = {r["planner"]: r for r in rows[-len(PLANNERS):]}
                log(f"{name:<16} arms {arms} {tag:<12} " + "  ".join(
                    f"{k} {_fmt(by[k]['gap_pts'])} pts {by[k]['plan_s']:.2f}s" for k in PLANNERS))
                if out is not None:
                    write_rows(rows, Path(out), "planners", FIELDS, meta)
    if out is not None:
        plot(rows, Path(out) / "planners.png", meta)
    return rows


def _prefetch(off: list[bool] | None, costs: SiteCosts) -> dict:
    """The plan's planned prefetch distance, the reload wait at it and at one block ahead, and
    the offloaded bytes that distance reloads as the backward starts beyond those the held set
    already counts at the peak (`costs.plan_prefetch_blocks`)."""
    if off is None or not any(off) or costs.link is None:
        return {}
    d = plan_prefetch_blocks(off, costs)
    held, wide = held_at_peak(costs), held_at_peak(replace(costs, link={**costs.link, "prefetch_blocks": d}))
    extra = sum(m for m, o, h, w in zip(costs.mem_bytes, off, held, wide) if o and w and not h)
    return {"prefetch_blocks": d, "reload_stall_ms": reload_stall_ms(off, costs, d),
            "reload_stall_d1_ms": reload_stall_ms(off, costs, 1), "prefetched_at_head_bytes": extra}


def _objective(plan, costs: SiteCosts, lam: float | None) -> float | None:
    if plan is None or isinstance(plan, Exception):
        return None
    stored, off = plan
    if off is not None:  # plan_cost's `stored` is what stays on the device
        stored = [s and not o for s, o in zip(stored, off)]
    return plan_cost(stored, costs, lam or 0.0, off)[0]


def _fmt(x: float | None) -> str:
    return "  n/a" if x is None else f"{x:+.3f}"


def plot(rows: list[dict], path: Path, meta: dict) -> None:
    """Gap to the ILP against planning time, one marker per planner, per row of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, c in zip(PLANNERS, ("k", "C3", "C0", "C2")):
        rs = [r for r in rows if r["planner"] == k and r["gap_pts"] is not None]
        axes[0].scatter([r["n_sites"] for r in rs], [r["plan_s"] for r in rs], s=14, color=c, label=k)
        axes[1].scatter([r["n_sites"] for r in rs], [max(r["gap_pts"], 1e-4) for r in rs], s=14, color=c,
                        label=k)
    axes[0].set(xscale="log", yscale="log", xlabel="sites in the table", ylabel="planning time (s)")
    axes[1].set(xscale="log", yscale="log", xlabel="sites in the table",
                ylabel="objective above the ILP (points of a step; floor 1e-4)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"planners on {len(meta['tables'])} cost tables ({meta['device']})", fontsize=9)
    fig.text(0.01, 0.01, f"torch {meta['torch_version']} · commit {meta['git_commit'][:10]}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def add_planners_parser(bsub) -> None:
    p = bsub.add_parser("planners", help="ILP, gates, local search and greedy on cost tables: quality, time")
    p.add_argument("--costs", nargs="*", default=[], metavar="JSON",
                   help="cost tables (or bench/profile JSONs holding one)")
    p.add_argument("--synthetic-layers", default="", type=NumberList(POSITIVE_INT),
                   help="also tables of these many blocks, copied from the first table's block 0")
    p.add_argument("--lambdas", default="0.2,1,5", type=NumberList(NONNEG))
    p.add_argument("--budgets", default="0.25,0.5,0.75", type=NumberList(FRACTION),
                   help="budgets as fractions of the activations' bytes")
    p.add_argument("--peak-cuts", default="0.45", type=NumberList(FRACTION),
                   help="for tables from a GPU bench with a `none` row: budgets at (1 - cut) x its peak")
    p.add_argument("--repeats", type=POSITIVE_INT, default=3)
    p.add_argument("--out", required=True, type=OUT_DIR)
    p.set_defaults(func=_cmd_planners)


def _cmd_planners(args) -> int:
    if not args.costs:
        raise ValueError("give at least one cost table with --costs")
    # a bench JSON is named by its model folder (results/bench/<card>/<model>/<bench>/<stem>.json)
    names = {c: Path(c).parent.parent.name if Path(c).stem in ("offload", "frontier") else Path(c).stem
             for c in args.costs}
    tables = {names[c]: load_table(Path(c)) for c in args.costs}
    none_peaks = {names[c]: p for c in args.costs if (p := none_peak_bytes(Path(c))) is not None}
    base = next(iter(tables.values()))
    layers = [int(x) for x in args.synthetic_layers.split(",") if x]
    for n in layers:
        tables[f"synthetic-{n}x"] = synthetic_table(base, n)
    run_planners(tables, lams=tuple(float(x) for x in args.lambdas.split(",") if x),
                 budgets=tuple(float(x) for x in args.budgets.split(",") if x), repeats=args.repeats,
                 out=args.out, sources=args.costs, synthetic_layers=layers,
                 peak_cuts=tuple(float(x) for x in args.peak_cuts.split(",") if x), none_peaks=none_peaks)
    return 0


__all__ = ["run_planners", "add_planners_parser", "link_reach_bytes", "load_table", "none_peak_bytes",
           "synthetic_table"]
