"""DRAT on a model it did not build: `wrap` finds the sites of any `nn.Module` and plans them exactly.

DRAT's mechanism needs no change to a model's code, only the places where each site begins and
ends. `wrap` finds them in three ways:

* **Modules.** Norms, linear projections (`nn.Linear`, and the `Conv1D` of GPT-2 style models),
  activation modules and embeddings become sites: their instance `forward` is routed through the
  active runtime's `run(site, forward, input)`, which is where a plan stores or recomputes.
* **The attention core.** For Hugging Face `transformers` models a `drat` attention function is
  registered in the library's attention-function registry (`AttentionInterface`), and the model's
  config is pointed at it; it runs the implementation the model had (`sdpa`, `eager`, ...) as a site
  on the query, key and value. No class is patched.
* **The loss.** A `transformers` causal LM computes its loss in `loss_function`; `wrap` sets it to
  a site of its own, so the fp32 log-probabilities, the largest tensors of a step at a large
  vocabulary, belong to a site and can be recomputed.

Sites are numbered in forward order, found by one traced forward on an example input; the same
forward links each site to the sites whose outputs it reads (matched by storage), which is the
graph the cost model and the rebuild semantics use (`costs.py`, `recompute.py`). A site inside the
model's repeated layers (the largest `nn.ModuleList` of one class) belongs to that layer's block.

Tensors made outside every site (residual adds, rotary embeddings, a product of two sites) are owned
by no site: they are always stored, and a recomputed site whose input is such a tensor holds that
input. `unowned_share` reports what fraction of a step's saved bytes that is.

The traced forward also fixes the order in which sites run. A forward that runs them in another
order (Python control flow that depends on the data) cannot be replayed by a plan made for the
trace, and is refused with an error rather than run with a wrong plan.
"""

from __future__ import annotations

import contextvars
import fnmatch
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from .accounting import SavedTensorAccountant
from .sites import SiteKey
from .strategies import ActivationStrategy, NoneAC, PlanAC

# The forward in progress: (GatedModel, "trace" or "run", run function, checkpoint the attention core)
_DISPATCH: contextvars.ContextVar = contextvars.ContextVar("drat_wrap_dispatch", default=None)

ATTENTION_NAME = "drat"  # the name of DRAT's attention function in the transformers registry
_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Mish, nn.LeakyReLU, nn.ELU, nn.Softplus)


_NO_SITES = ("no site found in {}: it has no norm, linear, activation or embedding module; name its sites "
             "with sites=[module-name patterns]")


class WrapError(ValueError):
    """A model or site pattern `wrap` cannot plan; reported in one line."""


def _plain_run(site: int, fn: Callable, *inputs):
    return fn(*inputs)


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)) or type(m).__name__.endswith(("RMSNorm",
                                                                                                  "LayerNorm"))


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def _is_activation(m: nn.Module) -> bool:
    if isinstance(m, _ACTIVATIONS):
        return True
    # transformers' activation classes (GELUTanh, SiLUActivation, ...): parameter-free leaves
    return type(m).__module__.endswith("transformers.activations") and not list(m.parameters())


def _auto_kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.Embedding):
        return "embedding"
    if _is_norm(m):
        return "norm"
    if _is_linear(m):
        return "linear"
    if _is_activation(m):
        return "activation"
    return None


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "_attn_implementation") \
        and type(model).__module__.startswith("transformers.")


def _layer_list(model: nn.Module) -> tuple[str, int] | None:
    """(name, length) of the model's repeated layers: the longest ModuleList of one module class."""
    best = None
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) and len({type(c) for c in m}) == 1:
            if best is None or len(m) > best[1]:
                best = (name, len(m))
    return best


@dataclass
class _Site:
    """One site: where it runs (a module's forward, an attention module's core, the loss)."""

    name: str  # module path (+ ".core" for an attention core, "loss" for the loss)
    kind: str  # embedding | norm | linear | activation | attention | loss | pattern
    module: nn.Module | None


