"""`drat bench frontier`: every strategy measured side by side in one process.

Rows: the baselines (`none`, `full`, `selective`, `sac`), `torch.compile` with the partitioner's
activation-memory budgets, DRAT at a λ sweep and at memory budgets, eager and compiled, DRAT with
every gate set to store (the ≤2% overhead check) and the ILP oracle's plan, executed. Each row reports peak
allocated/reserved GiB, step ms (median of CUDA-event-timed steps after warm-up), tokens/s and
MFU against a bf16 matmul rate measured in the same run. On CPU, peak memory is replaced by
exact saved-activation bytes and time by wall-clock.

Outputs in --out: `frontier.csv`, `frontier.json` (rows + provenance), `frontier.png`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import NamedTuple

import torch

from .accounting import saved_activation_bytes
from .costs import build_costs
from .gates import budget_to_activation_bytes, fit_gates
from .model import GPT, config_for
from .oracle import activation_floor_bytes, solve_oracle
from .profile import autocast_ctx, interleaved_step_ms, measure_steps, random_batch
from .provenance import provenance, resolve_device
from .strategies import SAC, CompiledPlanAC, DRATGates, FullAC, NoneAC, PlanAC, SelectiveAC

CSV_FIELDS = ["name", "strategy", "mode", "lam", "budget_gib", "peak_gib", "reserved_gib", "step_ms",
              "tokens_per_s", "mfu", "saved_activation_bytes", "n_recomputed", "recomputed_sites"]


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """bf16 dense matmul rate of this GPU, measured now (the MFU denominator)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        a @ b
    e.record()
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (s.elapsed_time(e) / 1e3) / 1e12


POINTWISE_SITES = ("embed", "attn_norm", "mlp_norm", "mlp_act", "final_norm")


def compiled_costs(costs, pointwise_factor: float = 0.1):
    """Costs for compiled execution: Inductor fuses a recomputed norm or activation into the
    kernels around it, so its recompute time is a fraction of the eager kernel's."""
    import dataclasses

    # no hooks under compile: the eager per-rebuild overhead does not apply
    t = [(ms - costs.rebuild_overhead_ms * n) * (pointwise_factor if lab.split(".")[-1] in POINTWISE_SITES
                                                  else 1.0)
         for lab, ms, n in zip(costs.labels, costs.time_ms, costs.instances)]
    # embed and final_norm feed checkpoint regions, which keep their inputs: nothing to save
    m = [0.0 if lab in CompiledPlanAC.ALWAYS_STORED else b for lab, b in zip(costs.labels, costs.mem_bytes)]
    return dataclasses.replace(costs, time_ms=t, mem_bytes=m, kind=costs.kind + "+compiled",
                               rebuild_overhead_ms=0.0)


class BudgetPlan(NamedTuple):
    stored: list[bool]
    gates: object  # the fitted GateBank (DRAT kinds), None for the oracle
    lam: float | None
    trace: list[dict]  # one entry per closed-loop round
    compiled: object  # the torch.compile'd model (kinds "*-compiled"), else None


def install_plan(model, idx, kind: str, stored: list[bool], gates=None):
    """Put a plan on the model: DRAT's gates, the oracle's fixed plan, or either plan as SAC
    policies under torch.compile (kinds "drat-compiled", "oracle-compiled": returned compiled;
    None otherwise)."""
    if kind == "drat":
        model.set_strategy(DRATGates(gates))
        return None
    if kind == "oracle":
        model.set_strategy(PlanAC(stored=stored))
        return None
    if kind not in ("drat-compiled", "oracle-compiled"):
        raise ValueError(f"unknown plan kind {kind!r}")
    strat = CompiledPlanAC(stored)
    torch._dynamo.reset()
    model.set_strategy(strat)  # attach: embed/final_norm forced to store
    strat.prepare(model, idx, autocast_ctx(idx.device))
    return torch.compile(model)


