"""`drat bench frontier`: every strategy measured side by side in one process.

Rows: the baselines (`none`, `full`, `selective`, `sac`), `torch.compile` with the partitioner's
activation-memory budgets and with `full` and `sac` compiled (`full-compiled`, `sac-compiled`),
DRAT at a λ sweep and at memory budgets, eager and compiled, DRAT with every gate set to store
(the ≤2% overhead check) and the ILP oracle's plan, executed. Each row reports peak
allocated/reserved GiB, step ms, tokens/s and MFU against a bf16 matmul rate measured in the same
run. Peaks come from each row's own CUDA-event-timed steps; with `--rounds R` (default 3) the eager
rows are then timed together, R rounds in a new random order each (`interleave_rounds`), and
their step is the median of the rounds, with the rounds' spread beside it. On CPU, peak memory is
replaced by exact saved-activation bytes and time by wall-clock.

Outputs in --out: `frontier.csv`, `frontier.json` (rows + provenance), `frontier.png`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..accounting import SavedTensorAccountant, saved_activation_bytes
from ..gates import GateBank, fit_gates
from ..measure import (
    build_costs,
    interleaved_step_ms,
    matmul_tflops,
    measure_link,
    measure_steps,
    model_flops_per_step,
)
from ..offload import default_host_cap_bytes
from ..oracle import oracle_curve, place_curve
from ..provenance import provenance
from ..runtime import autocast_ctx
from ..strategies import SAC, DRATGates, FullAC, NoneAC, SelectiveAC
from ..validate import ARMS, FRACTION, NONNEG, NONNEG_INT, Number, NumberList
from ..wrap import HF_FAMILIES, HFCheckpointing, wrap
from .common import (
    add_model_args,
    bench_model,
    check_steps,
    compiled_costs,
    install_plan,
    model_kwargs,
    plan_under_measured_peak,
    save_stamped,
    timed_rounds,
    write_rows,
)

CSV_FIELDS = ["name", "strategy", "mode", "lam", "budget_gib", "peak_gib", "reserved_gib", "step_ms",
              "step_spread_ms", "tokens_per_s", "mfu", "saved_activation_bytes", "n_recomputed",
              "recomputed_sites"]


def run_frontier(size: str = "tiny", seq_len: int = 64, batch_size: int = 2, device: str = "cpu",
                 n_layer: int | None = None, n_embd: int | None = None, n_head: int | None = None,
                 vocab_size: int | None = None, tie_weights: bool | None = None,
                 lams=(0.05, 0.2, 0.5, 1.0, 2.0, 5.0), budget_fracs=(0.25, 0.5, 0.75), peak_cuts=(0.45,),
                 compile_budgets=(1.0, 0.5, 0.2), compiled_lams=(0.0, 0.2, 0.5, 1.0, 2.0, 5.0),
                 compiled_budget_targets: bool = True, steps: int = 12, warmup: int = 3,
                 only: set[str] | None = None, out: str | Path | None = None, log=print,
                 hf: str | None = None, arms: int = 2, rounds: int = 3) -> list[dict]:
    dev, cfg, model, idx, targets = bench_model(size, seq_len, batch_size, device, n_layer, n_embd, n_head,
                                                vocab_size, tie_weights, hf=hf)
    wrapped = hf is not None
    tokens = batch_size * seq_len
    peak_tflops = matmul_tflops(dev) if dev.type == "cuda" else float("nan")
    flops = model_flops_per_step(model, batch_size, seq_len)
    rows: list[dict] = []
    meta = {"config": cfg.to_dict(), "batch_size": batch_size, "seq_len": seq_len,
            "matmul_tflops": peak_tflops, "model_flops_per_step": flops, "params": model.num_params(),
            "rounds": rounds, **provenance(dev)}
    want = (lambda name: True) if not only else (lambda name: any(name.startswith(o) for o in only))

    eager: list[tuple[dict, object]] = []  # the eager rows of `model`, timed together below

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
        if mode == "eager":
            eager.append((row, strategy))
        if out is not None:  # rewrite after every row: a killed run keeps what it measured
            write_outputs(rows, Path(out), meta)
        clock = f"  {row['sm_clock_mhz']} MHz" if row.get("sm_clock_mhz") is not None else ""
        log(f"{name:<22} peak {row['peak_gib']:7.3f} GiB  {row['step_ms']:8.2f} ms  "
            f"{row['tokens_per_s']:10.0f} tok/s{clock}  recompute={row['recomputed_sites']}")
        return row

    def raw_row(name: str, raw, mode: str, saved, budget=None, compiled=None) -> None:
        """A row of the model as its user has it, before drat.wrap (eager, or torch.compile'd)."""
        fwd = compiled or (lambda i, t: raw(input_ids=i, labels=t, shift_labels=t).loss)
        m = measure_steps(raw, idx, targets, steps, warmup, compiled=fwd)
        mfu = flops / (m["step_ms"] / 1e3) / (peak_tflops * 1e12) if dev.type == "cuda" else None
        rows.append({"name": name, "strategy": name, "mode": mode, "lam": None, "budget_gib": budget, **m,
                     "tokens_per_s": tokens / (m["step_ms"] / 1e3), "mfu": mfu,
                     "saved_activation_bytes": saved, "n_recomputed": 0, "recomputed_sites": ""})
        if out is not None:
            write_outputs(rows, Path(out), meta)
        log(f"{name:<22} peak {m['peak_gib']:7.3f} GiB  {m['step_ms']:8.2f} ms")

    if wrapped and want("unwrapped"):
        # the model before drat.wrap: what the wrapped store-all rows cost over it
        raw = model.unwrap()
        with SavedTensorAccountant(raw) as acct, autocast_ctx(dev):
            loss = raw(input_ids=idx, labels=targets, shift_labels=targets).loss
        raw_saved = acct.total_bytes
        del loss
        raw_row("unwrapped", raw, "eager", raw_saved)
        model = wrap(raw)
    baselines = [("none", NoneAC()), ("full", FullAC()), ("selective", SelectiveAC()), ("sac", SAC())]
    if wrapped:  # the transformers user's own baseline
        baselines.append(("hf-checkpointing", HFCheckpointing()))
    for name, strat in baselines:
        if want(name):
            record(name, strat, "eager")
    none_row = next((r for r in rows if r["name"] == "none"), None)

    # DRAT: costs measured on this device, then gates fitted per λ / budget
    step_ms = none_row["step_ms"] if none_row else None
    costs = build_costs(model, idx, targets, "measured", step_ms=step_ms)
    n = len(model.graph)
    # the table every DRAT and oracle row below was planned on, and the oracle's predicted
    # frontier on it: the analysis of a missed target needs both (see oracle_curve)
    if arms == 3:  # three-arm budget rows (`drat3-*`) plan on the host link measured here
        costs.link = measure_link(dev)
    meta["costs"] = costs.to_dict()
    def place_oracle_curve():
        # the curve in GiB and ms, from `none`'s peak and step (re-placed once the rows are interleaved)
        if none_row is not None and "oracle_curve" in meta:
            base = none_row["peak_gib"] * 2**30 - costs.total_bytes if dev.type == "cuda" else 0.0
            meta["oracle_curve"] = [
                {**pt, "predicted_peak_gib": p["memory_bytes"] / 2**30, "predicted_step_ms": p["step_ms"]}
                for pt, p in zip(meta["oracle_curve"], place_curve(meta["oracle_curve"], base,
                                                                   none_row["step_ms"]))]

    if want("oracle-curve"):
        meta["oracle_curve"] = oracle_curve(costs)
        place_oracle_curve()
    if want("drat-store-all"):
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
        # eager target: a peak ≥45% below none's, where the step time is the question)
        targets_gib = [(f"budget{frac}", (base + frac * costs.total_bytes) / 2**30) for frac in budget_fracs]
        targets_gib += [(f"cut{round(cut * 100)}", (1 - cut) * none_row["peak_gib"]) for cut in peak_cuts]
        for label, budget_gib in targets_gib:
            placed = {}
            for kind in ("drat", "oracle") + (("drat3",) if arms == 3 else ()):
                if not want(f"{kind}-{label}"):
                    continue
                try:
                    cap = default_host_cap_bytes() if kind == "drat3" else None
                    plan = plan_under_measured_peak(model, idx, targets, costs, budget_gib, base, kind,
                                                    host_cap_bytes=cap)
                except ValueError as e:  # below the floor on this device's costs: no row
                    log(f"{kind}-{label}: skipped, {str(e).splitlines()[0]}")
                    continue
                row = record(f"{kind}-{label}", model.strategy, "eager", lam=plan.lam, budget=budget_gib,
                             stored=plan.stored)
                row["budget_trace"] = plan.trace
                placed[kind] = (row, model.strategy)
                if out is not None:
                    write_outputs(rows, Path(out), meta)
            if "drat" in placed and "oracle" in placed:  # their ratio: also time them alternately
                (r_drat, s_drat), (r_oracle, s_oracle) = placed["drat"], placed["oracle"]
                paired = interleaved_step_ms(model, idx, targets, [s_drat, s_oracle], steps, warmup)
                r_drat["step_ms_paired"], r_oracle["step_ms_paired"] = paired
                r_drat["paired_vs_oracle"] = paired[0] / paired[1] - 1
                log(f"{'':<22} alternating steps: drat {paired[0]:.2f} ms, oracle {paired[1]:.2f} ms "
                    f"({100 * r_drat['paired_vs_oracle']:+.1f}%)")
                if out is not None:
                    write_outputs(rows, Path(out), meta)
    if rounds and len(eager) > 1:
        interleave_rounds(model, idx, targets, eager, rounds, steps, warmup, tokens, flops, peak_tflops, log)
        place_oracle_curve()
        if out is not None:
            write_outputs(rows, Path(out), meta)
    if wrapped and dev.type == "cuda":
        log("compiled DRAT rows skipped: CompiledPlanAC plans DRAT's own GPT only")
        # the compiler's own memory budgets on the model before drat.wrap, where it compiles
        budgets = [b for b in compile_budgets if want(f"compile-budget{b}")]
        if budgets:
            import torch._functorch.config as fconfig

            raw = model.unwrap()
            for b in budgets:
                torch._dynamo.reset()
                with fconfig.patch(activation_memory_budget=b):
                    fwd = torch.compile(lambda i, t: raw(input_ids=i, labels=t, shift_labels=t).loss)
                    try:
                        raw_row(f"compile-budget{b}", raw, "compiled", None, budget=b, compiled=fwd)
                    except Exception as e:  # noqa: BLE001 - a model that does not compile gets no row
                        log(f"compile-budget{b}: skipped, the model did not compile: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                del fwd
            torch._dynamo.reset()
            model = wrap(raw)
    if dev.type == "cuda" and not wrapped:
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
        none_row = next((r for r in rows if r["name"] == "none"), None)
        if none_row is not None:
            close_compiled_sweep(rows, none_row, costs.total_bytes, log)
            if out is not None:
                write_outputs(rows, Path(out), meta)
        # DRAT's budget mode under compile: the same targets as the eager rows, closed on the
        # measured compiled peak (≤3 rounds, a compile each, and one more to reinstall the best
        # fitting plan if the last round overshot). Its base is what the compiled
        # store-all peak holds beyond the stored activations, where that row was measured:
        # compiled, `none`'s own activations shrink (fused pointwise ops save less)
        # The oracle's plan on the same compiled table is run the same way, as the reference a
        # budget row's step time is held to (the target: "within 3% of the oracle's").
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
        # the hand-written baselines under the compiler: checkpointed blocks and op-level SAC,
        # which the partitioner honours as it does DRAT's compiled plans
        for name, strat in (("full-compiled", FullAC()), ("sac-compiled", SAC())):
            if only and name not in only:  # by full name: `--only full` means the eager row
                continue
            torch._dynamo.reset()
            model.set_strategy(strat)
            compiled = torch.compile(model)
            record(name, strat, "compiled", compiled=compiled)
            del compiled
        torch._dynamo.reset()
    return rows


def interleave_rounds(model, idx, targets, eager: list[tuple[dict, object]], rounds: int, steps: int,
                      warmup: int, tokens: int, flops: float, peak_tflops: float, log=print) -> None:
    """The eager rows timed together (`common.timed_rounds`), their tokens/s and MFU with them;
    their own consecutive steps stay in `step_ms_own` and `step_ms_all` (peaks come from those).
    Compiled rows keep their own steps: each is its own graph."""
    rows = [row for row, _ in eager]
    for row in rows:
        row["step_ms_own"] = row["step_ms"]
    timed_rounds(model, idx, targets, rows, [s for _, s in eager], rounds, steps, warmup, log=log)
    for row in rows:
        row["tokens_per_s"] = tokens / (row["step_ms"] / 1e3)
        if row.get("mfu") is not None:
            row["mfu"] = flops / (row["step_ms"] / 1e3) / (peak_tflops * 1e12)


def close_compiled_sweep(rows: list[dict], none_row: dict, act_bytes: float, log=print) -> None:
    """Close the compiled λ sweep on what was measured. The compiled cost table mispredicts what a
    compiled plan keeps and costs, so a λ's fitted plan can come out worse on both axes than
    another λ's. Each `drat-compiled-lam*` row then takes, among the sweep's measured plans, the
    one with the least measured objective at its λ,

        λ · (peak − base) / activations + step / none's step − 1,   base = none's peak − activations,

    which is what λ prices. A dominated plan is never the least at any λ ≥ 0, so no row of the
    closed sweep is dominated by another. A row that changes keeps its first plan's measurements
    under `first_plan` and names the row it took them from in `plan_from`."""
    sweep = [r for r in rows if r["name"].startswith("drat-compiled-lam")]
    if len(sweep) < 2 or not none_row.get("peak_gib") == none_row.get("peak_gib"):
        return
    base = none_row["peak_gib"] * 2**30 - act_bytes
    measured = [dict(r) for r in sweep]  # the plans as measured, before any row takes another's

    def objective(r: dict, lam: float) -> float:
        mem = (r["peak_gib"] * 2**30 - base) / max(act_bytes, 1.0)
        return lam * mem + r["step_ms"] / none_row["step_ms"] - 1

    keep = ("name", "lam", "mode", "budget_gib")
    for row in sweep:
        own = next(m for m in measured if m["name"] == row["name"])
        best = min(measured, key=lambda m: objective(m, row["lam"]))
        if objective(best, row["lam"]) >= objective(own, row["lam"]):
            continue
        first = {k: v for k, v in row.items() if k not in keep}
        row.update({k: v for k, v in best.items() if k not in keep})
        row["first_plan"], row["plan_from"] = first, best["name"]
        log(f"{row['name']}: closed on the measured sweep, takes {best['name']}'s plan "
            f"({first['peak_gib']:.3f} GiB {first['step_ms']:.2f} ms -> "
            f"{row['peak_gib']:.3f} GiB {row['step_ms']:.2f} ms)")


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


def add_frontier_parser(bsub) -> None:
    f = bsub.add_parser("frontier", help="every strategy side by side: peak memory vs step time")
    add_model_args(f)
    f.add_argument("--hf", default=None, metavar="FAMILY",
                   help=f"a random-init transformers model instead of DRAT's GPT, wrapped by drat.wrap "
                        f"({' | '.join(HF_FAMILIES)}; the shape flags set its size)")
    f.add_argument("--lambdas", default="0.05,0.2,0.5,1,2,5", type=NumberList(NONNEG))
    f.add_argument("--compiled-lambdas", default="0,0.2,0.5,1,2,5", type=NumberList(NONNEG),
                   help="λ values run under torch.compile (0: store-all, i.e. plain torch.compile)")
    f.add_argument("--compile-budgets", default="1,0.5,0.2", type=NumberList(Number(float, low=0, high=1)),
                   help="torch.compile activation_memory_budget values (empty: none)")
    f.add_argument("--peak-cuts", default="0.45", type=NumberList(FRACTION),
                   help="DRAT and oracle rows budgeted at (1 - cut) x the `none` peak (GPU only)")
    f.add_argument("--no-compiled-drat-budgets", dest="compiled_budget_targets", action="store_false",
                   help="skip the budget rows under torch.compile, DRAT's and the oracle's (up to 4 "
                        "compiles each)")
    f.add_argument("--arms", default="store,recompute", type=ARMS,
                   help="store,recompute,offload adds three-arm DRAT budget rows (drat3-*)")
    f.add_argument("--only", default=None, help="comma-separated row-name prefixes to run")
    f.add_argument("--rounds", type=NONNEG_INT, default=3,
                   help="interleaved timing rounds of the eager rows, each in a new random order (0: each "
                        "row's own consecutive steps only)")
    f.set_defaults(func=_cmd_frontier)


def _cmd_frontier(args) -> int:
    check_steps(args)
    run_frontier(args.size, args.seq_len, args.batch_size, args.device, **model_kwargs(args),
                 lams=tuple(float(x) for x in args.lambdas.split(",")),
                 compiled_lams=tuple(float(x) for x in args.compiled_lambdas.split(",") if x),
                 compile_budgets=tuple(float(x) for x in args.compile_budgets.split(",") if x),
                 peak_cuts=tuple(float(x) for x in args.peak_cuts.split(",") if x),
                 compiled_budget_targets=args.compiled_budget_targets, steps=args.steps, warmup=args.warmup,
                 only=set(args.only.split(",")) if args.only else None, out=args.out, hf=args.hf,
                 arms=args.arms, rounds=args.rounds)
    return 0
