"""Planning with the offload arm: the link model, the three-arm oracle against brute force, and
three-way gates against the oracle."""

import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from drat.costs import SiteCosts, expected_exposed_transfer, link_windows, plan_cost
from drat.oracle import brute_force3, solve_oracle, solve_oracle3
from drat.sites import SiteGraph


def link_costs(seed: int, n_layer: int = 1, chunks: int = 2, tight: float = 1.0) -> SiteCosts:
    """Random costs on the real site graph with a link that moves about a site's bytes per
    `tight`/10 of a step: some offloads hide, some cannot; with an odd seed the copies also slow
    the compute they run beside. The offloader lets go of every earlier block's copies
    (`run_ahead_blocks` 0), so a one-block model's block sites leave the peak."""
    rng = random.Random(seed)
    g = SiteGraph(n_layer, chunks)
    c = SiteCosts.build(g, [rng.uniform(1, 100) for _ in g.keys], [rng.uniform(0.01, 1) for _ in g.keys],
                        step_ms=10.0, kind="synthetic")
    bw = 50 / (1e6 * tight)  # 1e9 bytes/s: 50 bytes per `tight` ms
    c.link = {"d2h_gbps": bw * rng.uniform(0.8, 1.2), "h2d_gbps": bw * rng.uniform(0.8, 1.2),
              "copy_overhead_ms": rng.choice([0.0, 0.01]), "run_ahead_blocks": 0}
    if seed % 2:  # copies that slow the compute they hide under: an offload's cost differs per site
        slow = random.Random(seed + 1000)
        c.link.update(d2h_compute_ms_per_copy_ms=slow.uniform(0.0, 0.3),
                      h2d_compute_ms_per_copy_ms=slow.uniform(0.0, 0.1))
    return c


def test_exposed_transfer_follows_the_link_timeline():
    c = link_costs(0)
    n = len(c)
    F, B = link_windows(c)
    assert F[-1] == 0.0 and B[-1] == 0.0 and all(a >= b for a, b in zip(F, F[1:]))
    o = torch.zeros(n)
    assert float(expected_exposed_transfer(o, c)) == 0.0
    o[-1] = 1.0  # the last site's bytes have no compute to hide behind: both directions are exposed
    lk = c.link
    want = (c.mem_bytes[-1] / (lk["d2h_gbps"] * 1e6) + c.mem_bytes[-1] / (lk["h2d_gbps"] * 1e6)
            + lk["copy_overhead_ms"]) / c.step_ms
    assert float(expected_exposed_transfer(o, c)) == pytest.approx(want)
    o = torch.zeros(n)
    o[0] = 1.0  # the first site's bytes have the whole step: only the host overhead shows
    c.link["d2h_gbps"] = c.link["h2d_gbps"] = 1.0
    assert float(expected_exposed_transfer(o, c)) == pytest.approx(c.link["copy_overhead_ms"] / c.step_ms)


def test_offloading_leaves_device_memory_and_is_not_rebuilt():
    c = link_costs(1)
    n = len(c)
    off = [False] * n
    off[2] = True
    obj, mem, t = plan_cost([True] * n, c, 1.0, off)
    assert mem == pytest.approx(1 - c.mem_bytes[2] / c.total_bytes)
    assert t == pytest.approx(float(expected_exposed_transfer(torch.tensor([float(x) for x in off]), c)))


@pytest.mark.parametrize("seed", range(5))
def test_three_arm_oracle_equals_brute_force(seed):
    c = link_costs(seed, tight=random.Random(seed).choice([0.3, 1.0, 3.0]))
    rng = random.Random(seed)
    lam = rng.choice([0.0, 0.1, 1.0, 5.0])
    o, b = solve_oracle3(c, lam=lam), brute_force3(c, lam=lam)
    assert o.objective == pytest.approx(b.objective, abs=1e-9)
    budget = rng.uniform(0.1, 0.6) * c.total_bytes
    cap = rng.choice([None, 0.3 * c.total_bytes])
    o, b = solve_oracle3(c, budget_act_bytes=budget, host_cap_bytes=cap), \
        brute_force3(c, budget_act_bytes=budget, host_cap_bytes=cap)
    assert o.objective == pytest.approx(b.objective, abs=1e-9)
    assert o.mem_bytes <= budget
    if cap is not None:
        assert sum(m for m, x in zip(c.mem_bytes, o.offloaded) if x) <= cap + 1e-9


