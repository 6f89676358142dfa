"""Gate decisions under torch.compile: one graph, the same loss and gradients as eager `none`
(to compiler tolerance: Inductor reorders float arithmetic), and the SAC policy follows the plan."""

import pytest
import torch
from torch.utils.checkpoint import CheckpointPolicy

from drat.runtime import autocast_ctx
from drat.strategies import CompiledPlanAC, NoneAC

from .conftest import make_batch, make_model


def _plan(model):
    return [k.name not in ("attn_norm", "mlp_act", "lm_head_loss") for k in model.graph.keys]


def test_compiled_plan_maps_every_block_op_to_a_site():
    model = make_model(n_layer=2)
    idx, _ = make_batch()
    strat = CompiledPlanAC(_plan(model)).prepare(model, idx, autocast_ctx(idx.device))
    sites = [site for _, site, _ in strat.op_sites]
    from drat.sites import BLOCK_SITES

    assert set(sites) == set(BLOCK_SITES)
    outputs = [site for _, site, is_out in strat.op_sites if is_out]
    assert sorted(outputs) == sorted(set(sites))  # exactly one output op per site

    # the policy of layer 1: recomputed sites' ops are MUST_RECOMPUTE, stored outputs MUST_SAVE
    fwd_mode, _ = strat._ctx_fns[1]()
    policy = fwd_mode.policy_fn

    class Ctx:
        is_recompute = False

    decided = {}
    for op, site, is_out in strat.op_sites:
        decided.setdefault(site, []).append((policy(Ctx(), op), is_out))
    assert all(p == CheckpointPolicy.MUST_RECOMPUTE for p, _ in decided["mlp_act"] + decided["attn_norm"])
    assert all(p == CheckpointPolicy.MUST_SAVE for p, out in decided["qkv"] if out)


@pytest.mark.slow  # torch.compile: seconds
def test_compiled_plan_is_one_graph_and_matches_eager():
    model = make_model(n_layer=2)
    idx, tgt = make_batch()
    model.set_strategy(NoneAC())
    ref = model(idx, tgt)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    strat = CompiledPlanAC(_plan(model)).prepare(model, idx, autocast_ctx(idx.device))
    model.set_strategy(strat)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(idx, tgt)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    loss = torch.compile(model)(idx, tgt)
    loss.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-5)


def test_a_block_that_stores_everything_is_no_checkpoint_region(monkeypatch):
    """Store-all blocks are left to the compiler's default plan (what compile-budget 1.0 runs);
    only blocks with a recomputed site become checkpoint regions with the gates' policy."""
    import drat.strategies as strategies

    model = make_model(n_layer=3)
    idx, tgt = make_batch()
    stored = [True] * len(model.graph)
    stored[model.graph.idx(1, "mlp_act")] = False  # only block 1 recomputes
    strat = CompiledPlanAC(stored).prepare(model, idx, autocast_ctx(idx.device))
    model.set_strategy(strat)
    regions = []
    real = strategies.checkpoint

    def counting(fn, *args, **kw):
        regions.append(getattr(fn, "layer", None))
        return real(fn, *args, **kw)

    monkeypatch.setattr(strategies, "checkpoint", counting)
    model(idx, tgt).backward()  # eager: the same forward the compiler traces
    assert regions == [1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["full", "sac"])
def test_handwritten_baselines_compile_to_none_s_loss_and_gradients(name):
    """`full-compiled` and `sac-compiled` (bench frontier): the checkpointed baselines compile
    (SAC's context_fn is called again by the compiler, so it must not be a bound method) and give
    compiled `none`'s loss and gradients, to compiler tolerance."""
    from drat.strategies import SAC, FullAC

    model = make_model(n_layer=2)
    idx, targets = make_batch()
    grads = {}
    for key, strat in (("none", NoneAC()), (name, FullAC() if name == "full" else SAC())):
        torch._dynamo.reset()
        model.set_strategy(strat)
        loss = torch.compile(model.step_loss)(idx, targets)
        loss.backward()
        grads[key] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
        model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    (l0, g0), (l1, g1) = grads["none"], grads[name]
    torch.testing.assert_close(l1, l0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
