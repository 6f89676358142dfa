"""Greedy repair and local search over hard plans, on the cost model alone.

Both the gates (`gates.fit_gates`) and the oracle (`oracle.activation_floor_bytes`) finish their
plans here: a rounded or relaxed plan is first repaired to meet a byte budget, then improved by
single and paired flips evaluated in batch against `costs.plan_cost`'s objective.
"""

from __future__ import annotations

import itertools
import random
import re

import numpy as np

from .costs import SiteCosts, held_at_peak, link_windows, offload_site_ms


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


def greedy_descent(costs: SiteCosts, lam: float) -> list[bool]:
    """λ mode's greedy planner: from storing every site, recompute (or store again) the one site
    whose flip lowers the objective most, until no single flip does. No pairs or trades: the
    baseline the relaxation and `local_search` are measured against."""
    M, T = (x.numpy().astype(float) for x in costs.normalized())
    inst, children = np.array(costs.instances, dtype=float), (costs.children, costs.same_block_children)
    plan = np.ones(len(costs), dtype=bool)
    cur = float(_batch_cost(plan[None, :], M, T, inst, children, lam)[0])
    while True:
        c = _batch_cost(_apply_moves(plan, [(i,) for i in range(len(plan))]), M, T, inst, children, lam)
        b = int(np.argmin(c))
        if not c[b] < cur - 1e-12:
            return [bool(v) for v in plan]
        plan[b] ^= True
        cur = float(c[b])


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


# ----------------------------------------------------------------------------- three arms
STORE, RECOMPUTE, OFFLOAD = 0, 1, 2


def _link_terms(costs: SiteCosts):
    """(F, B, 1/bw_d2h, 1/bw_h2d, [n] per-site cost of offloading), normalised by the step (see
    costs.py)."""
    if costs.link is None:
        return None
    F, B = (np.array(x) / costs.step_ms for x in link_windows(costs))
    lk = costs.link
    return (F, B, 1.0 / (lk["d2h_gbps"] * 1e6 * costs.step_ms), 1.0 / (lk["h2d_gbps"] * 1e6 * costs.step_ms),
            np.array(offload_site_ms(costs)) / costs.step_ms)


def _late3(A: np.ndarray, costs: SiteCosts) -> tuple[np.ndarray, np.ndarray] | None:
    """(L_d, L_h) of K plans as fractions of the step (costs.py); None without a link."""
    terms = _link_terms(costs)
    if terms is None:
        return None
    F, B, inv_d, inv_h, _ = terms
    raw = np.array(costs.mem_bytes, dtype=float)
    D = np.flip(np.cumsum(np.flip((A == OFFLOAD) * raw, axis=1), axis=1), axis=1)  # [K, n] bytes from k on
    return np.clip(D * inv_d - F, 0.0, None).max(axis=1), np.clip(D * inv_h - B, 0.0, None).max(axis=1)


def device_bytes3(A: np.ndarray, costs: SiteCosts) -> np.ndarray:
    """[K] device bytes of K three-arm plans at the peak: the stored sites' bytes and the
    offloaded bytes still held there (`costs.in_flight_bytes`)."""
    raw = np.array(costs.mem_bytes, dtype=float)
    held = np.array(held_at_peak(costs), dtype=bool)
    return np.where((A == STORE) | ((A == OFFLOAD) & held), raw, 0.0).sum(axis=1)


def batch_cost3(A: np.ndarray, costs: SiteCosts, lam: float) -> np.ndarray:
    """The objective of K three-arm plans at once. A: [K, n] arms (STORE / RECOMPUTE / OFFLOAD)
    -> [K]: λ·(device bytes) + recompute time + exposed transfer time, all normalised."""
    M, T = (x.numpy().astype(float) for x in costs.normalized())
    inst, children = np.array(costs.instances, dtype=float), (costs.children, costs.same_block_children)
    S, O = A == STORE, A == OFFLOAD
    obj = _batch_cost(S | O, np.zeros_like(M), T, inst, children, 0.0)  # recompute time alone
    obj = obj + lam * device_bytes3(A, costs) / max(costs.total_bytes, 1.0)
    late = _late3(A, costs) if O.any() else None
    if late is not None:
        obj = obj + late[0] + late[1] + (O * _link_terms(costs)[4]).sum(axis=1)
    return obj