def plan_under_measured_peak(model, idx, targets, costs, budget_gib: float, base_bytes: float, kind: str,
                             max_rounds: int = 4, grow_below: float | None = 0.97) -> BudgetPlan:
    """Budget mode closed on the *measured* peak (DESIGN §1): plan for the activation bytes the
    budget leaves, run a step, and move the activation budget by what the measured peak missed
    the budget by, until the peak is within 1% over and `grow_below` under the budget.
    `kind`: "drat", "oracle", "drat-compiled" or "oracle-compiled" (give these `compiled_costs`;
    each round compiles once).

    Both directions matter. An overshoot breaks the budget; an undershoot wastes it, since a
    plan that keeps less than it may recomputes more than it must: compiled, the cost model
    overstates what a plan keeps (session 6 measured compiled plans 4–32% under their budgets
    in one round). The plan kept is the fitting round with the highest peak (most kept, least
    recomputed), reinstalled if a later round overshot. `grow_below=None` only shrinks: under a
    hard cap (`capacity`) a plan's headroom absorbs the allocator's fragmentation over a long
    run. The kept plan is left installed on the model; its trace entry has "kept"."""
    budget = budget_gib * 2**30
    act = budget_to_activation_bytes(budget_gib, base_bytes)
    trace: list[dict] = []
    best = None  # (peak, stored, gates, lam, trace index) of the fitting round with the highest peak
    stored, gates, lam, compiled = None, None, None, None  # the plan installed last
    for rnd in range(max_rounds):
        try:
            if kind in ("oracle", "oracle-compiled"):
                plan = (solve_oracle(costs, budget_act_bytes=max(act, 0.0)).stored, None, None)
            else:
                fit = fit_gates(costs, budget_act_bytes=max(act, 0.0), base_bytes=base_bytes)
                plan = (fit.stored, fit.gates, fit.lam)
        except ValueError as e:  # BudgetInfeasibleError: the shrunk budget is below the floor
            if rnd == 0:
                raise
            trace.append({"activation_budget_bytes": act, "infeasible": str(e).splitlines()[0]})
            break  # keep the last plan that could be made
        if plan[0] == stored:  # the moved budget gives the plan just measured: nothing new to learn
            trace.append({"activation_budget_bytes": act, "same_plan": True})
            break
        stored, gates, lam = plan
        compiled = None  # free the last round's compiled graph before compiling the next
        compiled = install_plan(model, idx, kind, stored, gates)
        peak = measure_steps(model, idx, targets, steps=1, warmup=1, compiled=compiled)["peak_gib"] * 2**30
        trace.append({"activation_budget_bytes": act, "measured_peak_bytes": peak})
        fits = peak <= 1.01 * budget
        if fits and (best is None or peak > best[0]):
            best = (peak, stored, gates, lam, len(trace) - 1)
        if fits and (grow_below is None or peak >= grow_below * budget or all(stored)):
            break
        if not fits and act <= 0:
            break
        act += budget - peak - 0.005 * budget  # aim 0.5% under the budget, from either side
    if best is not None:
        trace[best[4]]["kept"] = True
        if best[1] != stored:  # a later round overshot: back to the best plan that fitted
            _, stored, gates, lam, _ = best
            compiled = None
            compiled = install_plan(model, idx, kind, stored, gates)
    return BudgetPlan(stored, gates, lam, trace, compiled)


def oracle_curve(costs, points: int = 12) -> list[dict]:
    """The cost model's own frontier: the oracle's least predicted recompute time (a fraction of a
    step) at activation budgets from the floor to store-all. The oracle is exact over every
    per-site plan, so a measured point cannot beat this curve by more than the cost model's
    error: where the curve passes above a target, no gate setting of this model reaches it."""
    floor, total = activation_floor_bytes(costs), costs.total_bytes
    out = []
    for k in range(points):
        act = floor + (total - floor) * k / max(points - 1, 1)
        plan = solve_oracle(costs, budget_act_bytes=act * (1 + 1e-9))
        out.append({"activation_budget_bytes": act, "activation_bytes": plan.mem_bytes,
                    "time_frac": plan.time_frac, "n_recomputed": len(plan.stored) - sum(plan.stored)})
    return out


def place_curve(curve: list[dict], base_bytes: float, none_step_ms: float) -> list[dict]:
    """The oracle curve in a frontier's units: memory = base + the plan's activations (base:
    what `none`'s memory holds beyond its stored activations; 0 for saved-activation bytes),
    step = `none`'s step × (1 + predicted recompute fraction)."""
    return [{**pt, "memory_bytes": base_bytes + pt["activation_bytes"],
             "step_ms": none_step_ms * (1 + pt["time_frac"])} for pt in curve]


