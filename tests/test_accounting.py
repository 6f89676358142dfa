"""Recomputation really changes what autograd keeps, and the bytes match the physics."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from drat.accounting import analytic_site_bytes, saved_activation_bytes
from drat.costs import rebuild_counts
from drat.measure import build_costs
from drat.strategies import SAC, FullAC, NoneAC, PlanAC, SelectiveAC

from .conftest import make_batch, make_model


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_recomputing_any_single_site_strictly_lowers_saved_bytes(dropout, mlp):
    model = make_model(dropout=dropout, mlp=mlp)
    idx, tgt = make_batch()
    n = len(model.graph)
    model.set_strategy(PlanAC(stored=[True] * n))
    torch.manual_seed(0)
    base, _ = saved_activation_bytes(model, idx, tgt)
    model.set_strategy(NoneAC())
    torch.manual_seed(0)
    assert saved_activation_bytes(model, idx, tgt)[0] == base  # the gated all-store plan == baseline
    for i in range(n):
        stored = [True] * n
        stored[i] = False
        model.set_strategy(PlanAC(stored=stored))
        torch.manual_seed(0)
        less, _ = saved_activation_bytes(model, idx, tgt)
        assert less < base, model.graph.keys[i].label()


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_per_site_bytes_match_the_analytic_formula(mlp, dropout):
    model = make_model(mlp=mlp, dropout=dropout, vocab_size=211, n_embd=64, n_head=4)
    batch, seq = 3, 20
    idx, tgt = make_batch(vocab=211, batch=batch, seq=seq)
    model.set_strategy(PlanAC(stored=[True] * len(model.graph)))
    _, per_site = saved_activation_bytes(model, idx, tgt)
    formula = analytic_site_bytes(model.cfg, batch, seq)
    for i, k in enumerate(model.graph.keys):
        got, want = per_site.get(i, 0), formula[k.name]
        assert abs(got - want) <= 0.05 * want, (k.label(), got, want)


def test_block_bytes_per_token_follow_korthikanti():
    """fp32, no dropout: a block's sites keep (4+12+4+4+4+16+16+4)·h = 64·h bytes per token plus
    norm stats and the attention log-sum-exp: 32·h in half precision, and with the two one-byte
    dropout masks the 34·h of Korthikanti et al. (2022)."""
    model = make_model(n_embd=64, n_head=4, n_layer=1)
    idx, tgt = make_batch(batch=2, seq=16)
    model.set_strategy(PlanAC(stored=[True] * len(model.graph)))
    _, per_site = saved_activation_bytes(model, idx, tgt)
    block = sum(per_site[i] for i, k in enumerate(model.graph.keys) if k.layer == 0)
    tokens, h = 32, 64
    per_token_h = block / tokens / h
    assert 64 <= per_token_h <= 64 * 1.05


def test_full_ac_keeps_only_block_inputs():
    model = make_model()
    idx, tgt = make_batch()
    model.set_strategy(NoneAC())
    none, _ = saved_activation_bytes(model, idx, tgt)
    model.set_strategy(FullAC())
    full, _ = saved_activation_bytes(model, idx, tgt)
    assert full < none


class _LargestOutput(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest_vocab_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:  # views (weight.t()) allocate nothing
            return out
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[-1] == 97:
                self.largest_vocab_numel = max(self.largest_vocab_numel, t.numel())
        return out


@pytest.mark.parametrize("recompute_head", [False, True])
def test_chunked_head_never_materialises_full_logits(recompute_head):
    chunks = 4
    model = make_model(loss_chunks=chunks)
    idx, tgt = make_batch(batch=2, seq=16)
    n_tokens, vocab = 32, 97
    stored = [True] * len(model.graph)
    head = model.graph.idx(None, "lm_head_loss")
    stored[head] = not recompute_head
    strat = PlanAC(stored=stored)
    model.set_strategy(strat)
    with _LargestOutput() as mode:
        _, per_site = saved_activation_bytes(model, idx, tgt)
        loss = model(idx, tgt)
        loss.backward()
    full_logits_bytes = 4 * n_tokens * vocab
    assert mode.largest_vocab_numel <= n_tokens * vocab / chunks  # forward and backward
    if recompute_head:
        assert per_site.get(head, 0) == 0
        # during backward at most one chunk's rebuilt log-probs are alive at a time
        assert strat.last_runtime.peak_rebuilt_bytes <= 1.05 * full_logits_bytes / chunks + 1024
    else:
        assert per_site[head] >= full_logits_bytes  # storing keeps every chunk


@pytest.mark.filterwarnings("ignore:this plan rebuilds")  # random plans include blow-ups, on purpose
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_mechanism_rebuild_counts_equal_the_cost_model(dropout):
    """SiteRuntime's real rebuilds == R_j of the dependency-aware cost model, for random plans
    (sparse and dense in recomputation, so chains within and across blocks occur)."""
    import random

    model = make_model(n_layer=3, loss_chunks=3, dropout=dropout)
    idx, tgt = make_batch()
    costs = build_costs(model, idx, tgt, kind="uniform")
    rng = random.Random(0)
    n = len(model.graph)
    plans = [[False] * n, [True] * n] + [[rng.random() < p for _ in range(n)]
                                         for p in (0.2, 0.5, 0.8) for _ in range(15)]
    for stored in plans:
        strat = PlanAC(stored=stored)
        model.set_strategy(strat)
        model(idx, tgt).backward()
        got = strat.last_runtime.rebuilds if strat.last_runtime else [0] * n
        assert got == [int(r) for r in rebuild_counts(stored, costs)]


def test_a_plan_that_recomputes_the_residual_stream_everywhere_is_warned_about():
    """Recomputing every block's residual stream makes each rebuild repeat the ones before it
    (cross-block parents are rebuilt once per use): the count doubles per block. A fixed plan that
    does so is warned about with the cost model's count, which is the mechanism's (test above);
    a plan storing each block's output is not."""
    import warnings

    from drat.strategies import REBUILD_WARN_PER_SITE, warn_on_rebuild_blowup

    model = make_model(n_layer=6)
    n = len(model.graph)
    labels = [k.label() for k in model.graph.keys]
    blowup = [lab.endswith("attn_core") for lab in labels]  # every residual-stream site recomputed
    blocks = [lab.endswith("mlp_down") or lab == "embed" for lab in labels]
    with pytest.warns(UserWarning, match="recomputes the residual stream across blocks"):
        model.set_strategy(PlanAC(stored=blowup))
    with pytest.warns(UserWarning):
        assert warn_on_rebuild_blowup(blowup, model.graph) > REBUILD_WARN_PER_SITE * n
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.set_strategy(PlanAC(stored=blocks))
        model.set_strategy(PlanAC(stored=[True] * n))
    assert warn_on_rebuild_blowup(blocks, model.graph) < 2 * n