def test_a_fast_link_makes_offload_win_and_no_link_makes_it_two_arms():
    c = link_costs(3, n_layer=2)
    budget = 0.2 * c.total_bytes
    two = solve_oracle(c, budget_act_bytes=budget)
    c.link = {"d2h_gbps": 1.0, "h2d_gbps": 1.0, "copy_overhead_ms": 0.0}  # effectively free
    three = solve_oracle3(c, budget_act_bytes=budget)
    assert three.objective < two.objective and any(three.offloaded)
    c.link = None
    with pytest.raises(ValueError, match="bandwidth"):
        solve_oracle3(c, budget_act_bytes=budget)


@pytest.mark.parametrize("seed", range(4))
def test_three_way_gates_land_within_two_percent_of_the_oracle(seed):
    from drat.gates import fit_gates

    c = link_costs(seed, n_layer=3, tight=random.Random(seed).choice([0.5, 1.0, 2.0]))
    lam = random.Random(seed).choice([0.1, 1.0])
    fit, best = fit_gates(c, lam=lam, arms=3, seed=seed), solve_oracle3(c, lam=lam)
    assert fit.objective <= best.objective * 1.02 + 1e-12
    budget = 0.3 * c.total_bytes
    fit = fit_gates(c, budget_act_bytes=budget, arms=3, seed=seed)
    best = solve_oracle3(c, budget_act_bytes=budget)
    assert fit.mem_bytes <= budget and fit.objective <= best.objective * 1.02 + 1e-12
    assert fit.gates.arms == 3 and fit.gates.hard().tolist() == fit.stored


@pytest.mark.parametrize("lam", [pytest.param(1.0, marks=pytest.mark.slow), 5.0])  # λ=1: a minute of ILP
def test_three_way_gates_land_within_two_percent_on_a_measured_link_bound_table(lam):
    """The measured large-model table (227 sites, H200 link): at a high price of memory the link
    is full, the choice of which sites cross it is a knapsack over suffix windows, and annealed
    straight-through gates alone settled 5-18% above the optimum. The mean-field run fixes it."""
    from pathlib import Path

    from drat.bench.planners import load_table
    from drat.gates import fit_gates

    path = Path(__file__).parents[1] / "results/bench/h200/large-s4096-b4/offload/offload.json"
    c = load_table(path)
    fit, best = fit_gates(c, lam=lam, arms=3), solve_oracle3(c, lam=lam)
    assert any(fit.offloaded) and fit.objective <= best.objective * 1.02 + 1e-12


def test_three_way_gates_drive_an_exact_model():
    from drat.gates import GateBank
    from drat.strategies import DRATGates, NoneAC

    from .conftest import make_batch, make_model
    from .test_exactness import assert_bitwise, run

    model = make_model(dropout=0.1)
    idx, tgt = make_batch()
    ref = run(model, NoneAC(), idx, tgt)
    gates = GateBank(len(model.graph), init_logit=0.0, seed=5, arms=3)  # uniform over the three arms
    strat = DRATGates(gates, sample=True)
    seen_offload = 0
    for _ in range(4):
        assert_bitwise(run(model, strat, idx, tgt), ref, "three-arm gate sample")
        seen_offload += sum(strat.offload_decisions(model) or [])
    assert seen_offload > 0


def test_the_link_scale_that_explains_a_measured_wait():
    from drat.costs import link_scale_for_wait, offload_site_ms, predicted_wait_ms, scaled_link

    c = link_costs(3, n_layer=2, tight=3.0)
    n = len(c)
    plan = [i % 2 == 0 for i in range(n)]
    pred = predicted_wait_ms(plan, c)
    assert pred > 0 and predicted_wait_ms([False] * n, c) == 0.0
    # host time and slowed compute are not waits: the prediction is the exposed transfer less them
    o = torch.tensor([float(x) for x in plan])
    over = sum(ms for ms, x in zip(offload_site_ms(c), plan) if x)
    assert over > c.link["copy_overhead_ms"] * sum(plan)  # this seed's copies slow the compute
    assert pred == pytest.approx(float(expected_exposed_transfer(o, c)) * c.step_ms - over)
    for want in (0.5, 2.0):  # a link half as fast waits longer; one twice as fast, shorter
        s = link_scale_for_wait([plan], pred * want, c)
        assert (s < 1) == (want > 1)
        assert predicted_wait_ms(plan, replace(c, link=scaled_link(c.link, s))) == pytest.approx(pred * want,
                                                                                                rel=1e-6)
    assert link_scale_for_wait([plan], 1e9, c) == 1 / 16  # beyond the clamp


