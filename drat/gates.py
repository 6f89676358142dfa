"""Learnable store/recompute gates and the resource-aware objective that trains them.

A gate is a logit θ_i and a shared temperature τ: g_i = σ(θ_i/τ) is the probability that site i
is stored. The forward pass needs a hard decision, drawn with a Gumbel-sigmoid (logistic noise)
straight-through estimator: the forward uses 1[θ/τ + ε > 0], the gradient flows through the soft
value σ(θ/τ + ε). The noise comes from the gate bank's own generator, never from the global RNG, so
dropout masks stay those of the ungated model.

The objective (docs/design.md):

    L_total = L_task + Σ_i λ·g_i·M_i + E[recompute time](g)

L_task does not depend on g (recomputation is exact), so the gates are trained by the resource
term alone; `expected_recompute` supplies its dependency-aware time part. In *budget mode* λ is a
Lagrange multiplier updated by dual ascent on the stored bytes versus the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .costs import SiteCosts, expected_recompute, plan_cost
from .oracle import activation_floor_bytes
from .search import greedy_repair, local_search

DEFAULT_LAMBDA = 0.05  # the price of memory of a DRAT plan asked for with neither λ nor a budget


class BudgetInfeasibleError(ValueError):
    """The requested memory budget is below what any plan can reach."""


class GateBank(nn.Module):
    def __init__(self, n_sites: int, init_logit: float = 3.0, tau: float = 1.0, seed: int = 0,
                 estimator: str = "gumbel"):
        super().__init__()
        if estimator not in ("gumbel", "st"):
            raise ValueError("estimator must be 'gumbel' or 'st'")
        self.n_sites = n_sites
        self.estimator = estimator
        self.logits = nn.Parameter(torch.full((n_sites,), float(init_logit)))
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.generator = torch.Generator().manual_seed(seed)

    def probs(self) -> torch.Tensor:  # (n_sites,) probability of *store*
        return torch.sigmoid(self.logits / self.tau)

    def hard(self) -> torch.Tensor:
        """Deterministic decision: store where the gate is more likely on than off."""
        return (self.logits > 0).detach()

    def sample_st(self) -> torch.Tensor:
        """A straight-through hard sample (values in {0,1}, gradient of the soft gate).

        The noise is added to θ/τ, not to θ: then P(store) = σ(θ/τ) = `probs()`, and annealing
        τ really makes the executed plans settle (with σ((θ+ε)/τ) the hard event would be
        θ+ε > 0 whatever τ is)."""
        if self.estimator == "gumbel":
            u = torch.rand(self.n_sites, generator=self.generator).clamp(1e-6, 1 - 1e-6)
            noise = (torch.log(u) - torch.log1p(-u)).to(self.logits)
            soft = torch.sigmoid(self.logits / self.tau + noise)
        else:
            soft = self.probs()
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()

    def sample_hard(self) -> torch.Tensor:
        with torch.no_grad():
            return self.sample_st() > 0.5

    def set_temperature(self, tau: float) -> None:
        self.tau.fill_(float(tau))

    # the generator is part of the gate state (it rides in state_dict): a resumed run must
    # draw the same samples
    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def anneal_tau(step: int, total: int, tau_start: float, tau_end: float) -> float:
    """Exponential temperature schedule from tau_start to tau_end over `total` steps."""
    frac = min(max(step / max(total - 1, 1), 0.0), 1.0)
    return tau_start * (tau_end / tau_start) ** frac


def resource_loss(s: torch.Tensor, costs: SiteCosts, lam: float | torch.Tensor):
    """(λ·mem + time, mem, time) for store values `s` (soft, straight-through or hard)."""
    M, T = costs.normalized()
    s = s.to(M.dtype)
    mem = (s * M).sum()
    t = expected_recompute(s, T, costs)
    return lam * mem + t, mem, t


DUAL_ASCENT_ETA = 2.0  # step size of λ per unit of memory overshoot (fraction of store-everything)


def dual_ascent(lam: float, mem_frac: float, budget_frac: float, eta: float = DUAL_ASCENT_ETA) -> float:
    """One step of budget mode's dual ascent: λ ← max(0, λ + η·(mem − budget)).

    Memory is in the normalised units of `SiteCosts.normalized` (fraction of store-everything). A
    pure function: whoever runs the loop holds λ (`fit_gates` a local, a training run its
    `drat.train.gating.GateTraining`), so λ never has two holders that could disagree."""
    return max(0.0, lam + eta * (mem_frac - budget_frac))


@dataclass
class GateFit:
    """What `fit_gates` found. Every field is an output: nothing reads a GateFit back into a fit."""

    stored: list[bool]
    # the λ the fit ended at: the λ given (λ mode), or the dual variable's last value (budget mode:
    # the price of memory at which the gates' plans settled around the budget)
    lam: float
    objective: float  # λ·mem + time of the final hard plan (budget mode: time)
    mem_bytes: float
    time_frac: float
    history: list[dict] = field(default_factory=list)
    gates: GateBank | None = None  # the trained bank, its logits' signs agreeing with `stored`


def _sync_logits(gates: GateBank, stored: list[bool]) -> GateBank:
    """Make the bank's hard decision equal the final (rounded) plan, keeping gate confidence."""
    with torch.no_grad():
        mag = gates.logits.abs().clamp(min=1.0)
        gates.logits.copy_(torch.where(torch.tensor(stored), mag, -mag))
    return gates


