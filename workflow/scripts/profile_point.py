"""Pipeline step `profile`: memory and step time of one plan on one model size.

    python workflow/scripts/profile_point.py --size tiny --point drat-lam0.05 --device cpu --out x.json

Points: `none`, `full`, `selective`, `sac` (baselines), `drat-lam<λ>` / `drat-budget<GiB>` (gates
fitted on this device's measured site costs), `oracle-lam<λ>` / `oracle-budget<GiB>` (the exact
ILP on the same costs, executed as a fixed plan).

`--point costs` measures the site cost table once and writes it (`SiteCosts.to_dict()` plus the
model, batch and provenance); the pipeline hands it to every drat/oracle point of the size with
`--costs`. Measured costs are noisy (CUDA timings, the per-rebuild overhead calibration), and a
drat point and an oracle point that each measured their own could disagree about which plan is
cheaper: with one table, the oracle is the optimum of the very problem the gates were fitted on.
Without `--costs` a point measures its own. The JSON has the keys of `drat profile --json`
(saved_activation_bytes, sites, provenance, and on CUDA peak_memory_bytes, step_ms, step_ms_all,
tokens_per_s), plus `point`, `kind` and `step_ms_all` on the CPU as well (wall clock of full
training steps: forward, backward, AdamW). `drat profile` has no oracle and no CPU timing, hence
this script over the same library functions.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

POINT_RE = re.compile(r"^(?:(none|full|selective|sac)|(drat|oracle)-(lam|budget)([0-9.eE+-]+))$")


def parse_point(point: str) -> dict:
    if point == "costs":
        return {"kind": "costs", "strategy": None, "lam": None, "budget_gib": None}
    m = POINT_RE.match(point)
    if not m:
        raise ValueError(f"unknown profile point {point!r}: use none|full|selective|sac, "
                         f"drat-lam<λ>, drat-budget<GiB>, oracle-lam<λ>, oracle-budget<GiB> or costs")
    if m.group(1):
        return {"kind": "baseline", "strategy": m.group(1), "lam": None, "budget_gib": None}
    value = float(m.group(4))
    return {"kind": m.group(2), "strategy": "drat" if m.group(2) == "drat" else "fixed",
            "lam": value if m.group(3) == "lam" else None,
            "budget_gib": value if m.group(3) == "budget" else None}


def time_cpu_steps(model, idx, targets, steps: int, warmup: int) -> dict:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ms = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            ms.append(1e3 * (time.perf_counter() - t0))
    step_ms = statistics.median(ms)
    return {"step_ms": step_ms, "step_ms_all": ms, "tokens_per_s": idx.numel() / (step_ms / 1e3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", required=True)
    ap.add_argument("--point", required=True)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--vocab-size", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cost-model", default="measured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--costs", default=None, help="a cost table from `--point costs` (drat/oracle points)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import torch

    from drat.accounting import saved_activation_bytes
    from drat.costs import SiteCosts, model_state_bytes
    from drat.gates import budget_to_activation_bytes, fit_gates
    from drat.measure import build_costs, measure_site_bytes, random_batch, time_training_steps
    from drat.model import GPT, config_for
    from drat.oracle import solve_oracle
    from drat.provenance import provenance
    from drat.runtime import autocast_ctx, resolve_device
    from drat.strategies import DRATGates, PlanAC, make_strategy

    if a.threads:
        torch.set_num_threads(a.threads)
    spec = parse_point(a.point)
    device = resolve_device(a.device)
    over = {"vocab_size": a.vocab_size, "n_layer": a.layers, "n_embd": a.hidden, "n_head": a.heads}
    cfg = config_for(a.size, **over)
    if a.seq_len > cfg.block_size:
        cfg = config_for(a.size, **over, block_size=a.seq_len)
    torch.manual_seed(a.seed)
    model = GPT(cfg).to(device)
    idx, targets = random_batch(cfg.vocab_size, a.batch_size, a.seq_len, device, a.seed)
    base = model_state_bytes(model)

    if spec["kind"] == "costs":
        costs = build_costs(model, idx, targets, a.cost_model)  # sets its own autocast
        out = {"point": a.point, "size": a.size, "config": cfg.to_dict(), "batch_size": a.batch_size,
               "seq_len": a.seq_len, "cost_model": a.cost_model, "costs": costs.to_dict(),
               **provenance(device)}
        write_json(Path(a.out), out)
        print(json.dumps({"point": a.point, "sites": len(costs), "step_ms": costs.step_ms,
                          "rebuild_overhead_ms": costs.rebuild_overhead_ms}))
        return 0

    plan_info = None
    if spec["kind"] == "baseline":
        strategy = make_strategy(spec["strategy"])
    else:
        if a.costs:
            costs = load_costs(Path(a.costs), model, cfg.to_dict(), a, SiteCosts)
        else:
            costs = build_costs(model, idx, targets, a.cost_model)  # sets its own autocast
        act = None if spec["budget_gib"] is None else budget_to_activation_bytes(spec["budget_gib"], base)
        if spec["kind"] == "drat":
            fit = (fit_gates(costs, lam=spec["lam"], seed=a.seed) if act is None
                   else fit_gates(costs, budget_act_bytes=act, seed=a.seed))
            strategy = DRATGates(fit.gates)
            plan_info = {"lambda": fit.lam, "objective": fit.objective,
                         "planned_activation_bytes": fit.mem_bytes,
                         "recompute_time_frac": fit.time_frac}
        else:
            plan = solve_oracle(costs, lam=spec["lam"] or 0.0, budget_act_bytes=act)
            strategy = PlanAC(stored=plan.stored)
            plan_info = {"objective": plan.objective, "planned_activation_bytes": plan.mem_bytes,
                         "recompute_time_frac": plan.time_frac, "method": plan.method}
        plan_info.update({"cost_model": a.cost_model, "activation_budget_bytes": act,
                          "costs_file": a.costs, "rebuild_overhead_ms": costs.rebuild_overhead_ms,
                          "cost_step_ms": costs.step_ms})
    model.set_strategy(strategy)
    with autocast_ctx(device):
        total, per_site = saved_activation_bytes(model, idx, targets)
        owned = measure_site_bytes(model, idx, targets)
    decisions = strategy.decisions(model)
    sites = []
    for i, k in enumerate(model.graph.keys):
        if decisions is not None:
            decision = "store" if decisions[i] else "recompute"
        elif spec["strategy"] == "none" or (spec["strategy"] == "full" and k.layer is None):
            decision = "store"
        elif spec["strategy"] == "full" or (spec["strategy"] == "selective" and k.name == "attn_core"):
            decision = "recompute"
        elif spec["strategy"] == "selective":
            decision = "store"
        else:
            decision = "policy"
        sites.append({"layer": k.layer, "site": k.name, "decision": decision, "bytes": int(owned[i]),
                      "held_bytes": int(per_site.get(i, 0))})
    out = {"point": a.point, **spec, "size": a.size, "config": cfg.to_dict(), "params": model.num_params(),
           "batch_size": a.batch_size, "seq_len": a.seq_len, "saved_activation_bytes": int(total),
           "model_state_bytes": base, "sites": sites, "plan": plan_info, **provenance(device)}
    if device.type == "cuda":
        out.update(time_training_steps(model, idx, targets, a.steps, a.warmup))
    else:
        out.update(time_cpu_steps(model, idx, targets, a.steps, a.warmup))
    write_json(Path(a.out), out)
    print(json.dumps({k: out[k] for k in ("point", "saved_activation_bytes", "step_ms")}))
    return 0


def write_json(path: Path, obj: dict) -> None:
    """Atomically: a job killed mid-write must not leave a truncated result behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def load_costs(path: Path, model, cfg: dict, a, site_costs_cls):
    """The shared cost table, checked against this point's model and batch."""
    try:
        d = json.loads(path.read_text())
        costs = site_costs_cls(**d["costs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"cannot read the cost table {path}: {e}; rerun its `--point costs` job") from e
    mine = {"config": cfg, "batch_size": a.batch_size, "seq_len": a.seq_len, "cost_model": a.cost_model}
    diff = sorted(k for k, v in mine.items() if d.get(k) != v)
    if diff or costs.labels != [k.label() for k in model.graph.keys]:
        what = ", ".join(diff) or "sites"
        raise SystemExit(f"the cost table {path} was measured for another setting ({what} differ); "
                         f"rerun its `--point costs` job")
    if a.device == "cuda" and costs.kind == "measured" and costs.owned_bytes is None:
        # tables measured before the peak-aware LM head (d350f27): still valid, planned as then
        print(f"note: {path} predates the peak-aware LM head (its M_i is the bytes it owns); "
              "rerun its `--point costs` job to plan with the measured peak saving", file=sys.stderr)
    return costs


if __name__ == "__main__":
    sys.exit(main())