def test_offloaded_bytes_the_offloader_still_holds_at_the_peak_stay_in_it():
    """The host waits, at every block, for the copies more than `run_ahead_blocks` blocks back,
    so at the LM head (the peak) it still holds the copies of the last r blocks and of the head:
    offloading those frees nothing at the peak, offloading an earlier block frees all its bytes,
    and on a synchronous link (CPU copies) everything offloaded is gone."""
    from drat.costs import held_at_peak, in_flight_bytes
    from drat.offload import Offloader
    from drat.search import OFFLOAD, STORE, device_bytes3

    c = link_costs(5, n_layer=4, tight=3.0)
    n, labels = len(c), c.labels
    for r, want in ((0, ("final_norm", "lm_head_loss")), (1, ("L3.", "final_norm", "lm_head_loss")),
                    (2, ("L2.", "L3.", "final_norm", "lm_head_loss"))):
        c.link["run_ahead_blocks"] = r
        held = [lb for lb, h in zip(labels, held_at_peak(c)) if h]
        assert held == [lb for lb in labels if lb.startswith(want)]
    # a link that names no run-ahead gets the offloader's default
    c.link["run_ahead_blocks"] = Offloader(torch.device("cpu")).run_ahead_blocks
    default = replace(c, link={k: v for k, v in c.link.items() if k != "run_ahead_blocks"})
    assert held_at_peak(default) == held_at_peak(c) and c.link["run_ahead_blocks"] == 1

    stored_all = np.array([[STORE] * n])
    for i, lb in enumerate(labels):
        plan = stored_all.copy()
        plan[0, i] = OFFLOAD
        o = torch.zeros(n, dtype=torch.float64)
        o[i] = 1.0
        held = lb.startswith(("L3.", "final_norm", "lm_head_loss"))
        assert float(in_flight_bytes(o, c)) == (c.mem_bytes[i] if held else 0.0)
        assert device_bytes3(plan, c)[0] == pytest.approx(c.total_bytes - (0.0 if held else c.mem_bytes[i]))
        _, mem, _ = plan_cost([True] * n, c, 0.0, [k == i for k in range(n)])
        assert mem == pytest.approx(device_bytes3(plan, c)[0] / c.total_bytes)
    c.link = {**c.link, "synchronous": True}
    o = torch.ones(n, dtype=torch.float64)
    assert float(in_flight_bytes(o, c)) == 0.0
    assert device_bytes3(np.array([[OFFLOAD] * n]), c)[0] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_the_oracle_counts_bytes_in_flight_against_the_budget(seed):
    """A budget that offloading the late sites would meet if their bytes left at once: the exact
    plan's device bytes, in flight included, stay within it, and brute force agrees."""
    from drat.search import device_bytes3

    c = link_costs(seed, tight=3.0)
    budget = 0.35 * c.total_bytes
    o, b = solve_oracle3(c, budget_act_bytes=budget), brute_force3(c, budget_act_bytes=budget)
    assert o.objective == pytest.approx(b.objective, abs=1e-9)
    arms = np.array([[2 if f else 0 if s else 1 for s, f in zip(o.stored, o.offloaded)]])
    assert o.mem_bytes == pytest.approx(device_bytes3(arms, c)[0]) and o.mem_bytes <= budget + 1e-6


def test_block_tiled_candidates_are_periodic_and_the_cheapest_periodic_plan_comes_first():
    """Every pattern of a small model's 8 block positions and 3 outer sites (2 arms: 2^11) is
    enumerated; the first λ-mode candidate is the cheapest periodic plan, found here one plan at
    a time; budget-mode candidates fit the budget."""
    import itertools

    from drat.search import RECOMPUTE, STORE, block_layout, device_bytes3, tiled_plans

    c = link_costs(5, n_layer=3)
    layout = block_layout(c)
    assert layout.shape == (3, 8)
    outside = sorted(set(range(len(c))) - set(layout.ravel().tolist()))
    lam = 0.7

    def tile(pattern):
        plan = [True] * len(c)
        for p, v in enumerate(pattern[:8]):
            for b in range(3):
                plan[layout[b, p]] = v
        for i, v in zip(outside, pattern[8:]):
            plan[i] = v
        return plan

    brute = min(plan_cost(tile(p), c, lam)[0] for p in itertools.product((True, False), repeat=11))
    tiles = tiled_plans([STORE] * len(c), c, lam, choices=(STORE, RECOMPUTE))
    first = [a == STORE for a in tiles[0]]
    assert plan_cost(first, c, lam)[0] == pytest.approx(brute, abs=1e-12)
    for plan in tiles:
        blocks = np.array(plan)[layout]
        assert (blocks == blocks[0]).all()
    budget = 0.3 * c.total_bytes
    tiles = tiled_plans([STORE] * len(c), c, 0.0, budget)
    assert tiles and (device_bytes3(np.array(tiles), c) <= budget + 1e-9).all()


