"""Cost model, resource loss, gate training, budget mode and the ILP oracle."""

import itertools
import random

import pytest
import torch

from drat.costs import COST_MODELS, SiteCosts, expected_recompute, plan_cost, rebuild_counts
from drat.gates import BudgetInfeasibleError, GateBank, budget_to_activation_bytes, fit_gates, resource_loss
from drat.measure import build_costs
from drat.oracle import brute_force, solve_oracle
from drat.sites import SiteGraph

from .conftest import make_batch, make_model


def tiny_costs(n_layer=1, chunks=4, seed=0, kind="activation_size"):
    # activation_size: measured-equivalent bytes with a fixed roofline, so tests are deterministic
    model = make_model(n_layer=n_layer, loss_chunks=chunks, vocab_size=211, n_embd=64)
    idx, tgt = make_batch(vocab=211, batch=4, seq=32, seed=seed)
    return build_costs(model, idx, tgt, kind=kind)


def synthetic_costs(seed, n_layer=1, chunks=3):
    """Random positive costs on the real site graph: the oracle must be right for any costs."""
    rng = random.Random(seed)
    g = SiteGraph(n_layer, chunks)
    return SiteCosts.build(g, [rng.uniform(1, 100) for _ in g.keys], [rng.uniform(0.01, 1) for _ in g.keys],
                           step_ms=10.0, kind="synthetic")


@pytest.mark.parametrize("kind", COST_MODELS)
def test_cost_models_are_positive_and_complete(kind):
    c = tiny_costs(kind=kind)
    assert len(c) == len(c.labels) == 11 and c.kind == kind
    M, T = c.normalized()
    assert (M > 0).all() and (T > 0).all()
    assert abs(float(M.sum()) - 1.0) < 1e-9


def test_unknown_cost_model_is_rejected():
    model = make_model()
    idx, tgt = make_batch()
    with pytest.raises(ValueError, match="unknown cost model"):
        build_costs(model, idx, tgt, kind="magic")


def test_expected_cost_is_the_exact_expectation_under_independent_gates():
    """The recursion is multilinear: at probabilities g it equals E_s[cost(s)] by enumeration."""
    c = synthetic_costs(0, chunks=2)
    _, T = c.normalized()
    g = torch.tensor([random.Random(1).uniform(0.05, 0.95) for _ in range(len(c))], dtype=torch.float64)
    want = 0.0
    for bits in itertools.product((0, 1), repeat=len(c)):
        s = torch.tensor(bits, dtype=torch.float64)
        p = float(torch.prod(torch.where(s > 0, g, 1 - g)))
        want += p * float(expected_recompute(s, T, c))
    assert abs(float(expected_recompute(g, T, c)) - want) < 1e-10


def test_recompute_cost_is_dependency_aware():
    """A recomputed parent in another block is paid once more for each rebuild of a recomputed
    child; inside a block the child's own rebuild reuses the parent's (memoised) rebuild."""
    c = synthetic_costs(2, n_layer=2)
    n = len(c)
    _, T = c.normalized()
    only = lambda *ks: [i not in ks for i in range(n)]  # noqa: E731

    def pair(parent, child):
        i, j = c.labels.index(parent), c.labels.index(child)
        both = plan_cost(only(i, j), c, 0)[2]
        return both, plan_cost(only(i), c, 0)[2] + plan_cost(only(j), c, 0)[2], float(T[i])

    both, separate, t_parent = pair("L0.mlp_down", "L1.attn_norm")  # across blocks
    assert both == pytest.approx(separate + t_parent)
    both, separate, _ = pair("L0.mlp_up", "L0.mlp_act")  # one block: a chain costs its parts
    assert both == pytest.approx(separate)
    # a chain over two blocks: L1.attn_out's rebuild needs L0.mlp_down (transient), whose own
    # block's recomputed parent L0.mlp_act is rebuilt again for that transient rebuild
    i, j, k = (c.labels.index(x) for x in ("L0.mlp_act", "L0.mlp_down", "L1.attn_out"))
    R = rebuild_counts(only(i, j, k), c)
    assert (R[k], R[j], R[i]) == (1, 2, 2)


