"""Activation strategies: one interface, one small class hierarchy (torchtitan-style).

Every strategy runs the same `GPT.forward_sites`; they differ only in what autograd keeps.

    NoneAC       store everything (the baseline)
    FullAC       torch.utils.checkpoint around every block, non-reentrant
    SelectiveAC  Megatron-style: checkpoint only the attention core
    SAC          torchtitan-style op-level policy: save matmul and attention outputs
    PlanAC       explicit per-site decisions through DRAT's recompute hooks   ("fixed")
                 (store, recompute or offload to host memory per site)
    DRATGates    PlanAC whose decisions come from learned gates               ("drat")
    SaveOnCPU    PyTorch's save_on_cpu(pin_memory=True) over the whole forward ("save-on-cpu")
    OffloadAll   every site offloaded, with streams and prefetch (torchtune)   ("offload-all")
    FullOffload  checkpointed blocks whose inputs are offloaded (Megatron)     ("full-offload")

Use: `model.set_strategy(FullAC())`, then train as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .costs import SiteCosts, hold_bytes_by_block, plan_prefetch_blocks, rebuild_counts
from .offload import HostPool, Offloader
from .recompute import SiteRuntime, active_accountant, model_state_ptrs

STRATEGY_NAMES = ("none", "full", "selective", "sac", "fixed", "drat", "save-on-cpu", "offload-all",
                  "full-offload")
OFFLOAD_BASELINES = ("save-on-cpu", "offload-all", "full-offload")


class ActivationStrategy:
    name = "base"

    def attach(self, model) -> None:
        """Called by `GPT.set_strategy`; strategies that need the site graph validate here."""

    def forward(self, model, idx, targets):
        return model.forward_sites(idx, targets)

    def decisions(self, model) -> list[bool] | None:
        """Per-site store flags when the strategy is expressed in sites, else None (an offloaded
        site counts as stored: it is not rebuilt)."""
        return None

    def offload_decisions(self, model) -> list[bool] | None:
        """Per-site offload flags, where the strategy offloads by site."""
        return None

    def host_stats(self) -> dict:
        """Pinned host bytes and the last forward's transfers, for strategies that offload."""
        return {}

    def describe(self) -> dict:
        return {"strategy": self.name}


class NoneAC(ActivationStrategy):
    name = "none"


class FullAC(ActivationStrategy):
    name = "full"

    def forward(self, model, idx, targets):
        def block_fn(block, x, run):
            return checkpoint(block, x, use_reentrant=False)

        return model.forward_sites(idx, targets, block_fn=block_fn)


class SelectiveAC(ActivationStrategy):
    name = "selective"

    def forward(self, model, idx, targets):
        return model.forward_sites(idx, targets, block_fn=lambda b, x, run: b(x, run, checkpoint_core=True))