def test_no_block_layout_without_repeated_blocks():
    from drat.search import block_layout, tiled_plans

    c = link_costs(0, n_layer=2)
    assert block_layout(c) is not None
    c.labels = [lab.replace("L1.mlp_up", "L1.other") for lab in c.labels]
    assert block_layout(c) is None and tiled_plans([0] * len(c), c) == []
    assert block_layout(link_costs(0, n_layer=1)) is None  # one block: nothing repeats


def test_two_arm_gates_reach_the_oracle_on_a_measured_table_where_blocks_disagreed():
    """On the measured `medium` table at λ=5 the rounded gates, polished, sat 2.3% above the
    oracle with blocks that chose differently; the block-tiled candidates close it."""
    from pathlib import Path

    from drat.bench.planners import load_table
    from drat.gates import fit_gates

    c = load_table(Path(__file__).parents[1] / "results/bench/h200/medium-s2048-b8/offload/offload.json")
    fit, best = fit_gates(c, lam=5.0), solve_oracle(c, lam=5.0)
    assert fit.objective <= best.objective * 1.02 + 1e-12


@pytest.mark.slow
def test_three_way_gates_land_within_two_percent_at_a_quarter_budget_on_a_measured_table():
    """At a quarter of the activations' bytes the gates' plans sat 7.9% above the oracle: the
    oracle's plan is periodic (every block the same arms, the head stored) and no local move
    reaches it from a rounded plan whose blocks disagree."""
    from pathlib import Path

    from drat.bench.planners import load_table
    from drat.gates import fit_gates

    c = load_table(Path(__file__).parents[1] / "results/bench/h200/large-s4096-b4/offload/offload.json")
    budget = 0.25 * c.total_bytes
    fit, best = fit_gates(c, budget_act_bytes=budget, arms=3), solve_oracle3(c, budget_act_bytes=budget)
    assert fit.mem_bytes <= budget and fit.objective <= best.objective * 1.02 + 1e-12


def prefetch_costs(graph: SiteGraph, reload_ms: float) -> SiteCosts:
    """Every block's forward 1 ms (its sites alike), the embedding and the head free, a step of
    3 × the forward (so each block's backward takes 2 ms), and one site of block 0, L0.mlp_up,
    whose bytes take `reload_ms` to come back."""
    labels = [k.label() for k in graph.keys]
    per_block = sum(lb.startswith("L0.") for lb in labels)
    time_ms = [1.0 / per_block if lb.startswith("L") else 0.0 for lb in labels]
    c = SiteCosts.build(graph, [100.0] * len(labels), time_ms, step_ms=3 * sum(time_ms), kind="synthetic")
    c.mem_bytes[labels.index("L0.mlp_up")] = 1e6
    c.link = {"d2h_gbps": 1.0, "h2d_gbps": 1e6 / reload_ms / 1e6, "copy_overhead_ms": 0.0}
    return c


def test_the_reload_stall_of_a_prefetch_distance_follows_the_backward_timeline():
    """Three 2 ms block backwards after a free head, a quarter ms per site; the backward reaches
    L0.mlp_up 0.5 ms into block 0 (after mlp_down and mlp_act), 4.5 ms in. Its 5 ms reload starts
    as the backward enters block 0 + d: at d=1 with block 1 (2 ms in), back at 7 ms; at d ≥ 2 at
    the start, back at 5 ms. The plan is the shortest distance that waits no more than any."""
    from drat.costs import plan_prefetch_blocks, reload_stall_ms

    g = SiteGraph(3, 2)
    c = prefetch_costs(g, reload_ms=5.0)
    off = [k.label() == "L0.mlp_up" for k in g.keys]
    assert [reload_stall_ms(off, c, d) for d in (1, 2, 3, 9)] == pytest.approx([2.5, 0.5, 0.5, 0.5])
    assert plan_prefetch_blocks(off, c) == 2
    none = [False] * len(off)
    assert reload_stall_ms(none, c, 1) == 0.0 and plan_prefetch_blocks(none, c) == 1
    fast = prefetch_costs(g, reload_ms=2.5)  # back 0.5 ms into block 0: one block ahead is enough
    assert reload_stall_ms(off, fast, 1) == 0.0 and plan_prefetch_blocks(off, fast) == 1
    c.link["synchronous"] = True  # CPU copies: nothing to hide behind, nothing to plan
    assert reload_stall_ms(off, c, 1) == 0.0 and plan_prefetch_blocks(off, c) == 1