def test_lambda_zero_stores_everything_and_memory_falls_as_lambda_grows():
    c = tiny_costs(n_layer=2)
    assert all(fit_gates(c, lam=0.0, steps=100).stored)
    mems = [fit_gates(c, lam=lam, steps=300).mem_bytes for lam in (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 10.0)]
    assert all(b <= a + 1e-6 for a, b in zip(mems, mems[1:])), mems
    assert mems[-1] < mems[0]


def test_gate_gradient_comes_from_the_resource_term():
    c = tiny_costs()
    gates = GateBank(len(c), init_logit=0.0)
    loss, mem, t = resource_loss(gates.sample_st(), c, lam=1.0)
    loss.backward()
    assert gates.logits.grad is not None and gates.logits.grad.abs().sum() > 0


def test_gate_sampling_uses_its_own_generator():
    state = torch.get_rng_state()
    GateBank(10, seed=1).sample_hard()
    assert torch.equal(state, torch.get_rng_state())
    a = GateBank(10, init_logit=0.0, seed=5).sample_hard()
    b = GateBank(10, init_logit=0.0, seed=5).sample_hard()
    assert torch.equal(a, b)


@pytest.mark.parametrize("frac", [0.1, 0.3, 0.5, 0.8])
def test_budget_mode_converges_under_the_budget_and_near_the_oracle(frac):
    c = tiny_costs(n_layer=2)
    budget = frac * c.total_bytes
    fit = fit_gates(c, budget_act_bytes=budget, steps=300)
    assert fit.mem_bytes <= budget
    assert max(h["lam"] for h in fit.history) > 0  # the dual variable actually moved
    oracle = solve_oracle(c, budget_act_bytes=budget)
    assert fit.objective <= oracle.objective * 1.02 + 1e-9


@pytest.mark.parametrize("lam", [0.02, 0.1, 0.5, 2.0])
def test_lambda_mode_gates_match_the_oracle(lam):
    c = tiny_costs(n_layer=2)
    fit = fit_gates(c, lam=lam, steps=300)
    oracle = solve_oracle(c, lam=lam)
    assert fit.objective <= oracle.objective * 1.02 + 1e-9


def test_budget_below_floor_states_the_floor():
    with pytest.raises(BudgetInfeasibleError, match=r"below the feasible floor of 0\.5 GiB"):
        budget_to_activation_bytes(0.25, base_bytes=0.5 * 2**30)
    with pytest.raises(BudgetInfeasibleError, match="positive"):
        budget_to_activation_bytes(-1.0, base_bytes=0)
    assert budget_to_activation_bytes(1.0, base_bytes=0.5 * 2**30) == 0.5 * 2**30


@pytest.mark.parametrize("seed", range(6))
def test_oracle_equals_brute_force(seed):
    c = synthetic_costs(seed, chunks=1 + seed % 3)
    rng = random.Random(seed)
    lam = rng.choice([0.0, 0.1, 1.0, 5.0])
    assert solve_oracle(c, lam=lam).objective == pytest.approx(brute_force(c, lam=lam).objective, abs=1e-9)
    budget = rng.uniform(0.2, 0.9) * c.total_bytes
    o, b = solve_oracle(c, budget_act_bytes=budget), brute_force(c, budget_act_bytes=budget)
    assert o.objective == pytest.approx(b.objective, abs=1e-9)
    assert o.mem_bytes <= budget


def test_oracle_scales_to_deep_models_without_blowing_up():
    c = synthetic_costs(0, n_layer=24, chunks=8)
    plan = solve_oracle(c, budget_act_bytes=0.3 * c.total_bytes)
    assert plan.mem_bytes <= 0.3 * c.total_bytes
    assert plan.objective < plan_cost([False] * len(c), c, 0)[0]


