"""A GPT decoder whose every activation site can be stored or recomputed.

The model itself is plain: pre-LN blocks, causal SDPA attention, GELU (or SwiGLU) MLP, dropout,
optional weight tying, and a chunked LM-head cross-entropy. What makes it DRAT is that each site
(see `sites.py`) is called through `run(site_index, fn, *inputs)`, which an activation strategy
(`strategies.py`) can turn into a store-or-recompute decision. Without a strategy the call is a
plain `fn(*inputs)`, so the ungated model pays nothing.

The loss is computed in the same chunks under every strategy: summing a chunked loss in one run
and an unchunked one in another would change rounding and break bitwise exactness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sites import SiteGraph
from .strategies import NoneAC
from .validate import POSITIVE_INT


@dataclass
class GPTConfig:
    vocab_size: int = 32000
    block_size: int = 2048  # longest sequence the position table covers
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp: str = "gelu"  # "gelu" or "swiglu"
    dropout: float = 0.0
    tie_weights: bool = True
    loss_chunks: int = 8  # the LM head never holds more than 1/loss_chunks of the logits

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            POSITIVE_INT.check(getattr(self, name), name, ValueError)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.loss_chunks < 1:
            raise ValueError("loss_chunks must be >= 1")

    @property
    def mlp_hidden(self) -> int:
        if self.mlp == "gelu":
            return 4 * self.n_embd
        return 64 * math.ceil(8 * self.n_embd / 3 / 64)  # SwiGLU keeps ~the GELU parameter count

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes at vocabulary 32,000; nominal parameter counts are checked by tests (±15%).
SIZES: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=1024),
    "small": GPTConfig(n_layer=12, n_head=8, n_embd=512, block_size=2048),
    "medium": GPTConfig(n_layer=18, n_head=12, n_embd=768, block_size=2048),
    "large": GPTConfig(n_layer=28, n_head=16, n_embd=1024, block_size=4096),
}
NOMINAL_PARAMS: dict[str, float] = {"tiny": 5e6, "small": 50e6, "medium": 150e6, "large": 400e6}


# The model-shape flags of every command, defined here once: (flag, dest, type, help). `dest` is the
# GPTConfig field a value overrides (`size` picks the named size the others override); the type is
# the rule of drat.validate that every command applies to it.
SHAPE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--size", "size", str, "tiny | small | medium | large"),
    ("--layers", "n_layer", POSITIVE_INT, "override the size's number of layers"),
    ("--hidden", "n_embd", POSITIVE_INT, "override the size's hidden width"),
    ("--heads", "n_head", POSITIVE_INT, "override the size's number of attention heads"),
    ("--vocab-size", "vocab_size", POSITIVE_INT,
     "vocabulary (default: the size's 32000, or the tokenizer's)"),
)


def add_shape_args(p, suppress: bool = False) -> None:
    """Add SHAPE_FLAGS to an argparse parser. With `suppress`, a flag not given leaves no attribute
    (so it cannot override a config file); otherwise --size defaults to tiny and the rest to None."""
    for flag, dest, typ, help_ in SHAPE_FLAGS:
        if suppress:
            p.add_argument(flag, dest=dest, type=typ, help=help_)
        else:
            p.add_argument(flag, dest=dest, type=typ, default="tiny" if dest == "size" else None, help=help_)


def shape_overrides(args) -> dict:
    """The GPTConfig overrides SHAPE_FLAGS gave (`size` excluded), as config_for keyword arguments."""
    return {dest: getattr(args, dest, None) for _, dest, _, _ in SHAPE_FLAGS if dest != "size"}


def config_for(size: str, **overrides) -> GPTConfig:
    """The named size with overrides applied (e.g. vocab_size from the tokenizer)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(SIZES[size], **overrides)


def _cast_for_autocast(t: torch.Tensor) -> torch.Tensor:
    # Under autocast the consumer matmul would save a bf16 *copy* of this fp32 tensor. Casting
    # here, inside the site, makes the saved tensor the site's own output (same values: the cast
    # is the one autocast would do), so storing or recomputing the site frees the bytes really held.
    dev = t.device.type
    if torch.is_autocast_enabled(dev):
        return t.to(torch.get_autocast_dtype(dev))
    return t