@pytest.mark.parametrize("seed", range(4))
def test_a_longer_prefetch_never_waits_longer_and_the_plan_is_the_shortest_that_waits_least(seed):
    from drat.costs import _late_parts, plan_prefetch_blocks, reload_stall_ms

    c = link_costs(seed, n_layer=6, tight=random.Random(seed).choice([0.3, 1.0, 3.0]))
    rng = random.Random(seed)
    for _ in range(10):
        off = [rng.random() < 0.3 for _ in range(len(c))]
        stalls = [reload_stall_ms(off, c, d) for d in range(1, 10)]
        assert all(a >= b - 1e-9 for a, b in zip(stalls, stalls[1:]))
        d = plan_prefetch_blocks(off, c)
        assert stalls[d - 1] <= stalls[-1] + 0.01 and (d == 1 or stalls[d - 2] > stalls[-1] + 0.01)
        # every reload queued as the backward starts: the wait is the cost model's L_h
        late_h = float(_late_parts(torch.tensor([float(x) for x in off]), c)[1])
        assert stalls[-1] == pytest.approx(late_h, abs=1e-9)


def test_a_longer_prefetch_widens_the_sites_held_at_the_peak():
    from drat.costs import held_at_peak

    c = link_costs(5, n_layer=4, tight=3.0)
    c.link["run_ahead_blocks"] = 0
    c.link["prefetch_blocks"] = 2  # the head's backward reloads blocks 2 and 3
    held = [lb for lb, h in zip(c.labels, held_at_peak(c)) if h]
    assert held == [lb for lb in c.labels if lb.startswith(("L2.", "L3.", "final_norm", "lm_head_loss"))]


def test_a_plan_prefetches_as_far_as_planned_and_reloads_nothing_late():
    """A strategy planned on a link where block 0's bytes need two blocks of backward prefetches
    two blocks ahead: on the CPU none of its reloads start once the backward is in block 0, and
    the gradients are exact."""
    from drat.strategies import NoneAC, PlanAC

    from .conftest import make_batch, make_model
    from .test_exactness import assert_bitwise, run

    model = make_model(n_layer=3)
    idx, tgt = make_batch(seq=12)
    ref = run(model, NoneAC(), idx, tgt)
    c = prefetch_costs(model.graph, reload_ms=5.0)
    n = len(model.graph)
    off = [k.label() == "L0.mlp_up" for k in model.graph.keys]
    s = PlanAC(stored=[True] * n, offloaded=off)
    assert s.plan_prefetch(c, off) == 2 and s.plan_prefetch(None, off) == 1 and s.plan_prefetch(c, off) == 2
    assert_bitwise(run(model, s, idx, tgt), ref, "planned prefetch")
    stats = s.host_stats()
    assert stats["prefetch_blocks"] == 2 and stats["late_reloads"] == 0 and stats["h2d_bytes"] > 0
    # the plan's allowance of copies out per block, for this step's flags, is on its offloader
    from drat.costs import hold_bytes_by_block

    assert s.offloader.hold_bytes == hold_bytes_by_block([True] * n, off, c)
    c.link["synchronous"] = True  # CPU copies: nothing is held, so no allowance
    s.plan_prefetch(c, off)
    assert_bitwise(run(model, s, idx, tgt), ref, "synchronous link")
    assert s.offloader.hold_bytes is None