def fit_gates(costs: SiteCosts, lam: float | None = None, budget_act_bytes: float | None = None,
              steps: int = 400, lr: float = 0.1, tau_start: float = 1.0, tau_end: float = 0.05,
              seed: int = 0, gates: GateBank | None = None, polish_top: int = 3,
              base_bytes: float = 0.0, max_time_frac: float = 1.0) -> GateFit:
    """Train gates on the resource objective alone (no model needed: L_task is gate-free).

    Exactly one of `lam` (λ mode) and `budget_act_bytes` (budget mode, bytes of activations
    the plan may keep) is given. Budget mode returns the cheapest feasible plan seen."""
    if (lam is None) == (budget_act_bytes is None):
        raise ValueError("give exactly one of lam and budget_act_bytes")
    if budget_act_bytes is not None:
        floor = activation_floor_bytes(costs, max_time_frac)
        if budget_act_bytes < floor:
            asked, need = (base_bytes + budget_act_bytes) / 2**30, (base_bytes + floor) / 2**30
            raise BudgetInfeasibleError(
                f"memory budget {asked:.4g} GiB is below the feasible floor of {need:.4g} GiB (model "
                f"states {base_bytes / 2**30:.4g} GiB + {floor / 2**30:.4g} GiB of activations that no "
                f"plan recomputing at most {max_time_frac:g}x a step can drop); ask for at least "
                f"{need:.4g} GiB")
    gates = gates or GateBank(len(costs), seed=seed)
    opt = torch.optim.Adam(gates.parameters(), lr=lr)
    total = max(costs.total_bytes, 1.0)
    budget_frac = budget_act_bytes / total if budget_act_bytes is not None else None
    cur_lam = lam if budget_frac is None else 0.0  # budget mode: λ starts free and dual ascent prices memory
    candidates: dict[tuple[bool, ...], float] = {}  # distinct hard plans the trajectory visited
    history = []
    for step in range(steps):
        gates.set_temperature(anneal_tau(step, steps, tau_start, tau_end))
        loss, mem, t = resource_loss(gates.sample_st(), costs, cur_lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stored = [bool(v) for v in gates.hard().tolist()]
        obj, mem_h, t_h = plan_cost(stored, costs, cur_lam)
        history.append({"step": step, "lam": cur_lam, "tau": float(gates.tau), "mem_frac": mem_h,
                        "time_frac": t_h, "n_stored": sum(stored)})
        if budget_frac is not None:
            candidates[tuple(stored)] = t_h
            cur_lam = dual_ascent(cur_lam, mem_h, budget_frac)
    if budget_frac is None:
        stored = local_search([bool(v) for v in gates.hard().tolist()], costs, lam)  # rounding polish
        obj, mem_h, t_h = plan_cost(stored, costs, lam)
        return GateFit(stored, lam, obj, mem_h * total, t_h, history, _sync_logits(gates, stored))
    # Rounding. Dual ascent oscillates around the budget and a Lagrangian plan of this
    # knapsack-like problem can sit well inside it (a duality gap), so the plans the trajectory
    # visited are made feasible (greedy) and polished with feasible flips and swaps.
    # Repair is cheap, the local search is not (~15k moves a round on 227 sites): every visited
    # plan is repaired, and only the `polish_top` best repaired plans are polished.
    repaired = {tuple(greedy_repair(list(plan), costs, budget_act_bytes)) for plan in candidates}
    ranked = sorted(repaired, key=lambda p: plan_cost(list(p), costs, 0.0)[0])[:polish_top]
    best = None
    for plan in ranked:
        cand = local_search(list(plan), costs, 0.0, budget_act_bytes)
        c = plan_cost(cand, costs, 0.0)[0]
        if best is None or c < best[0]:
            best = (c, cand)
    stored = best[1]
    _, mem_h, t_h = plan_cost(stored, costs, 0.0)
    return GateFit(stored, cur_lam, t_h, mem_h * total, t_h, history, _sync_logits(gates, stored))


def budget_to_activation_bytes(budget_gib: float, base_bytes: float) -> float:
    """Turn a peak-memory budget into the bytes the plan may keep; error below the floor."""
    if not math.isfinite(budget_gib) or budget_gib <= 0:
        raise BudgetInfeasibleError(f"memory budget must be a positive number of GiB, got {budget_gib}")
    act = budget_gib * 2**30 - base_bytes
    if act < 0:
        raise BudgetInfeasibleError(
            f"memory budget {budget_gib:.4g} GiB is below the feasible floor of {base_bytes / 2**30:.4g} GiB "
            f"(model states and working memory that no recompute plan can remove); "
            f"ask for at least {base_bytes / 2**30:.4g} GiB"
        )
    return act
