"""Greedy repair and local search over hard plans, on the cost model alone.

Both the gates (`gates.fit_gates`) and the oracle (`oracle.activation_floor_bytes`) finish their
plans here: a rounded or relaxed plan is first repaired to meet a byte budget, then improved by
single and paired flips evaluated in batch against `costs.plan_cost`'s objective.
"""

from __future__ import annotations

import numpy as np

from .costs import SiteCosts


def greedy_repair(stored: list[bool], costs: SiteCosts, budget_act_bytes: float) -> list[bool]:
    """Recompute sites, best bytes-freed per time-added first, until the plan fits the budget."""
    M, T = (x.numpy().astype(float) for x in costs.normalized())
    inst, children = np.array(costs.instances, dtype=float), (costs.children, costs.same_block_children)
    raw = np.array(costs.mem_bytes, dtype=float)
    plan = np.array(stored, dtype=bool)
    while raw[plan].sum() > budget_act_bytes + 1e-9:
        cand = [int(i) for i in np.flatnonzero(plan & (raw > 0))]
        if not cand:
            raise ValueError("no plan fits the budget")
        base = _batch_cost(plan[None, :], M, T, inst, children, 0.0)[0]
        dt = _batch_cost(_apply_moves(plan, [(i,) for i in cand]), M, T, inst, children, 0.0) - base
        ratio = raw[cand] / np.maximum(dt, 1e-12)
        plan[cand[int(np.argmax(ratio))]] = False  # first of the best, in site order
    return [bool(v) for v in plan]


def _batch_cost(S: np.ndarray, mem_n: np.ndarray, time_n: np.ndarray, inst: np.ndarray, children,
                lam: float) -> np.ndarray:
    """The objective λ·M_stored + Σ_j R_j·T_j/n_j (normalised) of K plans at once.
    S: [K, n] bool (True = store) -> [K] objective; `children`: (all children, same-block
    children), see costs.py. One pass over the sites in reverse topological order, vectorised
    over the plans."""
    K, n = S.shape
    children, same = children
    R = np.zeros((K, n))  # [K, n] rebuilds per step of each site under each plan
    t = np.zeros(K)
    rec = ~S
    for j in range(n - 1, -1, -1):
        ch, w = children[j], same[j]
        r = inst[j] + (R[:, ch].sum(axis=1) if ch else 0.0)
        if w:  # same-block children's own rebuilds reuse j's memoised rebuild
            r = r - (rec[:, w] * inst[w]).sum(axis=1)
        R[:, j] = np.where(rec[:, j], r, 0.0)
        t += R[:, j] * (time_n[j] / inst[j])
    return lam * (S * mem_n).sum(axis=1) + t


def _apply_moves(stored: np.ndarray, moves: list[tuple[int, ...]]) -> np.ndarray:
    """[K, n] plans: `stored` with each move's sites flipped."""
    S = np.repeat(stored[None, :], len(moves), axis=0)
    for row, mv in enumerate(moves):
        S[row, list(mv)] ^= True
    return S


def local_search(stored: list[bool], costs: SiteCosts, lam: float = 0.0,
                 budget_act_bytes: float | None = None, max_rounds: int = 50,
                 trade_width: int = 10) -> list[bool]:
    """Best-improvement flips, swaps and 2-site trades that keep the budget. Every candidate
    move of a round is priced in one vectorised pass (_batch_cost): on `large` (227 sites) a
    round has ~15k moves, which a per-move Python loop priced in seconds."""
    M, T = (x.numpy().astype(float) for x in costs.normalized())
    inst, children = np.array(costs.instances, dtype=float), (costs.children, costs.same_block_children)
    raw = np.array(costs.mem_bytes, dtype=float)
    cap = float("inf") if budget_act_bytes is None else budget_act_bytes + 1e-9
    cur_plan = np.array(stored, dtype=bool)
    cur = float(_batch_cost(cur_plan[None, :], M, T, inst, children, lam)[0])
    used = float(raw[cur_plan].sum())
    n = len(cur_plan)
    for _ in range(max_rounds):
        ons = [int(i) for i in np.flatnonzero(cur_plan)]
        offs = [int(i) for i in np.flatnonzero(~cur_plan)]
        moves = [(i,) for i in range(n)] + [(i, j) for i in offs for j in ons]
        if budget_act_bytes is not None and n:
            # multi-site trades reach plans off the Lagrangian hull; they are limited to the
            # sites with the best marginal value per byte on either side
            flip = _batch_cost(_apply_moves(cur_plan, [(i,) for i in range(n)]), M, T, inst, children, lam)
            price = (flip - cur) / np.maximum(raw, 1e-12)
            on_c = sorted(ons, key=lambda i: price[i])[:trade_width]  # cheapest to recompute
            off_c = sorted(offs, key=lambda i: price[i])[:trade_width]  # most time saved by storing
            on_pairs = [(i, j) for a, i in enumerate(on_c) for j in on_c[a + 1:]]
            off_pairs = [(i, j) for a, i in enumerate(off_c) for j in off_c[a + 1:]]
            moves += [(k, *p) for k in off_c for p in on_pairs]
            moves += [(*q, i) for q in off_pairs for i in on_c]
            moves += [(*q, *p) for q in off_pairs for p in on_pairs]
        delta = np.array([sum(-raw[k] if cur_plan[k] else raw[k] for k in mv) for mv in moves])
        ok = used + delta <= cap
        if not ok.any():
            break
        idx = np.flatnonzero(ok)
        c = _batch_cost(_apply_moves(cur_plan, [moves[i] for i in idx]), M, T, inst, children, lam)
        b = int(np.argmin(c))  # first of the cheapest, in move order
        if not c[b] < cur - 1e-12:
            break
        mv = moves[idx[b]]
        cur_plan[list(mv)] ^= True
        cur, used = float(c[b]), used + float(delta[idx[b]])
    return [bool(v) for v in cur_plan]
