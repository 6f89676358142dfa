"""`drat.wrap` on models DRAT did not build: Hugging Face Llama, GPT-2 and Qwen2 (random weights from small
configs, no hub), and a plain nn.Module transformer. Every plan gives the unwrapped model's loss and
gradients bit for bit; the cost model, gates and oracle plan the wrapped sites; errors are one line."""

import copy
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import drat
from drat.accounting import saved_activation_bytes
from drat.measure import build_costs, measure_site_bytes
from drat.wrap import GatedModel, WrapError, unwrap, wrap

transformers = pytest.importorskip("transformers")

VOCAB = 97


def llama(dropout: float = 0.0):
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, attention_dropout=dropout)
    return transformers.LlamaForCausalLM(cfg)


def gpt2(dropout: float = 0.1):
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return transformers.GPT2LMHeadModel(cfg)


def qwen2(dropout: float = 0.1):
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, attention_dropout=dropout)
    return transformers.Qwen2ForCausalLM(cfg)


class Block(nn.Module):
    def __init__(self, h: int, heads: int, p: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv, self.proj = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.up, self.act, self.down = nn.Linear(h, 4 * h), nn.GELU(), nn.Linear(4 * h, h)
        self.drop = nn.Dropout(p)

    def forward(self, x):  # x: (B, S, h)
        B, S, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, S, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, S, h)
        x = x + self.drop(self.proj(o))
        return x + self.drop(self.down(self.act(self.up(self.ln2(x)))))


