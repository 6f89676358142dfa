"""Every strategy runs under `torch.inference_mode()` and gives what it gives under `torch.no_grad()`:
on DRAT's GPT and on a model wrapped by `drat.wrap`, in train mode (dropout drawn) and eval mode."""

import random

import pytest
import torch

import drat
from drat.gates import GateBank

from .conftest import make_batch, make_model

VOCAB = 97


def strategies(n_sites: int) -> dict:
    rnd = random.Random(0)
    return {
        "none": lambda: drat.NoneAC(),
        "full": lambda: drat.FullAC(),
        "selective": lambda: drat.SelectiveAC(),
        "sac": lambda: drat.SAC(),
        "fixed-all-recomputed": lambda: drat.PlanAC(stored=[False] * n_sites),
        "fixed-mixed": lambda: drat.PlanAC(stored=[rnd.random() < 0.5 for _ in range(n_sites)]),
        "drat-gates": lambda: drat.DRATGates(GateBank(n_sites, init_logit=0.0, seed=1)),
        "drat-gates-sampling": lambda: drat.DRATGates(GateBank(n_sites, init_logit=0.0, seed=1), sample=True),
    }


def outputs_under(model, mode, call, seed: int = 3):
    torch.manual_seed(seed)  # the same dropout masks under both modes
    with mode():
        out = call()
    return out.loss if hasattr(out, "loss") else out


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", list(strategies(1)))
def test_gpt_under_inference_mode_equals_no_grad(name, training):
    model = make_model(dropout=0.1)
    idx, tgt = make_batch()
    make = strategies(len(model.graph))[name]
    model.train(training)
    model.set_strategy(make())
    want = outputs_under(model, torch.no_grad, lambda: model(idx, tgt))
    model.set_strategy(make())  # a fresh gate generator: the sampling strategy draws the same plan
    got = outputs_under(model, torch.inference_mode, lambda: model(idx, tgt))
    assert got.is_inference() and torch.equal(got, want)
    # and the logits path (generation) too
    logits = outputs_under(model, torch.inference_mode, lambda: model(idx))
    assert torch.equal(logits, outputs_under(model, torch.no_grad, lambda: model(idx)))
    # the model still trains afterwards, inputs made under inference_mode aside
    model.set_strategy(make())
    model.train()
    model(idx, tgt).backward()


def test_a_recomputing_plan_still_trains_exactly_after_inference_mode():
    model = make_model(dropout=0.1)
    idx, tgt = make_batch()
    torch.manual_seed(0)
    ref = model(idx, tgt)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.set_strategy(drat.PlanAC(recompute=["mlp_act", "attn_core", "qkv"]))
    with torch.inference_mode():
        model(idx, tgt)
    torch.manual_seed(0)
    loss = model(idx, tgt)
    loss.backward()
    assert torch.equal(loss, ref)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), ref_grads))


def _wrapped_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    model.train()
    return drat.wrap(model)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", list(strategies(1)))
def test_wrapped_model_under_inference_mode_equals_no_grad(name, training):
    gm = _wrapped_llama()
    idx, tgt = make_batch(vocab=VOCAB)
    make = strategies(len(gm.graph))[name]
    gm.train(training)
    gm.set_strategy(make())
    want = outputs_under(gm, torch.no_grad, lambda: gm.step_loss(idx, tgt))
    gm.set_strategy(make())
    got = outputs_under(gm, torch.inference_mode, lambda: gm.step_loss(idx, tgt))
    assert got.is_inference() and torch.equal(got, want)
    # called as the model it wraps, with the model's own keyword arguments
    logits = outputs_under(gm, torch.inference_mode, lambda: gm(input_ids=idx).logits)
    assert torch.equal(logits, outputs_under(gm, torch.no_grad, lambda: gm(input_ids=idx).logits))