def plain_run(site: int, fn: Callable, *inputs: torch.Tensor) -> torch.Tensor:
    return fn(*inputs)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head = cfg.n_head
        f = cfg.mlp_hidden
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.swiglu = cfg.mlp == "swiglu"
        self.c_fc = nn.Linear(cfg.n_embd, 2 * f if self.swiglu else f, bias=False)
        self.c_fc2 = nn.Linear(f, cfg.n_embd, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.site_ids: dict[str, int] = {}  # filled by GPT: site name -> SiteGraph index

    # --- the eight sites, each a function of site outputs only -------------------------
    def attn_norm(self, x):  # x: (B, S, h) fp32 residual
        return _cast_for_autocast(self.ln_1(x))

    def qkv(self, n1):  # -> (B, S, 3h)
        return self.c_attn(n1)

    def attn_core(self, qkv):  # -> (B, S, h)
        B, S, _ = qkv.shape
        q, k, v = qkv.view(B, S, 3, self.n_head, -1).unbind(2)  # each (B, S, nh, hd)
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )  # (B, nh, S, hd); flash kernels lay it out as (B, S, nh, hd), so the reshape is free
        return o.transpose(1, 2).reshape(B, S, -1)

    def attn_out(self, o, x):  # -> x2 = x + drop(W_o o), (B, S, h)
        return x + self.drop(self.c_proj(o))

    def mlp_norm(self, x2):
        return _cast_for_autocast(self.ln_2(x2))

    def mlp_up(self, n2):  # -> (B, S, f) or (B, S, 2f) for SwiGLU
        return self.c_fc(n2)

    def mlp_act(self, u):  # -> (B, S, f)
        if self.swiglu:
            a, b = u.chunk(2, dim=-1)
            return F.silu(a) * b
        return F.gelu(u, approximate="tanh")

    def mlp_down(self, g, x2):  # -> block output x2 + drop(W_d g)
        return x2 + self.drop(self.c_fc2(g))

    def forward(self, x, run: Callable = plain_run, checkpoint_core: bool = False):
        s = self.site_ids
        n1 = run(s["attn_norm"], self.attn_norm, x)
        qkv = run(s["qkv"], self.qkv, n1)
        if checkpoint_core:  # Megatron-style selective recomputation of the attention core
            o = torch.utils.checkpoint.checkpoint(self.attn_core, qkv, use_reentrant=False)
        else:
            o = run(s["attn_core"], self.attn_core, qkv)
        x2 = run(s["attn_out"], self.attn_out, o, x)
        n2 = run(s["mlp_norm"], self.mlp_norm, x2)
        u = run(s["mlp_up"], self.mlp_up, n2)
        g = run(s["mlp_act"], self.mlp_act, u)
        return run(s["mlp_down"], self.mlp_down, g, x2)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.graph = SiteGraph(cfg.n_layer, cfg.loss_chunks)
        for block in self.blocks:
            block.site_ids = {k.name: i for i, k in enumerate(self.graph.keys) if k.layer == block.layer}
        self.strategy = NoneAC()
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("c_proj.weight", "c_fc2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def sites_with_dropout(self) -> list[bool]:
        """Sites whose forward draws random numbers *now*: read from the live modules at every
        forward, so dropout switched on after construction is still replayed exactly."""
        if not self.training:
            return [False] * len(self.graph)
        out = []
        for k in self.graph.keys:
            if k.name == "embed":
                out.append(self.drop.p > 0)
            elif k.name in ("attn_out", "mlp_down"):
                out.append(self.blocks[k.layer].drop.p > 0)
            else:
                out.append(False)
        return out

    def num_params(self, exclude_positions: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if exclude_positions else n

    def set_strategy(self, strategy) -> GPT:
        strategy.attach(self)
        self.strategy = strategy
        return self

    # --- model-level sites --------------------------------------------------------------
    def embed(self, idx):  # idx: (B, S) int64 -> x0: (B, S, h)
        pos = torch.arange(idx.size(1), device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def final_norm(self, x):
        return _cast_for_autocast(self.ln_f(x))

    def head_chunk(self, h, y):  # h: (n, h) chunk of final hidden states, y: (n,) targets
        logits = self.lm_head(h)  # (n, V): only one chunk of logits exists at a time
        return F.cross_entropy(logits.float(), y, ignore_index=-1, reduction="sum")

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token loss over `targets != -1`; without targets, last-position logits."""
        B, S = idx.shape
        if S > self.cfg.block_size:
            raise ValueError(f"sequence length {S} exceeds block_size {self.cfg.block_size}")
        if targets is None:
            return self._logits_last(idx)
        return self.strategy.forward(self, idx, targets)

    def step_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch: what DRAT's profilers and benchmarks call on any model
        (a wrapped model's `step_loss` picks the loss out of its own outputs)."""
        return self(idx, targets)

    def forward_sites(self, idx, targets, run: Callable = plain_run, block_fn=None) -> torch.Tensor:
        """The forward pass written once for every strategy; strategies pick `run`/`block_fn`."""
        g = self.graph
        x = run(g.idx(None, "embed"), self.embed, idx)
        for block in self.blocks:
            x = block(x, run) if block_fn is None else block_fn(block, x, run)
        h = run(g.idx(None, "final_norm"), self.final_norm, x)
        h2, y2 = h.reshape(-1, h.size(-1)), targets.reshape(-1)  # (N, h), (N,)
        head = g.idx(None, "lm_head_loss")
        total = None
        # exactly loss_chunks pieces (the cost model counts that many rebuild units)
        for hc, yc in zip(h2.tensor_split(self.cfg.loss_chunks), y2.tensor_split(self.cfg.loss_chunks)):
            part = run(head, self.head_chunk, hc, yc)
            total = part if total is None else total + part
        return total / (y2 != -1).sum().clamp(min=1)

    @torch.no_grad()
    def _logits_last(self, idx):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x[:, -1, :]))  # (B, V)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None):
        for _ in range(max_new_tokens):
            ctx = idx[:, -self.cfg.block_size:]
            logits = self._logits_last(ctx) / max(temperature, 1e-6)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
