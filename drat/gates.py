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

With three arms (store / recompute / offload) a gate is a row of three logits and the sample is a
Gumbel-softmax one-hot with the same straight-through rule; the resource term then adds the
transfer time the host link cannot hide (`costs.expected_exposed_transfer`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from .costs import SiteCosts, expected_exposed_transfer, expected_recompute, in_flight_bytes, plan_cost
from .oracle import activation_floor_bytes
from .search import (
    OFFLOAD,
    RECOMPUTE,
    STORE,
    batch_cost3,
    device_bytes3,
    greedy_repair,
    greedy_repair3,
    local_search,
    local_search3,
    perturbed_search3,
    tiled_plans,
)

DEFAULT_LAMBDA = 0.05  # the price of memory of a DRAT plan asked for with neither λ nor a budget


class BudgetInfeasibleError(ValueError):
    """The requested memory budget is below what any plan can reach."""


class GateBank(nn.Module):
    def __init__(self, n_sites: int, init_logit: float = 3.0, tau: float = 1.0, seed: int = 0,
                 estimator: str = "gumbel", arms: int = 2):
        super().__init__()
        if estimator not in ("gumbel", "st"):
            raise ValueError("estimator must be 'gumbel' or 'st'")
        if arms not in (2, 3):
            raise ValueError("a gate has 2 arms (store, recompute) or 3 (store, recompute, offload)")
        self.n_sites = n_sites
        self.estimator = estimator
        self.arms = arms
        if arms == 2:
            self.logits = nn.Parameter(torch.full((n_sites,), float(init_logit)))
        else:  # [n_sites, 3]: store starts ahead by init_logit, recompute and offload level
            init = torch.zeros(n_sites, 3)
            init[:, STORE] = float(init_logit)
            self.logits = nn.Parameter(init)
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.generator = torch.Generator().manual_seed(seed)

    def probs(self) -> torch.Tensor:  # (n_sites,) probability of *store*
        if self.arms == 3:
            return self.arm_probs()[:, STORE]
        return torch.sigmoid(self.logits / self.tau)

    def arm_probs(self) -> torch.Tensor:  # (n_sites, 3): store, recompute, offload
        return torch.softmax(self.logits / self.tau, dim=-1)

    def hard(self) -> torch.Tensor:
        """Deterministic decision: store where the gate is more likely on than off (three arms:
        kept, on the device or in host memory, where recompute is not the likeliest arm)."""
        if self.arms == 3:
            return (self.logits.argmax(-1) != RECOMPUTE).detach()
        return (self.logits > 0).detach()

    def hard_offload(self) -> torch.Tensor | None:
        """(n_sites,) offload flags of the deterministic decision; None for two arms."""
        return None if self.arms == 2 else (self.logits.argmax(-1) == OFFLOAD).detach()

    def sample_st(self) -> torch.Tensor:
        """A straight-through hard sample (values in {0,1}, gradient of the soft gate).

        The noise is added to θ/τ, not to θ: then P(store) = σ(θ/τ) = `probs()`, and annealing
        τ really makes the executed plans settle (with σ((θ+ε)/τ) the hard event would be
        θ+ε > 0 whatever τ is)."""
        if self.arms == 3:
            return self._sample_st3()
        if self.estimator == "gumbel":
            u = torch.rand(self.n_sites, generator=self.generator).clamp(1e-6, 1 - 1e-6)
            noise = (torch.log(u) - torch.log1p(-u)).to(self.logits)
            soft = torch.sigmoid(self.logits / self.tau + noise)
        else:
            soft = self.probs()
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()

    def _sample_st3(self) -> torch.Tensor:
        """(n_sites, 3) straight-through Gumbel-softmax: one-hot forward, soft gradient."""
        if self.estimator == "gumbel":
            u = torch.rand(self.n_sites, 3, generator=self.generator).clamp(1e-6, 1 - 1e-6)
            soft = torch.softmax(self.logits / self.tau - torch.log(-torch.log(u)).to(self.logits), dim=-1)
        else:
            soft = self.arm_probs()
        hard = torch.nn.functional.one_hot(soft.argmax(-1), 3).to(soft.dtype)
        return hard + soft - soft.detach()

    def sample_hard(self) -> torch.Tensor:
        """A hard sample: (n_sites,) store flags, or (n_sites, 3) one-hot rows for three arms."""
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
    if s.dim() == 2:  # three arms: (n_sites, 3) rows of store / recompute / offload
        store, off = s[:, STORE], s[:, OFFLOAD]
        mem = (store * M).sum() + in_flight_bytes(off, costs) / max(costs.total_bytes, 1.0)
        t = expected_recompute(store + off, T, costs) + expected_exposed_transfer(off, costs)
        return lam * mem + t, mem, t
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
    offloaded: list[bool] | None = None  # three arms: the sites whose tensors wait in host memory


def _sync_logits(gates: GateBank, stored: list[bool]) -> GateBank:
    """Make the bank's hard decision equal the final (rounded) plan, keeping gate confidence."""
    with torch.no_grad():
        mag = gates.logits.abs().clamp(min=1.0)
        gates.logits.copy_(torch.where(torch.tensor(stored), mag, -mag))
    return gates


def fit_gates(costs: SiteCosts, lam: float | None = None, budget_act_bytes: float | None = None,
              steps: int = 400, lr: float = 0.1, tau_start: float = 1.0, tau_end: float = 0.05,
              seed: int = 0, gates: GateBank | None = None, polish_top: int = 3,
              base_bytes: float = 0.0, max_time_frac: float = 1.0, arms: int = 2,
              host_cap_bytes: float | None = None) -> GateFit:
    """Train gates on the resource objective alone (no model needed: L_task is gate-free).

    Exactly one of `lam` (λ mode) and `budget_act_bytes` (budget mode, bytes of activations
    the plan may keep) is given. Budget mode returns the cheapest feasible plan seen. `arms=3`
    adds the offload arm (the costs need `link`); `host_cap_bytes` caps what it offloads."""
    if (lam is None) == (budget_act_bytes is None):
        raise ValueError("give exactly one of lam and budget_act_bytes")
    if arms == 3:
        return _fit_gates3(costs, lam, budget_act_bytes, steps, lr, tau_start, tau_end, seed, gates,
                           polish_top, host_cap_bytes)
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
        stored = _tiled_polish(stored, costs, lam, None)
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
    stored = _tiled_polish(best[1], costs, 0.0, budget_act_bytes)
    _, mem_h, t_h = plan_cost(stored, costs, 0.0)
    return GateFit(stored, cur_lam, t_h, mem_h * total, t_h, history, _sync_logits(gates, stored))


# Two arms: a block-tiled candidate is polished only when it is already within this factor of
# the best plan's objective. Two-arm local search from a plan far above it is slow on deep models
# (100 blocks: minutes a candidate), and on the measured tables every candidate that won started
# within 1.2% of the best. Three-arm candidates are all polished: there, winners started up to
# 16% above it, and the three-arm search is cheaper.
TILE_POLISH_WITHIN = 1.02


def _tiled_polish(stored: list[bool], costs: SiteCosts, lam: float,
                  budget_act_bytes: float | None) -> list[bool]:
    """The cheapest of `stored` and its block-tiled candidates (search.tiled_plans), polished."""
    best, best_c = stored, plan_cost(stored, costs, lam)[0]
    arms = [STORE if v else RECOMPUTE for v in stored]
    for plan in tiled_plans(arms, costs, lam, budget_act_bytes, choices=(STORE, RECOMPUTE)):
        plan = [a == STORE for a in plan]
        if plan_cost(plan, costs, lam)[0] > best_c * TILE_POLISH_WITHIN:
            continue
        cand = local_search(plan, costs, lam, budget_act_bytes)
        if (c := plan_cost(cand, costs, lam)[0]) < best_c - 1e-12:
            best, best_c = cand, c
    return best


def _fit_gates3(costs, lam, budget_act_bytes, steps, lr, tau_start, tau_end, seed, gates, polish_top,
                host_cap_bytes) -> GateFit:
    """`fit_gates` over three arms: the same annealed straight-through training and dual ascent,
    beside a mean-field run (below), both rounded by three-arm repair and local search. No floor
    check: offloading leaves no floor but the host cap, and a plan that cannot fit is refused by
    the repair."""
    if costs.link is None:
        raise ValueError("the offload arm needs the host link's measured bandwidth (SiteCosts.link)")
    gates = gates or GateBank(len(costs), seed=seed, arms=3)
    total = max(costs.total_bytes, 1.0)
    budget_frac = budget_act_bytes / total if budget_act_bytes is not None else None
    # Two runs from the same start. The mean-field run descends the expected cost under the arm
    # probabilities, which is convex in them (linear terms and the link's maxima over suffixes),
    # so it reaches the relaxation's optimum and its argmax is a near-integral plan. The link
    # couples every offloaded site through those maxima, and straight-through samples alone tend
    # to settle on whichever sites filled the link first. The straight-through run is the
    # annealed training the gates get in a model (and in two arms). Both runs' plans are
    # rounding candidates; the bank returned is the straight-through one.
    mean_field = copy.deepcopy(gates)
    relaxed, _, _ = _train3(mean_field, costs, lam, budget_frac, MEAN_FIELD_STEPS * steps, lr, None,
                            host_cap_bytes)
    candidates, cur_lam, history = _train3(gates, costs, lam, budget_frac, steps, lr,
                                           (tau_start, tau_end), host_cap_bytes)
    if budget_frac is None:
        start = [list(relaxed[-1]), list(candidates[-1])]
    else:
        start = []
        # each run's final plan first: always polished, however its repair ranks
        for plan in dict.fromkeys([relaxed[-1], candidates[-1]] + relaxed + candidates):
            try:
                start.append(greedy_repair3(list(plan), costs, budget_act_bytes, host_cap_bytes))
            except ValueError:
                continue
        if not start:
            raise BudgetInfeasibleError("no three-arm plan fits the budget within the host-memory cap")
        polish_top = max(polish_top, 8)  # three arms round less cleanly: polish more of the visited plans
    lam_eval = cur_lam if budget_frac is None else 0.0
    cost = batch_cost3(np.array(start, dtype=np.int8), costs, lam_eval)
    finals = [] if budget_frac is None else [0, 1][:len(start)]  # usually the runs' final plans
    best = None
    for i in dict.fromkeys(finals + [int(j) for j in np.argsort(cost)[:polish_top]]):
        cand = local_search3(start[i], costs, lam_eval, budget_act_bytes, host_cap_bytes)
        c = float(batch_cost3(np.array([cand], dtype=np.int8), costs, lam_eval)[0])
        if best is None or c < best[0]:
            best = (c, cand)
    # the best plan's blocks tiled with one pattern each (search.tiled_plans), polished too
    for plan in tiled_plans(best[1], costs, lam_eval, budget_act_bytes, host_cap_bytes):
        cand = local_search3(plan, costs, lam_eval, budget_act_bytes, host_cap_bytes)
        c = float(batch_cost3(np.array([cand], dtype=np.int8), costs, lam_eval)[0])
        if c < best[0]:
            best = (c, cand)
    kicks = 60 if len(costs) <= 40 else 6  # each kick is a local search: few on deep models
    arms = perturbed_search3(best[1], costs, lam_eval, budget_act_bytes, host_cap_bytes, kicks=kicks,
                             seed=seed)
    stored, offloaded = [a == STORE for a in arms], [a == OFFLOAD for a in arms]
    obj, mem_h, t_h = plan_cost(stored, costs, lam_eval, offloaded)
    with torch.no_grad():  # the bank's argmax agrees with the final plan, keeping its confidence
        mag = float(gates.logits.abs().max().clamp(min=1.0))
        gates.logits.zero_()
        gates.logits[torch.arange(len(arms)), torch.tensor(arms)] = mag
    kept = [s or o for s, o in zip(stored, offloaded)]
    return GateFit(kept, cur_lam, obj, mem_h * total, t_h, history, gates, offloaded)


# The mean-field run takes three times the steps, since its argmax must settle (near-integral)
# before it is rounded; in budget mode it takes an exact penalty on expected memory over the
# budget instead of dual ascent, whose λ oscillates against a relaxation that moves this slowly.
MEAN_FIELD_PENALTY = 10.0
MEAN_FIELD_STEPS = 3


def _train3(gates: GateBank, costs: SiteCosts, lam: float | None, budget_frac: float | None,
            steps: int, lr: float, anneal: tuple[float, float] | None,
            host_cap_bytes: float | None) -> tuple[list[tuple[int, ...]], float, list[dict]]:
    """Train a three-arm bank on the resource loss: straight-through samples annealed over
    `anneal` = (τ_start, τ_end), or (anneal None) the mean-field expected cost at τ = 1. Budget
    mode (`budget_frac`) prices memory by dual ascent (straight-through) or a penalty
    (mean-field). Returns the argmax plan after each step, the final λ and the history."""
    opt = torch.optim.Adam(gates.parameters(), lr=lr)
    total = max(costs.total_bytes, 1.0)
    raw = torch.tensor(costs.mem_bytes, dtype=torch.float64)
    cur_lam = lam if budget_frac is None else 0.0
    plans, history = [], []
    gates.set_temperature(1.0)
    for step in range(steps):
        if anneal is None:
            s = gates.arm_probs()  # (n_sites, 3)
        else:
            gates.set_temperature(anneal_tau(step, steps, *anneal))
            s = gates.sample_st()
        loss, mem, t = resource_loss(s, costs, cur_lam)
        if anneal is None and budget_frac is not None:
            loss = loss + MEAN_FIELD_PENALTY * (mem - budget_frac).clamp(min=0)
        if host_cap_bytes is not None:  # a penalty pushes the relaxed plan under the host cap
            over = (s[:, OFFLOAD].to(raw.dtype) * raw).sum() - host_cap_bytes
            loss = loss + over.clamp(min=0) / total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        arms = tuple(int(a) for a in gates.logits.argmax(-1).tolist())
        plans.append(arms)
        mem_h = float(device_bytes3(np.array([arms]), costs)[0]) / total
        history.append({"step": step, "lam": cur_lam, "tau": float(gates.tau), "mem_frac": mem_h,
                        "n_stored": arms.count(STORE), "n_offloaded": arms.count(OFFLOAD)})
        if budget_frac is not None and anneal is not None:
            cur_lam = dual_ascent(cur_lam, mem_h, budget_frac)
    return plans, cur_lam, history


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