def model_flops_per_step(model: GPT, batch: int, seq: int) -> float:
    """6·params·tokens for the matmuls plus causal attention (PaLM appendix B, halved for causality).
    Embedding lookups are not matmuls: an untied input embedding is left out."""
    cfg = model.cfg
    n = model.num_params(exclude_positions=True)
    if not cfg.tie_weights:
        n -= model.wte.weight.numel()
    return batch * seq * (6 * n + 6 * cfg.n_layer * seq * cfg.n_embd)


def lambda_plans(costs, lams) -> list[tuple[str, DRATGates, int]]:
    """(name, strategy, sites recomputed) of DRAT fitted at each λ on one cost table: the DRAT
    rows of `bench trace` and `bench exactness`."""
    out = []
    for lam in lams:
        fit = fit_gates(costs, lam=lam)
        out.append((f"drat-lam{lam:g}", DRATGates(fit.gates), len(fit.stored) - sum(fit.stored)))
    return out


def bench_model(size: str, seq_len: int, batch_size: int, device: str, n_layer: int | None = None,
                n_embd: int | None = None, n_head: int | None = None, vocab_size: int | None = None,
                tie_weights: bool | None = None):
    """The model every bench command measures: a named size with overrides, seed 0, and one
    random batch. Returns (device, config, model, idx, targets); idx, targets: [B, S] int64."""
    dev = resolve_device(device)
    cfg = config_for(size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                     tie_weights=tie_weights, block_size=max(seq_len, config_for(size).block_size))
    torch.manual_seed(0)
    model = GPT(cfg).to(dev)
    idx, targets = random_batch(cfg.vocab_size, batch_size, seq_len, dev)
    return dev, cfg, model, idx, targets


def add_model_args(p, batch_size: bool = True, steps: int = 12) -> None:
    """The model, batch and timing flags shared by the bench commands."""
    p.add_argument("--size", default="tiny")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--untied", action="store_true", help="untie embedding and LM head (ANCHORS.md)")
    p.add_argument("--seq-len", type=int, default=64)
    if batch_size:
        p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=steps, help="timed steps (at least 10 on GPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", required=True)


def model_kwargs(args) -> dict:
    """add_model_args' flags as bench_model keyword arguments."""
    return {"n_layer": args.layers, "n_embd": args.hidden, "n_head": args.heads,
            "vocab_size": args.vocab_size, "tie_weights": False if args.untied else None}


def check_steps(args) -> None:
    if args.steps < 10 and resolve_device(args.device).type == "cuda":
        raise ValueError("--steps must be at least 10 on GPU (median of >=10 timed steps)")