_aten = torch.ops.aten
_SAC_SAVE_OPS = {
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def _sac_policy(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in _SAC_SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _sac_context():
    """SAC's context_fn. A plain function, not a bound method: under torch.compile the
    checkpoint's context_fn is called again by the compiler, which drops a method's `self`."""
    fwd_mode, recompute_mode = create_selective_checkpoint_contexts(_sac_policy)
    acct = active_accountant()
    if acct is not None:  # the SAC cache bypasses saved-tensor hooks: count it directly
        acct.add_sac_storage(fwd_mode.storage)
    return fwd_mode, recompute_mode


class SAC(ActivationStrategy):
    """Op-level selective checkpointing per block: keep matmul and attention outputs. It also
    runs under torch.compile (the bench's `sac-compiled` row)."""

    name = "sac"

    def forward(self, model, idx, targets):
        def block_fn(block, x, run):
            return checkpoint(block, x, use_reentrant=False, context_fn=_sac_context)

        return model.forward_sites(idx, targets, block_fn=block_fn)


REBUILD_WARN_PER_SITE = 8  # predicted rebuilds per step, per site, above which a plan is flagged


def warn_on_rebuild_blowup(stored: Sequence[bool], graph) -> float:
    """Warn when a hand-written plan rebuilds far more sites per step than it has.

    A recomputed parent in another block is rebuilt transiently, once per use (recompute.py). A
    plan that recomputes the residual stream in every block (its `attn_out` and `mlp_down`) so
    rebuilds each block's stream once per path back to the last stored one: the count doubles per
    block, and on `large` (28 blocks) one step would take hours. The cost model predicts exactly
    this count (`costs.rebuild_counts`), so DRAT's fitted plans never go there; a fixed plan can.
    Returns the predicted rebuilds per step."""
    import warnings

    n = len(graph)
    zeros = [0.0] * n
    total = sum(rebuild_counts(list(stored), SiteCosts.build(graph, zeros, zeros, 1.0, "structure")))
    if total > REBUILD_WARN_PER_SITE * n:
        warnings.warn(f"this plan rebuilds about {total:.3g} sites per step for {n} sites: it recomputes "
                      "the residual stream across blocks, and each block's rebuild repeats the ones "
                      "before it. Store at least one residual-stream site (attn_out or mlp_down) every "
                      "few blocks, or use FullAC / a plan from DRATGates.",
                      stacklevel=4)  # the caller of model.set_strategy
    return total


_POOLS: dict[str, HostPool] = {}


def shared_pool(device) -> HostPool:
    """One pool of host buffers per device, shared by every offloading strategy of the process: a
    bench that alternates plans would otherwise pin one pool per plan. Each strategy's cap applies
    to its own requests (`Offloader.host_cap_bytes`)."""
    dev = torch.device(device)
    if str(dev) not in _POOLS:
        _POOLS[str(dev)] = HostPool(pin=dev.type == "cuda")
    return _POOLS[str(dev)]


class PlanAC(ActivationStrategy):
    """Explicit per-site decisions: `stored[i]` for every site of `model.graph` ("fixed").

    `offloaded[i]` moves site i's saved tensors to host memory between forward and backward
    (offload.py); the strategy keeps one `Offloader`, and with it one pool of pinned buffers,
    for all its steps. `host_cap_bytes` caps that pool."""

    name = "fixed"

    def __init__(self, stored: Sequence[bool] | None = None, recompute: Sequence[str] = (),
                 offloaded: Sequence[bool] | None = None, host_cap_bytes: float | None = None,
                 prefetch_blocks: int = 1):
        self._stored = None if stored is None else [bool(s) for s in stored]
        self._recompute = frozenset(recompute)
        self._offloaded = None if offloaded is None or not any(offloaded) else [bool(o) for o in offloaded]
        if self._offloaded is not None and self._stored is not None:
            if len(self._offloaded) != len(self._stored):
                raise ValueError("offloaded and stored flags differ in length")
            # offload wins over a stored flag: an offloaded site is one whose tensors are kept, elsewhere
            self._stored = [s or o for s, o in zip(self._stored, self._offloaded)]
        self.host_cap_bytes = host_cap_bytes
        self.prefetch_blocks = prefetch_blocks
        self._hold_costs: SiteCosts | None = None  # set by plan_prefetch
        self._hold_cache: dict = {}
        self.offloader: Offloader | None = None
        self.last_runtime: SiteRuntime | None = None

    def attach(self, model) -> None:
        if self._stored is not None and len(self._stored) != len(model.graph):
            raise ValueError(f"plan has {len(self._stored)} decisions, model has {len(model.graph)} sites")
        model.graph.decisions_from_names(self._recompute)  # validates names
        if self._offloaded is not None and len(self._offloaded) != len(model.graph):
            raise ValueError(f"plan has {len(self._offloaded)} offload flags, model has "
                             f"{len(model.graph)} sites")
        warn_on_rebuild_blowup(self.decisions(model), model.graph)

    def offload_decisions(self, model) -> list[bool] | None:
        return None if self._offloaded is None else list(self._offloaded)

    def plan_prefetch(self, costs: SiteCosts | None, offloaded: Sequence[bool] | None) -> int:
        """Prefetch as many blocks ahead as `costs.plan_prefetch_blocks` plans for the offload
        flags `offloaded` (the offloader's default, 1, without a link or flags); the distance.
        On a link that runs beside compute, every forward then also gets the allowance of copies
        out per block for that step's plan (`costs.hold_bytes_by_block`)."""
        d = 1
        if costs is not None and costs.link is not None and offloaded is not None and any(offloaded):
            d = plan_prefetch_blocks([bool(o) for o in offloaded], costs)
        self.prefetch_blocks = d
        if self.offloader is not None:
            self.offloader.prefetch_blocks = d
        # with a link that runs beside compute, every forward also gets its plan's allowance of
        # copies out held per block (`costs.hold_bytes_by_block`), from these costs
        asynchronous = costs is not None and costs.link is not None and not costs.link.get("synchronous")
        self._hold_costs = costs if asynchronous else None
        self._hold_cache = {}
        return d

    def _hold_bytes(self, stored: list[bool], offloaded: list[bool]) -> dict[int, float] | None:
        costs = self._hold_costs
        if costs is None or len(costs) != len(stored):
            return None
        key = (tuple(stored), tuple(offloaded))
        if key not in self._hold_cache:
            if len(self._hold_cache) > 64:  # sampled training plans: keep the cache small
                self._hold_cache.clear()
            self._hold_cache[key] = hold_bytes_by_block(stored, offloaded, costs)
        return self._hold_cache[key]

    def _offloader_for(self, device: torch.device) -> Offloader:
        if self.offloader is None or self.offloader.device != torch.device(device):
            self.offloader = Offloader(device, shared_pool(device), prefetch_blocks=self.prefetch_blocks,
                                       host_cap_bytes=self.host_cap_bytes)
        return self.offloader

    def host_stats(self) -> dict:
        off = self.offloader
        if off is None:
            return {}
        return {"host_pinned_bytes": off.pool.total_bytes,
                "host_peak_in_use_bytes": off.pool.peak_in_use_bytes,
                "host_allocs": off.pool.n_allocs, "d2h_bytes": off.stats.d2h_bytes,
                "h2d_bytes": off.stats.h2d_bytes, "reloads_on_demand": off.stats.reloads_on_demand,
                "late_reloads": off.stats.late_reloads, "prefetch_blocks": off.prefetch_blocks}

    def decisions(self, model) -> list[bool]:
        if self._stored is not None:
            return list(self._stored)
        return model.graph.decisions_from_names(self._recompute)

    def forward(self, model, idx, targets):
        stored = self.decisions(model)
        offloaded = self.offload_decisions(model)
        if all(stored) and offloaded is None and active_accountant() is None:
            return model.forward_sites(idx, targets)  # nothing to recompute: no hooks at all
        if torch.compiler.is_compiling():
            raise RuntimeError(f"strategy {self.name!r} recomputes through saved-tensor hooks, which "
                               "torch.compile cannot trace; use CompiledPlanAC under torch.compile "
                               "(offloading is eager-only)")
        offloader = None
        if offloaded is not None:
            offloader = self._offloader_for(idx.device)
            offloader.hold_bytes = self._hold_bytes(stored, offloaded)
        rt = SiteRuntime(stored, model.sites_with_dropout(), idx.device, model_state_ptrs(model),
                         site_blocks=[k.layer for k in model.graph.keys], offloaded=offloaded,
                         offloader=offloader)
        rt.register_inputs(idx, targets)
        self.last_runtime = rt
        try:
            with rt.hooks():
                out = model.forward_sites(idx, targets, run=rt.run)
        except BaseException:
            rt.end_forward(failed=True)  # also after an exception: the registry must not pin tensors
            raise
        rt.end_forward()
        return out

    def describe(self) -> dict:
        return {"strategy": self.name, "recompute": sorted(self._recompute)}


class DRATGates(PlanAC):
    """Learned gates decide per site. In training the decision is a straight-through sample of
    the gate (`GateBank.sample`), drawn from the gates' own generator so the model's RNG stream,
    and with it every dropout mask, is the same as under `none`."""

    name = "drat"

    def __init__(self, gates, sample: bool = False, host_cap_bytes: float | None = None,
                 prefetch_blocks: int = 1):
        super().__init__(host_cap_bytes=host_cap_bytes, prefetch_blocks=prefetch_blocks)
        self.gates = gates
        self.sample = sample
        self._hard: torch.Tensor | None = None
        self._pinned: list[bool] | None = None
        self._offload: list[bool] | None = None

    def attach(self, model) -> None:
        if self.gates.n_sites != len(model.graph):
            raise ValueError(f"gate bank has {self.gates.n_sites} gates, model has {len(model.graph)} sites")

    def pin(self, hard: torch.Tensor | None) -> None:
        """Run the following forwards with these store flags instead of drawing new ones.

        A trainer draws one straight-through sample per step, differentiates its soft part through
        the resource loss and pins its hard part here, so the forward executes exactly the plan the
        gate gradient is about (the same plan for every micro-batch). `None` unpins."""
        if hard is not None and hard.shape[0] != self.gates.n_sites:
            raise ValueError(f"pinned plan has {hard.shape[0]} decisions, gate bank has {self.gates.n_sites}")
        if hard is None:
            self._pinned = None
        elif hard.dim() == 2:  # three arms: one-hot rows of store / recompute / offload
            h = hard.detach() > 0.5
            self._pinned = [bool(v) for v in (~h[:, 1]).tolist()]
            self._offload = [bool(v) for v in h[:, 2].tolist()]
        else:
            self._pinned = [bool(v) for v in (hard.detach() > 0.5).tolist()]

    def decisions(self, model) -> list[bool]:
        if self._pinned is not None:
            return list(self._pinned)
        with torch.no_grad():
            hard = self.gates.sample_hard() if self.sample else self.gates.hard()
        self._hard = hard
        if hard.dim() == 2:
            self._offload = [bool(v) for v in hard[:, 2].tolist()]
            return [bool(v) for v in (~hard[:, 1]).tolist()]
        if self.gates.arms == 3:
            self._offload = [bool(v) for v in self.gates.hard_offload().tolist()]
        return [bool(v) for v in hard.tolist()]

    def offload_decisions(self, model) -> list[bool] | None:
        """The offload flags of the plan `decisions` returned last (three-arm banks only)."""
        if self.gates.arms == 2 or self._offload is None or not any(self._offload):
            return None
        return list(self._offload)

    def describe(self) -> dict:
        return {"strategy": self.name, "temperature": float(self.gates.tau)}


class OffloadAll(PlanAC):
    """Every site offloaded, reloaded with prefetch on its own stream (torchtune's
    `OffloadActivations`, expressed in DRAT's sites): nothing is chosen."""

    name = "offload-all"

    def attach(self, model) -> None:
        n = len(model.graph)
        self._stored, self._offloaded = [True] * n, [True] * n

    def describe(self) -> dict:
        return {"strategy": self.name}


class FullOffload(PlanAC):
    """Checkpointed blocks whose inputs are offloaded (Megatron-LM's fine-grained offloading of
    module inputs): each block's sites are recomputed but its output, the next block's input,
    which goes to host memory; the embedding's output, block 0's input, too."""

    name = "full-offload"

    def attach(self, model) -> None:
        keys = model.graph.keys
        if not all(hasattr(k, "name") for k in keys) or not any(k.name == "mlp_down" for k in keys):
            raise ValueError("full-offload needs DRAT's GPT, whose block outputs are sites")
        ins = {"embed", "mlp_down"}
        self._offloaded = [k.name in ins for k in keys]
        self._stored = [k.layer is None or k.name in ins for k in keys]

    def describe(self) -> dict:
        return {"strategy": self.name}


class SaveOnCPU(ActivationStrategy):
    """PyTorch's `torch.autograd.graph.save_on_cpu(pin_memory=True)` over the whole forward: every
    saved tensor (parameters' casts included) copied to pinned memory synchronously."""

    name = "save-on-cpu"

    def forward(self, model, idx, targets):
        with torch.autograd.graph.save_on_cpu(pin_memory=idx.device.type == "cuda"):
            return model.forward_sites(idx, targets)


class CompiledPlanAC(ActivationStrategy):
    """Site decisions for `torch.compile`: each block is a checkpoint region whose SAC policy is
    derived from the gates. Under compile the dispatch-mode policy runs once, at trace time, so
    it costs nothing per step, and the partitioner fuses the recomputation into its kernels.

    The policy sees aten ops, not sites, so `prepare` records once (eagerly, on a real batch and
    under the training autocast) which op occurrence of a block belongs to which site and which
    op produces the site's output. Then, per block:
      stored site      its output op is MUST_SAVE, its other ops are left to the partitioner,
      recomputed site  every op is MUST_RECOMPUTE.
    A recomputed LM head runs each loss chunk in its own checkpoint. `embed` and `final_norm`
    are always stored here: their outputs are the inputs of checkpoint regions, which a region
    keeps whatever the plan says, so a recompute decision for them could not be executed."""

    name = "drat-compiled"
    ALWAYS_STORED = ("embed", "final_norm")

    def __init__(self, stored: Sequence[bool], offloaded: Sequence[bool] | None = None):
        self.stored = [bool(s) for s in stored]
        self._requested = list(self.stored)
        # offloaded sites: their output op is CPU_OFFLOAD, the compiler's own activation offloading
        # (torch._functorch.config.enable_activation_offloading; see `compiler_offloading`)
        self.offloaded = [bool(o) for o in offloaded] if offloaded is not None else [False] * len(self.stored)
        if any(self.offloaded) and not hasattr(CheckpointPolicy, "MUST_CPU_OFFLOAD"):
            raise RuntimeError(f"torch {torch.__version__} has no compiler activation offloading "
                               "(CheckpointPolicy.MUST_CPU_OFFLOAD); offload is eager-only here")
        self.stored = [s or o for s, o in zip(self.stored, self.offloaded)]
        self.op_sites: list[tuple] | None = None  # (op, site name, is_output) for a block's ops

    def attach(self, model) -> None:
        if len(self.stored) != len(model.graph):
            raise ValueError(f"plan has {len(self.stored)} decisions, model has {len(model.graph)} sites")
        for i, k in enumerate(model.graph.keys):
            if k.name in self.ALWAYS_STORED:
                self.stored[i] = True

    def decisions(self, model) -> list[bool]:
        """The decisions actually executed (see ALWAYS_STORED)."""
        return list(self.stored)

    def prepare(self, model, idx, autocast) -> CompiledPlanAC:
        from torch.utils._python_dispatch import TorchDispatchMode

        current: list[str | None] = [None]
        seq: list[list] = []

        class Recorder(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if not func.is_view and current[0] is not None:
                    first = out[0] if isinstance(out, (tuple, list)) else out
                    ptr = first.untyped_storage().data_ptr() if isinstance(first, torch.Tensor) else None
                    seq.append([func, current[0], ptr])
                return out

        block = model.blocks[0]
        names = {i: k.name for i, k in enumerate(model.graph.keys)}

        def run(site, fn, *inputs):
            current[0] = names[site]
            y = fn(*inputs)
            current[0] = None
            # the site's output op: its last non-view op that wrote the output's storage
            for ent in reversed(seq):
                if ent[1] == names[site] and ent[2] == y.untyped_storage().data_ptr():
                    ent.append(True)
                    break
            return y

        with torch.no_grad(), autocast:
            x = model.embed(idx)
        x.requires_grad_(True)
        with autocast, Recorder():
            block(x, run)
        self.op_sites = [(e[0], e[1], len(e) > 3) for e in seq]  # [op, site, ptr(, True if output)]
        self._ctx_fns = [self._make_context_fn(b.layer, model.graph) for b in model.blocks]
        return self

    def _make_context_fn(self, layer: int, graph):
        """A plain function per layer: dynamo needs `context_fn` to be a constant it can hold,
        which a bound method or a partial of one is not (it would break the graph per block)."""
        table: dict = {}
        for op, site, is_out in self.op_sites:
            table.setdefault(op, []).append((graph.idx(layer, site), is_out))
        stored, offloaded = self.stored, self.offloaded

        def context_fn():
            counts: dict = {}

            def policy(ctx, op, *args, **kwargs):
                key = (ctx.is_recompute, op)
                k = counts.get(key, 0)
                counts[key] = k + 1
                entries = table.get(op)
                if entries is None or k >= len(entries):
                    return CheckpointPolicy.PREFER_RECOMPUTE
                site, is_out = entries[k]
                if not stored[site]:
                    return CheckpointPolicy.MUST_RECOMPUTE
                if is_out and offloaded[site]:
                    return CheckpointPolicy.MUST_CPU_OFFLOAD
                return CheckpointPolicy.MUST_SAVE if is_out else CheckpointPolicy.PREFER_RECOMPUTE

            return create_selective_checkpoint_contexts(policy)

        return context_fn

    def forward(self, model, idx, targets):
        if self.op_sites is None:
            raise RuntimeError("call CompiledPlanAC.prepare(model, idx, autocast) before the first step")
        head = model.graph.idx(None, "lm_head_loss")

        def run(site, fn, *inputs):
            if site == head and not self.stored[head]:
                return checkpoint(fn, *inputs, use_reentrant=False)
            return fn(*inputs)

        ctx_fns = self._ctx_fns
        # A block that stores every site is no checkpoint region at all: compiled as is, it gets
        # the partitioner's default plan, so store-all DRAT compiles to what plain torch.compile
        # (compile-budget 1.0) runs, instead of a region whose MUST_SAVE marks constrain fusion.
        keys = model.graph.keys
        kept = [s and not o for s, o in zip(self.stored, self.offloaded)]
        plain = {b.layer for b in model.blocks
                 if all(kept[i] for i, k in enumerate(keys) if k.layer == b.layer)}

        def block_fn(block, x, run):
            if block.layer in plain:
                return block(x, run)
            return checkpoint(block, x, run, use_reentrant=False, context_fn=ctx_fns[block.layer])

        return model.forward_sites(idx, targets, run=run, block_fn=block_fn)


def compiler_offloading(bandwidth_gbps: float = 50.0):
    """The compiler's activation offloading, on for a `torch.compile` of a CompiledPlanAC with
    offloaded sites: copies on their own stream, waits sunk to first use, reloads prefetched by
    the bandwidth given (1e9 bytes/s). A context manager over torch._functorch.config."""
    import torch._functorch.config as fc

    want = {"enable_activation_offloading": True, "activation_offload_separate_stream": True,
            "activation_offload_sink_wait": True, "activation_reload_prefetch": True,
            "activation_offload_cpu_gpu_bw": float(bandwidth_gbps)}
    # torch 2.11 has the offloading and its streams, not yet every knob: set those it has
    return fc.patch(**{k: v for k, v in want.items() if hasattr(fc, k)})


def make_strategy(name: str, **kw) -> ActivationStrategy:
    """Build a baseline by name; `fixed` takes `recompute=[site names]` or `stored=[bools]`."""
    table = {"none": NoneAC, "full": FullAC, "selective": SelectiveAC, "sac": SAC, "fixed": PlanAC,
             "save-on-cpu": SaveOnCPU, "offload-all": OffloadAll, "full-offload": FullOffload}
    if name == "drat":
        raise ValueError("build DRATGates(GateBank(...)) directly; it needs trained gates")
    if name not in table:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    return partial(table[name], **kw)() if kw else table[name]()
