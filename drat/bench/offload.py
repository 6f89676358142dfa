"""`drat bench offload`: the offload arm against its baselines, side by side in one process.

Rows, on one model and batch:

    none, full                               the two-arm reference points
    save-on-cpu, offload-all, full-offload   the offload baselines (strategies.py)
    drat-cut{c}                              two-arm DRAT budgeted at (1 − c) × `none`'s peak
    drat3-cut{c}                             three-arm DRAT at the same budget (with `--arms
                                             store,recompute,offload`, the default here)

Every DRAT row is planned on the measured cost table and the measured host link
(`measure.measure_link`), then closed on its measured peak (`common.plan_under_measured_peak`).
A three-arm plan whose measured step misses the predicted one by more than 2% of `none`'s step is
re-planned once on a link rescaled to what the step showed, and the faster plan that fits is kept.

Peaks come from each row's own steps. Step times come from every row timed in alternation, in a
new random order per round (`--rounds`), each round's median per row: a row's step is the median
of its rounds, its spread their max − min. A verdict claims a difference only beyond the spread.
Per row it also reports the bytes each way, the pinned host bytes and the link utilisation (bytes
÷ step ÷ measured bandwidth).

With `--trace-steps` (CUDA), each row that moves bytes, and `none`, is then traced with
torch.profiler (`trace.transfer_overlap`): the compute stream's idle time while a copy was in
flight (the exposed transfer, measured), beside the cost model's `predicted_exposed_ms`, and the
share of copy time hidden under compute.

Outputs in --out: `offload.csv`, `offload.json` (rows, link, costs, provenance), `offload.png`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..costs import (
    copy_stall_ms,
    hold_bytes_by_block,
    link_utilisation,
    offload_report,
    plan_cost,
    reload_stall_ms,
)
from ..measure import build_costs, interleaved_step_ms, measure_link, measure_steps
from ..offload import default_host_cap_bytes
from ..oracle import solve_oracle3
from ..provenance import provenance
from ..strategies import FullAC, FullOffload, NoneAC, OffloadAll, SaveOnCPU
from ..validate import ARMS, FRACTION, NONNEG_INT, POSITIVE, POSITIVE_INT, NumberList
from .common import (
    add_model_args,
    bench_model,
    check_steps,
    model_kwargs,
    offloaded_of,
    plan_with_link_check,
    save_stamped,
    timed_rounds,
    write_rows,
)
from .trace import trace_transfers

CSV_FIELDS = ["name", "strategy", "arms", "budget_gib", "peak_gib", "step_ms", "step_spread_ms",
              "peak_vs_none", "step_vs_none", "n_recomputed", "n_offloaded", "d2h_bytes", "h2d_bytes",
              "host_pinned_bytes", "link_utilisation", "predicted_step_ms", "predicted_exposed_ms",
              "trace_exposed_transfer_ms", "trace_copy_hidden_frac", "trace_compute_idle_ms",
              "prefetch_blocks", "predicted_reload_stall_ms", "predicted_reload_stall_d1_ms", "late_reloads",
              "predicted_copy_stall_ms", "predicted_copy_stall_r1_ms", "matched_step_ms"]


OFFLOAD_BASELINES = ("save-on-cpu", "offload-all", "full-offload")


def run_offload(size: str = "tiny", seq_len: int = 64, batch_size: int = 2, device: str = "cpu",
                n_layer=None, n_embd=None, n_head=None, vocab_size=None, tie_weights=None,
                cuts=(0.45, 0.6, 0.75), arms: int = 3, host_mem_gib: float | None = None, steps: int = 12,
                warmup: int = 3, rounds: int = 3, seed: int = 0, out: str | Path | None = None,
                compiled: bool = False, trace_steps: int = 3, match_baselines: bool = True,
                log=print) -> dict:
    dev, cfg, model, idx, targets = bench_model(size, seq_len, batch_size, device, n_layer, n_embd, n_head,
                                                vocab_size, tie_weights)
    cuda = dev.type == "cuda"
    host_cap = host_mem_gib * 2**30 if host_mem_gib is not None else default_host_cap_bytes()
    meta = {"config": cfg.to_dict(), "batch_size": batch_size, "seq_len": seq_len, "arms": arms,
            "host_cap_bytes": host_cap, "rounds": rounds, "steps": steps, "warmup": warmup,
            "trace_steps": trace_steps, "match_baselines": match_baselines, **provenance(dev)}
    rows: list[dict] = []
    strategies: list = []
    plans: dict[str, tuple[list[bool], list[bool]]] = {}  # DRAT row -> (kept, offloaded)

    def add(name, strategy, **extra):
        model.set_strategy(strategy)
        m = measure_steps(model, idx, targets, steps=max(3, steps // 3), warmup=1)
        row = {"name": name, "strategy": strategy.name, "peak_gib": m["peak_gib"],
               "own_step_ms": m["step_ms"], "arms": extra.pop("arms", 2), **extra, **_transfers(strategy)}
        rows.append(row)
        strategies.append(strategy)
        log(f"{name:<20} peak {row['peak_gib']:8.3f} GiB  {m['step_ms']:9.2f} ms (own steps)")
        if out is not None:
            write_rows(rows, Path(out), "offload", CSV_FIELDS, meta)
        return row

    none = add("none", NoneAC())
    add("full", FullAC())

    costs = build_costs(model, idx, targets, "measured", step_ms=none["own_step_ms"])
    costs.link = meta["link"] = measure_link(dev)
    meta["costs"] = costs.to_dict()
    lk = costs.link
    log(f"host link: D2H {lk['d2h_gbps']:.1f} GB/s, H2D {lk['h2d_gbps']:.1f} GB/s under compute")
    add("save-on-cpu", SaveOnCPU(), arms=3)
    for strat in (OffloadAll(host_cap_bytes=host_cap), FullOffload(host_cap_bytes=host_cap)):
        strat.attach(model)  # its offload flags are the model's sites
        strat.plan_prefetch(costs, strat.offload_decisions(model))  # as far ahead as DRAT's plans
        add(strat.name, strat, arms=3)
    base = none["peak_gib"] * 2**30 - costs.total_bytes if cuda else 0.0
    targets_gib = []  # (row name, plan kind, arms, budget GiB)
    for cut in cuts:
        budget_gib = none["peak_gib"] * (1 - cut) if cuda else (base + costs.total_bytes * (1 - cut)) / 2**30
        kinds = [("drat", 2)] + ([("drat3", 3)] if arms == 3 else [])
        targets_gib += [(f"{kind}-cut{cut:g}", kind, k, budget_gib) for kind, k in kinds]
    if match_baselines and arms == 3:
        # "at a baseline's step time, a lower peak": three-arm DRAT planned at the least activation
        # memory whose predicted step is no longer than each offload baseline's step. The steps
        # are timed first in alternation with `none`'s: a row's own steps, timed right after it
        # was built (pinned buffers and allocator blocks still coming), ran up to 13% slow
        matched = [i for i, r in enumerate(rows) if r["name"] == "none" or r["name"] in OFFLOAD_BASELINES]
        ms = interleaved_step_ms(model, idx, targets, [strategies[i] for i in matched], steps, warmup)
        for i, t in zip(matched, ms):
            rows[i]["matched_step_ms"] = t
        slower = [r for r in rows
                  if r["name"] in OFFLOAD_BASELINES and r["matched_step_ms"] > none["matched_step_ms"]]
        for b in slower:
            act = least_memory_at_step(costs, b["matched_step_ms"] / none["matched_step_ms"] - 1, host_cap)
            if act is None:
                log(f"drat3-at-{b['name']:<11} no plan: the table cannot save memory within that step")
                continue
            # at least a byte: on the CPU the base is 0, and a budget must be positive
            targets_gib.append((f"drat3-at-{b['name']}", "drat3", 3, (base + max(act, 1.0)) / 2**30))
    for name, kind, k, budget_gib in targets_gib:
        try:
            plan = plan_with_link_check(model, idx, targets, costs, budget_gib, base, kind, host_cap,
                                        none["own_step_ms"], log)
        except ValueError as e:
            log(f"{name:<20} no plan: {str(e).splitlines()[0]}")
            continue
        off = offloaded_of(plan.gates) or [False] * len(plan.stored)
        plans[name] = (list(plan.stored), off)
        dev_stored = [s and not o for s, o in zip(plan.stored, off)]
        rep = offload_report(off, costs) if any(off) else {}
        add(name, model.strategy, arms=k, budget_gib=budget_gib,
            n_recomputed=len(plan.stored) - sum(plan.stored), n_offloaded=sum(off), plan_trace=plan.trace,
            predicted_step_ms=none["own_step_ms"] * (1 + plan_cost(dev_stored, costs, 0.0, off)[2]),
            predicted_exposed_ms=rep.get("exposed_transfer_ms", 0.0),
            # the reload stall simulated at the planned prefetch distance, and at one block ahead
            predicted_reload_stall_ms=rep.get("reload_stall_ms", 0.0),
            predicted_reload_stall_d1_ms=reload_stall_ms(off, costs, 1) if any(off) else 0.0,
            # the forward's wait on copies out and the backlog after it, simulated with the plan's
            # allowance (what runs) and letting go one block behind (L_d when nothing waits early)
            predicted_copy_stall_ms=copy_stall_ms(
                off, costs, hold_bytes=hold_bytes_by_block(plan.stored, off, costs)) if any(off) else 0.0,
            predicted_copy_stall_r1_ms=copy_stall_ms(off, costs, 1) if any(off) else 0.0,
            offloaded_labels=[lb for lb, o in zip(costs.labels, off) if o],
            recomputed_labels=[lb for lb, st in zip(costs.labels, plan.stored) if not st])

    # the step times: every row in alternation, a new random order per round
    timed_rounds(model, idx, targets, rows, strategies, rounds, steps, warmup, seed, log)
    for row in rows:
        row["gc_paused"] = True  # interleaved_step_ms pauses the collector
    for row in rows:
        row["peak_vs_none"] = row["peak_gib"] / none["peak_gib"] - 1 if cuda else None
        row["step_vs_none"] = row["step_ms"] / none["step_ms"] - 1
        moved = row.get("d2h_bytes")
        row["link_utilisation"] = link_utilisation(moved, row["step_ms"], costs.link) if moved else None
    if cuda and trace_steps:  # the exposed transfer, measured: rows that move bytes, and `none`
        for row, strategy in zip(rows, strategies):
            if row["name"] == "none" or row.get("d2h_bytes"):
                model.set_strategy(strategy)
                tr = trace_transfers(model, idx, targets, steps=trace_steps)
                row.update({f"trace_{k}": v for k, v in tr.items()})
                if tr:
                    log(f"{row['name']:<20} traced: exposed transfer {tr['exposed_transfer_ms']:.2f} ms, "
                        f"copies {tr['copy_hidden_frac']:.0%} hidden, "
                        f"compute idle {tr['compute_idle_ms']:.2f} ms")
    if cuda and compiled and arms == 3:
        _compiled_rows(model, idx, targets, rows, plans, costs, none, steps, warmup, log)
    meta["verdicts"] = verdicts(rows, cuts)
    if out is not None:
        write_rows(rows, Path(out), "offload", CSV_FIELDS, meta)
        plot(rows, Path(out) / "offload.png", meta)
    for v in meta["verdicts"]:
        log(v)
    return {"meta": meta, "rows": rows}


def _compiled_rows(model, idx, targets, rows, plans, costs, none, steps, warmup, log) -> None:
    """The compiler's own activation offloading (CheckpointPolicy.MUST_CPU_OFFLOAD under
    torch._functorch.config.enable_activation_offloading) on the first three-arm plan that
    offloads, next to the
    same plan with its offloaded sites stored, both compiled: what the compiler's offload saves
    and costs. Own steps, not interleaved (each compiled graph is its own model)."""
    from ..runtime import autocast_ctx
    from ..strategies import CompiledPlanAC, compiler_offloading

    bw = min(costs.link["d2h_gbps"], costs.link["h2d_gbps"])
    first = next((n for n, (_, off) in plans.items() if n.startswith("drat3-") and any(off)), None)
    for name, (kept, off) in plans.items():
        if name != first:  # one plan: two compiles each cost a minute on the device
            continue
        for tag, offloaded in (("compiled-offload", off), ("compiled-stored", None)):
            torch._dynamo.reset()
            strat = CompiledPlanAC(kept, offloaded=offloaded)
            model.set_strategy(strat)
            strat.prepare(model, idx, autocast_ctx(idx.device))
            err = None
            try:
                with compiler_offloading(bw):
                    m = measure_steps(model, idx, targets, steps, warmup, compiled=torch.compile(model))
            except Exception as e:  # the compiler's offloading is young: report, do not stop the bench
                err = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            row_name = f"{tag}-{name}"
            if err is not None:
                log(f"{row_name}: failed: {err}")
                rows.append({"name": row_name, "strategy": strat.name, "error": err})
                continue
            rows.append({"name": row_name, "strategy": strat.name, "arms": 3, "peak_gib": m["peak_gib"],
                         "step_ms": m["step_ms"], "step_spread_ms": 0.0, "own_steps": True,
                         "n_offloaded": sum(offloaded or []),
                         "peak_vs_none": m["peak_gib"] / none["peak_gib"] - 1,
                         "step_vs_none": m["step_ms"] / none["step_ms"] - 1})
            log(f"{row_name:<34} peak {m['peak_gib']:8.3f} GiB  {m['step_ms']:9.2f} ms (own steps)")
    torch._dynamo.reset()


def _transfers(strategy) -> dict:
    s = strategy.host_stats()
    return {"d2h_bytes": s.get("d2h_bytes"), "h2d_bytes": s.get("h2d_bytes"),
            "host_pinned_bytes": s.get("host_pinned_bytes"), "reloads_on_demand": s.get("reloads_on_demand"),
            "late_reloads": s.get("late_reloads"), "prefetch_blocks": s.get("prefetch_blocks")}


def least_memory_at_step(costs, time_frac: float, host_cap_bytes: float | None = None,
                         rel_tol: float = 1e-3) -> float | None:
    """The fewest activation bytes a three-arm plan keeps on the device while its predicted step
    stays within `time_frac` of `none`'s (the exact program's, by bisection on the budget: the
    optimal added time never grows with the budget). None when even the floor's plan is slower, or
    no plan saves anything."""
    def added_time(budget: float) -> float | None:
        try:
            return solve_oracle3(costs, 0.0, budget, host_cap_bytes).objective
        except ValueError:  # below what any plan can keep
            return None

    lo, hi = 0.0, float(costs.total_bytes)
    t = added_time(lo)
    if t is not None and t <= time_frac:
        return lo
    while hi - lo > rel_tol * costs.total_bytes:
        mid = (lo + hi) / 2
        t = added_time(mid)
        if t is not None and t <= time_frac:
            hi = mid
        else:
            lo = mid
    return hi if hi < costs.total_bytes else None


def verdicts(rows: list[dict], cuts) -> list[str]:
    """The targets, each claimed only where the difference exceeds both rows' spreads."""
    by = {r["name"]: r for r in rows}
    none, out = by["none"], []
    if none.get("peak_vs_none") is None:
        return ["peaks are GPU-only: no memory verdicts on the CPU"]
    for cut in cuts:
        r = by.get(f"drat3-cut{cut:g}")
        if r is None:
            continue
        noise = max(r["step_spread_ms"], none["step_spread_ms"]) / none["step_ms"]
        ok = r["peak_vs_none"] <= -0.45 and r["step_vs_none"] <= 0.08
        out.append(f"drat3-cut{cut:g}: peak {r['peak_vs_none']:+.1%}, step {r['step_vs_none']:+.1%} "
                   f"(spread ±{noise:.1%}) vs none; target ≥45% less at ≤8% more: "
                   f"{'met' if ok else 'missed'}")
    drat3 = [r for r in rows if r["name"].startswith("drat3-")]
    for b in OFFLOAD_BASELINES:
        base = by.get(b)
        if base is None or not drat3:
            continue
        limit = base["step_ms"] + base["step_spread_ms"]
        faster = [r for r in drat3 if r["step_ms"] + r["step_spread_ms"] <= limit]
        if not faster:
            out.append(f"{b}: no three-arm DRAT row is as fast ({base['step_ms']:.1f} ms)")
            continue
        best = min(faster, key=lambda r: r["peak_gib"])
        out.append(f"{b}: {base['peak_gib']:.2f} GiB at {base['step_ms']:.1f} ms; DRAT {best['name']} "
                   f"{best['peak_gib']:.2f} GiB at {best['step_ms']:.1f} ms: "
                   f"{'lower peak' if best['peak_gib'] < base['peak_gib'] else 'NOT lower'}")
    return out