class TinyLM(nn.Module):
    """A plain transformer written here: the sites of `wrap` come from its modules alone."""

    def __init__(self, h: int = 32, layers: int = 2, p: float = 0.1):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, h)
        self.blocks = nn.ModuleList(Block(h, 4, p) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(h), nn.Linear(h, VOCAB, bias=False)

    def forward(self, idx, targets):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return F.cross_entropy(self.head(self.ln_f(x)).flatten(0, 1), targets.flatten())


BUILDERS = {"llama": llama, "llama-dropout": lambda: llama(0.1), "gpt2": gpt2, "qwen2": qwen2,
            "plain": TinyLM}


def make(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = BUILDERS[kind]()
    model.train()
    return model


def batch(seed: int = 1, b: int = 2, s: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (b, s), generator=g), torch.randint(0, VOCAB, (b, s), generator=g)


def loss_and_grads(model, kind, idx, tgt, seed: int = 5):
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(seed)  # the same dropout masks in every run
    if isinstance(model, GatedModel):
        loss = model.step_loss(idx, tgt)
    elif kind == "plain":
        loss = model(idx, tgt)
    else:  # DRAT's targets are already shifted (see GatedModel.step_loss)
        loss = model(input_ids=idx, labels=tgt, shift_labels=tgt).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def assert_bitwise(a, b, what):
    assert torch.equal(a[0], b[0]), f"{what}: loss differs"
    for i, (x, y) in enumerate(zip(a[1], b[1])):
        assert torch.equal(x, y), f"{what}: gradient {i} differs"


def wrapped(kind):
    model = make(kind)
    ref = copy.deepcopy(model)
    idx, tgt = batch()
    gm = wrap(model, example_inputs=None if kind != "plain" else (idx, tgt))
    return gm, ref, idx, tgt


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_random_plans_are_bitwise_exact_against_the_unwrapped_model(kind):
    gm, ref, idx, tgt = wrapped(kind)
    want = loss_and_grads(ref, kind, idx, tgt)
    assert_bitwise(loss_and_grads(gm, kind, idx, tgt), want, f"{kind} store-all")
    n = len(gm.graph)
    rebuilt = 0
    for t in range(6):
        rnd = random.Random(t)
        stored = [rnd.random() < 0.5 for _ in range(n)]
        gm.set_strategy(drat.PlanAC(stored=stored))
        assert_bitwise(loss_and_grads(gm, kind, idx, tgt), want, f"{kind} plan {t}")
        rebuilt += sum(gm.strategy.last_runtime.rebuilds)
    gm.set_strategy(drat.PlanAC(stored=[False] * n))
    assert_bitwise(loss_and_grads(gm, kind, idx, tgt), want, f"{kind} recompute-all")
    assert rebuilt > 0  # the plans did recompute


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_random_three_arm_plans_are_bitwise_exact_on_wrapped_models(kind):
    gm, ref, idx, tgt = wrapped(kind)
    want = loss_and_grads(ref, kind, idx, tgt)
    n = len(gm.graph)
    moved = 0
    for t in range(4):
        rnd = random.Random(50 + t)
        arms = [rnd.choice("sro") for _ in range(n)]
        gm.set_strategy(drat.PlanAC(stored=[a == "s" for a in arms], offloaded=[a == "o" for a in arms]))
        assert_bitwise(loss_and_grads(gm, kind, idx, tgt), want, f"{kind} three-arm plan {t}")
        moved += gm.strategy.host_stats()["d2h_bytes"]
    gm.set_strategy(drat.OffloadAll())
    assert_bitwise(loss_and_grads(gm, kind, idx, tgt), want, f"{kind} offload-all")
    assert moved > 0


@pytest.mark.parametrize("strategy", [drat.FullAC, drat.SelectiveAC, drat.SAC])
def test_block_strategies_on_a_wrapped_llama(strategy):
    gm, ref, idx, tgt = wrapped("llama")
    want = loss_and_grads(ref, "llama", idx, tgt)
    gm.set_strategy(strategy())
    assert_bitwise(loss_and_grads(gm, "llama", idx, tgt), want, strategy.__name__)


def test_sites_are_found_in_forward_order_with_their_graph():
    gm, *_ = wrapped("llama")
    labels = [k.label() for k in gm.graph.keys]
    assert labels[:7] == ["model.embed_tokens", "L0.input_layernorm", "L0.self_attn.q_proj",
                          "L0.self_attn.k_proj", "L0.self_attn.v_proj", "L0.self_attn.core",
                          "L0.self_attn.o_proj"]
    assert labels[-3:] == ["model.norm", "lm_head", "loss"]
    g = gm.graph
    assert g.parents[g.idx(0, "self_attn.q_proj")] == [g.idx(0, "input_layernorm")]
    assert g.parents[g.idx(0, "self_attn.core")] == []  # rotary embeddings come between: unowned
    assert g.parents[g.idx(None, "loss")] == [g.idx(None, "lm_head")]
    assert g.n_layer == 2 and all(p < i for i, ps in enumerate(g.parents) for p in ps)


def test_costs_gates_and_oracle_plan_a_wrapped_model_and_bytes_fall_as_planned():
    gm, ref, idx, tgt = wrapped("llama")
    want = loss_and_grads(ref, "llama", idx, tgt)
    costs = build_costs(gm, idx, tgt)
    assert len(costs) == len(gm.graph) and all(m >= 0 for m in costs.mem_bytes)
    site_bytes = measure_site_bytes(gm, idx, tgt)
    gm.set_strategy(drat.PlanAC(stored=[True] * len(gm.graph)))
    total_store, _ = saved_activation_bytes(gm, idx, tgt)
    for lam in (0.0, 0.5, 5.0):
        fit = drat.fit_gates(costs, lam=lam)
        oracle = drat.solve_oracle(costs, lam=lam)
        assert fit.objective <= oracle.objective * 1.02 + 1e-9
        gm.set_strategy(drat.DRATGates(fit.gates))
        assert_bitwise(loss_and_grads(gm, "llama", idx, tgt), want, f"gates lam={lam}")
        held, _ = saved_activation_bytes(gm, idx, tgt)
        dropped = sum(b for b, s in zip(site_bytes, fit.stored) if not s)
        assert held == total_store - dropped  # the plan's saving, to the byte
    assert any(not s for s in fit.stored)


def test_unowned_share_is_reported():
    gm, _, idx, tgt = wrapped("llama")
    share = gm.unowned_share(idx, tgt)
    assert 0.05 < share < 0.9  # the residual stream, rotary q/k and the SwiGLU product


def test_unwrap_restores_the_model_as_found():
    model = make("llama")
    before_impl = model.config._attn_implementation
    idx, tgt = batch()
    ref = loss_and_grads(model, "llama", idx, tgt)
    gm = wrap(model)
    gm.set_strategy(drat.PlanAC(stored=[False] * len(gm.graph)))
    loss_and_grads(gm, "llama", idx, tgt)
    back = unwrap(gm)
    assert back is model and model.config._attn_implementation == before_impl
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert "_loss_function" not in model.__dict__
    assert_bitwise(loss_and_grads(model, "llama", idx, tgt), ref, "unwrapped")


def test_outputs_are_the_models_own():
    gm, ref, idx, tgt = wrapped("gpt2")
    gm.eval(), ref.eval()
    with torch.no_grad():
        a, b = gm(input_ids=idx, labels=tgt), ref(input_ids=idx, labels=tgt)  # the user's own call
    assert type(a) is type(b) and torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)


def test_patterns_pick_sites_and_a_pattern_matching_nothing_is_refused():
    gm = wrap(make("plain"), sites=["blocks.*.ln*", "blocks.*.act"], example_inputs=batch())
    assert [k.name for k in gm.graph.keys] == ["ln1", "ln2", "act"] * 2
    with pytest.raises(WrapError, match="matches no module"):
        wrap(make("plain"), sites=["blocks.*.nonesuch"], example_inputs=batch())
    with pytest.raises(ValueError, match="matches no site"):
        gm.set_strategy(drat.PlanAC(recompute=["nonesuch"]))


def test_a_model_without_sites_is_refused():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return (x * self.w).sum()

    with pytest.raises(WrapError, match="no site found"):
        wrap(Bare(), example_inputs=torch.ones(3))


@pytest.mark.parametrize("other", ["swapped", "shorter"])
def test_data_dependent_control_flow_is_refused(other):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.b(self.a(x)).sum()
            return (self.a(self.b(x)) if other == "swapped" else self.a(x)).sum()

    gm = wrap(Branchy(), example_inputs=torch.ones(2, 4))
    gm(torch.ones(2, 4)).backward()  # the traced branch runs
    with pytest.raises(WrapError, match="depend.* on the data"):
        gm(-torch.ones(2, 4))


def test_an_in_place_change_of_a_saved_tensor_fails_in_one_line():
    class Inplace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)

        def forward(self, x):
            h = self.act(self.a(x))  # tanh and b save h ...
            y = self.b(h)
            h.mul_(2)  # ... which is then changed in place
            return y.sum(), h

    x = torch.ones(2, 4)
    gm = wrap(Inplace(), example_inputs=x)
    for stored in ([True, True, True], [True, False, True]):  # the second recomputes h in backward
        gm.set_strategy(drat.PlanAC(stored=stored))
        with pytest.raises(RuntimeError, match="modified by an inplace operation") as e:
            loss, _ = gm(x)
            loss.backward()
        assert "\n" not in str(e.value).strip()