def test_budget_floor_excludes_exponential_recompute_chains():
    from drat.oracle import activation_floor_bytes

    c = tiny_costs(n_layer=2)
    floor = activation_floor_bytes(c, max_time_frac=1.0)
    assert 0 < floor < c.total_bytes
    with pytest.raises(BudgetInfeasibleError, match="below the feasible floor") as info:
        fit_gates(c, budget_act_bytes=0.5 * floor, base_bytes=2**30)
    assert f"{(2**30 + floor) / 2**30:.4g} GiB" in str(info.value)
    fit = fit_gates(c, budget_act_bytes=floor * 1.01, steps=200)
    assert fit.mem_bytes <= floor * 1.01 and fit.time_frac <= 1.0 + 1e-9


@pytest.mark.parametrize("seed", [74, 252, 277, 278])
def test_oracle_is_optimal_when_times_are_tiny(seed):
    """Step-normalised times of ~1e-7 would fool HiGHS's absolute gap; the objective is rescaled."""
    c = synthetic_costs(seed, chunks=2)
    c.step_ms = 1e7  # every T_i becomes ~1e-7 of a step
    budget = 0.5 * c.total_bytes
    assert solve_oracle(c, budget_act_bytes=budget).objective == pytest.approx(
        brute_force(c, budget_act_bytes=budget).objective, rel=1e-9, abs=1e-15)


def _dropout_model_under_full_ac():
    """A tiny training-mode model with dropout (so a measurement that moved the RNG would show)
    under a strategy the measurement must restore, and a CPU batch."""
    from drat.measure import random_batch
    from drat.model import GPT, config_for
    from drat.strategies import FullAC

    torch.manual_seed(0)
    model = GPT(config_for("tiny", vocab_size=128, dropout=0.1))
    model.train()
    idx, targets = random_batch(128, 2, 16, torch.device("cpu"))
    strategy = FullAC()
    model.set_strategy(strategy)
    return model, idx, targets, strategy


def test_rebuild_overhead_calibration_leaves_the_model_untouched():
    """The calibration runs real forward/backward passes; it must not step, keep gradients,
    move the RNG or change the strategy (a training run measures costs before step 0)."""
    from drat.measure import build_costs, measure_rebuild_overhead_ms

    model, idx, targets, strategy = _dropout_model_under_full_ac()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    costs = build_costs(model, idx, targets, "measured")  # CPU: roofline T_i, no calibration
    assert costs.rebuild_overhead_ms == 0.0
    c = measure_rebuild_overhead_ms(model, idx, targets, costs, steps=2, warmup=1)
    assert c >= 0.0 and c == c
    assert model.strategy is strategy
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # forced on: every T_i grows by c per rebuild unit, and compiled costs take it out again
    import dataclasses

    import drat.measure as costs_mod
    from drat.bench.common import compiled_costs

    fixed_t = [0.01 * (i + 1) for i in range(len(model.graph))]
    orig = (costs_mod.estimate_site_time_ms, costs_mod.measure_rebuild_overhead_ms)
    try:
        costs_mod.estimate_site_time_ms = lambda *a, **k: list(fixed_t)
        costs_mod.measure_rebuild_overhead_ms = lambda *a, **k: 0.25
        cal = build_costs(model, idx, targets, "measured", calibrate_rebuilds=True)
        base = build_costs(model, idx, targets, "measured")
    finally:
        costs_mod.estimate_site_time_ms, costs_mod.measure_rebuild_overhead_ms = orig
    assert cal.rebuild_overhead_ms == 0.25 and base.rebuild_overhead_ms == 0.0
    assert cal.step_ms == base.step_ms  # the step normaliser is the plain forward estimate
    for t, t0, n in zip(cal.time_ms, base.time_ms, cal.instances):
        assert abs(t - (t0 + 0.25 * n)) < 1e-12
    for a, b in zip(compiled_costs(cal).time_ms, compiled_costs(base).time_ms):
        assert abs(a - b) < 1e-12
    assert dataclasses.asdict(compiled_costs(cal))["rebuild_overhead_ms"] == 0.0