def test_recompute_all_rebuilds_each_block_once_and_holds_about_one_block():
    """Memoised same-block rebuilds: recomputing every block site while block outputs stay
    stored costs exactly one rebuild per site (like checkpointing each block), and the rebuilt
    tensors alive at once stay around one block's worth, not the whole model's."""
    L = 4
    model = make_model(n_layer=L, loss_chunks=2)
    idx, tgt = make_batch()
    g = model.graph
    keep = {"mlp_down"}  # block outputs (the residual stream) stored, everything inside recomputed
    stored = [k.layer is None or k.name in keep for k in g.keys]
    strat = PlanAC(stored=stored)
    model.set_strategy(strat)
    model(idx, tgt).backward()
    rt = strat.last_runtime
    assert rt.rebuilds == [0 if s else 1 for s in stored]
    store_all = PlanAC(stored=[True] * len(g))
    model.set_strategy(store_all)
    _, per_site = saved_activation_bytes(model, idx, tgt)
    block_bytes = max(sum(b for i, b in per_site.items() if g.keys[i].layer == layer and not stored[i])
                      for layer in range(L))
    assert 0 < rt.peak_rebuilt_bytes <= 1.5 * block_bytes


@pytest.mark.parametrize("strategy, regions_per_block", [(FullAC, 1), (SelectiveAC, 1), (SAC, 1)])
def test_checkpoint_rng_states_are_counted_once_per_checkpointed_block(strategy, regions_per_block):
    """torch.utils.checkpoint stashes the CPU generator's state (and each input GPU's) per call to
    replay dropout: the baselines hold it as DRAT's recipes hold theirs, so it is counted."""
    import torch.utils.checkpoint as checkpoint_module

    from drat.accounting import SavedTensorAccountant

    original = checkpoint_module._checkpoint_without_reentrant_generator
    model = make_model(dropout=0.1)
    idx, tgt = make_batch()
    model.set_strategy(strategy())
    with SavedTensorAccountant(model) as acct:
        model(idx, tgt)
    rng_bytes = torch.get_rng_state().numel()  # uint8: 5056 bytes on the CPU
    assert acct._extra == {-1: model.cfg.n_layer * regions_per_block * rng_bytes}
    assert acct.by_site()[-1] >= acct._extra[-1] and acct.total_bytes == sum(acct.by_site().values())
    assert checkpoint_module._checkpoint_without_reentrant_generator is original  # given back
    # a checkpoint that keeps no RNG state, or one outside an accountant, adds nothing
    with SavedTensorAccountant() as acct:
        x = torch.ones(4, requires_grad=True)
        checkpoint_module.checkpoint(torch.sin, x, use_reentrant=False, preserve_rng_state=False)
        checkpoint_module.checkpoint(torch.sin, x, use_reentrant=False)
    assert acct._extra == {-1: rng_bytes}
    # DRAT's own plans checkpoint nothing: their RNG states come from the mechanism, per dropout site
    model.set_strategy(PlanAC(recompute=["mlp_down"]))
    with SavedTensorAccountant(model) as acct:
        model(idx, tgt)
    assert -1 not in acct._extra and sum(acct._extra.values()) == model.cfg.n_layer * rng_bytes


def test_the_inputs_held_for_backward_are_reported_apart():
    """The embedding keeps the token ids and the loss its targets: 2·B·S·8 bytes of the total, the
    same under every strategy (profile reports them as input_bytes)."""
    from drat.accounting import SavedTensorAccountant

    model = make_model()
    idx, tgt = make_batch()
    for strategy in (NoneAC(), FullAC(), PlanAC(recompute=["mlp_act", "qkv"])):
        model.set_strategy(strategy)
        with SavedTensorAccountant(model) as acct:
            model(idx, tgt)
        assert acct.held_bytes_of(idx, tgt) == 2 * idx.numel() * 8
