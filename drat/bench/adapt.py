"""`drat bench adapt`: what learning the plan adds that one offline solve cannot.

The gates are a relaxation of a program the exact solver (`oracle.py`) solves in seconds, and on a
fixed cost table they reach its optimum. What a solver needs and learning does not is the table:
a profile of the shape the run has. This bench changes the shape under a run, as a sequence-length
warm-up does (S grows in stages to its final length), and keeps one peak budget throughout.
Five planners meet it:

    ilp-once       the exact program solved once, on the table profiled at the final shape, and
                   closed on the measured peak there; the same plan at every stage.
    ilp-scaled     the exact program re-solved at every stage on the first stage's table scaled
                   to the new shape (the site bytes re-counted by one forward, the time by the
                   length), closed on the measured peak there: re-planning without re-profiling.
    ilp-reprofile  the exact program re-solved at every stage on a table re-profiled at that
                   stage's shape, closed on the measured peak there: the offline optimum, paid for
                   with one profile per shape change.
    drat-refit     the gates fitted afresh (`fit_gates`) on ilp-scaled's table at every stage, closed
                   on the measured peak: the gates as a planner, not as a learner.
    drat-online    the gates as a training run drives them (`train.gating.GateTraining`, budget
                   mode): warm-started once on the first stage's table, then every step samples a
                   plan, runs it, and moves λ by dual ascent on the step's peak. A shape change
                   gives the gates ilp-scaled's table: learning sees what re-planning sees.

At the end of each stage the three plans and `none` are timed together (interleaved rounds, a new
order each round) and their peaks measured (on the CPU: the bytes saved for backward plus the
model state). The rows say, per stage, what each plan costs against the re-profiled optimum, and
what each planner paid to plan (`plan_s`). The trajectory (`meta["online"]`) holds every online
step: its length, λ, the sites kept and the step's peak.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from ..accounting import saved_activation_bytes
from ..costs import SiteCosts, model_state_bytes, plan_cost
from ..gates import budget_to_activation_bytes, fit_gates
from ..measure import build_costs, measure_site_bytes, measure_steps, random_batch
from ..oracle import solve_oracle
from ..provenance import provenance
from ..runtime import autocast_ctx
from ..strategies import NoneAC, PlanAC
from ..train.config import TrainingConfig
from ..train.distributed import Dist
from ..train.gating import GateTraining
from ..validate import POSITIVE, POSITIVE_INT, NumberList
from .common import (
    add_model_args,
    bench_model,
    check_steps,
    model_kwargs,
    plan_under_measured_peak,
    save_stamped,
    timed_rounds,
    write_rows,
)

PLANNERS = ("ilp-once", "ilp-scaled", "ilp-reprofile", "drat-refit", "drat-online")
ADAPT_FIELDS = ["stage", "seq_len", "name", "peak_gib", "budget_gib", "within_budget", "step_ms",
                "step_spread_ms", "step_vs_reprofile", "recompute_frac", "n_recomputed", "plan_s",
                "online_max_peak_gib", "online_steps_over"]


def scaled_table(costs: SiteCosts, site_bytes_from: list[float], site_bytes_to: list[float],
                 length_factor: float) -> SiteCosts:
    """`costs` at another shape without profiling it: every site's bytes by the ratio of its counted
    bytes there and here, the kernel time by the length (the per-rebuild overhead unchanged)."""
    r = [b / a if a > 0 else 1.0 for a, b in zip(site_bytes_from, site_bytes_to)]
    c = costs.rebuild_overhead_ms
    t = [(ms - c * n) * length_factor + c * n for ms, n in zip(costs.time_ms, costs.instances)]
    owned = None if costs.owned_bytes is None else [m * f for m, f in zip(costs.owned_bytes, r)]
    return dataclasses.replace(costs, mem_bytes=[m * f for m, f in zip(costs.mem_bytes, r)], time_ms=t,
                               owned_bytes=owned, step_ms=costs.step_ms * length_factor)


def run_adapt(size: str = "tiny", seq_lens: tuple[int, ...] = (16, 32, 64), batch_size: int = 2,
              device: str = "cpu", peak_cut: float = 0.45, budget_gib: float | None = None,
              steps_per_stage: int = 30, rounds: int = 3, steps: int = 10, warmup: int = 2,
              out: str | Path | None = None, log=print, n_layer: int | None = None, n_embd: int | None = None,
              n_head: int | None = None, vocab_size: int | None = None,
              tie_weights: bool | None = None) -> list[dict]:
    """Rows per stage and planner (module docstring); `budget_gib` (default: (1 − peak_cut) × `none`'s
    peak at the final shape) holds at every stage."""
    seq_lens = tuple(int(s) for s in seq_lens)
    if len(seq_lens) < 2 or any(b <= a for a, b in zip(seq_lens, seq_lens[1:])):
        raise ValueError("--seq-lens must be two or more increasing lengths, e.g. 256,512,1024")
    if not 0 < peak_cut < 1:
        raise ValueError("--peak-cut must lie in (0, 1)")
    dev, cfg, model, _, _ = bench_model(size, seq_lens[-1], batch_size, device, n_layer, n_embd, n_head,
                                        vocab_size, tie_weights)
    cuda = dev.type == "cuda"
    base = float(model_state_bytes(model))
    batches = {s: random_batch(cfg.vocab_size, batch_size, s, dev, seed=k) for k, s in enumerate(seq_lens)}

    def peak_bytes(s: int) -> float:
        """One step's peak under the installed strategy at length s."""
        idx, targets = batches[s]
        if cuda:
            return measure_steps(model, idx, targets, steps=1, warmup=1)["peak_gib"] * 2**30
        with autocast_ctx(dev):
            saved, _ = saved_activation_bytes(model, idx, targets)
        return base + saved

    model.set_strategy(NoneAC())
    none_final = peak_bytes(seq_lens[-1])
    if budget_gib is None:
        budget_gib = (1 - peak_cut) * none_final / 2**30
    meta = {"config": cfg.to_dict(), "seq_len": seq_lens[-1], "seq_lens": list(seq_lens),
            "batch_size": batch_size, "budget_gib": budget_gib, "peak_cut": peak_cut,
            "none_final_peak_gib": none_final / 2**30, "steps_per_stage": steps_per_stage,
            "rounds": rounds, "steps": steps, "warmup": warmup, "model_state_bytes": base, **provenance(dev)}

    def profile(s: int) -> tuple[SiteCosts, float]:
        t0 = time.perf_counter()
        costs = build_costs(model, *batches[s], "measured")
        return costs, time.perf_counter() - t0

    def solve(costs: SiteCosts, s: int, kind: str = "oracle") -> tuple[list[bool], float]:
        """The exact program ("oracle") or a fresh gate fit ("drat") at the budget, closed on the
        measured peak on CUDA."""
        t0 = time.perf_counter()
        if cuda:
            stored = plan_under_measured_peak(model, *batches[s], costs, budget_gib, base, kind).stored
        elif kind == "oracle":
            stored = solve_oracle(costs, budget_act_bytes=budget_to_activation_bytes(budget_gib, base)).stored
        else:
            stored = fit_gates(costs, budget_act_bytes=budget_to_activation_bytes(budget_gib, base),
                               base_bytes=base).stored
        model.set_strategy(NoneAC())
        return stored, time.perf_counter() - t0

    # ilp-once: one profile and one solve at the final shape, before the run starts
    tables, profile_s = {}, {}
    tables[seq_lens[-1]], profile_s[seq_lens[-1]] = profile(seq_lens[-1])
    once, once_s = solve(tables[seq_lens[-1]], seq_lens[-1])
    once_total_s = profile_s[seq_lens[-1]] + once_s
    log(f"ilp-once: {len(once) - sum(once)} sites recomputed, planned in {once_total_s:.1f} s")

    # drat-online: the trainer's gate loop, one step per call
    total = steps_per_stage * len(seq_lens)
    tcfg = TrainingConfig(size=size, strategy="drat", budget_gib=budget_gib, steps=total, seed=0)
    gates = GateTraining(tcfg, [k.label() for k in model.graph.keys], base, Dist(), dev,
                         logging.getLogger("drat.bench.adapt"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
    online: list[dict] = []
    rows: list[dict] = []
    first_bytes = None
    for k, s in enumerate(seq_lens):
        idx, targets = batches[s]
        t0 = time.perf_counter()
        with autocast_ctx(dev):
            site_bytes = [float(b) for b in measure_site_bytes(model, idx, targets)]
        if first_bytes is None:
            first_bytes = site_bytes
            first, first_s = profile(s)
            tables.setdefault(s, first)
            profile_s.setdefault(s, first_s)
            scaled = first
            gates.set_costs(first, site_bytes)
            gates.warm_start()
            count_s = first_s + time.perf_counter() - t0
        else:
            scaled = scaled_table(first, first_bytes, site_bytes, s / seq_lens[0])
            gates.set_costs(scaled, site_bytes)
            count_s = time.perf_counter() - t0
        model.set_strategy(gates.strategy)
        gate_s = 0.0
        for i in range(steps_per_stage):
            step = k * steps_per_stage + i
            g0 = time.perf_counter()
            st, plan = gates.sample_plan(step)
            gate_s += time.perf_counter() - g0
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            with autocast_ctx(dev):
                loss = model.step_loss(idx, targets)
            loss.backward()
            g0 = time.perf_counter()
            gates.backward_resource(st)
            gate_s += time.perf_counter() - g0
            opt.step()
            opt.zero_grad(set_to_none=True)
            kept = gates.plan_bytes(plan)
            peak = torch.cuda.max_memory_allocated(dev) if cuda else base + kept
            g0 = time.perf_counter()
            gates.step(plan, peak if cuda else None)
            gate_s += time.perf_counter() - g0
            online.append({"step": step, "stage": k, "seq_len": s, "lam": gates.lam,
                           "n_stored": int(plan.sum()), "peak_gib": peak / 2**30})
        stage_steps = online[-steps_per_stage:]
        learned = [bool(v) for v in gates.gates.hard().tolist()]
        log(f"S={s}: drat-online ends at λ={gates.lam:.3g}, {len(learned) - sum(learned)} recomputed")

        # ilp-reprofile: this stage's own table (the final stage's is ilp-once's)
        if s not in tables:
            tables[s], profile_s[s] = profile(s)
        fresh, fresh_s = solve(tables[s], s)
        rescaled, rescaled_s = (fresh, fresh_s) if k == 0 else solve(scaled, s)
        refit, refit_s = solve(scaled, s, "drat")
        plans = {"none": None, "ilp-once": once, "ilp-scaled": rescaled, "ilp-reprofile": fresh,
                 "drat-refit": refit, "drat-online": learned}
        plan_s = {"none": 0.0, "ilp-once": once_total_s if k == 0 else 0.0,
                  "ilp-scaled": count_s + rescaled_s, "ilp-reprofile": profile_s[s] + fresh_s,
                  "drat-refit": count_s + refit_s, "drat-online": count_s + gate_s}
        stage_rows, strategies = [], []
        for name, stored in plans.items():
            strategy = NoneAC() if stored is None else PlanAC(stored=stored)
            model.set_strategy(strategy)
            peak = peak_bytes(s)
            row = {"stage": k, "seq_len": s, "name": name, "peak_gib": peak / 2**30, "budget_gib": budget_gib,
                   "within_budget": peak <= 1.01 * budget_gib * 2**30, "plan_s": plan_s[name],
                   "gc_paused": True,  # timed_rounds pauses the collector
                   "n_recomputed": 0 if stored is None else len(stored) - sum(stored),
                   # the plan's recompute time on this stage's own table, as a fraction of its step
                   "recompute_frac": 0.0 if stored is None else plan_cost(stored, tables[s], 0.0)[2]}
            if name == "drat-online":
                row["online_max_peak_gib"] = max(o["peak_gib"] for o in stage_steps)
                row["online_steps_over"] = sum(o["peak_gib"] > 1.01 * budget_gib for o in stage_steps)
            stage_rows.append(row)
            strategies.append(strategy)
        timed_rounds(model, idx, targets, stage_rows, strategies, rounds, steps, warmup, seed=k, log=log)
        ref = next(r["step_ms"] for r in stage_rows if r["name"] == "ilp-reprofile")
        for row in stage_rows:
            row["step_vs_reprofile"] = row["step_ms"] / ref - 1
            log(f"  S={s:<6} {row['name']:<14} {row['peak_gib']:.3f} GiB  {row['step_ms']:.2f} ms "
                f"({100 * row['step_vs_reprofile']:+.1f}% vs ilp-reprofile)")
        rows += stage_rows
        meta["online"] = online
        if out is not None:
            write_adapt(rows, Path(out), meta)
    model.set_strategy(NoneAC())
    return rows


def write_adapt(rows: list[dict], out: Path, meta: dict) -> None:
    write_rows(rows, out, "adapt", ADAPT_FIELDS, meta)
    plot_adapt(rows, out / "adapt.png", meta)


def plot_adapt(rows: list[dict], path: Path, meta: dict) -> None:
    """Left: each planner's step against the re-profiled optimum, per stage. Right: the online
    run's step peaks against the budget, with its λ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6))
    stages = sorted({r["seq_len"] for r in rows})
    width = 0.16
    for j, name in enumerate(PLANNERS):
        ys = [100 * next((r["step_vs_reprofile"] for r in rows if r["seq_len"] == s and r["name"] == name),
                         float("nan")) for s in stages]
        a0.bar([i + (j - 2) * width for i in range(len(stages))], ys, width, label=name)
    a0.axhline(0, color="k", lw=0.6)
    a0.set_xticks(range(len(stages)), [f"S={s}" for s in stages])
    a0.set_ylabel("step vs ilp-reprofile (%)")
    a0.legend(fontsize=7)
    online = meta.get("online") or []
    a1.plot([o["step"] for o in online], [o["peak_gib"] for o in online], ".-", ms=3, label="step peak")
    a1.axhline(meta["budget_gib"], color="r", lw=0.8, ls="--", label="budget")
    a1.set_xlabel("online step")
    a1.set_ylabel("GiB")
    a2 = a1.twinx()
    a2.plot([o["step"] for o in online], [o["lam"] for o in online], color="0.5", lw=0.8)
    a2.set_ylabel("λ", color="0.5")
    a1.legend(fontsize=7, loc="lower right")
    save_stamped(fig, path, meta, f" · lengths {','.join(str(s) for s in meta['seq_lens'])}")


def add_adapt_parser(bsub) -> None:
    p = bsub.add_parser("adapt", help="a sequence-length warm-up under one budget: gates online against "
                                      "the exact program solved once or re-profiled per shape")
    add_model_args(p, steps=10, seq_len=False)  # the lengths are the warm-up's (--seq-lens)
    p.set_defaults(warmup=2)
    p.add_argument("--seq-lens", type=NumberList(POSITIVE_INT), required=True, metavar="S,S,...",
                   help="the warm-up's lengths, increasing; the last is the run's")
    p.add_argument("--peak-cut", type=POSITIVE, default=0.45,
                   help="budget: (1 - cut) x none's peak at the last length")
    p.add_argument("--budget-gib", type=POSITIVE, default=None,
                   help="the budget itself, instead of --peak-cut")
    p.add_argument("--steps-per-stage", type=POSITIVE_INT, default=30, help="online steps at each length")
    p.add_argument("--rounds", type=POSITIVE_INT, default=3, help="interleaved timing rounds per stage")
    p.set_defaults(func=_cmd_adapt)


def _cmd_adapt(args) -> int:
    check_steps(args)
    run_adapt(args.size, tuple(int(s) for s in args.seq_lens.split(",") if s.strip()), args.batch_size,
              args.device, args.peak_cut, args.budget_gib, args.steps_per_stage, args.rounds, args.steps,
              args.warmup, args.out, **model_kwargs(args))
    return 0


__all__ = ["ADAPT_FIELDS", "PLANNERS", "add_adapt_parser", "run_adapt", "scaled_table", "write_adapt"]
