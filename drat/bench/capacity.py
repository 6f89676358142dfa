"""`drat bench capacity`: the largest batch each strategy fits under a memory cap, and its speed.

The long-context question: on a 40 GiB card, how many sequences of
S=4096 does `large` train per step under `none`, `full`, compile-budget 0.5 and DRAT, and how
many tokens/s does each then reach? More memory headroom only matters if it buys throughput.

Each strategy is probed at a batch size by one training step under a hard allocator cap
(`torch.cuda.set_per_process_memory_fraction`, so the card behaves like a 40 GiB one: an
allocation past the cap raises OOM, fragmentation included). A probe fits when the step ran and
its peak allocated memory is at most the cap. The search guesses from two small probes (peak is
affine in the batch), then brackets and bisects, so it costs a handful of probes per strategy;
the largest fitting batch is then timed like `drat bench frontier` (median CUDA-event step).

DRAT plans per batch size in budget mode at the cap, closed on the measured peak; its search
starts where the least-memory plan's measured peak line meets the cap. A user picks DRAT's batch,
so `--drat-batches` times DRAT at given batch sizes instead (rows `drat-b<B>`): the batch that
fits most is rarely the fastest per token, since every byte cut past what the batch needs costs
time. `drat3` is DRAT with the offload
arm (three-way plans on the measured host link, within the host-memory cap). On the CPU (tests) "peak" is the
fp32 model state plus exact saved-activation bytes, and the compiled row is skipped.

Outputs in --out: capacity.csv, capacity.json (rows, every probe, provenance), capacity.png.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from pathlib import Path

import torch

from ..accounting import saved_activation_bytes
from ..costs import link_utilisation, model_state_bytes
from ..gates import budget_to_activation_bytes, fit_gates
from ..measure import (
    build_costs,
    matmul_tflops,
    measure_link,
    measure_steps,
    model_flops_per_step,
    random_batch,
)
from ..model import GPT
from ..offload import default_host_cap_bytes
from ..oracle import activation_floor_bytes, solve_oracle
from ..provenance import provenance
from ..runtime import autocast_ctx
from ..strategies import DRATGates, FullAC, FullOffload, NoneAC, PlanAC
from ..validate import NONNEG_INT, POSITIVE, POSITIVE_INT, NumberList
from .common import (
    add_model_args,
    bench_model,
    check_steps,
    model_kwargs,
    offloaded_of,
    plan_with_link_check,
    save_stamped,
    write_rows,
)
from .trace import trace_transfers

CAPACITY_STRATEGIES = ("none", "full", "compile-budget0.5", "drat")
KNOWN_STRATEGIES = CAPACITY_STRATEGIES + ("drat3",)
CAPACITY_FIELDS = ["name", "mode", "cap_gib", "batch_size", "tokens_per_step", "peak_gib", "step_ms",
                   "tokens_per_s", "mfu", "n_probes", "n_recomputed", "recomputed_sites", "search", "fits",
                   "reserved_gib", "alloc_retries", "link_utilisation", "trace_exposed_transfer_ms",
                   "trace_copy_hidden_frac", "trace_compute_idle_ms"]


def largest_fitting(fits, guess: int, max_batch: int) -> int:
    """Largest b in [1, max_batch] with fits(b), for a monotone `fits`; 0 if even 1 fails.
    Starts at `guess`, brackets with doubling steps away from it, then bisects."""
    b = min(max(1, guess), max_batch)
    step = 1
    if fits(b):  # lo fits; walk up until something fails or max_batch
        lo, hi = b, max_batch + 1
        while lo < max_batch:
            b = min(lo + step, max_batch)
            if not fits(b):
                hi = b
                break
            lo, step = b, step * 2
    else:  # hi fails; walk down until something fits or nothing can
        lo, hi = 0, b
        while hi > 1:
            b = max(hi - step, 1)
            if fits(b):
                lo = b
                break
            hi, step = b, step * 2
    while hi - lo > 1:
        b = (lo + hi) // 2
        if fits(b):
            lo = b
        else:
            hi = b
    return lo


def run_capacity(size: str = "tiny", seq_len: int = 64, cap_gib: float = 40.0, device: str = "cpu",
                 strategies=CAPACITY_STRATEGIES, vocab_size: int | None = None, n_layer: int | None = None,
                 n_embd: int | None = None, n_head: int | None = None, max_batch: int = 256,
                 steps: int = 10, warmup: int = 3, out: str | Path | None = None, log=print,
                 tie_weights: bool | None = None, drat_batches: tuple[int, ...] = (),
                 trace_steps: int = 0) -> list[dict]:
    """One row per strategy at its largest fitting batch; DRAT's rows at each of `drat_batches`
    instead when given (a batch none of its plans fits gets a row with `fits` False). With
    `trace_steps` (CUDA), each timed row that moves bytes over the host link, and `none`, is then
    traced under the cap for its exposed transfer time (`trace.trace_transfers`)."""
    unknown = set(strategies) - set(KNOWN_STRATEGIES)
    if unknown:
        raise ValueError(f"unknown capacity strategies {sorted(unknown)}; "
                         f"choose from {', '.join(KNOWN_STRATEGIES)}")
    if cap_gib <= 0:
        raise ValueError("--cap-gib must be positive")
    if any(b < 1 or b > max_batch for b in drat_batches):
        raise ValueError(f"--drat-batches must lie in [1, --max-batch {max_batch}]")
    dev, cfg, model, _, _ = bench_model(size, seq_len, 1, device, n_layer, n_embd, n_head, vocab_size,
                                        tie_weights)  # the probes draw batches of their own size
    cap_bytes = cap_gib * 2**30
    if dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev.index or 0).total_memory
        if cap_bytes > total:
            raise ValueError(f"--cap-gib {cap_gib} exceeds this GPU's {total / 2**30:.1f} GiB")
        torch.cuda.set_per_process_memory_fraction(cap_bytes / total, dev.index or 0)
    peak_tflops = matmul_tflops(dev) if dev.type == "cuda" else float("nan")
    meta = {"config": cfg.to_dict(), "seq_len": seq_len, "cap_gib": cap_gib, "matmul_tflops": peak_tflops,
            "params": model.num_params(), "model_state_bytes": model_state_bytes(model),
            "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
            "drat_batches": list(drat_batches), "trace_steps": trace_steps, "steps": steps, "warmup": warmup,
            "max_batch": max_batch, **provenance(dev)}
    rows: list[dict] = []

    def peak_bytes(b: int, compiled=None) -> float | None:
        """Peak of one step at batch b (None on OOM)."""
        idx, targets = random_batch(cfg.vocab_size, b, seq_len, dev)
        try:
            if dev.type == "cuda":
                m = measure_steps(model, idx, targets, steps=1, warmup=1, compiled=compiled)
                return m["peak_gib"] * 2**30
            with autocast_ctx(dev):
                saved, _ = saved_activation_bytes(model, idx, targets)
            return float(model_state_bytes(model) + saved)
        except torch.OutOfMemoryError:
            return None
        finally:
            del idx, targets
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()

    def search(name: str, mode: str, set_plan, compiled=None, guess=None, at: int | None = None):
        """set_plan(b) installs the strategy for batch b (False: no plan fits). The largest fitting
        batch, searched from `guess`; or just batch `at`, if it fits."""
        probes = []
        seen: dict[int, bool] = {}

        def fits(b):
            if b in seen:
                return seen[b]
            ok = set_plan(b)
            p = peak_bytes(b, compiled) if ok else None
            gib = None if p is None else p / 2**30
            probes.append({"batch_size": b, "planned": bool(ok), "peak_gib": gib,
                           **(getattr(set_plan, "last_info", None) or {})})
            status = "no plan" if not ok else "OOM" if p is None else f"{gib:.2f} GiB"
            log(f"  {name:<18} B={b:<4} {status}")
            seen[b] = p is not None and p <= cap_bytes
            return seen[b]

        if at is not None:
            best = at if fits(at) else 0
        elif guess is None:
            p1 = p2 = None
            if fits(1):
                p1 = probes[-1]["peak_gib"] * 2**30
                if fits(2):
                    p2 = probes[-1]["peak_gib"] * 2**30
            if p1 is None:
                best = 0
            elif p2 is None:
                best = 1
            else:
                slope = max(p2 - p1, 1.0)
                best = largest_fitting(fits, 2 + int((cap_bytes - p2) // slope), max_batch)
        else:
            best = largest_fitting(fits, guess, max_batch)
        row = {"name": name, "mode": mode, "cap_gib": cap_gib, "batch_size": best,
               "tokens_per_step": best * seq_len, "n_probes": len(probes), "probes": probes,
               "search": "largest" if at is None else "fixed", "fits": bool(best)}
        if at is not None and not best:
            row.update(batch_size=at, tokens_per_step=at * seq_len)
            best = 0  # nothing to time: the row says the batch did not fit
        m = None
        while best and m is None:  # the timed run is longer than a probe: fragmentation can OOM it
            if not set_plan(best):  # re-planning failed: never time `none` under DRAT's name
                best -= 1
                continue
            idx, targets = random_batch(cfg.vocab_size, best, seq_len, dev)
            try:
                m = measure_steps(model, idx, targets, steps, warmup, compiled)
            except torch.OutOfMemoryError:
                log(f"  {name:<18} B={best} OOMed over {warmup + steps} steps: trying B={best - 1}")
                probes.append({"batch_size": best, "planned": True, "peak_gib": None, "timed_run_oom": True})
                best -= 1
            if m is None:  # outside the except block: the traceback no longer pins the step's tensors
                del idx, targets
                gc.collect()
                torch.cuda.empty_cache()
        if best or at is None:
            row.update(batch_size=best, tokens_per_step=best * seq_len, fits=bool(best))
        row["n_probes"] = len(probes)
        if best:
            flops = model_flops_per_step(model, best, seq_len)
            decisions = model.strategy.decisions(model) if hasattr(model.strategy, "decisions") else None
            rec = ([k.label() for k, s in zip(model.graph.keys, decisions) if not s] if decisions else [])
            probed = next((p["peak_gib"] for p in probes if p["batch_size"] == best), None)
            row.update(peak_gib=m["peak_gib"] if dev.type == "cuda" else probed,
                       reserved_gib=m.get("reserved_gib"), alloc_retries=m.get("alloc_retries"),
                       step_ms=m["step_ms"], step_ms_all=m["step_ms_all"],
                       tokens_per_s=best * seq_len / (m["step_ms"] / 1e3),
                       mfu=(flops / (m["step_ms"] / 1e3) / (peak_tflops * 1e12)
                            if dev.type == "cuda" else None),
                       n_recomputed=len(rec),
                       # the last step's transfers (three arms): bytes each way, and how many
                       # reloads were not prefetched in time
                       **{k: v for k, v in model.strategy.host_stats().items()
                          if k in ("d2h_bytes", "h2d_bytes", "host_pinned_bytes", "reloads_on_demand")},
                       recomputed_sites=" ".join(sorted({r.split(".")[-1] for r in rec})))
            moved, link = row.get("d2h_bytes"), meta.get("link")
            if moved and link:
                row["link_utilisation"] = link_utilisation(moved, m["step_ms"], link)
            if dev.type == "cuda" and trace_steps and (name == "none" or moved):
                try:  # a few more steps under the profiler, still under the cap
                    tr = trace_transfers(model, idx, targets, steps=trace_steps)
                    row.update({f"trace_{k}": v for k, v in tr.items()})
                except torch.OutOfMemoryError:
                    log(f"  {name:<18} B={best}: the profiled steps ran out of the cap; no trace")
            del idx, targets
        rows.append(row)
        if out is not None:
            write_capacity(rows, Path(out), meta)
        log(f"{name:<18} {'largest batch' if at is None else 'batch'} {row['batch_size']} "
            f"({row['tokens_per_step']} tokens)  "
            + (f"{row['tokens_per_s']:.0f} tok/s" if best else "does not fit"))
        return row

    def fixed(strategy):
        def set_plan(b):
            model.set_strategy(strategy)
            return True
        return set_plan

    none_probes, ref = None, None
    for name in strategies:
        if name == "none":
            none_row = search("none", "eager", fixed(NoneAC()))
            none_probes = none_row["probes"]
            if none_row.get("step_ms") and none_row.get("batch_size"):  # none's step per sequence
                meta["none_ms_per_sample"] = none_row["step_ms"] / none_row["batch_size"]
        elif name == "full":
            search("full", "eager", fixed(FullAC()))
        elif name == "compile-budget0.5":
            if dev.type != "cuda":
                log("compile-budget0.5: skipped on the CPU (torch.compile rows are measured on CUDA)")
                continue
            import torch._functorch.config as fconfig

            torch._dynamo.reset()
            model.set_strategy(NoneAC())
            with fconfig.patch(activation_memory_budget=0.5):
                compiled = torch.compile(model)  # recompiles once with a dynamic batch dimension
                search("compile-budget0.5", "compiled", fixed(NoneAC()), compiled=compiled)
            del compiled
            torch._dynamo.reset()
        elif name in ("drat", "drat3"):
            arms = 3 if name == "drat3" else 2
            ref = ref or _drat_reference(model, cfg, seq_len, dev, none_probes)
            ref["none_ms_per_sample"] = meta.get("none_ms_per_sample")
            if arms == 3 and "link" not in meta:
                ref["costs"].link = measure_link(dev)
                meta["link"] = ref["costs"].link
            set_plan = _drat_planner(model, cfg, seq_len, cap_gib, dev, ref, log, arms=arms)
            if drat_batches:
                for b in drat_batches:
                    search(f"{name}-b{b}", "eager", set_plan, at=b)
                continue
            # the guess: where the least-memory plan's *measured* peak line meets the cap. The
            # cost model's floor leaves out what a rebuild holds while it runs, which grows with
            # the batch: on the H200 (large, S=4096) it guessed B=83 for a largest fit of 19. With
            # the offload arm the least-memory plan is the checkpointed blocks with offloaded
            # inputs (the model's floor there is near zero: it guessed B=189)
            floor_plan = (FullOffload(host_cap_bytes=default_host_cap_bytes()) if arms == 3
                          else PlanAC(stored=_floor_plan(ref["costs"])))
            model.set_strategy(floor_plan)
            floor_peaks = {b: peak_bytes(b) for b in (1, 2)}
            model.set_strategy(NoneAC())
            ref[f"floor_plan_peaks{'' if arms == 2 else '_drat3'}"] = floor_peaks
            meta["drat_reference"] = {k: v for k, v in ref.items() if k != "costs"}
            search(name, "eager", set_plan, guess=_drat_guess({**ref, "floor_plan_peaks": floor_peaks},
                                                              cap_bytes))
    return rows


def _drat_reference(model: GPT, cfg, seq_len: int, dev, none_probes, b_ref: int = 1) -> dict:
    """What DRAT plans from, measured once at a small batch that fits anywhere: the site costs
    (bytes and ms both scale linearly in the batch at a fixed S) and the affine `none` peak
    model, peak(b) = s0 + b·(activations + transients), from none's first two probes. Measuring
    `none` at the batch DRAT aims for would not fit under the cap: that is the point of DRAT."""
    model.set_strategy(NoneAC())
    idx, targets = random_batch(cfg.vocab_size, b_ref, seq_len, dev)
    costs = build_costs(model, idx, targets, "measured")
    del idx, targets
    s0, transient = float(model_state_bytes(model)), 0.0
    fitted = [p for p in (none_probes or []) if p["peak_gib"] is not None][:2]
    if len(fitted) == 2 and fitted[1]["batch_size"] > fitted[0]["batch_size"]:
        (b1, p1), (b2, p2) = ((p["batch_size"], p["peak_gib"] * 2**30) for p in fitted)
        slope = (p2 - p1) / (b2 - b1)
        s0 = p1 - b1 * slope
        transient = max(0.0, slope - costs.total_bytes / b_ref)
    return {"costs": costs, "b_ref": b_ref, "s0": s0, "transient_per_sample": transient,
            "floor_per_sample": activation_floor_bytes(costs) / b_ref}


def _scaled_costs(costs, factor: float, step_ms: float | None = None):
    """The cost table at `factor` times the batch: bytes and kernel time scale, the measured
    per-rebuild overhead (Python, hooks) does not. `step_ms`: the step measured at that batch
    (`none`'s, per sequence, times the batch), which sets the kernel time's scale instead of
    `factor`: a small batch's step is far less efficient per sequence than a large one's (on the
    H100, large at S=4096: 8 × the B=1 step predicted 425.8 ms at B=8, where `none` runs 273.8 ms
    per 8 sequences), and the host link's windows are shares of that time."""
    c = costs.rebuild_overhead_ms
    t_factor = factor if step_ms is None else step_ms / costs.step_ms
    t = [(ms - c * n) * t_factor + c * n for ms, n in zip(costs.time_ms, costs.instances)]
    owned = None if costs.owned_bytes is None else [m * factor for m in costs.owned_bytes]
    return dataclasses.replace(costs, mem_bytes=[m * factor for m in costs.mem_bytes], time_ms=t,
                               owned_bytes=owned,
                               step_ms=costs.step_ms * t_factor)


def _floor_plan(costs) -> list[bool]:
    """The plan that keeps the fewest activation bytes (recomputing at most a step's time)."""
    return solve_oracle(costs, budget_act_bytes=activation_floor_bytes(costs) * (1 + 1e-9)).stored


def _drat_guess(ref: dict, cap_bytes: float) -> int:
    """Batch at which the least-memory plan's peak meets the cap: on the line through its peaks
    measured at B=1 and 2 when both fit, else the modelled floor (plus per-sample transients)."""
    peaks = ref.get("floor_plan_peaks") or {}
    p1, p2 = peaks.get(1), peaks.get(2)
    if p1 is not None and p2 is not None and p2 > p1:
        return max(1, 1 + int((cap_bytes - p1) // (p2 - p1)))
    per_sample = max(ref["floor_per_sample"] + ref["transient_per_sample"], 1.0)
    return max(1, int((cap_bytes - ref["s0"]) // per_sample))


class _OverCap(Exception):
    """Budget mode's closed loop ended with a plan still above the cap."""


def _drat_planner(model: GPT, cfg, seq_len: int, cap_gib: float, dev, ref: dict, log,
                  arms: int = 2):
    """set_plan(b): DRAT budget mode at the cap for batch b on the scaled reference costs, closed
    on the measured peak (CUDA). False when no plan fits (below the floor, or OOM). `arms=3`:
    with the offload arm, within the default host-memory cap."""
    host_cap = default_host_cap_bytes() if arms == 3 else None
    kind = "drat3" if arms == 3 else "drat"
    def set_plan(b: int) -> bool:
        set_plan.last_info = None
        per_sample = ref.get("none_ms_per_sample")
        costs = _scaled_costs(ref["costs"], b / ref["b_ref"], None if per_sample is None else per_sample * b)
        base = max(float(model_state_bytes(model)), ref["s0"] + b * ref["transient_per_sample"])
        idx, targets = random_batch(cfg.vocab_size, b, seq_len, dev)
        try:
            if dev.type == "cuda":
                # Planning is closed on the measured peak, which needs room to overshoot: under the
                # cap a first plan that overshoots would only OOM, and the loop could not correct
                # it. So the cap is lifted while planning (for 99% of it: the loop accepts 1%
                # over) and restored for the probe that decides whether the batch fits.
                torch.cuda.set_per_process_memory_fraction(1.0, dev.index or 0)
                try:
                    # shrink-only (grow_below=None): what a plan leaves under the cap absorbs the
                    # allocator's fragmentation (measured on the H200, large, S=4096: plans for
                    # B=25–43 peaked 38.2–39.5 GiB here, with the cap lifted, and each then ran out
                    # of the 40 GiB in its probe)
                    # three arms: re-planned once if the measured step misses the predicted one
                    # (the link hides less at a large batch than the model says), against
                    # `none`'s step at this batch from the scaled cost table
                    plan = plan_with_link_check(model, idx, targets, costs, 0.99 * cap_gib, base, kind,
                                                host_cap, costs.step_ms, log, grow_below=None)
                    gates, trace = plan.gates, plan.trace
                finally:
                    torch.cuda.empty_cache()
                    total = torch.cuda.get_device_properties(dev.index or 0).total_memory
                    torch.cuda.set_per_process_memory_fraction(cap_gib * 2**30 / total, dev.index or 0)
                set_plan.last_info = {"plan_trace": trace}
                peaks = [t["measured_peak_bytes"] for t in trace if "measured_peak_bytes" in t]
                if peaks and peaks[-1] > cap_gib * 2**30:  # the loop could not get under the cap:
                    raise _OverCap(f"its last plan peaked {peaks[-1] / 2**30:.2f} GiB after "  # no probe
                                   f"{len(trace)} rounds")
            else:
                gates = fit_gates(costs, budget_act_bytes=budget_to_activation_bytes(cap_gib, base),
                                  base_bytes=base, arms=arms, host_cap_bytes=host_cap).gates
            strategy = DRATGates(gates, host_cap_bytes=host_cap)
            strategy.plan_prefetch(costs, offloaded_of(gates))
            model.set_strategy(strategy)
            return True
        except (ValueError, torch.OutOfMemoryError, _OverCap) as e:  # below the floor / no room
            log(f"  drat B={b}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            ok = False
        finally:
            del idx, targets
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        model.set_strategy(NoneAC())
        return ok

    return set_plan


def write_capacity(rows: list[dict], out: Path, meta: dict) -> None:
    write_rows(rows, out, "capacity", CAPACITY_FIELDS, meta)
    plot_capacity(rows, out / "capacity.png", meta)


def plot_capacity(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.5))
    a1.bar(names, [r["batch_size"] for r in rows], color="C0")
    a1.set_ylabel(f"largest batch under {meta['cap_gib']:g} GiB")
    tps = [r.get("tokens_per_s") or 0.0 for r in rows]
    a2.bar(names, [t / 1e3 for t in tps], color=["C3" if n.startswith("drat") else "C0" for n in names])
    a2.set_ylabel("tokens/s (thousands)")
    for ax in (a1, a2):
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    save_stamped(fig, path, meta)


def add_capacity_parser(bsub) -> None:
    c = bsub.add_parser("capacity", help="largest batch under a memory cap per strategy, and its tokens/s")
    add_model_args(c, batch_size=False, steps=10)
    c.add_argument("--cap-gib", type=POSITIVE, default=40.0, help="memory cap (a 40 GiB card by default)")
    c.add_argument("--strategies", default=",".join(CAPACITY_STRATEGIES))
    c.add_argument("--max-batch", type=POSITIVE_INT, default=256)
    c.add_argument("--drat-batches", type=NumberList(POSITIVE_INT), default="", metavar="B,B,...",
                   help="time DRAT's rows at these batch sizes (rows drat-b<B>, drat3-b<B>) instead of "
                        "searching their largest: DRAT's batch is the user's choice")
    c.add_argument("--trace-steps", type=NONNEG_INT, default=0,
                   help="CUDA: steps per timed row that moves bytes (and none) under torch.profiler, for "
                        "the exposed transfer time (0: no trace)")
    c.add_argument("--alloc-conf", default=None, metavar="CONF",
                   help="PYTORCH_CUDA_ALLOC_CONF for this run, e.g. expandable_segments:True: under a "
                        "hard cap the allocator's fragmentation decides the batch (recorded in the meta)")
    c.set_defaults(func=_cmd_capacity)


def _cmd_capacity(args) -> int:
    if args.alloc_conf is not None:
        # read once, when the caching allocator starts: too late once anything is on the GPU
        if torch.cuda.is_initialized():
            raise RuntimeError("--alloc-conf must be set before CUDA starts; set PYTORCH_CUDA_ALLOC_CONF in "
                               "the environment instead")
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = args.alloc_conf
    check_steps(args)
    run_capacity(args.size, args.seq_len, args.cap_gib, args.device,
                 strategies=tuple(s for s in args.strategies.split(",") if s), max_batch=args.max_batch,
                 steps=args.steps, warmup=args.warmup, out=args.out,
                 drat_batches=tuple(int(b) for b in args.drat_batches.split(",") if b.strip()),
                 trace_steps=args.trace_steps,
                 **model_kwargs(args))
    return 0