def run_frontier(size: str = "tiny", seq_len: int = 64, batch_size: int = 2, device: str = "cpu",
                 n_layer: int | None = None, n_embd: int | None = None, n_head: int | None = None,
                 vocab_size: int | None = None, tie_weights: bool | None = None,
                 lams=(0.05, 0.2, 0.5, 1.0, 2.0, 5.0), budget_fracs=(0.25, 0.5, 0.75), peak_cuts=(0.45,),
                 compile_budgets=(1.0, 0.5, 0.2), compiled_lams=(0.0, 0.2, 0.5, 1.0, 2.0, 5.0),
                 compiled_budget_targets: bool = True, steps: int = 12, warmup: int = 3,
                 only: set[str] | None = None, out: str | Path | None = None, log=print) -> list[dict]:
    dev, cfg, model, idx, targets = bench_model(size, seq_len, batch_size, device, n_layer, n_embd, n_head,
                                                vocab_size, tie_weights)
    tokens = batch_size * seq_len
    peak_tflops = matmul_tflops(dev) if dev.type == "cuda" else float("nan")
    flops = model_flops_per_step(model, batch_size, seq_len)
    rows: list[dict] = []
    meta = {"config": cfg.to_dict(), "batch_size": batch_size, "seq_len": seq_len,
            "matmul_tflops": peak_tflops, "model_flops_per_step": flops, "params": model.num_params(),
            **provenance(dev)}
    want = (lambda name: True) if not only else (lambda name: any(name.startswith(o) for o in only))

    def record(name, strategy, mode, lam=None, budget=None, compiled=None, stored=None):
        model.set_strategy(strategy)
        if dev.type == "cpu" or compiled is None:
            with autocast_ctx(dev):
                saved, _ = saved_activation_bytes(model, idx, targets)
        else:
            saved = None
        m = measure_steps(model, idx, targets, steps, warmup, compiled)
        rec = [k.label() for k, s in zip(model.graph.keys, stored)] if stored else []
        rec = [lab for lab, s in zip(rec, stored) if not s] if stored else []
        row = {"name": name, "strategy": strategy.name, "mode": mode, "lam": lam, "budget_gib": budget,
               **m, "tokens_per_s": tokens / (m["step_ms"] / 1e3),
               "mfu": flops / (m["step_ms"] / 1e3) / (peak_tflops * 1e12) if dev.type == "cuda" else None,
               "saved_activation_bytes": saved, "n_recomputed": len(rec),
               "recomputed_sites": " ".join(sorted({r.split(".")[-1] for r in rec}))}
        rows.append(row)
        if out is not None:  # rewrite after every row: a killed run keeps what it measured
            write_outputs(rows, Path(out), meta)
        clock = f"  {row['sm_clock_mhz']} MHz" if row.get("sm_clock_mhz") is not None else ""
        log(f"{name:<22} peak {row['peak_gib']:7.3f} GiB  {row['step_ms']:8.2f} ms  "
            f"{row['tokens_per_s']:10.0f} tok/s{clock}  recompute={row['recomputed_sites']}")
        return row

    for name, strat in [("none", NoneAC()), ("full", FullAC()), ("selective", SelectiveAC()), ("sac", SAC())]:
        if want(name):
            record(name, strat, "eager")
    none_row = next((r for r in rows if r["name"] == "none"), None)

    # DRAT: costs measured on this device, then gates fitted per λ / budget
    step_ms = none_row["step_ms"] if none_row else None
    costs = build_costs(model, idx, targets, "measured", step_ms=step_ms)
    n = len(model.graph)
    # the table every DRAT and oracle row below was planned on, and the oracle's predicted
    # frontier on it: the analysis of a missed target needs both (see oracle_curve)
    meta["costs"] = costs.to_dict()
    if want("oracle-curve"):
        meta["oracle_curve"] = oracle_curve(costs)
        if none_row is not None:
            base = none_row["peak_gib"] * 2**30 - costs.total_bytes if dev.type == "cuda" else 0.0
            meta["oracle_curve"] = [
                {**pt, "predicted_peak_gib": p["memory_bytes"] / 2**30, "predicted_step_ms": p["step_ms"]}
                for pt, p in zip(meta["oracle_curve"], place_curve(meta["oracle_curve"], base,
                                                                   none_row["step_ms"]))]
    if want("drat-store-all"):
        from .gates import GateBank

        record("drat-store-all", DRATGates(GateBank(n, init_logit=5.0)), "eager", stored=[True] * n)
    for lam in lams:
        if want(f"drat-lam{lam}"):
            fit = fit_gates(costs, lam=lam)
            record(f"drat-lam{lam}", DRATGates(fit.gates), "eager", lam=lam, stored=fit.stored)
    targets_gib: list[tuple[str, float]] = []
    base = 0.0
    if none_row is None and dev.type == "cuda" and any(
            want(f"{k}-{t}") for k in ("drat", "oracle", "drat-compiled") for t in ("budget", "cut")):
        log("budget rows skipped: their targets are set from the `none` row (add `none` to --only)")
    if none_row and dev.type == "cuda":
        # base = everything in the `none` peak that is not stored activations (model states,
        # gradients, transient working memory); the plan then has budget − base for activations
        base = none_row["peak_gib"] * 2**30 - costs.total_bytes
        # budgets as fractions of the stored activations, then as cuts of the `none` peak (the
        # issue's eager target: a peak ≥45% below none's, where the step time is the question)
        targets_gib = [(f"budget{frac}", (base + frac * costs.total_bytes) / 2**30) for frac in budget_fracs]
        targets_gib += [(f"cut{round(cut * 100)}", (1 - cut) * none_row["peak_gib"]) for cut in peak_cuts]
        for label, budget_gib in targets_gib:
            placed = {}
            for kind in ("drat", "oracle"):
                if not want(f"{kind}-{label}"):
                    continue
                try:
                    plan = plan_under_measured_peak(model, idx, targets, costs, budget_gib, base, kind)
                except ValueError as e:  # below the floor on this device's costs: no row
                    log(f"{kind}-{label}: skipped, {str(e).splitlines()[0]}")
                    continue
                row = record(f"{kind}-{label}", model.strategy, "eager", lam=plan.lam, budget=budget_gib,
                             stored=plan.stored)
                row["budget_trace"] = plan.trace
                placed[kind] = (row, model.strategy)
                if out is not None:
                    write_outputs(rows, Path(out), meta)
            if len(placed) == 2:  # the budget target is their ratio: also time them alternately
                (r_drat, s_drat), (r_oracle, s_oracle) = placed["drat"], placed["oracle"]
                paired = interleaved_step_ms(model, idx, targets, [s_drat, s_oracle], steps, warmup)
                r_drat["step_ms_paired"], r_oracle["step_ms_paired"] = paired
                r_drat["paired_vs_oracle"] = paired[0] / paired[1] - 1
                log(f"{'':<22} alternating steps: drat {paired[0]:.2f} ms, oracle {paired[1]:.2f} ms "
                    f"({100 * r_drat['paired_vs_oracle']:+.1f}%)")
                if out is not None:
                    write_outputs(rows, Path(out), meta)
    if dev.type == "cuda":
        # DRAT compiled: gate plans handed to the partitioner as SAC policies, fitted on costs
        # where the compiler fuses pointwise recomputation into neighbouring kernels
        ccosts = compiled_costs(costs)
        for lam in compiled_lams:
            if not want(f"drat-compiled-lam{lam}"):
                continue
            fit = fit_gates(ccosts, lam=lam)
            compiled = install_plan(model, idx, "drat-compiled", fit.stored)
            strat = model.strategy
            record(f"drat-compiled-lam{lam}", strat, "compiled", lam=lam, compiled=compiled,
                   stored=strat.decisions(model))
            del compiled
        # DRAT's budget mode under compile: the same targets as the eager rows, closed on the
        # measured compiled peak (≤3 rounds, a compile each, and one more to reinstall the best
        # fitting plan if the last round overshot). Its base is what the compiled
        # store-all peak holds beyond the stored activations, where that row was measured:
        # compiled, `none`'s own activations shrink (fused pointwise ops save less)
        # The oracle's plan on the same compiled table is run the same way, as the reference a
        # budget row's step time is held to (the "within 3% of the oracle's").
        compiled_targets = [(label, b) for label, b in targets_gib if compiled_budget_targets and any(
            want(f"{k}-compiled-{label}") for k in ("drat", "oracle"))]
        if compiled_targets:
            store_all = next((r for r in rows if r["name"] == "drat-compiled-lam0.0"), None)
            if store_all is None:  # not a row of this run: its peak, measured now
                compiled = install_plan(model, idx, "drat-compiled", [True] * n)
                store_all = measure_steps(model, idx, targets, steps=1, warmup=1, compiled=compiled)
                del compiled
            cbase = store_all["peak_gib"] * 2**30 - ccosts.total_bytes
        for label, budget_gib in compiled_targets:
            for kind in ("drat-compiled", "oracle-compiled"):
                name = f"{kind}-{label}"
                if not want(name):
                    continue
                try:
                    plan = plan_under_measured_peak(model, idx, targets, ccosts, budget_gib, cbase, kind,
                                                    max_rounds=3)
                except ValueError as e:
                    log(f"{name}: skipped, {str(e).splitlines()[0]}")
                    continue
                strat = model.strategy
                row = record(name, strat, "compiled", lam=plan.lam, budget=budget_gib, compiled=plan.compiled,
                             stored=strat.decisions(model))
                row["budget_trace"] = plan.trace
                if out is not None:
                    write_outputs(rows, Path(out), meta)
                del plan

        import torch._functorch.config as fconfig

        for b in compile_budgets:
            if not want(f"compile-budget{b}"):
                continue
            torch._dynamo.reset()
            model.set_strategy(NoneAC())
            with fconfig.patch(activation_memory_budget=b):
                compiled = torch.compile(model)
                record(f"compile-budget{b}", NoneAC(), "compiled", budget=b, compiled=compiled)
            del compiled
    return rows