class WrappedGraph:
    """The site graph of a wrapped model, with the interface of `sites.SiteGraph`."""

    def __init__(self, keys: list[SiteKey], parents: list[list[int]], instances: list[int], n_layer: int):
        self.keys = keys
        self.parents = parents
        self.instances = instances
        self.n_layer = n_layer
        self.n_chunks = 1
        self.index = {(k.layer, k.name): i for i, k in enumerate(keys)}
        self.children: list[list[int]] = [[] for _ in keys]
        for i, ps in enumerate(parents):
            for p in ps:
                self.children[p].append(i)

    def __len__(self) -> int:
        return len(self.keys)

    def idx(self, layer: int | None, name: str) -> int:
        try:
            return self.index[(layer, name)]
        except KeyError:
            raise KeyError(f"no site {name!r} at layer {layer}") from None

    def decisions_from_names(self, recompute) -> list[bool]:
        """Store flags with every site whose name (or label) matches a pattern set to recompute."""
        def hit(k: SiteKey, p: str) -> bool:
            return fnmatch.fnmatchcase(k.name, p) or fnmatch.fnmatchcase(k.label(), p)

        patterns = list(recompute)
        for p in patterns:
            if not any(hit(k, p) for k in self.keys):
                raise ValueError(f"site pattern {p!r} matches no site of this model")
        return [not any(hit(k, p) for p in patterns) for k in self.keys]