def plot(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    style = {"drat3": ("C3", "o"), "drat": ("C0", "s")}
    for r in rows:
        if r.get("step_ms") is None:
            continue
        key = r["name"].split("-cut")[0] if "-cut" in r["name"] else None
        c, m = style.get(key, ("0.3", "^"))
        ax.errorbar(r["step_ms"], r["peak_gib"], xerr=r["step_spread_ms"] / 2, color=c, marker=m, ms=6,
                    capsize=2)
        ax.annotate(r["name"], (r["step_ms"], r["peak_gib"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xlabel("step time (ms, median of interleaved rounds; bar: spread)")
    ax.set_ylabel("peak allocated (GiB)")
    ax.grid(alpha=0.3)
    save_stamped(fig, path, meta, title_extra=f" B={meta['batch_size']}")


def add_offload_parser(bsub) -> None:
    p = bsub.add_parser("offload", help="the offload arm against save-on-cpu, offload-all and full-offload")
    add_model_args(p)
    p.add_argument("--peak-cuts", default="0.45,0.6,0.75", type=NumberList(FRACTION),
                   help="DRAT rows budgeted at (1 - cut) x the `none` peak")
    p.add_argument("--arms", default="store,recompute,offload", type=ARMS,
                   help="store,recompute (two-arm DRAT rows only) or store,recompute,offload")
    p.add_argument("--host-mem-gib", type=POSITIVE, default=None,
                   help="cap on pinned host memory (default: half the available RAM)")
    p.add_argument("--compiled", action="store_true",
                   help="also run each three-arm plan under torch.compile with the compiler's own offloading")
    p.add_argument("--rounds", type=POSITIVE_INT, default=3,
                   help="interleaved timing rounds, each in a new order")
    p.add_argument("--no-match-baselines", dest="match_baselines", action="store_false",
                   help="skip the rows drat3-at-<baseline>: three-arm DRAT planned at each offload "
                        "baseline's measured step time, for the least memory")
    p.add_argument("--trace-steps", type=NONNEG_INT, default=3,
                   help="steps per offloading row under torch.profiler, for the exposed transfer (0: none)")
    p.set_defaults(func=_cmd_offload)


def _cmd_offload(args) -> int:
    check_steps(args)
    run_offload(args.size, args.seq_len, args.batch_size, args.device, **model_kwargs(args),
                cuts=tuple(float(x) for x in args.peak_cuts.split(",") if x), arms=args.arms,
                host_mem_gib=args.host_mem_gib, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                compiled=args.compiled, trace_steps=args.trace_steps, match_baselines=args.match_baselines,
                out=args.out)
    return 0


__all__ = ["run_offload", "add_offload_parser", "verdicts"]