@pytest.mark.parametrize("seed", range(4))
def test_the_copy_stall_is_the_backlog_with_nothing_let_go_of_and_grows_as_less_is_held(seed):
    """The forward's wait on copies out (`copy_stall_ms`): letting go of nothing before the head,
    it is L_d exactly; a shorter distance, or a smaller allowance, never waits less; and the
    plan's own allowance (`hold_bytes_by_block`) on top of a distance waits no longer than the
    distance alone."""
    from drat.costs import _late_parts, copy_stall_ms, hold_bytes_by_block

    c = link_costs(seed, n_layer=6, tight=random.Random(seed).choice([0.3, 1.0, 3.0]))
    rng = random.Random(seed)
    for _ in range(10):
        off = [rng.random() < 0.3 for _ in range(len(c))]
        stored = [not o and rng.random() < 0.5 for o in off]
        late_d = float(_late_parts(torch.tensor([float(x) for x in off]), c)[0])
        stalls = [copy_stall_ms(off, c, r) for r in range(0, 9)]
        assert stalls[-1] == pytest.approx(late_d, abs=1e-9)
        assert all(a >= b - 1e-9 for a, b in zip(stalls, stalls[1:]))
        unbounded, nothing = ({g: v for g in c.flow} for v in (math.inf, 0.0))
        assert copy_stall_ms(off, c, 0, hold_bytes=unbounded) == pytest.approx(late_d, abs=1e-9)
        assert copy_stall_ms(off, c, 0, hold_bytes=nothing) == pytest.approx(stalls[0], abs=1e-9)
        caps = hold_bytes_by_block(stored, off, c)
        for r in (0, 1, 2):  # on top of a distance, the allowance only ever lets go of less
            assert copy_stall_ms(off, c, r, hold_bytes=caps) <= stalls[r] + 1e-9


def test_the_allowance_keeps_every_block_under_the_heads_activations():
    """In block g the plan has stored the bytes of the blocks up to g; holding `hold_bytes[g]` of
    copies out besides never takes that above what the head holds: everything stored plus the
    offloaded bytes still held there. The allowance shrinks toward the head, where it is those."""
    from drat.costs import held_at_peak, hold_bytes_by_block, in_flight_bytes

    c = link_costs(3, n_layer=5, tight=1.0)
    c.link["run_ahead_blocks"] = 1
    rng = random.Random(3)
    off = [rng.random() < 0.3 for _ in range(len(c))]
    stored = [not o and rng.random() < 0.5 for o in off]
    caps = hold_bytes_by_block(stored, off, c)
    flow = c.flow
    at_head = sum(m for m, s, o in zip(c.mem_bytes, stored, off) if s and not o)
    held_bytes = float(in_flight_bytes(torch.tensor([float(x) for x in off]), c))
    assert sorted(caps) == sorted(set(flow))
    for g in caps:
        so_far = sum(m for m, s, o, f in zip(c.mem_bytes, stored, off, flow) if s and not o and f <= g)
        assert so_far + caps[g] == pytest.approx(at_head + held_bytes)
    assert caps[max(flow)] == pytest.approx(held_bytes)
    assert [caps[g] for g in sorted(caps)] == sorted(caps.values(), reverse=True)
    assert any(held_at_peak(c))


def test_each_offloaded_site_pays_its_host_cost_and_the_compute_its_copies_slow():
    """`offload_site_ms`: the host's time per copy plus, per direction, the matmul time a copy
    adds per ms of copy (or, on a table without it, the slowdown as a lower bound; a negative
    measurement counts as none) times the copy's duration."""
    from drat.costs import offload_site_ms

    c = link_costs(0)  # an even seed: no slowdown until the test sets one
    lk = c.link
    lk.update(copy_overhead_ms=0.01, d2h_gbps=2.0, h2d_gbps=4.0, d2h_compute_slowdown=0.1,
              h2d_compute_slowdown=-0.05)
    want = [0.01 + 0.1 * m / 2e6 for m in c.mem_bytes]
    assert offload_site_ms(c) == pytest.approx(want)
    lk.update(d2h_compute_ms_per_copy_ms=0.3, h2d_compute_ms_per_copy_ms=0.2)
    want = [0.01 + 0.3 * m / 2e6 + 0.2 * m / 4e6 for m in c.mem_bytes]
    assert offload_site_ms(c) == pytest.approx(want)
    o = torch.zeros(len(c))
    o[0] = 1.0  # the whole step to hide behind: what is left is the site's own cost
    lk["d2h_gbps"] = lk["h2d_gbps"] = 1e9
    assert float(expected_exposed_transfer(o, c)) == pytest.approx(offload_site_ms(c)[0] / c.step_ms)
    lk["synchronous"] = True  # a CPU copy: nothing runs beside it to slow
    assert offload_site_ms(c) == [0.01] * len(c)
    c.link = None
    assert offload_site_ms(c) == [0.0] * len(c)
