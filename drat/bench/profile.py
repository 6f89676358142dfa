"""`drat profile`: what one strategy keeps for backward, and on CUDA what it costs in time.

CPU: exact saved-activation bytes (saved-tensor accounting) and the per-site plan.
CUDA: additionally peak allocated/reserved memory and step time (median of CUDA-event-timed
training steps after warm-up, forward + backward + fused AdamW).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..accounting import saved_activation_bytes
from ..costs import model_state_bytes
from ..gates import budget_to_activation_bytes, fit_gates
from ..measure import build_costs, measure_site_bytes, random_batch, time_training_steps
from ..model import GPT, config_for
from ..provenance import provenance
from ..runtime import autocast_ctx, resolve_device
from ..strategies import STRATEGY_NAMES, DRATGates, make_strategy

PROFILE_STRATEGIES = ("none", "full", "selective", "sac", "drat")


@dataclass
class ProfileArgs:
    size: str = "tiny"
    strategy: str = "none"
    lam: float | None = None
    budget_gib: float | None = None
    device: str = "cpu"
    seq_len: int = 64
    batch_size: int = 2
    cost_model: str = "measured"
    vocab_size: int | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    steps: int = 12
    warmup: int = 3
    seed: int = 0


def plan_drat(model: GPT, idx, targets, lam: float | None, budget_gib: float | None,
              cost_model: str = "measured", base_bytes: float | None = None, seed: int = 0):
    """Fit gates for λ or a peak budget; returns (DRATGates strategy, GateFit, SiteCosts)."""
    costs = build_costs(model, idx, targets, cost_model)
    if budget_gib is not None:
        base = model_state_bytes(model) if base_bytes is None else base_bytes
        fit = fit_gates(costs, budget_act_bytes=budget_to_activation_bytes(budget_gib, base), seed=seed,
                        base_bytes=base)
    else:
        fit = fit_gates(costs, lam=0.05 if lam is None else lam, seed=seed)
    return DRATGates(fit.gates), fit, costs


def run_profile(a: ProfileArgs) -> dict:
    if a.strategy not in PROFILE_STRATEGIES:
        raise ValueError(f"unknown strategy {a.strategy!r}; choose one of {', '.join(PROFILE_STRATEGIES)}")
    if a.lam is not None and a.budget_gib is not None:
        raise ValueError("give --lambda or --budget-gib, not both")
    if (a.lam is not None or a.budget_gib is not None) and a.strategy != "drat":
        raise ValueError("--lambda and --budget-gib apply to --strategy drat only")
    if a.seq_len < 1 or a.batch_size < 1:
        raise ValueError("--seq-len and --batch-size must be positive")
    device = resolve_device(a.device)
    cfg = config_for(a.size, vocab_size=a.vocab_size, n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head)
    if a.seq_len > cfg.block_size:
        cfg = config_for(a.size, vocab_size=a.vocab_size, n_layer=a.n_layer, n_embd=a.n_embd,
                         n_head=a.n_head, block_size=a.seq_len)
    torch.manual_seed(a.seed)
    model = GPT(cfg).to(device)
    idx, targets = random_batch(cfg.vocab_size, a.batch_size, a.seq_len, device, a.seed)

    fit = None
    costs = None
    if a.strategy == "drat":
        strategy, fit, costs = plan_drat(model, idx, targets, a.lam, a.budget_gib, a.cost_model, seed=a.seed)
    else:
        strategy = make_strategy(a.strategy)
    model.set_strategy(strategy)
    with autocast_ctx(device):
        total, per_site = saved_activation_bytes(model, idx, targets)
    decisions = strategy.decisions(model)
    if costs is None:  # bytes each site owns when stored, for the report
        with autocast_ctx(device):
            owned = measure_site_bytes(model, idx, targets)
    else:
        # owned bytes, not the LM head's peak saving that a peak-aware table plans with
        owned = [int(m) for m in (costs.owned_bytes or costs.mem_bytes)]
    sites = []
    for i, k in enumerate(model.graph.keys):
        if decisions is None:
            decision = {"none": "store", "full": "recompute"}.get(a.strategy, "policy")
            if a.strategy == "selective":
                decision = "recompute" if k.name == "attn_core" else "store"
            if a.strategy == "full" and k.layer is None:
                decision = "store"
        else:
            decision = "store" if decisions[i] else "recompute"
        sites.append({"layer": k.layer, "site": k.name, "decision": decision, "bytes": int(owned[i]),
                      "held_bytes": int(per_site.get(i, 0))})
    out = {
        "strategy": a.strategy,
        "size": a.size,
        "config": cfg.to_dict(),
        "params": model.num_params(),
        "batch_size": a.batch_size,
        "seq_len": a.seq_len,
        "saved_activation_bytes": int(total),
        "model_state_bytes": model_state_bytes(model),
        "sites": sites,
        **provenance(device),
    }
    if fit is not None:
        out["drat"] = {"lambda": fit.lam, "budget_gib": a.budget_gib, "objective": fit.objective,
                       "planned_activation_bytes": fit.mem_bytes, "recompute_time_frac": fit.time_frac,
                       "cost_model": a.cost_model}
    if device.type == "cuda":
        out.update(time_training_steps(model, idx, targets, a.steps, a.warmup))
    return out


assert set(PROFILE_STRATEGIES) <= set(STRATEGY_NAMES)