def local_search3(arms: list[int], costs: SiteCosts, lam: float = 0.0,
                  budget_act_bytes: float | None = None,
                  host_cap_bytes: float | None = None, max_rounds: int = 100,
                  trade_width: int = 12) -> list[int]:
    """Best-improvement moves over three arms that keep the device budget and the host cap: any
    site to another arm, and paired trades (one site onto the device, another off it) among the
    `trade_width` best-priced sites on either side."""
    raw = np.array(costs.mem_bytes, dtype=float)
    cap = float("inf") if budget_act_bytes is None else budget_act_bytes + 1e-9
    hcap = float("inf") if host_cap_bytes is None else host_cap_bytes + 1e-9
    cur_plan = np.array(arms, dtype=np.int8)
    n = len(cur_plan)
    cur = float(batch_cost3(cur_plan[None, :], costs, lam)[0])
    for _ in range(max_rounds):
        moves = [((i, a),) for i in range(n) for a in (STORE, RECOMPUTE, OFFLOAD) if a != cur_plan[i]]
        if budget_act_bytes is not None:
            singles = _apply_arm_moves(cur_plan, moves)
            freed = np.maximum(raw[[m[0][0] for m in moves]], 1e-12)
            price = (batch_cost3(singles, costs, lam) - cur) / freed
            on = [m[0] for m, p in sorted(zip(moves, price), key=lambda x: x[1])
                  if cur_plan[m[0][0]] != STORE and m[0][1] == STORE][:trade_width]
            off = [m[0] for m, p in sorted(zip(moves, price), key=lambda x: -x[1])
                   if cur_plan[m[0][0]] == STORE and m[0][1] != STORE][:trade_width]
            moves += [(a, b) for a in on for b in off if a[0] != b[0]]
        C = _apply_arm_moves(cur_plan, moves)
        dev = device_bytes3(C, costs)
        host = (np.where(C == OFFLOAD, raw, 0.0)).sum(axis=1)
        ok = (dev <= cap) & (host <= hcap)
        if not ok.any():
            break
        idx = np.flatnonzero(ok)
        c = batch_cost3(C[idx], costs, lam)
        b = int(np.argmin(c))
        if not c[b] < cur - 1e-12:
            break
        cur_plan, cur = C[idx[b]].copy(), float(c[b])
    return [int(v) for v in cur_plan]


def greedy_repair3(arms: list[int], costs: SiteCosts, budget_act_bytes: float,
                   host_cap_bytes: float | None = None) -> list[int]:
    """Move stored sites off the device (to recompute or, within the host cap, to offload) and
    offloaded ones to recompute (their bytes in flight), best device bytes freed per time added
    first, until the plan fits the budget (`device_bytes3`)."""
    raw = np.array(costs.mem_bytes, dtype=float)
    hcap = float("inf") if host_cap_bytes is None else host_cap_bytes + 1e-9
    plan = np.array(arms, dtype=np.int8)
    while (dev := device_bytes3(plan[None, :], costs)[0]) > budget_act_bytes + 1e-9:
        # a stored site to another arm; an offloaded one to recompute (its bytes in flight go)
        moves = [((int(i), a),) for i in np.flatnonzero((plan != RECOMPUTE) & (raw > 0))
                 for a in (RECOMPUTE, OFFLOAD) if a != plan[i]]
        host = raw[plan == OFFLOAD].sum()
        moves = [m for m in moves if m[0][1] == RECOMPUTE or host + raw[m[0][0]] <= hcap]
        C = _apply_arm_moves(plan, moves) if moves else np.zeros((0, len(plan)), dtype=np.int8)
        freed = dev - device_bytes3(C, costs) if moves else np.zeros(0)
        if not (freed > 1e-9).any():
            raise ValueError("no plan fits the budget")
        dt = batch_cost3(C, costs, 0.0) - batch_cost3(plan[None, :], costs, 0.0)[0]
        ratio = np.where(freed > 1e-9, freed / np.maximum(dt, 1e-12), -np.inf)
        (i, a), = moves[int(np.argmax(ratio))]
        plan[i] = a
    return [int(v) for v in plan]


def perturbed_search3(arms: list[int], costs: SiteCosts, lam: float = 0.0,
                      budget_act_bytes: float | None = None, host_cap_bytes: float | None = None,
                      kicks: int = 30, kick_size: int = 4, seed: int = 0) -> list[int]:
    """Iterated local search: a plan kicked by 2 to `kick_size` random arm changes, repaired and
    polished, replaces the best when it is cheaper. The link term is a maximum over suffixes,
    which leaves local optima that single moves and pair trades cannot leave."""
    rng = random.Random(seed)
    raw = np.array(costs.mem_bytes, dtype=float)
    best = list(arms)
    best_c = float(batch_cost3(np.array([best], dtype=np.int8), costs, lam)[0])
    for _ in range(kicks):
        cand = list(best)
        for _ in range(rng.randint(2, kick_size)):
            cand[rng.randrange(len(cand))] = rng.choice((STORE, RECOMPUTE, OFFLOAD))
        try:
            if budget_act_bytes is not None:
                cand = greedy_repair3(cand, costs, budget_act_bytes, host_cap_bytes)
        except ValueError:
            continue
        if host_cap_bytes is not None and raw[np.array(cand) == OFFLOAD].sum() > host_cap_bytes + 1e-9:
            continue
        cand = local_search3(cand, costs, lam, budget_act_bytes, host_cap_bytes)
        c = float(batch_cost3(np.array([cand], dtype=np.int8), costs, lam)[0])
        if c < best_c - 1e-12:
            best, best_c = cand, c
    return best


# How many plans `tiled_plans` enumerates at most: 3^9, every arm of 9 positions (of 14 with
# two arms), priced in batches.
TILE_MAX_PLANS = 3**9


