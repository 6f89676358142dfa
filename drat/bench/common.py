"""What every `drat bench` command shares: the model flags, the plans it times, writing rows.

`plan_under_measured_peak` is the bench's budget loop. It plans on the cost table, executes the
plan, reads the peak, and re-plans on the measured overshoot until the peak meets the budget.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import statistics
from pathlib import Path
from typing import NamedTuple

import torch

from ..budget import PeakBudget
from ..costs import plan_cost, scaled_link
from ..gates import fit_gates
from ..measure import interleaved_step_ms, measure_steps, random_batch
from ..model import GPT, add_shape_args, config_for, shape_overrides
from ..oracle import solve_oracle
from ..runtime import autocast_ctx, resolve_device
from ..strategies import CompiledPlanAC, DRATGates, PlanAC
from ..validate import NONNEG_INT, OUT_DIR, POSITIVE_INT
from ..wrap import hf_model, wrap

POINTWISE_SITES = ("embed", "attn_norm", "mlp_norm", "mlp_act", "final_norm")


def compiled_costs(costs, pointwise_factor: float = 0.1):
    """Costs for compiled execution: Inductor fuses a recomputed norm or activation into the
    kernels around it, so its recompute time is a fraction of the eager kernel's."""
    # no hooks under compile: the eager per-rebuild overhead does not apply
    t = [(ms - costs.rebuild_overhead_ms * n) * (pointwise_factor if lab.split(".")[-1] in POINTWISE_SITES
                                                  else 1.0)
         for lab, ms, n in zip(costs.labels, costs.time_ms, costs.instances)]
    # embed and final_norm feed checkpoint regions, which keep their inputs: nothing to save
    m = [0.0 if lab in CompiledPlanAC.ALWAYS_STORED else b for lab, b in zip(costs.labels, costs.mem_bytes)]
    return dataclasses.replace(costs, time_ms=t, mem_bytes=m, kind=costs.kind + "+compiled",
                               rebuild_overhead_ms=0.0)


MISPREDICT_FRAC = 0.02  # of `none`'s step: a three-arm plan missing its predicted step by more is re-planned


def offloaded_of(gates) -> list[bool] | None:
    """The offload flags of a fitted three-arm gate bank (None: two arms, or no bank)."""
    if gates is None or getattr(gates, "arms", 2) == 2:
        return None
    return [bool(v) for v in gates.hard_offload().tolist()]


class BudgetPlan(NamedTuple):
    stored: list[bool]
    gates: object  # the fitted GateBank (DRAT kinds), None for the oracle
    lam: float | None
    trace: list[dict]  # one entry per closed-loop round
    compiled: object  # the torch.compile'd model (kinds "*-compiled"), else None


