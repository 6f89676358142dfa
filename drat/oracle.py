"""The exact optimum over the same sites and costs: a mixed-integer program (scipy `milp`/HiGHS).

Variables: s_i ∈ {0,1} (site i stored) and R_j ≥ 0 (rebuild count, see `costs.py`). Because the
objective weights every R_j positively, the recursion
R_j = (1 − s_j)(n_j + Σ_{c ∈ X(j)} R_c + Σ_{c ∈ W(j)} (R_c − (1 − s_c) n_c)) (children in other
blocks, and in j's own block, whose own rebuilds reuse j's memoised one) can be written as the
linear lower bounds

    R_j ≥ n_j + Σ_{c ∈ children(j)} R_c − Σ_{c ∈ W(j)} n_c (1 − s_c) − U_j·s_j

which are tight at the optimum. U_j must exceed n_j + Σ_c R_c at any plan that could be optimal
(the W term only lowers the bound, so it needs no more); a child whose rebuild cost alone exceeds
a known feasible plan's cost cannot be part of an optimum, so R_c ≤ C_ref·n_c/T_c bounds it and
keeps U finite even where the all-recompute plan's rebuild counts explode exponentially.

    minimise  λ·Σ M_i s_i + Σ_j T_j R_j / n_j      subject to  Σ bytes_i s_i ≤ budget

With the offload arm (`solve_oracle3`) a site also has o_i ∈ {0,1}, s_i + o_i ≤ 1; o_i stands in
for s_i in the recursion (an offloaded site is not rebuilt), and the link's two backlogs of
costs.py are variables bounded below by one linear row per site:

    L_d ≥ Σ_{i≥k} M_i o_i / bw_d2h − F_k,   L_h ≥ Σ_{i≥k} M_i o_i / bw_h2d − B_k,   L_d, L_h ≥ 0

    minimise  λ·(Σ M_i s_i + Σ_{i∈H} M_i o_i) + Σ_j T_j R_j / n_j + L_d + L_h + c·Σ o_i
    subject to  Σ bytes_i s_i + Σ_{i∈H} bytes_i o_i ≤ budget,  Σ bytes_i o_i ≤ host cap

(H: the sites whose offloaded bytes the offloader still holds at the peak, the last blocks' and
the head's; costs.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .costs import SiteCosts, held_at_peak, link_windows, offload_site_ms, plan_cost, rebuild_counts
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
)


@dataclass
class OraclePlan:
    stored: list[bool]
    objective: float
    mem_bytes: float
    time_frac: float
    method: str
    offloaded: list[bool] | None = None  # three-arm plans: sites whose tensors wait in host memory


def _rebuild_rows(costs: SiteCosts, r_cap) -> tuple[np.ndarray, np.ndarray]:
    """Rows of R_j − Σ_c R_c − Σ_{c∈W(j)} n_c s_c + U_j s_j ≥ n_j − Σ_{c∈W(j)} n_c over
    x = [s, R] (the recursion of costs.py, linear: (1 − s_c) n_c = n_c − n_c s_c), with U_j from
    the caps on R. Returns (A, lower bounds)."""
    n = len(costs)
    inst = np.array(costs.instances, dtype=float)
    children, same = costs.children, costs.same_block_children
    U = np.array([inst[j] + sum(r_cap[c] for c in children[j]) for j in range(n)])
    A = np.zeros((n, 2 * n))
    lb = inst.copy()
    for j in range(n):
        A[j, n + j] = 1.0
        A[j, j] = U[j]
        for ch in children[j]:
            A[j, n + ch] -= 1.0
        for w in same[j]:
            A[j, w] -= inst[w]
            lb[j] -= inst[w]
    return A, lb


_FLOOR_CACHE: dict[tuple, float] = {}


def activation_floor_bytes(costs: SiteCosts, max_time_frac: float = 1.0) -> float:
    """The fewest activation bytes any plan can keep while its recompute time stays within
    `max_time_frac` of a step. Below it a budget is infeasible: the only plans left rebuild
    chains whose cost grows exponentially with depth (all-recompute rebuilds the embedding ~4^L
    times: across blocks rebuilds are transient). Memoised per cost table: budget mode asks for
    it on every (re)plan, and on measured, noisy costs of ~100 sites HiGHS can take seconds to
    prove the optimum."""
    # keyed on the normalised costs: a table scaled as a whole (the same model at another batch
    # size) has the same optimal plan, so its floor is the same fraction of its total bytes
    M, T = (x.numpy() for x in costs.normalized())
    key = (M.round(12).tobytes(), T.round(12).tobytes(), tuple(costs.instances),
           tuple(map(tuple, costs.parents)), tuple(costs.groups), float(max_time_frac))
    if key not in _FLOOR_CACHE:
        _FLOOR_CACHE[key] = _activation_floor_bytes(costs, max_time_frac) / max(costs.total_bytes, 1.0)
    return _FLOOR_CACHE[key] * max(costs.total_bytes, 1.0)


def _activation_floor_bytes(costs: SiteCosts, max_time_frac: float) -> float:
    n = len(costs)
    _, T = (x.numpy() for x in costs.normalized())
    T = np.maximum(T, 1e-12)
    inst = np.array(costs.instances, dtype=float)
    r_all = np.array(rebuild_counts([False] * n, costs))
    A, lb = _rebuild_rows(costs, np.minimum(r_all, max_time_frac * inst / T * (1 + 1e-6)))
    time_row = np.concatenate([np.zeros(n), T / inst])
    scale = 1.0 / max(costs.mem_bytes)
    res = milp(np.concatenate([np.array(costs.mem_bytes) * scale, np.zeros(n)]),
               constraints=[LinearConstraint(A, lb=lb, ub=np.inf),
                            LinearConstraint(time_row[None, :], lb=-np.inf, ub=max_time_frac)],
               integrality=np.concatenate([np.ones(n), np.zeros(n)]),
               bounds=Bounds(np.zeros(2 * n), np.concatenate([np.ones(n), np.full(n, np.inf)])),
               # a node limit, not a time limit: the floor must not depend on how busy the machine is
               # (500 nodes take about 9 s on `large`'s 227 sites on one CPU core)
               options={"node_limit": 500, "mip_rel_gap": 1e-4})
    if res.x is None:
        return float(sum(costs.mem_bytes))
    stored = [bool(v > 0.5) for v in res.x[:n]]
    return float(sum(m for m, s in zip(costs.mem_bytes, stored) if s))


def solve_oracle(costs: SiteCosts, lam: float = 0.0, budget_act_bytes: float | None = None,
                 time_limit_s: float = 60.0) -> OraclePlan:
    n = len(costs)
    M, T = (x.numpy() for x in costs.normalized())
    T = np.maximum(T, 1e-12)
    inst = np.array(costs.instances, dtype=float)

    # a feasible reference plan bounds every rebuild count that an optimum can have
    ref = [True] * n if budget_act_bytes is None else greedy_repair([True] * n, costs, budget_act_bytes)
    c_ref = plan_cost(ref, costs, lam)[0]
    r_all = rebuild_counts([False] * n, costs)  # exact maximum of every R_j
    r_max = np.minimum(np.array(r_all), (c_ref + 1e-9) * inst / T * (1 + 1e-6))
    A, lb = _rebuild_rows(costs, r_max)

    # x = [s_0..s_{n-1}, R_0..R_{n-1}]; the objective is rescaled to O(1): HiGHS's absolute gap
    # would otherwise accept visibly suboptimal plans when step-normalised times are ~1e-7
    c = np.concatenate([lam * M, T / inst])
    c = c / max(np.abs(c).max(), 1e-30)
    constraints = [LinearConstraint(A, lb=lb, ub=np.inf)]
    if budget_act_bytes is not None:
        row = np.concatenate([np.array(costs.mem_bytes), np.zeros(n)])
        constraints.append(LinearConstraint(row[None, :], lb=-np.inf, ub=budget_act_bytes))
    integrality = np.concatenate([np.ones(n), np.zeros(n)])
    bounds = Bounds(np.zeros(2 * n), np.concatenate([np.ones(n), np.full(n, np.inf)]))
    res = milp(c, constraints=constraints, integrality=integrality, bounds=bounds,
               options={"time_limit": time_limit_s, "mip_rel_gap": 1e-9})
    if res.x is None:
        raise ValueError(f"oracle found no plan: {res.message}")
    stored = [bool(v > 0.5) for v in res.x[:n]]
    # the solver's answer is exact up to its tolerances; a feasible polish removes the rest
    stored = local_search(stored, costs, lam, budget_act_bytes)
    obj, mem, t = plan_cost(stored, costs, lam)
    return OraclePlan(stored, obj, sum(m for m, s in zip(costs.mem_bytes, stored) if s), t, "milp")


def brute_force(costs: SiteCosts, lam: float = 0.0, budget_act_bytes: float | None = None) -> OraclePlan:
    """Enumerate every plan (tests only: 2^n)."""
    n = len(costs)
    if n > 20:
        raise ValueError("brute force is for small instances (n <= 20)")
    best = None
    for bits in itertools.product((False, True), repeat=n):
        stored = list(bits)
        mem = sum(m for m, s in zip(costs.mem_bytes, stored) if s)
        if budget_act_bytes is not None and mem > budget_act_bytes + 1e-9:
            continue
        obj = plan_cost(stored, costs, lam)[0]
        if best is None or obj < best.objective - 1e-15:
            best = OraclePlan(stored, obj, mem, plan_cost(stored, costs, 0.0)[2], "brute_force")
    if best is None:
        raise ValueError("no plan fits the budget")
    return best


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


# ----------------------------------------------------------------------------- three arms
def _plan3(arms, costs: SiteCosts, lam: float, method: str) -> OraclePlan:
    stored, offloaded = [a == STORE for a in arms], [a == OFFLOAD for a in arms]
    obj, mem, t = plan_cost(stored, costs, lam, offloaded)
    return OraclePlan(stored, obj, float(device_bytes3(np.array([arms]), costs)[0]), t, method, offloaded)


def solve_oracle3(costs: SiteCosts, lam: float = 0.0, budget_act_bytes: float | None = None,
                  host_cap_bytes: float | None = None, time_limit_s: float = 60.0) -> OraclePlan:
    """The exact optimum over store / recompute / offload (module docstring)."""
    if costs.link is None:
        raise ValueError("the offload arm needs the host link's measured bandwidth (SiteCosts.link)")
    n = len(costs)
    M, T = (x.numpy() for x in costs.normalized())
    T = np.maximum(T, 1e-12)
    raw = np.array(costs.mem_bytes, dtype=float)
    inst = np.array(costs.instances, dtype=float)
    ref = [STORE] * n if budget_act_bytes is None else greedy_repair3([STORE] * n, costs, budget_act_bytes,
                                                                        host_cap_bytes)
    c_ref = float(batch_cost3(np.array([ref]), costs, lam)[0])
    r_all = rebuild_counts([False] * n, costs)
    r_max = np.minimum(np.array(r_all), (c_ref + 1e-9) * inst / T * (1 + 1e-6))
    A2, lb = _rebuild_rows(costs, r_max)  # over [s, R]
    nv = 3 * n + 2  # x = [s, o, R, L_d, L_h]
    A = np.zeros((n, nv))
    A[:, :n], A[:, n:2 * n], A[:, 2 * n:3 * n] = A2[:, :n], A2[:, :n], A2[:, n:]
    rows = [LinearConstraint(A, lb=lb, ub=np.inf)]
    one = np.zeros((n, nv))
    one[np.arange(n), np.arange(n)] = 1.0
    one[np.arange(n), n + np.arange(n)] = 1.0
    rows.append(LinearConstraint(one, lb=-np.inf, ub=1.0))  # one arm per site
    F, B = (np.array(x) / costs.step_ms for x in link_windows(costs))
    lk = costs.link
    for col, bw, window in ((3 * n, lk["d2h_gbps"], F), (3 * n + 1, lk["h2d_gbps"], B)):
        L = np.zeros((n, nv))
        for k in range(n):
            L[k, n + k:2 * n] = -raw[k:] / (bw * 1e6 * costs.step_ms)
        L[:, col] = 1.0
        rows.append(LinearConstraint(L, lb=-window, ub=np.inf))
    held = np.array(held_at_peak(costs), dtype=float)  # offloaded bytes still on the device at the peak
    if budget_act_bytes is not None:
        row = np.concatenate([raw, raw * held, np.zeros(n + 2)])
        rows.append(LinearConstraint(row[None, :], lb=-np.inf, ub=budget_act_bytes))
    if host_cap_bytes is not None:
        rows.append(LinearConstraint(np.concatenate([np.zeros(n), raw, np.zeros(n + 2)])[None, :], lb=-np.inf,
                                     ub=host_cap_bytes))
    over = np.array(offload_site_ms(costs)) / costs.step_ms  # [n] host time and slowed compute
    c = np.concatenate([lam * M, over + lam * M * held, T / inst, [1.0, 1.0]])
    c = c / max(np.abs(c).max(), 1e-30)
    integrality = np.concatenate([np.ones(2 * n), np.zeros(n + 2)])
    bounds = Bounds(np.zeros(nv), np.concatenate([np.ones(2 * n), np.full(n + 2, np.inf)]))
    res = milp(c, constraints=rows, integrality=integrality, bounds=bounds,
               options={"time_limit": time_limit_s, "mip_rel_gap": 1e-9})
    if res.x is None:
        raise ValueError(f"oracle found no plan: {res.message}")
    arms = [OFFLOAD if res.x[n + i] > 0.5 else STORE if res.x[i] > 0.5 else RECOMPUTE for i in range(n)]
    arms = local_search3(arms, costs, lam, budget_act_bytes, host_cap_bytes)
    return _plan3(arms, costs, lam, "milp")


def brute_force3(costs: SiteCosts, lam: float = 0.0, budget_act_bytes: float | None = None,
                 host_cap_bytes: float | None = None) -> OraclePlan:
    """Enumerate every three-arm plan (tests only: 3^n)."""
    n = len(costs)
    if n > 11:
        raise ValueError("brute force is for small instances (n <= 11)")
    A = np.array(list(itertools.product((STORE, RECOMPUTE, OFFLOAD), repeat=n)), dtype=np.int8)
    raw = np.array(costs.mem_bytes, dtype=float)
    ok = np.ones(len(A), dtype=bool)
    if budget_act_bytes is not None:
        ok &= device_bytes3(A, costs) <= budget_act_bytes + 1e-9
    if host_cap_bytes is not None:
        ok &= np.where(A == OFFLOAD, raw, 0.0).sum(axis=1) <= host_cap_bytes + 1e-9
    if not ok.any():
        raise ValueError("no plan fits the budget")
    A = A[ok]
    c = batch_cost3(A, costs, lam)
    return _plan3([int(v) for v in A[int(np.argmin(c))]], costs, lam, "brute_force")