def block_layout(costs: SiteCosts) -> np.ndarray | None:
    """[n_blocks, k] site indices of the model's repeated blocks (labels `L<i>.<name>`), or None
    when there are fewer than two blocks or they do not all hold the same sites in one order."""
    layers: dict[int, list[tuple[str, int]]] = {}
    for i, label in enumerate(costs.labels):
        if m := re.match(r"L(\d+)\.(.+)$", label):
            layers.setdefault(int(m.group(1)), []).append((m.group(2), i))
    blocks = [layers[b] for b in sorted(layers)]
    if len(blocks) < 2 or any([nm for nm, _ in b] != [nm for nm, _ in blocks[0]] for b in blocks):
        return None
    return np.array([[i for _, i in b] for b in blocks])


def tiled_plans(arms: list[int], costs: SiteCosts, lam: float = 0.0,
                budget_act_bytes: float | None = None, host_cap_bytes: float | None = None,
                keep: int = 4, over: float = 0.15,
                choices: tuple[int, ...] = (STORE, RECOMPUTE, OFFLOAD)) -> list[list[int]]:
    """Rounding candidates that give every block one pattern of arms (of `choices`). The exact
    program's plans for a stack of identical blocks are close to periodic, and a rounded plan
    whose blocks disagree is far from any of them in single moves: turning one kind of site from
    stored to offloaded in every block takes 2·n_blocks moves through worse plans. Every arm of
    as many positions as `TILE_MAX_PLANS` allows is enumerated (below) and each plan priced in
    batches; λ mode returns the `keep` cheapest, budget mode the `keep` cheapest that fit and the
    `keep` cheapest within `over` of the budget, repaired. [] when there are no repeated blocks."""
    layout = block_layout(costs)
    if layout is None:
        return []
    base = np.array(arms, dtype=np.int8)
    raw = np.array(costs.mem_bytes, dtype=float)
    nb, k = layout.shape
    # Free positions: a site kind of the blocks (weighed by its bytes over all blocks) or a site
    # outside them (embedding, final norm, head: the head alone can hold more than a block, and
    # its arm decides which block patterns fit). The heaviest take every arm; the others keep the
    # arm `arms` gives them (a block kind: the arm most blocks give it).
    outside = np.setdiff1d(np.arange(len(base)), layout.ravel())
    weight = np.concatenate([raw[layout].sum(axis=0), raw[outside]])
    n_free = int(np.log(TILE_MAX_PLANS) / np.log(len(choices)) + 1e-9)
    free = np.argsort(-weight, kind="stable")[:n_free]
    free = free[weight[free] > 0]
    common = np.array([np.bincount(base[layout[:, p]], minlength=3).argmax() for p in range(k)],
                      dtype=np.int8)  # [k]
    combos = np.array(list(itertools.product(choices, repeat=len(free))), dtype=np.int8)  # [P, f]
    pats = np.repeat(np.concatenate([common, base[outside]])[None, :], len(combos), axis=0)  # [P, k + m]
    pats[:, free] = combos
    A = np.repeat(base[None, :], len(pats), axis=0)  # [P, n]
    A[:, layout] = pats[:, None, :k]
    A[:, outside] = pats[:, k:]
    dev = np.concatenate([device_bytes3(A[s:s + 4096], costs) for s in range(0, len(A), 4096)])
    ok = np.ones(len(A), dtype=bool) if host_cap_bytes is None else \
        np.where(A == OFFLOAD, raw, 0.0).sum(axis=1) <= host_cap_bytes + 1e-9
    if budget_act_bytes is not None:  # only plans near or under the budget are priced
        ok &= dev <= budget_act_bytes * (1 + over) + 1e-9
    cost = np.full(len(A), np.inf)
    idx = np.flatnonzero(ok)
    for s in range(0, len(idx), 4096):  # chunks bound the [P, n] work arrays
        cost[idx[s:s + 4096]] = batch_cost3(A[idx[s:s + 4096]], costs, lam)
    if budget_act_bytes is None:
        picks = [np.flatnonzero(ok)]
    else:
        fits = dev <= budget_act_bytes + 1e-9
        picks = [np.flatnonzero(ok & fits), np.flatnonzero(ok & ~fits)]  # `ok`: within `over` already
    out = []
    for idx in picks:
        for i in idx[np.argsort(cost[idx], kind="stable")[:keep]]:
            plan = [int(v) for v in A[i]]
            if budget_act_bytes is not None and dev[i] > budget_act_bytes + 1e-9:
                try:
                    if OFFLOAD in choices:
                        plan = greedy_repair3(plan, costs, budget_act_bytes, host_cap_bytes)
                    else:
                        stored = greedy_repair([a == STORE for a in plan], costs, budget_act_bytes)
                        plan = [STORE if v else RECOMPUTE for v in stored]
                except ValueError:
                    continue
            out.append(plan)
    return out


def _apply_arm_moves(plan: np.ndarray, moves) -> np.ndarray:
    C = np.repeat(plan[None, :], len(moves), axis=0)
    for row, mv in enumerate(moves):
        for i, a in mv:
            C[row, i] = a
    return C
