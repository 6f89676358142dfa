"""`drat profile`: what one plan keeps for backward, and what its training steps cost in time.

    drat profile --size tiny --strategy drat --lambda 0.05            # a summary on stdout
    drat profile --size small --point oracle-budget6 --device cuda --costs costs.json --out p.json
    drat profile --size small --costs-only --device cuda --out costs.json   # the site cost table

The plan is a run name (`drat.runs`): a baseline (`none`, `full`, `selective`, `sac`), DRAT's
gates fitted at a price of memory or under a peak budget (`drat-lam<λ>`, `drat-budget<GiB>`), or
the exact ILP on the same costs, executed as a fixed plan (`oracle-lam<λ>`, `oracle-budget<GiB>`).
Give it as `--point NAME` or as `--strategy` with `--lambda`/`--budget-gib` (λ 0.05 by default).

Measured: the exact saved-activation bytes (saved-tensor accounting) and the per-site plan; the
step time of full training steps (forward, backward, AdamW; median after warm-up) timed with
CUDA events on a GPU and by the wall clock on the CPU; on CUDA also the peak allocated and
reserved memory. `saved_activation_bytes` is all one training forward keeps for backward: the
activations, the RNG states a recomputation replays (a recomputed dropout site's, each
`torch.utils.checkpoint` call's), and the model's inputs, the token ids the embedding keeps and
the targets the loss keeps (2·B·S·8 bytes, the same under every plan), which `input_bytes`
reports on their own.

`--costs-only` measures the site cost table once and writes it (`SiteCosts.to_dict()` plus the
model, batch and provenance). `--costs FILE` hands such a table to a drat or oracle plan: measured
costs are noisy (CUDA timings, the per-rebuild overhead calibration), and a drat plan and an oracle
plan that each measured their own could disagree about which plan is cheaper; on one table the
oracle is the optimum of the very problem the gates were fitted on. A table of another model,
batch or cost model is refused. Without `--costs` a plan measures its own.

`--out FILE` writes the JSON atomically (a killed job leaves no truncated file); `--json` prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..accounting import SavedTensorAccountant
from ..costs import SiteCosts, model_state_bytes
from ..gates import DEFAULT_LAMBDA, budget_to_activation_bytes, fit_gates
from ..measure import build_costs, measure_site_bytes, measure_steps, random_batch, time_training_steps
from ..model import GPT, add_shape_args, config_for, shape_overrides
from ..oracle import solve_oracle
from ..provenance import provenance
from ..runs import BASELINES, PLANNERS, RunName, parse_run_name
from ..runtime import autocast_ctx, resolve_device
from ..strategies import STRATEGY_NAMES, DRATGates, PlanAC, make_strategy
from ..validate import ARMS, NONNEG, NONNEG_INT, OUT_FILE, POSITIVE, POSITIVE_INT, SEED
from .common import bench_model

PROFILE_STRATEGIES = (*BASELINES, *PLANNERS)


@dataclass
class ProfileArgs:
    size: str = "tiny"
    strategy: str = "none"  # a baseline, "drat" or "oracle"; or give `point`
    lam: float | None = None
    budget_gib: float | None = None
    point: str | None = None  # a run name (drat.runs): replaces strategy, lam and budget_gib
    device: str = "cpu"
    seq_len: int = 64
    batch_size: int = 2
    cost_model: str = "measured"
    vocab_size: int | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    steps: int = 12  # timed training steps (0: no timing)
    warmup: int = 3
    seed: int = 0
    costs: str | None = None  # a cost table written by `costs_only` (drat and oracle plans)
    hf: str | None = None  # a transformers family: a random-init model of it, wrapped by drat.wrap
    arms: int = 2  # 3: the plan may also offload sites to pinned host memory (drat, oracle)
    host_mem_gib: float | None = None  # cap on offloaded bytes; None: half the available RAM


def resolve_plan(a: ProfileArgs) -> RunName:
    """The plan `a` names, by `point` or by strategy/λ/budget; ValueError for anything else."""
    if a.point is not None:
        if a.lam is not None or a.budget_gib is not None:
            raise ValueError("--point names its λ or budget; give --lambda/--budget-gib only with --strategy")
        return parse_run_name(a.point)
    if a.strategy not in PROFILE_STRATEGIES:
        raise ValueError(f"unknown strategy {a.strategy!r}; choose one of {', '.join(PROFILE_STRATEGIES)}")
    if a.lam is not None and a.budget_gib is not None:
        raise ValueError("give --lambda or --budget-gib, not both")
    if a.strategy in BASELINES:
        if a.lam is not None or a.budget_gib is not None:
            raise ValueError("--lambda and --budget-gib apply to --strategy drat or oracle only")
        return RunName(a.strategy)
    if a.budget_gib is not None:
        return RunName(a.strategy, budget_gib=a.budget_gib)
    return RunName(a.strategy, lam=DEFAULT_LAMBDA if a.lam is None else a.lam)


def _check(a: ProfileArgs) -> None:
    """The rules of drat.validate, for ProfileArgs built in Python (the CLI's flags parse with them)."""
    for name in ("seq_len", "batch_size", "vocab_size", "n_layer", "n_embd", "n_head"):
        if getattr(a, name) is not None:
            POSITIVE_INT.check(getattr(a, name), f"--{name.replace('_', '-')}", ValueError)
    NONNEG_INT.check(a.steps, "--steps", ValueError)
    NONNEG_INT.check(a.warmup, "--warmup", ValueError)
    SEED.check(a.seed, "--seed", ValueError)
    if a.lam is not None:
        NONNEG.check(a.lam, "--lambda", ValueError)
    if a.budget_gib is not None:
        POSITIVE.check(a.budget_gib, "--budget-gib", ValueError)
    if a.arms not in (2, 3):
        raise ValueError("--arms must be store,recompute or store,recompute,offload")
    if a.host_mem_gib is not None:
        POSITIVE.check(a.host_mem_gib, "--host-mem-gib", ValueError)


def _setup(a: ProfileArgs):
    """(device, config, model, idx, targets) of the profiled shape."""
    device = resolve_device(a.device)
    if a.hf is not None:  # the same model `drat bench frontier --hf` measures
        return bench_model(a.size, a.seq_len, a.batch_size, a.device, a.n_layer, a.n_embd, a.n_head,
                           a.vocab_size, hf=a.hf, seed=a.seed)
    over = {"vocab_size": a.vocab_size, "n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head}
    cfg = config_for(a.size, **over)
    if a.seq_len > cfg.block_size:
        cfg = config_for(a.size, **over, block_size=a.seq_len)
    torch.manual_seed(a.seed)
    model = GPT(cfg).to(device)
    idx, targets = random_batch(cfg.vocab_size, a.batch_size, a.seq_len, device, a.seed)
    return device, cfg, model, idx, targets


def _stderr_progress(msg: str) -> None:
    print(f"profile: {msg}", file=sys.stderr, flush=True)


def measure_cost_table(a: ProfileArgs, progress=None) -> dict:
    """The site cost table of `a`'s model and batch, with what it was measured for."""
    _check(a)
    device, cfg, model, idx, targets = _setup(a)
    if progress:
        progress(f"measuring the site cost table of {a.size} ({a.cost_model}, {device})")
    costs = build_costs(model, idx, targets, a.cost_model)  # sets its own autocast
    return {"point": "costs", "size": a.size, "config": cfg.to_dict(), "batch_size": a.batch_size,
            "seq_len": a.seq_len, "cost_model": a.cost_model, "costs": costs.to_dict(), **provenance(device)}


def load_costs(path: str | Path, model: GPT, a: ProfileArgs) -> SiteCosts:
    """A cost table from `measure_cost_table`, checked against this plan's model and batch."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        costs = SiteCosts(**d["costs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the cost table {path}: {e}; measure it again with --costs-only") from e
    mine = {"config": model.cfg.to_dict(), "batch_size": a.batch_size, "seq_len": a.seq_len,
            "cost_model": a.cost_model}
    diff = sorted(k for k, v in mine.items() if d.get(k) != v)
    if diff or costs.labels != [k.label() for k in model.graph.keys]:
        what = ", ".join(diff) or "sites"
        raise ValueError(f"the cost table {path} was measured for another setting ({what} differ); "
                         "measure it again with --costs-only")
    if model_device(model).type == "cuda" and costs.kind == "measured" and costs.owned_bytes is None:
        # a table without owned_bytes plans with the bytes the LM head owns, not its peak saving
        print(f"note: {path} has no measured peak saving of the LM head (no owned_bytes); measure it again "
              "with --costs-only to plan with it", file=sys.stderr)
    return costs


def model_device(model: GPT) -> torch.device:
    return next(model.parameters()).device


def time_steps(model: GPT, idx, targets, steps: int, warmup: int) -> dict:
    """Full training steps: on CUDA the fields of `time_training_steps` (times and peaks), on the CPU
    the wall-clock step times (median, all, tokens/s)."""
    if idx.device.type == "cuda":
        return time_training_steps(model, idx, targets, steps, warmup)
    m = measure_steps(model, idx, targets, steps, warmup)
    return {"step_ms": m["step_ms"], "step_ms_all": m["step_ms_all"],
            "tokens_per_s": idx.numel() / (m["step_ms"] / 1e3)}


def _baseline_decision(strategy: str, site) -> str:
    if strategy == "none" or (strategy == "full" and site.layer is None):
        return "store"
    if strategy == "full" or (strategy == "selective" and site.name.endswith(("attn_core", ".core"))):
        return "recompute"
    if strategy == "selective":
        return "store"
    return "policy"  # sac: decided per op at run time


def _three_arm_plan(a: ProfileArgs, plan: RunName, costs, act, device):
    """A DRAT or oracle plan over store / recompute / offload, on the measured host link (a
    nominal one for the unmeasured cost models), within the host-memory cap."""
    from ..costs import offload_report
    from ..measure import measure_link, nominal_link
    from ..offload import default_host_cap_bytes
    from ..oracle import solve_oracle3

    if costs.link is None:
        costs.link = measure_link(device) if a.cost_model == "measured" else nominal_link(device)
    cap = a.host_mem_gib * 2**30 if a.host_mem_gib is not None else default_host_cap_bytes()
    if plan.kind == "drat":
        fit = (fit_gates(costs, lam=plan.lam, seed=a.seed, arms=3, host_cap_bytes=cap) if act is None
               else fit_gates(costs, budget_act_bytes=act, seed=a.seed, arms=3, host_cap_bytes=cap))
        strategy = DRATGates(fit.gates, host_cap_bytes=cap)
        strategy.plan_prefetch(costs, fit.offloaded)
        info = {"lambda": fit.lam, "objective": fit.objective, "planned_activation_bytes": fit.mem_bytes,
                "recompute_time_frac": fit.time_frac}
        offloaded = fit.offloaded
    else:
        sol = solve_oracle3(costs, lam=plan.lam or 0.0, budget_act_bytes=act, host_cap_bytes=cap)
        strategy = PlanAC(stored=sol.stored, offloaded=sol.offloaded, host_cap_bytes=cap)
        strategy.plan_prefetch(costs, sol.offloaded)
        info = {"objective": sol.objective, "planned_activation_bytes": sol.mem_bytes,
                "recompute_time_frac": sol.time_frac, "method": sol.method}
        offloaded = sol.offloaded
    info.update({"arms": 3, "host_cap_bytes": cap, "link": costs.link, **offload_report(offloaded, costs)})
    return strategy, info


def run_profile(a: ProfileArgs, progress=None) -> dict:
    """Profile one plan. `progress(msg)` is told before the long parts (default: stderr)."""
    progress = progress or _stderr_progress
    plan = resolve_plan(a)
    _check(a)
    device, cfg, model, idx, targets = _setup(a)
    base = model_state_bytes(model)

    plan_info = None
    if plan.is_baseline:
        strategy = make_strategy(plan.kind)
    else:
        costs = (load_costs(a.costs, model, a) if a.costs
                 else build_costs(model, idx, targets, a.cost_model))  # sets its own autocast
        act = None if plan.budget_gib is None else budget_to_activation_bytes(plan.budget_gib, base)
        if a.arms == 3:
            strategy, plan_info = _three_arm_plan(a, plan, costs, act, device)
        elif plan.kind == "drat":
            fit = (fit_gates(costs, lam=plan.lam, seed=a.seed) if act is None
                   else fit_gates(costs, budget_act_bytes=act, seed=a.seed, base_bytes=base))
            strategy = DRATGates(fit.gates)
            plan_info = {"lambda": fit.lam, "objective": fit.objective,
                         "planned_activation_bytes": fit.mem_bytes, "recompute_time_frac": fit.time_frac}
        else:
            sol = solve_oracle(costs, lam=plan.lam or 0.0, budget_act_bytes=act)
            strategy = PlanAC(stored=sol.stored)
            plan_info = {"objective": sol.objective, "planned_activation_bytes": sol.mem_bytes,
                         "recompute_time_frac": sol.time_frac, "method": sol.method}
        plan_info.update({"cost_model": a.cost_model, "activation_budget_bytes": act, "costs_file": a.costs,
                          "rebuild_overhead_ms": costs.rebuild_overhead_ms, "cost_step_ms": costs.step_ms})
    model.set_strategy(strategy)
    with autocast_ctx(device):
        with SavedTensorAccountant(model) as acct:
            loss = model.step_loss(idx, targets)
        total, per_site, input_bytes = acct.total_bytes, acct.by_site(), acct.held_bytes_of(idx, targets)
        del loss
        owned = measure_site_bytes(model, idx, targets)
    decisions = strategy.decisions(model)
    offloaded = strategy.offload_decisions(model) or [False] * len(model.graph)
    sites = [{"layer": k.layer, "site": k.name,
              "decision": (_baseline_decision(plan.kind, k) if decisions is None
                           else "offload" if offloaded[i] else "store" if decisions[i] else "recompute"),
              "bytes": int(owned[i]), "held_bytes": int(per_site.get(i, 0))}
             for i, k in enumerate(model.graph.keys)]
    kind = "baseline" if plan.is_baseline else plan.kind
    out = {"point": str(plan), "kind": kind,
           "strategy": plan.kind if plan.kind != "oracle" else "fixed",  # the strategy that executes it
           "lam": plan.lam, "budget_gib": plan.budget_gib, "size": a.size, "config": cfg.to_dict(),
           "params": model.num_params(), "batch_size": a.batch_size, "seq_len": a.seq_len,
           "saved_activation_bytes": int(total), "input_bytes": int(input_bytes), "model_state_bytes": base,
           "sites": sites, "plan": plan_info,
           **provenance(device)}
    if a.steps > 0:
        progress(f"{plan} on {a.size}: timing {a.steps} training steps after {a.warmup} warm-up")
        out.update(time_steps(model, idx, targets, a.steps, a.warmup))
    if strategy.host_stats():  # what the last step moved over the host link, and the host bytes it pinned
        out["offload"] = strategy.host_stats()
    return out


def write_json(path: str | Path, obj: dict) -> None:
    """Atomically: a job killed mid-write must not leave a truncated result behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ CLI
def _args_of(ns: argparse.Namespace) -> ProfileArgs:
    return ProfileArgs(size=ns.size, strategy=ns.strategy or "none", lam=ns.lam, budget_gib=ns.budget_gib,
                       point=ns.point, device=ns.device, seq_len=ns.seq_len, batch_size=ns.batch_size,
                       cost_model=ns.cost_model, **shape_overrides(ns), steps=ns.steps, warmup=ns.warmup,
                       seed=ns.seed, costs=ns.costs, hf=ns.hf, arms=ns.arms, host_mem_gib=ns.host_mem_gib)


def cmd_profile(ns: argparse.Namespace) -> int:
    if ns.point is not None and ns.strategy is not None:
        raise ValueError("give --point or --strategy, not both")
    planned = ns.point or ns.strategy or ns.lam is not None or ns.budget_gib is not None or ns.costs
    if ns.costs_only and planned:
        raise ValueError("--costs-only measures the cost table alone: no plan and no --costs")
    if ns.costs_only and not ns.out:
        raise ValueError("--costs-only needs --out FILE")
    if ns.threads:
        torch.set_num_threads(ns.threads)
    a = _args_of(ns)
    if ns.costs_only:
        out = measure_cost_table(a, progress=_stderr_progress)
        write_json(ns.out, out)
        c = out["costs"]
        print(json.dumps({"out": ns.out, "sites": len(c["labels"]), "step_ms": c["step_ms"],
                          "rebuild_overhead_ms": c["rebuild_overhead_ms"]}))
        return 0
    out = run_profile(a)
    if ns.out:
        write_json(ns.out, out)
    if ns.json:
        print(json.dumps(out))
        return 0
    timing = ""
    if "peak_memory_bytes" in out:
        timing = f", peak {out['peak_memory_bytes'] / 2**30:.3f} GiB"
    if "step_ms" in out:
        timing += f", {out['step_ms']:.1f} ms/step"
    print(f"{out['point']}: {out['saved_activation_bytes'] / 2**20:.2f} MiB saved for backward{timing}"
          + (f" -> {ns.out}" if ns.out else ""))
    for s in out["sites"]:
        print(f"  {str(s['layer']):>4} {s['site']:<13} {s['decision']:<9} {s['bytes']:>12,d} B")
    return 0


def add_profile_parser(sub) -> None:
    """`drat profile`."""
    p = sub.add_parser("profile", help="saved activations and step time (and GPU peak) of one plan",
                       description=__doc__.split("\n")[0].strip("`"))
    add_shape_args(p)
    p.add_argument("--hf", default=None, metavar="FAMILY",
                   help="a random-init transformers model (llama | gpt2 | qwen2) instead of DRAT's GPT, "
                        "wrapped by drat.wrap; the shape flags set its size")
    p.add_argument("--point", default=None,
                   help="the plan as a run name: none|full|selective|sac|drat-lam<λ>|drat-budget<GiB>|"
                        "oracle-lam<λ>|oracle-budget<GiB>")
    p.add_argument("--strategy", default=None, help=f"{' | '.join(PROFILE_STRATEGIES)} (default none)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lambda", dest="lam", type=NONNEG, default=None,
                   help=f"price of memory (drat, oracle; default {DEFAULT_LAMBDA})")
    g.add_argument("--budget-gib", type=POSITIVE, default=None, help="peak memory budget (drat, oracle)")
    p.add_argument("--arms", type=ARMS, default=2,
                   help="store,recompute (default) or store,recompute,offload (drat, oracle)")
    p.add_argument("--host-mem-gib", type=POSITIVE, default=None,
                   help="cap on offloaded bytes in pinned host memory (default: half the available RAM)")
    p.add_argument("--cost-model", default="measured",
                   help="measured | uniform | layer_weighted | activation_size")
    p.add_argument("--costs", default=None, metavar="FILE",
                   help="plan drat/oracle on this cost table (written by --costs-only)")
    p.add_argument("--costs-only", action="store_true", help="measure the site cost table alone, into --out")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--seq-len", type=POSITIVE_INT, default=64)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=2)
    p.add_argument("--steps", type=NONNEG_INT, default=12, help="timed training steps (0: no timing)")
    p.add_argument("--warmup", type=NONNEG_INT, default=3, help="untimed training steps before them")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, metavar="FILE", type=OUT_FILE,
                   help="write the JSON here (atomically)")
    p.add_argument("--json", action="store_true", help="print the JSON object instead of a summary")
    p.set_defaults(func=cmd_profile)


assert set(BASELINES) | {"drat"} <= set(STRATEGY_NAMES)