def write_rows(rows: list[dict], out: Path, stem: str, fields: list[str], meta: dict) -> None:
    """`<stem>.csv` (the schema's columns) and `<stem>.json` (meta + full rows), each written to a
    temporary file and renamed, so a reader never sees half a table."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{stem}.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    tmp.replace(out / f"{stem}.csv")
    tmp = out / f"{stem}.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    tmp.replace(out / f"{stem}.json")


def write_outputs(rows: list[dict], out: Path, meta: dict) -> None:
    write_rows(rows, out, "frontier", CSV_FIELDS, meta)
    plot_frontier(rows, out / "frontier.png", meta)


def plot_frontier(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on_gpu = not any(r["peak_gib"] != r["peak_gib"] for r in rows)  # NaN on CPU
    ykey = "peak_gib" if on_gpu else "saved_activation_bytes"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        y = r[ykey] if on_gpu else r[ykey] / 2**20
        color = "C3" if r["name"].startswith("drat") else "C2" if r["name"].startswith("oracle") else (
            "C1" if r["mode"] == "compiled" else "C0")
        ax.scatter(r["step_ms"], y, color=color)
        ax.annotate(r["name"], (r["step_ms"], y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lam_rows = sorted((r for r in rows if r["name"].startswith("drat-lam")), key=lambda r: r["step_ms"])
    if lam_rows:
        ax.plot([r["step_ms"] for r in lam_rows], [r[ykey] if on_gpu else r[ykey] / 2**20 for r in lam_rows],
                color="C3", lw=1, label="DRAT λ sweep")
    curve = [pt for pt in meta.get("oracle_curve", []) if "predicted_step_ms" in pt]
    if curve:  # what the cost model says the best per-site plan at each memory costs
        ax.plot([pt["predicted_step_ms"] for pt in curve],
                [pt["predicted_peak_gib"] if on_gpu else pt["activation_bytes"] / 2**20 for pt in curve],
                color="C2", ls="--", lw=1, label="oracle, predicted by the cost model")
    if lam_rows or curve:
        ax.legend(fontsize=7)
    ax.set_xlabel("step time (ms)")
    ax.set_ylabel("peak allocated (GiB)" if on_gpu else "saved activations (MiB)")
    save_stamped(fig, path, meta, f" B={meta['batch_size']}")


def save_stamped(fig, path: Path, meta: dict, title_extra: str = "") -> None:
    """Title with the device and model, a provenance footer (torch, commit), then save and close."""
    import matplotlib.pyplot as plt

    c = meta["config"]
    fig.suptitle(f"{meta['device']}: L={c['n_layer']} h={c['n_embd']} V={c['vocab_size']} "
                 f"S={meta['seq_len']}{title_extra}", fontsize=9)
    fig.text(0.01, 0.01, f"torch {meta['torch_version']} · commit {meta['git_commit'][:10]}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    f = bsub.add_parser("frontier", help="every strategy side by side: peak memory vs step time")
    add_model_args(f)
    f.add_argument("--lambdas", default="0.05,0.2,0.5,1,2,5")
    f.add_argument("--compiled-lambdas", default="0,0.2,0.5,1,2,5",
                   help="λ values run under torch.compile (0: store-all, i.e. plain torch.compile)")
    f.add_argument("--compile-budgets", default="1,0.5,0.2",
                   help="torch.compile activation_memory_budget values (empty: none)")
    f.add_argument("--peak-cuts", default="0.45",
                   help="DRAT and oracle rows budgeted at (1 - cut) x the `none` peak (GPU only)")
    f.add_argument("--no-compiled-drat-budgets", dest="compiled_budget_targets", action="store_false",
                   help="skip the budget rows under torch.compile, DRAT's and the oracle's (up to 4 "
                        "compiles each)")
    f.add_argument("--only", default=None, help="comma-separated row-name prefixes to run")
    f.set_defaults(func=_cmd_frontier)
    from .capacity import add_capacity_parser  # `drat bench capacity` (imports this module)
    from .exactness import add_exactness_parser  # `drat bench exactness`
    from .trace import add_trace_parser  # `drat bench trace`

    add_capacity_parser(bsub)
    add_trace_parser(bsub)
    add_exactness_parser(bsub)


def _cmd_frontier(args) -> int:
    check_steps(args)
    run_frontier(args.size, args.seq_len, args.batch_size, args.device, **model_kwargs(args),
                 lams=tuple(float(x) for x in args.lambdas.split(",")),
                 compiled_lams=tuple(float(x) for x in args.compiled_lambdas.split(",") if x),
                 compile_budgets=tuple(float(x) for x in args.compile_budgets.split(",") if x),
                 peak_cuts=tuple(float(x) for x in args.peak_cuts.split(",") if x),
                 compiled_budget_targets=args.compiled_budget_targets, steps=args.steps, warmup=args.warmup,
                 only=set(args.only.split(",")) if args.only else None, out=args.out)
    return 0