def install_plan(model, idx, kind: str, stored: list[bool], gates=None, host_cap_bytes: float | None = None,
                 costs=None):
    """Put a plan on the model: DRAT's gates (two arms "drat", three "drat3", prefetching as far
    ahead as `costs` plans for their offloads), the oracle's fixed plan, or either plan as SAC
    policies under torch.compile (kinds "drat-compiled", "oracle-compiled": returned compiled;
    None otherwise)."""
    if kind in ("drat", "drat3"):
        strategy = DRATGates(gates, host_cap_bytes=host_cap_bytes)
        strategy.plan_prefetch(costs, offloaded_of(gates))
        model.set_strategy(strategy)
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
                             max_rounds: int = 4, grow_below: float | None = 0.97,
                             host_cap_bytes: float | None = None) -> BudgetPlan:
    """Budget mode closed on the *measured* peak: plan for the activation bytes the budget leaves,
    run a step, and move the activation budget by what the measured peak missed the budget by
    (`drat.budget.PeakBudget`, aiming 0.5% under it), until the peak is within 1% over and
    `grow_below` under the budget. `kind`: "drat", "drat3" (three arms, within `host_cap_bytes`),
    "oracle", "drat-compiled" or "oracle-compiled" (give these `compiled_costs`; each round
    compiles once).

    Both directions matter. An overshoot breaks the budget; an undershoot wastes it, since a
    plan that keeps less than it may recomputes more than it must: compiled, the cost model
    overstates what a plan keeps (compiled plans measured on an H200 ran 4–32% under their
    budgets after one round). The plan kept is the fitting round with the highest peak (most
    kept, least recomputed), reinstalled if a later round overshot. `grow_below=None` only
    shrinks: under a hard cap (`capacity`) a plan's headroom absorbs the allocator's
    fragmentation over a long run. The kept plan is left installed on the model; its trace entry
    has "kept"."""
    peak_budget = PeakBudget(budget_gib, base_bytes, margin_frac=0.005)
    budget, act = peak_budget.budget_bytes, peak_budget.act_bytes
    trace: list[dict] = []
    best = None  # (peak, stored, gates, lam, trace index) of the fitting round with the highest peak
    stored, gates, lam, compiled = None, None, None, None  # the plan installed last
    for rnd in range(max_rounds):
        try:
            if kind in ("oracle", "oracle-compiled"):
                plan = (solve_oracle(costs, budget_act_bytes=max(act, 0.0)).stored, None, None)
            else:
                fit = fit_gates(costs, budget_act_bytes=max(act, 0.0), base_bytes=base_bytes,
                                arms=3 if kind == "drat3" else 2, host_cap_bytes=host_cap_bytes)
                # three arms: `stored` are the kept sites (on the device or offloaded); the
                # offloaded ones are the gates' (`offloaded_of`)
                plan = (fit.stored, fit.gates, fit.lam)
        except ValueError as e:  # BudgetInfeasibleError: the shrunk budget is below the floor
            if rnd == 0:
                raise
            trace.append({"activation_budget_bytes": act, "infeasible": str(e).splitlines()[0]})
            break  # keep the last plan that could be made
        if plan[0] == stored and offloaded_of(plan[1]) == offloaded_of(gates):
            # the moved budget gives the plan just measured: nothing new to learn
            trace.append({"activation_budget_bytes": act, "same_plan": True})
            break
        stored, gates, lam = plan
        compiled = None  # free the last round's compiled graph before compiling the next
        compiled = install_plan(model, idx, kind, stored, gates, host_cap_bytes, costs)
        peak = measure_steps(model, idx, targets, steps=1, warmup=1, compiled=compiled)["peak_gib"] * 2**30
        trace.append({"activation_budget_bytes": act, "measured_peak_bytes": peak})
        fits = peak <= 1.01 * budget
        if fits and (best is None or peak > best[0]):
            best = (peak, stored, gates, lam, len(trace) - 1)
        if fits and (grow_below is None or peak >= grow_below * budget or all(stored)):
            break
        if not fits and act <= 0:
            break
        # the plan was made to keep `act`: whatever else the peak held comes off the next round's share
        act = peak_budget.close(peak, kept_bytes=act)
    if best is not None:
        trace[best[4]]["kept"] = True
        if best[1] != stored:  # a later round overshot: back to the best plan that fitted
            _, stored, gates, lam, _ = best
            compiled = None
            compiled = install_plan(model, idx, kind, stored, gates, host_cap_bytes, costs)
    return BudgetPlan(stored, gates, lam, trace, compiled)


def plan_with_link_check(model, idx, targets, costs, budget_gib, base, kind, host_cap, none_ms, log,
                         grow_below: float | None = 0.97):
    """The budget loop (`plan_under_measured_peak`), and for three arms one re-plan on the
    measured step: a plan whose measured step misses its predicted one by more than
    MISPREDICT_FRAC of `none_ms` (`none`'s step at this batch, measured or scaled) is re-planned
    on a link rescaled by the extra time the step showed, and the faster of the two is kept."""
    plan = plan_under_measured_peak(model, idx, targets, costs, budget_gib, base, kind,
                                    grow_below=grow_below, host_cap_bytes=host_cap)
    if kind != "drat3":
        return plan
    off = offloaded_of(plan.gates)
    pred = none_ms * (1 + plan_cost([s and not o for s, o in zip(plan.stored, off)], costs, 0.0, off)[2])
    meas = measure_steps(model, idx, targets, steps=3, warmup=1)["step_ms"]
    plan.trace.append({"predicted_step_ms": pred, "measured_step_ms": meas})
    if abs(meas - pred) <= MISPREDICT_FRAC * none_ms or not any(off):
        return plan
    # the link did less (or more) than modelled: rescale it by the extra time the step showed
    scale = min(max((pred - none_ms + 1e-3) / max(meas - none_ms, 1e-3), 0.1), 2.0)
    link = scaled_link(costs.link, scale)
    first = (plan, meas, model.strategy)
    again = plan_under_measured_peak(model, idx, targets, dataclasses.replace(costs, link=link), budget_gib,
                                     base, kind, grow_below=grow_below, host_cap_bytes=host_cap)
    meas2 = measure_steps(model, idx, targets, steps=3, warmup=1)["step_ms"]
    again.trace.append({"replanned_link_scale": scale, "measured_step_ms": meas2})
    log(f"re-planned on the measured step: link x{scale:.2f}, {meas:.2f} -> {meas2:.2f} ms")
    if meas2 < meas:  # the re-planned plan is kept; its trace starts with the first plan's rounds
        again.trace[:0] = [{**t, "first_plan": True} for t in plan.trace]
        return again
    model.set_strategy(first[2])
    first[0].trace.extend(again.trace)
    return first[0]