class GatedModel(nn.Module):
    """A model whose sites a DRAT strategy plans. Call it exactly as the model it wraps: it returns
    the model's own outputs. `step_loss(idx, targets)` is the scalar loss DRAT's tools train on."""

    def __init__(self, model: nn.Module, sites: str | Sequence[str] = "auto", example_inputs=None):
        super().__init__()
        self.model = model
        self.hf = _is_hf(model)
        self.strategy = NoneAC()
        self._module_names = {id(m): n for n, m in model.named_modules()}
        self._sites = self._find_sites(sites)
        self._site_names = {id(s.module): s.name for s in self._sites}
        self._saved: list[tuple[object, str, object]] = []  # what unwrap() restores
        self._order: list[int] = []  # site indices in the traced call order
        self._pos = 0
        self._call: tuple[tuple, dict] = ((), {})
        try:
            self._install()
            self.graph = self._trace(example_inputs)
        except BaseException:
            self.unwrap()
            raise

    # ------------------------------------------------------------------ finding sites
    def _find_sites(self, sites) -> list[_Site]:
        patterns = [sites] if isinstance(sites, str) else list(sites)
        if not patterns:
            raise WrapError("no site patterns given; use sites='auto' or module-name patterns")
        named = [(n, m) for n, m in self.model.named_modules() if n]
        found: dict[str, _Site] = {}
        for p in patterns:
            hit = False
            if p == "auto":
                for n, m in named:
                    kind = _auto_kind(m)
                    if kind is not None:
                        found.setdefault(n, _Site(n, kind, m))
                        hit = True
                if self.hf:
                    hit = True  # the attention cores and the loss are found in the traced forward
            else:
                for n, m in named:
                    if fnmatch.fnmatchcase(n, p):
                        found.setdefault(n, _Site(n, _auto_kind(m) or "pattern", m))
                        hit = True
            if not hit and p == "auto":
                raise WrapError(_NO_SITES.format(type(self.model).__name__))
            if not hit:
                raise WrapError(f"site pattern {p!r} matches no module of {type(self.model).__name__}")
        # a site inside another site would be run twice over: keep the outermost
        names = sorted(found)
        keep = [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]
        out = [found[n] for n in keep]
        if not out and not self.hf:
            raise WrapError(_NO_SITES.format(type(self.model).__name__))
        return out

    def _install(self) -> None:
        for s in self._sites:
            s.module.forward = partial(_site_forward, self, s.module.forward)  # instance attribute
            self._saved.append((s.module, "forward", None))
        if self.hf:
            from transformers import AttentionInterface

            AttentionInterface.register(ATTENTION_NAME, _attention_site)
            _LIVE.append(self)
            self._hf_attn = self.model.config._attn_implementation
            self._saved.append((self.model.config, "_attn_implementation", self._hf_attn))
            self._set_attn(ATTENTION_NAME)
            had = "_loss_function" in self.model.__dict__
            self._saved.append((self.model, "_loss_function", self.model.__dict__.get("_loss_function")
                                if had else _MISSING))
            self._hf_loss = self.model.loss_function
            self.model.loss_function = partial(_loss_site, self)

    def _set_attn(self, name: str) -> None:
        for m in self.model.modules():  # the config of every sub-model (a composite config has several)
            cfg = getattr(m, "config", None)
            if cfg is not None and hasattr(cfg, "_attn_implementation"):
                cfg._attn_implementation = name

    def _trace(self, example_inputs) -> WrappedGraph:
        """One forward on the example: the order sites run in, how often, and who reads whom."""
        if example_inputs is None:
            if not self.hf:
                raise WrapError("example_inputs are needed to trace a model that is not a transformers model")
            vocab = self.model.config.vocab_size
            ids = torch.randint(0, vocab, (1, 8), generator=torch.Generator().manual_seed(0))
            ids = ids.to(next(self.model.parameters()).device)
            example_inputs = {"input_ids": ids, "labels": ids}
        if isinstance(example_inputs, dict):
            args, kwargs = (), example_inputs
        elif isinstance(example_inputs, torch.Tensor):
            args, kwargs = (example_inputs,), {}
        else:
            args, kwargs = tuple(example_inputs), {}
        order: list[str] = []  # site names in call order (a name per call)
        outputs: dict[int, str] = {}  # storage -> site name that produced it
        parents: dict[str, set[str]] = {}
        keep_alive: list[torch.Tensor] = []  # no output storage may be reused while the trace runs

        def tracer(site_name, fn, *inputs):
            order.append(site_name)
            ps = parents.setdefault(site_name, set())
            for x in inputs:
                if isinstance(x, torch.Tensor):
                    owner = outputs.get(x.untyped_storage().data_ptr())
                    if owner is not None and owner != site_name:
                        ps.add(owner)
            y = fn(*inputs)
            outputs[y.untyped_storage().data_ptr()] = site_name
            keep_alive.append(y)
            return y

        token = _DISPATCH.set((self, "trace", tracer, False))
        try:
            with torch.no_grad():
                self.model(*args, **kwargs)
        finally:
            _DISPATCH.reset(token)
        if not order:
            raise WrapError(f"no site of {type(self.model).__name__} ran in its forward; name its sites "
                            "with sites=[module-name patterns]")
        seen: list[str] = []
        for n in order:
            if n not in seen:
                seen.append(n)
        layers = _layer_list(self.model)
        keys, by_name = [], {}
        for i, n in enumerate(seen):
            layer, rel = None, n
            if layers is not None and n.startswith(layers[0] + "."):
                head, _, rest = n[len(layers[0]) + 1:].partition(".")
                if head.isdigit() and rest:
                    layer, rel = int(head), rest
            keys.append(SiteKey(i, layer, rel))
            by_name[n] = i
        graph_parents = [sorted(by_name[p] for p in parents.get(n, ()) if by_name[p] < i)
                         for i, n in enumerate(seen)]
        instances = [order.count(n) for n in seen]
        self._order = [by_name[n] for n in order]
        self._names = seen
        self._site_index = by_name
        return WrappedGraph(keys, graph_parents, instances, 0 if layers is None else layers[1])

    # ------------------------------------------------------------------ running
    def set_strategy(self, strategy) -> GatedModel:
        if isinstance(self.strategy, HFCheckpointing) and not isinstance(strategy, HFCheckpointing):
            self.model.gradient_checkpointing_disable()
        strategy.attach(self)
        self.strategy = strategy
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def flops_per_step(self, batch: int, seq: int) -> float:
        """Training FLOPs of a step from the sites' forward count (×3: forward, and backward at twice
        the forward), the measure MFU is reported against."""
        return 3.0 * sum(f for f, _ in self.site_flops_bytes(batch, seq, 2))

    def config_dict(self) -> dict:
        cfg = getattr(self.model, "config", None)
        return {"model": type(self.model).__name__,
                **({k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
                   if cfg is not None else {})}

    def sites_with_dropout(self) -> list[bool]:
        """Sites whose forward draws random numbers now (dropout in training)."""
        if not self.training:
            return [False] * len(self.graph)
        out = []
        for n in self._names:
            m = self._module_of(n)
            rng = m is not None and any(isinstance(d, nn.Dropout) and d.p > 0 for d in m.modules())
            if m is not None and n.endswith(".core"):
                rng = rng or float(getattr(m, "attention_dropout", 0.0) or 0.0) > 0
            out.append(rng)
        return out

    def _module_of(self, name: str) -> nn.Module | None:
        if name == "loss":
            return None
        path = name[: -len(".core")] if name.endswith(".core") else name
        return self.model.get_submodule(path)

    def forward(self, *args, **kwargs):
        self._call = (args, kwargs)
        try:
            idx = next(a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor))
        except StopIteration:
            raise WrapError("a wrapped model needs at least one tensor input") from None
        targets = kwargs.get("labels")
        try:
            return self.strategy.forward(self, idx, targets)
        finally:
            self._call = ((), {})

    def forward_sites(self, idx, targets, run: Callable = _plain_run, block_fn=None):
        """The wrapped model's own forward with its sites dispatched to `run` (a strategy's). Called
        by `forward` through the strategy, or directly by DRAT's profilers with (idx, targets)."""
        args, kwargs = self._call
        if not args and not kwargs:
            args, kwargs = self._loss_call(idx, targets)
        restore = []
        if block_fn is not None:
            if self.hf:  # a checkpointed layer re-runs its forward: a KV cache would grow twice
                kwargs = {**kwargs, "use_cache": False}
            restore = self._route_layers(block_fn, run)
        token = _DISPATCH.set((self, "run", run, False))
        self._pos = 0
        try:
            out = self.model(*args, **kwargs)
            if torch.is_grad_enabled() and self._pos != len(self._order):
                raise WrapError(f"the forward ran {self._pos} of the traced forward's {len(self._order)} "
                                "site calls: the sites that run depend on the data, which DRAT cannot replay "
                                "exactly")
            return out
        finally:
            _DISPATCH.reset(token)
            for m in restore:
                del m.forward

    def _route_layers(self, block_fn, run) -> list[nn.Module]:
        """Run each repeated layer through a strategy's `block_fn` (FullAC, SAC: checkpointed)."""
        layers = _layer_list(self.model)
        if layers is None:
            raise WrapError("this strategy checkpoints blocks, and the wrapped model has no repeated layers")
        mods = list(self.model.get_submodule(layers[0]))
        for m in mods:
            m.forward = partial(_layer_forward, self, m.forward, block_fn, run)
        return mods

    def _loss_call(self, idx, targets) -> tuple[tuple, dict]:
        """DRAT's (idx, targets) convention: targets[t] is the token after idx[t], already shifted, so
        a transformers model gets them as `shift_labels` (its loss would otherwise shift once more)."""
        if self.hf:
            return (), {"input_ids": idx, "labels": targets, "shift_labels": targets}
        return (idx, targets), {}

    def step_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of a batch, as DRAT's profilers and benchmarks call it."""
        args, kwargs = self._loss_call(idx, targets)
        out = self(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out
        return out.loss if hasattr(out, "loss") else out[0]

    def site_flops_bytes(self, batch: int, seq: int, act_bytes: int) -> list[tuple[float, float]]:
        """Forward (FLOPs, bytes moved) of each site on a (batch, seq) batch of token ids, counted from
        the shapes one traced forward sees: the CPU roofline's inputs for a wrapped model."""
        kinds = {s.name: s.kind for s in self._sites}
        out = [[0.0, 0.0] for _ in self._names]

        def counter(name, fn, *inputs):
            y = fn(*inputs)
            n_in = sum(x.numel() for x in inputs if isinstance(x, torch.Tensor))
            kind = kinds.get(name, "attention" if name.endswith(".core") else "loss")
            m = self._module_of(name)
            w = sum(p.numel() for p in m.parameters()) if m is not None and kind != "attention" else 0
            if kind == "linear":
                flops = 2.0 * y.numel() * w / max(y.shape[-1], 1)
            elif kind == "attention":  # q, k, v: (B, H, S, D); causal: half of 4·S²·D per head
                q = inputs[0]
                flops = 2.0 * q.shape[0] * q.shape[1] * q.shape[2] ** 2 * q.shape[3]
            elif kind == "loss":
                flops = 6.0 * n_in
            else:  # norms, activations, embeddings: a few ops per element
                flops = 8.0 * y.numel()
            i = self._site_index[name]
            out[i][0] += flops
            out[i][1] += act_bytes * (n_in + y.numel() + w)
            return y

        ids = torch.zeros(batch, seq, dtype=torch.long, device=next(self.model.parameters()).device)
        args, kwargs = self._loss_call(ids, ids)
        token = _DISPATCH.set((self, "trace", counter, False))
        try:
            with torch.no_grad():
                self.model(*args, **kwargs)
        finally:
            _DISPATCH.reset(token)
        return [(f, b) for f, b in out]

    def cheap_sites(self) -> list[bool]:
        """Sites that are cheap to rebuild (norms, activations): what the rebuild overhead is timed on."""
        kinds = {s.name: s.kind for s in self._sites}
        return [kinds.get(n) in ("norm", "activation") for n in self._names]

    def unowned_share(self, idx: torch.Tensor, targets: torch.Tensor) -> float:
        """Fraction of a training forward's saved bytes (under NoneAC) that no site owns."""
        saved = self.strategy
        self.strategy = PlanAC(stored=[True] * len(self.graph))
        try:
            with SavedTensorAccountant(self) as acct:
                loss = self.step_loss(idx, targets)
            by_site = acct.by_site()
            del loss
        finally:
            self.strategy = saved
        inputs = sum(t.untyped_storage().nbytes() for t in (idx, targets) if t is not None)
        unowned = max(by_site.get(-1, 0) - inputs, 0)  # the token ids are inputs, not activations
        total = sum(by_site.values()) - inputs
        return unowned / max(total, 1)

    def unwrap(self) -> nn.Module:
        """Restore the model exactly as it was found, and return it."""
        for obj, attr, old in reversed(self._saved):
            if attr == "forward":
                obj.__dict__.pop("forward", None)
            elif old is _MISSING:
                obj.__dict__.pop(attr, None)
            elif attr == "_attn_implementation":
                self._set_attn(old)
            else:
                setattr(obj, attr, old)
        self._saved = []
        if self in _LIVE:
            _LIVE.remove(self)
        return self.model


_MISSING = object()


def _dispatch_site(gm: GatedModel, name: str, fn: Callable, *inputs, checkpointed: bool = False):
    """Run site `name` under the forward in progress: the tracer, a plan's runtime, or plainly."""
    d = _DISPATCH.get()
    if d is None or d[0] is not gm:
        return fn(*inputs)  # a call outside a DRAT forward (generation, a user's own call)
    _, mode, run, _ = d
    if mode == "trace":
        return run(name, fn, *inputs)
    i = gm._site_index.get(name)
    if i is None:
        raise WrapError(f"site {name} ran but did not run when the model was traced: the forward depends "
                        "on the data, which DRAT cannot replay exactly")
    if torch.is_grad_enabled():
        expected = gm._order[gm._pos] if gm._pos < len(gm._order) else None
        if expected != i:
            want = "nothing" if expected is None else gm._names[expected]
            raise WrapError(f"site {name} ran where the traced forward ran {want}: the order of sites "
                            "depends on the data (Python control flow), which DRAT cannot replay exactly")
        gm._pos += 1
    if checkpointed:  # SelectiveAC: this site alone is checkpointed, outside the plan's runtime
        return torch.utils.checkpoint.checkpoint(fn, *inputs, use_reentrant=False)
    return run(i, fn, *inputs)


def _site_forward(gm: GatedModel, forward: Callable, *args, **kwargs):
    name = gm._site_names[id(forward.__self__)]
    if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
        if _DISPATCH.get() is None:
            return forward(*args, **kwargs)
        raise WrapError(f"site {name} takes one tensor input; call it as module(x), or leave it out of sites")
    return _dispatch_site(gm, name, forward, args[0])


def _layer_forward(gm: GatedModel, forward: Callable, block_fn, run, *args, **kwargs):
    """A repeated layer's forward under a block strategy: block_fn(block, x, run) with x the hidden
    states, `block` the rest of the call bound."""
    if args:
        x, rest = args[0], args[1:]
    else:
        kwargs = dict(kwargs)
        x, rest = kwargs.pop("hidden_states"), ()

    def block(h, run_=None, checkpoint_core: bool = False):
        if checkpoint_core:
            d = _DISPATCH.get()
            token = _DISPATCH.set((d[0], d[1], d[2], True))
            try:
                return forward(h, *rest, **kwargs)
            finally:
                _DISPATCH.reset(token)
        return forward(h, *rest, **kwargs)

    return block_fn(block, x, run)


def _attention_site(module, query, key, value, attention_mask, **kwargs):
    """DRAT's entry in the transformers attention registry: the model's own implementation, as a site."""
    d = _DISPATCH.get()
    gm = d[0] if d is not None else next((g for g in _LIVE if id(module) in g._module_names), None)
    if gm is None:
        raise WrapError(f"attention module {type(module).__name__} is not part of a wrapped model")
    impl = _original_attention(module, gm._hf_attn)

    def core(q, k, v):  # (B, heads, S, head_dim) each -> (B, S, heads, head_dim)
        return impl(module, q, k, v, attention_mask, **kwargs)[0]

    name = gm._module_names[id(module)] + ".core"
    return _dispatch_site(gm, name, core, query, key, value, checkpointed=d is not None and d[3]), None


_LIVE: list[GatedModel] = []  # wrapped transformers models: the registry's function finds its own here


def _original_attention(module, impl_name: str) -> Callable:
    """The attention implementation the model had before it was wrapped."""
    from transformers import AttentionInterface

    if impl_name == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return AttentionInterface._global_mapping[impl_name]


def _loss_site(gm: GatedModel, logits, labels, **kwargs):
    """The transformers loss (fp32 log-probabilities and all) as a site that reads the logits."""

    def loss(lg):
        return gm._hf_loss(logits=lg, labels=labels, **kwargs)

    return _dispatch_site(gm, "loss", loss, logits)


class HFCheckpointing(ActivationStrategy):
    """The baseline a transformers user has: `gradient_checkpointing_enable()`, every decoder layer
    checkpointed by the library itself (non-reentrant)."""

    name = "hf-checkpointing"

    def attach(self, model) -> None:
        if not getattr(model, "hf", False):
            raise ValueError("hf-checkpointing needs a wrapped transformers model")
        model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


HF_FAMILIES = ("llama", "gpt2", "qwen2")


def hf_model(family: str, n_layer: int, n_embd: int, n_head: int, vocab_size: int, seq_len: int,
             dropout: float = 0.0) -> nn.Module:
    """A transformers causal LM of one family, built from a config with random weights (never from
    the hub): what `--hf FAMILY` measures. Llama and Qwen2 get a SwiGLU width of about 8/3·h,
    rounded up to a multiple of 256."""
    if family not in HF_FAMILIES:
        raise ValueError(f"unknown --hf family {family!r}; choose one of {', '.join(HF_FAMILIES)}")
    for name, v in (("layers", n_layer), ("hidden", n_embd), ("heads", n_head), ("vocab-size", vocab_size),
                    ("seq-len", seq_len)):
        if v < 1:
            raise ValueError(f"--{name} must be positive, got {v}")
    if n_embd % n_head:
        raise ValueError(f"--hidden {n_embd} is not divisible by --heads {n_head}")
    try:
        import transformers
    except ImportError:
        raise ValueError("--hf needs transformers: pip install -e \".[hf]\"") from None
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=vocab_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                      n_positions=seq_len, resid_pdrop=dropout, embd_pdrop=dropout,
                                      attn_pdrop=dropout, attn_implementation="sdpa")
        return transformers.GPT2LMHeadModel(cfg)
    ffn = 256 * -(-8 * n_embd // 3 // 256)
    Config, Model = ((transformers.LlamaConfig, transformers.LlamaForCausalLM) if family == "llama"
                     else (transformers.Qwen2Config, transformers.Qwen2ForCausalLM))
    cfg = Config(vocab_size=vocab_size, hidden_size=n_embd, intermediate_size=ffn, num_hidden_layers=n_layer,
                 num_attention_heads=n_head, num_key_value_heads=n_head, max_position_embeddings=seq_len,
                 attention_dropout=dropout, tie_word_embeddings=False, attn_implementation="sdpa")
    return Model(cfg)


def wrap(model: nn.Module, sites: str | Sequence[str] = "auto", example_inputs=None) -> GatedModel:
    """Find the sites of `model` and return a `GatedModel` that DRAT's strategies plan.

    `sites`: "auto" (norms, linear projections, activations, embeddings, and for transformers models
    the attention cores and the loss), or a list of module-name patterns (fnmatch; "auto" may be one
    of them). `example_inputs`: a tensor, a tuple of positional inputs or a dict of keyword inputs
    for the one traced forward; optional for transformers models (a short random batch)."""
    if isinstance(model, GatedModel):
        raise WrapError("this model is already wrapped")
    if not isinstance(model, nn.Module):
        raise WrapError(f"wrap takes an nn.Module, got {type(model).__name__}")
    return GatedModel(model, sites, example_inputs)


def unwrap(gm: GatedModel) -> nn.Module:
    """Restore a wrapped model as it was found (forwards, attention implementation, loss)."""
    if not isinstance(gm, GatedModel):
        raise WrapError(f"unwrap takes what wrap returned, got {type(gm).__name__}")
    return gm.unwrap()