def test_wrapping_twice_is_refused():
    gm = wrap(make("plain"), example_inputs=batch())
    with pytest.raises(WrapError, match="already wrapped"):
        wrap(gm)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
def test_random_plans_are_bitwise_exact_under_bf16_autocast_in_deterministic_mode(kind):
    from drat.runtime import set_deterministic

    restore = set_deterministic()
    try:
        torch.manual_seed(0)
        model = BUILDERS[kind]().cuda().train()
        ref = copy.deepcopy(model)
        idx, tgt = (t.cuda() for t in batch(s=64))
        gm = wrap(model)

        def run(m):
            with torch.autocast("cuda", torch.bfloat16):
                return loss_and_grads(m, kind, idx, tgt)

        want = run(ref)
        for t in range(4):
            rnd = random.Random(t)
            gm.set_strategy(drat.PlanAC(stored=[rnd.random() < 0.5 for _ in range(len(gm.graph))]))
            assert_bitwise(run(gm), want, f"{kind} bf16 plan {t}")
        for t in range(3):  # three arms: the offloaded sites cross the host link and back
            rnd = random.Random(20 + t)
            arms = [rnd.choice("sro") for _ in range(len(gm.graph))]
            gm.set_strategy(drat.PlanAC(stored=[a == "s" for a in arms], offloaded=[a == "o" for a in arms]))
            assert_bitwise(run(gm), want, f"{kind} bf16 three-arm plan {t}")
    finally:
        restore()


@pytest.mark.slow
def test_train_hf_resumes_bitwise(tmp_path):
    from drat.cli import main
    from drat.train.checkpoint import load_checkpoint

    common = ("train --hf llama --size tiny --layers 2 --hidden 64 --heads 4 --corpus stdlib "
              "--max-corpus-bytes 200000 --vocab-size 384 --batch-size 4 --seq-len 32 --device cpu "
              "--lambda 0.5 --eval-every 2 --eval-batches 1 --ckpt-every 2 --dropout 0.1 --no-tensorboard"
              ).split()
    assert main(common + ["--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--steps", "4", "--out", str(tmp_path / "b"), "--tokenizer",
                          str(tmp_path / "a" / "tokenizer.json")]) == 0
    # cut b after step 2: drop its last checkpoint, resume from step 2
    (tmp_path / "b" / "checkpoints" / "ckpt_0000004.pt").unlink()
    assert main(["train", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "ckpt_0000004.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "ckpt_0000004.pt")
    assert a["config"]["hf"] == "llama"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # generate samples DRAT's own GPT: a transformers run is refused in one line
    assert main(["generate", "--ckpt", str(tmp_path / "a" / "checkpoints" / "ckpt_0000004.pt")]) == 2


@pytest.mark.slow
def test_profile_and_frontier_take_a_transformers_model(tmp_path, capsys):
    import json

    from drat.cli import main

    shape = ["--hf", "llama", "--layers", "2", "--hidden", "64", "--heads", "4", "--vocab-size", "256",
             "--seq-len", "32", "--batch-size", "2", "--device", "cpu"]
    assert main(["profile", *shape, "--point", "drat-lam5", "--steps", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["hf"] == "llama" and any(s["decision"] == "recompute" for s in out["sites"])
    assert main(["bench", "frontier", *shape, "--steps", "2", "--warmup", "1", "--lambdas", "5",
                 "--only", "unwrapped,none,hf-checkpointing,drat-lam", "--out", str(tmp_path)]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "frontier.json").read_text())["rows"]}
    assert set(rows) == {"unwrapped", "none", "hf-checkpointing", "drat-lam5.0"}
    assert rows["drat-lam5.0"]["saved_activation_bytes"] < rows["none"]["saved_activation_bytes"]
    assert rows["none"]["saved_activation_bytes"] == rows["unwrapped"]["saved_activation_bytes"]
    assert main(["profile", *shape[:-2], "--hf", "mistral", "--device", "cpu"]) == 2
