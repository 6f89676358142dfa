"""Edge cases around the recompute hooks: settings that change between construction, forward
and backward must either be replayed exactly or fail loudly, never give silent wrong gradients."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from drat.accounting import saved_activation_bytes
from drat.costs import rebuild_counts
from drat.gates import GateBank
from drat.measure import build_costs
from drat.strategies import NoneAC, PlanAC

from .conftest import make_batch, make_model
from .test_exactness import assert_bitwise, run


def test_dropout_switched_on_after_construction_is_replayed():
    model = make_model(dropout=0.0)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.2
    idx, tgt = make_batch()
    ref = run(model, NoneAC(), idx, tgt)
    n = len(model.graph)
    assert_bitwise(run(model, PlanAC(stored=[False] * n), idx, tgt), ref, "late dropout")
    partial = PlanAC(recompute=["attn_out", "mlp_down", "embed"])
    assert_bitwise(run(model, partial, idx, tgt), ref, "late dropout")


def test_sdpa_backend_of_the_forward_is_used_by_the_rebuild():
    model = make_model()
    idx, tgt = make_batch()
    grads = []
    for strat in (NoneAC(), PlanAC(recompute=["attn_core"])):
        model.set_strategy(strat)
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(SDPBackend.MATH):
            loss = model(idx, tgt)
        loss.backward()  # outside the context: the rebuild must still use MATH
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


@pytest.mark.parametrize("recompute", [["attn_norm"], ["qkv"], ["attn_norm", "qkv", "mlp_act"]])
def test_inplace_change_between_forward_and_backward_raises(recompute):
    model = make_model()
    idx, tgt = make_batch()
    model.set_strategy(PlanAC(recompute=recompute))
    loss = model(idx, tgt)
    with torch.no_grad():
        model.blocks[0].c_attn.weight.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_eval_switch_between_forward_and_backward_fails_loudly():
    model = make_model(dropout=0.1)
    idx, tgt = make_batch()
    model.set_strategy(PlanAC(recompute=["attn_out"]))
    loss = model(idx, tgt)
    model.eval()
    with pytest.raises(RuntimeError):
        loss.backward()


def test_frozen_weights_are_not_activations():
    model = make_model()
    idx, tgt = make_batch()
    n = len(model.graph)
    model.set_strategy(PlanAC(stored=[True] * n))
    _, before = saved_activation_bytes(model, idx, tgt)
    model.wte.weight.requires_grad_(False)  # tied: the LM head's weight is frozen too
    _, after = saved_activation_bytes(model, idx, tgt)
    head = model.graph.idx(None, "lm_head_loss")
    assert after[head] == before[head]


@pytest.mark.parametrize("tokens, chunks", [(6, 4), (10, 8), (32, 5)])
def test_head_rebuilds_match_the_cost_model_for_uneven_chunks(tokens, chunks):
    model = make_model(loss_chunks=chunks)
    idx, tgt = make_batch(batch=1, seq=tokens)
    costs = build_costs(model, idx, tgt, kind="uniform")
    stored = [k.name not in ("final_norm", "lm_head_loss") for k in model.graph.keys]
    strat = PlanAC(stored=stored)
    model.set_strategy(strat)
    model(idx, tgt).backward()
    assert strat.last_runtime.rebuilds == [int(r) for r in rebuild_counts(stored, costs)]


def test_store_probability_is_the_reported_probability_at_any_temperature():
    gates = GateBank(4000, init_logit=0.3, tau=0.25, seed=0)
    p = float(gates.probs()[0].detach())
    frac = float(gates.sample_hard().float().mean())
    assert abs(frac - p) < 0.03
    gates.set_temperature(0.01)  # annealed: decisions settle on the sign of the logit
    assert float(gates.sample_hard().float().mean()) > 0.999


def test_eager_hooks_under_torch_compile_point_to_the_compiled_strategy():
    model = make_model(n_layer=1)
    idx, tgt = make_batch()
    model.set_strategy(PlanAC(recompute=["mlp_act"]))
    torch._dynamo.reset()
    with pytest.raises(Exception, match="CompiledPlanAC"):
        torch.compile(model, fullgraph=True)(idx, tgt)