def lambda_plans(costs, lams) -> list[tuple[str, DRATGates, int]]:
    """(name, strategy, sites recomputed) of DRAT fitted at each λ on one cost table: the DRAT
    rows of `bench trace` and `bench exactness`."""
    out = []
    for lam in lams:
        fit = fit_gates(costs, lam=lam)
        out.append((f"drat-lam{lam:g}", DRATGates(fit.gates), len(fit.stored) - sum(fit.stored)))
    return out


def timed_rounds(model, idx, targets, rows: list[dict], strategies: list, rounds: int, steps: int,
                 warmup: int, seed: int = 0, log=print) -> None:
    """Time the rows together: `rounds` rounds, each in a new random order, the rows' steps in
    alternation (`measure.interleaved_step_ms`), so drift falls on all of them alike. Each row's
    `step_ms` becomes the median of its round medians (the rounds in `step_ms_rounds`, their
    max − min in `step_spread_ms`)."""
    rng = random.Random(seed)
    per_round: list[list[float]] = [[] for _ in rows]
    for r in range(rounds):
        order = list(range(len(rows)))
        rng.shuffle(order)
        ms = interleaved_step_ms(model, idx, targets, [strategies[i] for i in order], steps, warmup)
        for i, t in zip(order, ms):
            per_round[i].append(t)
        log(f"timing round {r + 1}/{rounds} done")
    for row, ts in zip(rows, per_round):
        row["step_ms"], row["step_ms_rounds"] = statistics.median(ts), ts
        row["step_spread_ms"] = max(ts) - min(ts)


def bench_model(size: str, seq_len: int, batch_size: int, device: str, n_layer: int | None = None,
                n_embd: int | None = None, n_head: int | None = None, vocab_size: int | None = None,
                tie_weights: bool | None = None, hf: str | None = None, seed: int = 0):
    """The model every bench command measures: a named size with overrides, seed 0, and one
    random batch. Returns (device, config, model, idx, targets); idx, targets: [B, S] int64.
    With `hf` (a transformers family), a random-init model of that family with the size's shape
    (overridden by the same flags), wrapped by `drat.wrap`; its config is then a plain dict."""
    dev = resolve_device(device)
    if hf is not None:
        base = config_for(size)
        shape = {"n_layer": n_layer or base.n_layer, "n_embd": n_embd or base.n_embd,
                 "n_head": n_head or base.n_head, "vocab_size": vocab_size or base.vocab_size}
        torch.manual_seed(seed)
        model = wrap(hf_model(hf, **shape, seq_len=seq_len).to(dev))
        idx, targets = random_batch(shape["vocab_size"], batch_size, seq_len, dev, seed)
        return dev, _DictConfig({**shape, "hf": hf, **model.config_dict()}), model, idx, targets
    cfg = config_for(size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                     tie_weights=tie_weights, block_size=max(seq_len, config_for(size).block_size))
    torch.manual_seed(0)
    model = GPT(cfg).to(dev)
    idx, targets = random_batch(cfg.vocab_size, batch_size, seq_len, dev)
    return dev, cfg, model, idx, targets


class _DictConfig(dict):
    """A wrapped model's config where the bench expects a GPTConfig: `to_dict()` is all it reads."""

    def to_dict(self) -> dict:
        return dict(self)


def add_model_args(p, batch_size: bool = True, steps: int = 12, seq_len: bool = True) -> None:
    """The model, batch and timing flags shared by the bench commands (`seq_len=False`: a command
    that takes several lengths of its own)."""
    add_shape_args(p)
    p.add_argument("--untied", action="store_true", help="untie the embedding and the LM head")
    if seq_len:
        p.add_argument("--seq-len", type=POSITIVE_INT, default=64)
    if batch_size:
        p.add_argument("--batch-size", type=POSITIVE_INT, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=POSITIVE_INT, default=steps, help="timed steps (at least 10 on GPU)")
    p.add_argument("--warmup", type=NONNEG_INT, default=3)
    p.add_argument("--out", required=True, type=OUT_DIR)


def model_kwargs(args) -> dict:
    """add_model_args' flags as bench_model keyword arguments."""
    return {**shape_overrides(args), "tie_weights": False if args.untied else None}


def check_steps(args) -> None:
    if args.steps < 10 and resolve_device(args.device).type == "cuda":
        raise ValueError("--steps must be at least 10 on GPU (median of >=10 timed steps)")


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
