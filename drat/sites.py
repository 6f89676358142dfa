"""Sites: the places in a GPT where a store-or-recompute decision is made.

A *site* produces one tensor that some backward formula needs (its *output*) plus the tensors
its own ops save internally (LayerNorm statistics, the attention log-sum-exp, dropout masks).
Storing a site keeps all of them until the backward pass; recomputing it drops them and rebuilds
them there by running the site's forward again on its inputs.

The sites of a pre-LN block and what each one owns (N = batch*seq tokens, h = hidden, f = MLP):

    x ─ attn_norm ─ qkv ─ attn_core ─┐
    │                                attn_out = x + drop(W_o o)      ─ owns x2   (N·h)
    └────────────────────────────────┘
    x2 ─ mlp_norm ─ mlp_up ─ mlp_act ─┐
    │                                 mlp_down = x2 + drop(W_d g)    ─ owns x_out (N·h)
    └─────────────────────────────────┘

plus the model-level sites `embed` (owns the first residual x0), `final_norm` and
`lm_head_loss` (a chunked cross-entropy; it owns the per-chunk log-probabilities).

The graph matters because recomputing a site whose input is not stored forces that input's
site to be recomputed too (see `costs.expected_recompute`).
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_SITES: tuple[str, ...] = (
    "attn_norm", "qkv", "attn_core", "attn_out", "mlp_norm", "mlp_up", "mlp_act", "mlp_down",
)
MODEL_SITES: tuple[str, ...] = ("embed", "final_norm", "lm_head_loss")
ALL_SITE_NAMES: tuple[str, ...] = ("embed",) + BLOCK_SITES + ("final_norm", "lm_head_loss")

# Parents of each block site, as (relative layer, site name); "x" is the block input.
_BLOCK_PARENTS: dict[str, tuple[str, ...]] = {
    "attn_norm": ("x",),
    "qkv": ("attn_norm",),
    "attn_core": ("qkv",),
    "attn_out": ("attn_core", "x"),
    "mlp_norm": ("attn_out",),
    "mlp_up": ("mlp_norm",),
    "mlp_act": ("mlp_up",),
    "mlp_down": ("mlp_act", "attn_out"),
}


@dataclass(frozen=True, order=True)
class SiteKey:
    """One site instance: `layer` is None for model-level sites."""

    order: int  # position in forward order; makes keys sort in execution order
    layer: int | None
    name: str

    def label(self) -> str:
        return self.name if self.layer is None else f"L{self.layer}.{self.name}"


class SiteGraph:
    """All site instances of a model with `n_layer` blocks, their parents and children.

    `instances[i]` is how many independent rebuild units a site has: 1 for every site except
    `lm_head_loss`, which is rebuilt chunk by chunk (`n_chunks` units).
    """

    def __init__(self, n_layer: int, n_chunks: int):
        self.n_layer = n_layer
        self.n_chunks = n_chunks
        keys: list[SiteKey] = [SiteKey(0, None, "embed")]
        for layer in range(n_layer):
            for name in BLOCK_SITES:
                keys.append(SiteKey(len(keys), layer, name))
        keys.append(SiteKey(len(keys), None, "final_norm"))
        keys.append(SiteKey(len(keys), None, "lm_head_loss"))
        self.keys = keys
        self.index = {(k.layer, k.name): i for i, k in enumerate(keys)}

        parents: list[list[int]] = [[] for _ in keys]
        for layer in range(n_layer):
            block_input = self.index[(None, "embed")] if layer == 0 else self.index[(layer - 1, "mlp_down")]
            for name, ps in _BLOCK_PARENTS.items():
                i = self.index[(layer, name)]
                parents[i] = [block_input if p == "x" else self.index[(layer, p)] for p in ps]
        last = self.index[(n_layer - 1, "mlp_down")] if n_layer > 0 else self.index[(None, "embed")]
        parents[self.index[(None, "final_norm")]] = [last]
        parents[self.index[(None, "lm_head_loss")]] = [self.index[(None, "final_norm")]]
        self.parents = parents
        self.children: list[list[int]] = [[] for _ in keys]
        for i, ps in enumerate(parents):
            for p in ps:
                self.children[p].append(i)
        self.instances = [n_chunks if k.name == "lm_head_loss" else 1 for k in keys]

    def __len__(self) -> int:
        return len(self.keys)

    def idx(self, layer: int | None, name: str) -> int:
        try:
            return self.index[(layer, name)]
        except KeyError:
            raise KeyError(f"no site {name!r} at layer {layer}; sites are {ALL_SITE_NAMES}") from None

    def decisions_from_names(self, recompute: set[str] | frozenset[str]) -> list[bool]:
        """Store flags with every instance of the named sites set to recompute."""
        unknown = set(recompute) - set(ALL_SITE_NAMES)
        if unknown:
            raise ValueError(f"unknown site(s) {sorted(unknown)}; valid: {ALL_SITE_NAMES}")
        return [k.name not in recompute for k in self.keys]


def flow_groups(site_blocks, n: int) -> list[int]:
    """A monotone group per site, in forward order, for the offloader's prefetch and wait: its
    block, −1 for model-level sites before the first block (the embedding), one past the last
    block for those after it (the LM head). `site_blocks` None: every site its own group."""
    if site_blocks is None:
        return list(range(n))
    blocks = [b for b in site_blocks if b is not None]
    last = max(blocks) + 1 if blocks else 0
    out, seen_block = [], False
    for b in site_blocks:
        seen_block = seen_block or b is not None
        out.append(b if b is not None else (last if seen_block else -1))
    return out