def test_peak_aware_costs_charge_the_lm_head_what_its_recompute_saves_at_the_peak():
    """On CUDA the LM head's M_i is the measured drop of the peak when it alone is recomputed
    (its rebuild sits on top of the peak); the bytes it owns are kept beside it. Everything that
    plans from the table then sees the peak's memory: a budget's base (peak of `none` minus the
    table's total) absorbs what the head's rebuild keeps live."""
    import drat.measure as costs_mod
    from drat.measure import random_batch
    from drat.model import GPT, config_for

    torch.manual_seed(0)
    model = GPT(config_for("tiny", vocab_size=128))
    idx, targets = random_batch(128, 2, 16, torch.device("cpu"))
    plain = build_costs(model, idx, targets, "measured")
    assert plain.owned_bytes is None
    head = model.graph.idx(None, "lm_head_loss")
    owned = plain.mem_bytes[head]
    orig = costs_mod.measure_peak_saving_bytes
    try:
        for saving, expect in [(0.25 * owned, 0.25 * owned), (2 * owned, owned), (-5.0, 0.0)]:
            costs_mod.measure_peak_saving_bytes = lambda *a, _s=saving, **k: _s
            aware = build_costs(model, idx, targets, "measured", peak_aware=True)
            assert aware.mem_bytes[head] == expect
            assert aware.owned_bytes == plain.mem_bytes
            assert [m for i, m in enumerate(aware.mem_bytes) if i != head] == \
                   [m for i, m in enumerate(plain.mem_bytes) if i != head]
            none_peak = 1e9  # any measured `none` peak: the base grows by what the head keeps live
            grown = (none_peak - aware.total_bytes) - (none_peak - plain.total_bytes)
            assert grown == pytest.approx(owned - expect)
            assert SiteCosts(**aware.to_dict()) == aware  # the JSON form round-trips
    finally:
        costs_mod.measure_peak_saving_bytes = orig
    with pytest.raises(ValueError, match="CUDA"):
        costs_mod.measure_peak_saving_bytes(model, idx, targets, head)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_peak_saving_of_a_block_site_is_its_bytes_and_the_head_saves_less_than_it_owns():
    from drat.measure import measure_peak_saving_bytes, measure_site_bytes, random_batch
    from drat.model import GPT, config_for
    from drat.runtime import autocast_ctx

    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = GPT(config_for("tiny", vocab_size=4096)).to(dev)
    idx, targets = random_batch(4096, 8, 256, dev)
    with autocast_ctx(dev):
        owned = measure_site_bytes(model, idx, targets)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mid = model.graph.idx(0, "mlp_act")
    assert measure_peak_saving_bytes(model, idx, targets, mid) == pytest.approx(owned[mid], rel=0.02)
    head = model.graph.idx(None, "lm_head_loss")
    assert 0 < measure_peak_saving_bytes(model, idx, targets, head) < owned[head]
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_measuring_inside_model_as_found_keeps_strategy_grads_and_rng():
    """Cost measurements run real forwards/backwards; the caller's strategy object, its
    accumulated gradients and the RNG stream (dropout masks) come back untouched."""
    from drat.measure import _forward_backward, _model_as_found, _set_plan

    model, idx, targets, strategy = _dropout_model_under_full_ac()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    rng = torch.get_rng_state()
    with _model_as_found(model, idx.device):
        _set_plan(model, [i % 2 == 0 for i in range(len(model.graph))])
        _forward_backward(model, idx, targets)
        assert all(p.grad is None for p in model.parameters())  # dropped after the step
    assert model.strategy is strategy
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
