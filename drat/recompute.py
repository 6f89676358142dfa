"""The store/recompute mechanism: saved-tensor hooks with recompute recipes.

Autograd calls a *pack* hook for every tensor a backward formula saves, and an *unpack* hook when
the backward needs it again. `SiteRuntime` owns both hooks for one forward pass:

* Every saved tensor is attributed to an owner site: the site whose *output* it is (matched by
  storage, so views such as q/k/v of the fused qkv output resolve too), else the site whose
  forward is running (an *internal*: LayerNorm stats, attention log-sum-exp, dropout masks,
  autocast weight copies). Parameters and registered model inputs are never activations.
* A stored owner: the tensor is kept as is.
* An offloaded owner: the tensor's storage is copied to host memory right after the site runs and
  reloaded ahead of its use in backward (`offload.Offloader`); for the recompute recursion the
  site counts as available, like a stored one, and a recipe that needs it as input reloads it.
* A recomputed owner: pack returns a small reference instead, and the tensor is freed when the
  forward no longer needs it. On unpack the site is re-run (same inputs, same kernels, same RNG
  state, same autocast state) and the matching tensor is returned. That makes recomputation
  bitwise exact by construction.

Rebuild semantics (the cost model in `costs.py` mirrors them exactly):
* The first unpack that needs a recomputed site rebuilds it with its internals captured (its
  *own* rebuild); the result is cached until every saved slot that refers to the site has been
  unpacked.
* If an input of an own rebuild is a recomputed site of the *same block* whose slots are still
  pending, that parent gets its own rebuild now (cached, and reused when its slots come up). A
  chain of recomputed sites inside a block is so rebuilt once, like a checkpointed block, and at
  most about one block of rebuilt tensors is alive beyond what the unmemoised scheme holds.
* Any other recomputed input (a parent in another block, or any parent of a transient rebuild)
  is rebuilt *transiently* for this one use and dropped at once: memoising across blocks would
  rebuild a whole recomputed residual stream at the first unpack and hold it, undoing the plan's
  memory saving. The parent is paid again, which is why the expected recompute cost is
  multilinear in the gates rather than a sum.

The hooks run once per *saved tensor*, never per op (docs/design.md): there is no dispatch mode. A model
whose sites are all stored runs without the hooks at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from .offload import Offloader, OffloadRef
from .sites import flow_groups

# The accountant of an enclosing `SavedTensorAccountant`, if any (see accounting.py).
_ACCOUNTANT: contextvars.ContextVar[Any] = contextvars.ContextVar("drat_accountant", default=None)


def active_accountant():
    return _ACCOUNTANT.get()


def is_parameter(t: torch.Tensor, state_ptrs: frozenset[int] | set[int] = frozenset()) -> bool:
    """A parameter or a view of one (linear saves `weight.t()`): model state, not activation.

    `state_ptrs` holds the storages of the model's parameters and buffers, which also catches
    frozen weights (requires_grad=False)."""
    base = t._base if t._base is not None else t
    if base.requires_grad and base.is_leaf:
        return True
    return bool(state_ptrs) and t.untyped_storage().data_ptr() in state_ptrs


PROFILE_REBUILDS = False  # set by `drat bench trace`: wrap each rebuild in a profiler range


def model_state_ptrs(model: torch.nn.Module) -> set[int]:
    # FSDP2's sharded parameters (DTensors) have no storage to point at; what ops save is the
    # unsharded copy gathered at forward time, a leaf that requires grad (caught without this set).
    # A plain walk (see _params_of): `model.parameters()` cost ~2 ms per forward on the host.
    dtensor = _dtensor_type()
    return {t.untyped_storage().data_ptr() for t in _params_of(model, buffers=True)
            if dtensor is None or not isinstance(t, dtensor)}


def _dtensor_type():
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def _sdp_flags() -> tuple[bool, ...]:
    """The SDPA backends enabled now: a rebuild must choose the kernel the forward chose."""
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(), b.cudnn_sdp_enabled())


def _params_of(m: torch.nn.Module, buffers: bool = False) -> list[torch.Tensor]:
    """The parameters (and buffers) registered now in `m` and below. A plain walk over
    `_parameters` and `_modules`: `Module.parameters()` goes through generator layers that cost
    ~90 µs per recomputed site and forward on the CPU that launches the GPU's kernels. Not
    cached: FSDP2 swaps the registered parameters between sharded and unsharded ones."""
    out = [t for t in m._parameters.values() if t is not None]
    if buffers:
        out += [t for t in m._buffers.values() if t is not None]
    for child in m._modules.values():
        if child is not None:
            out += _params_of(child, buffers)
    return out


@contextlib.contextmanager
def _sdp_flags_restored(flags: tuple[bool, ...]):
    old = _sdp_flags()
    if old == flags:  # the common case: nothing to set, nothing to restore
        yield
        return
    b = torch.backends.cuda
    setters = (b.enable_flash_sdp, b.enable_mem_efficient_sdp, b.enable_math_sdp, b.enable_cudnn_sdp)
    try:
        for fn, v in zip(setters, flags):
            fn(v)
        yield
    finally:
        for fn, v in zip(setters, old):
            fn(v)


class _Instance:
    """One executed site (a chunk of the LM head counts as its own instance)."""

    __slots__ = (
        "site", "fn", "inputs", "input_grad", "autocast", "rng", "slots", "n_packs", "cache", "needs_rng",
        "internal_ks", "sdp", "versions", "internal_meta", "unowned", "pos", "slot_group",
    )

    def __init__(self, site: int, fn: Callable, needs_rng: bool):
        self.site = site
        self.fn = fn
        self.inputs: list[Any] = []  # tensors (kept) or _OutRef (recomputed parents)
        self.input_grad: list[bool] = []
        self.autocast: tuple | None = None
        self.rng: tuple | None = None
        self.slots = 0  # saved slots still waiting for their unpack
        self.n_packs = 0  # pack calls seen while this site's forward ran
        self.cache: tuple[torch.Tensor, dict[int, torch.Tensor], int] | None = None  # y, internals, bytes
        self.needs_rng = needs_rng
        self.internal_ks: set[int] = set()  # pack indices that are this site's own internals
        self.sdp: tuple[bool, ...] | None = None
        self.versions: list[tuple[torch.Tensor, int]] = []  # held inputs and weights, at forward
        self.internal_meta: dict[int, tuple] = {}  # k -> (shape, dtype) of the internal at pack
        self.unowned: set[int] = set()  # storages of inputs that no site produced
        # with an offloader: its place among the forward's recipes, and the latest block whose
        # forward saved one of its slots (the backward unpacks, and so rebuilds it, there first)
        self.pos: int | None = None
        self.slot_group: int | None = None


def _version_of(t: torch.Tensor) -> int | None:
    """`t._version`, or None for an inference tensor: it has no version counter, and outside
    inference mode it cannot be changed in place, so there is nothing to check."""
    return None if t.is_inference() else t._version


def _check_alive_version(tref: weakref.ref, version: int | None, why: str) -> None:
    """A saved tensor that is not held (recomputed or offloaded) but still alive must fail an
    in-place change as autograd would: the backward would silently use the unchanged values."""
    t = tref()
    if t is not None and version is not None and t._version != version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: a tensor of shape {tuple(t.shape)} is at version {t._version}; expected "
            f"version {version} instead ({why})")


class _OutRef:
    """A saved view of a recomputed site's output: geometry relative to that output."""

    __slots__ = ("inst", "size", "stride", "offset", "same", "tref", "version")

    def __init__(self, inst: _Instance, t: torch.Tensor, base_offset: int, same: bool):
        self.inst = inst
        self.size = t.size()
        self.stride = t.stride()
        self.offset = t.storage_offset() - base_offset
        self.same = same
        # the saved tensor is not held, but while it lives an in-place change of it must fail as it
        # would without recomputation (the rebuild would silently use the unchanged values)
        self.tref = weakref.ref(t)
        self.version = _version_of(t)

    def check_version(self) -> None:
        _check_alive_version(self.tref, self.version, "DRAT recomputes it in backward")

    def view_of(self, y: torch.Tensor) -> torch.Tensor:
        if self.same:
            return y
        return y.as_strided(self.size, self.stride, y.storage_offset() + self.offset)


class _Kept:
    """A tensor kept as is, with its version at pack time: autograd skips its in-place check
    when saved-tensor hooks are installed, so the unpack hook does it."""

    __slots__ = ("t", "version")

    def __init__(self, t: torch.Tensor):
        self.t = t.detach()
        self.version = _version_of(t)

    def get(self) -> torch.Tensor:
        if self.version is not None and self.t._version != self.version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: a tensor of shape {tuple(self.t.shape)} is at version {self.t._version}; "
                f"expected version {self.version} instead")
        return self.t


class _Off:
    """A saved tensor of an offloaded site, with its version at pack time (see `_Kept`)."""

    __slots__ = ("ref", "tref", "version")

    def __init__(self, ref: OffloadRef, t: torch.Tensor):
        self.ref = ref
        self.tref = weakref.ref(t)
        self.version = _version_of(t)

    def check_version(self) -> None:
        _check_alive_version(self.tref, self.version, "DRAT offloaded it to host memory")


class _IntRef:
    """A saved internal tensor of a recomputed site: the k-th pack during its forward."""

    __slots__ = ("inst", "k")

    def __init__(self, inst: _Instance, k: int):
        self.inst = inst
        self.k = k


def _autocast_state(device_type: str) -> tuple:
    return (
        device_type,
        torch.is_autocast_enabled(device_type),
        torch.get_autocast_dtype(device_type),
    )


class SiteRuntime:
    """Per-forward state of the gated mechanism. Create one per forward pass.

    `stored[i]` says whether site i (a `SiteGraph` index) keeps its activations.
    `site_has_dropout[i]` marks sites whose forward draws random numbers.
    `offloaded[i]` (with an `offloader`) says that site i keeps them in host memory instead; such
    a site counts as stored for everything but where its tensors live.
    """

    def __init__(self, stored: Sequence[bool], site_has_dropout: Sequence[bool], device: torch.device,
                 state_ptrs: set[int] | None = None, site_blocks: Sequence[int | None] | None = None,
                 offloaded: Sequence[bool] | None = None, offloader: Offloader | None = None):
        self.offloaded = [bool(o) for o in offloaded] if offloaded is not None else [False] * len(stored)
        if any(self.offloaded) and offloader is None:
            raise ValueError("an offload plan needs an Offloader")
        # an offloaded site is available in backward without a rebuild, like a stored one
        self.stored = [bool(s) or o for s, o in zip(stored, self.offloaded)]
        self.offloader = offloader
        self.groups = flow_groups(site_blocks, len(self.stored))
        if offloader is not None:
            offloader.begin_forward()
        # with an offloader, for `_rebuild_needs`: this forward's recipes, which recipe rebuilds
        # which (a recomputed parent's rebuild for a child's), and the offloaded inputs of each
        self._recipes: list[_Instance] = []
        self._deps: list[tuple[int, int]] = []  # (parent pos, child pos)
        self._rebuild_inputs: list[tuple[OffloadRef, int]] = []  # (input, recipe pos)
        self._group: int | None = None  # the block the forward is in (for the offloader's wait)
        # the block of each site (its layer, None at model level): own rebuilds memoise parents
        # of the same block only (module docstring); without it every parent is transient
        self.blocks = list(site_blocks) if site_blocks is not None else None
        self.state_ptrs = state_ptrs or set()
        self.has_dropout = list(site_has_dropout)
        self.device = device
        self.accountant = active_accountant()
        # storage data_ptr -> (instance, weak reference to the output's storage, the output's storage
        # offset, size and stride). The storage, not the output tensor, decides whether a saved tensor
        # is the output: a wrapped model passes views of a site's output on and drops the output itself.
        self._owner: dict[int, tuple[_Instance, StorageWeakRef, int, torch.Size, tuple]] = {}
        self._current: _Instance | None = None
        self._inputs: set[int] = set()  # storages of model inputs (token ids, targets)
        self._weights: dict[int, list[torch.Tensor]] = {}  # id(owner module) -> its parameters
        self._outrefs: list[_OutRef] = []  # this forward's references to recomputed outputs
        self.rebuilds = [0] * len(self.stored)  # rebuild count per site, for tests and cost checks
        self.live_rebuilt_bytes = 0
        self.peak_rebuilt_bytes = 0

    # ----------------------------------------------------------------- forward side
    def register_inputs(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            if t is not None:
                self._inputs.add(t.untyped_storage().data_ptr())

    def hooks(self):
        if self.offloader is None:
            return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        return torch.autograd.graph.saved_tensors_hooks(self._pack_in_block, self._unpack_in_block)

    def _pack_in_block(self, t: torch.Tensor):
        # (the block the forward is in, the reference): its unpack tells the offloader that the
        # backward has reached that block, which starts the reloads of the blocks before it
        return self._group, self._pack(t)

    def _unpack_in_block(self, packed):
        group, ref = packed
        if group is not None:
            self.offloader.enter_backward_group(group)
        return self._unpack(ref)

    def end_forward(self, failed: bool = False) -> None:
        """Drop the forward-time registry. From here on only the autograd graph (through the
        packed references) keeps recipes alive, so they die with the graph: a runtime kept for
        its statistics must not pin a step's activations."""
        self._owner.clear()
        self._weights.clear()
        try:
            if self.offloader is not None:
                self.offloader.set_rebuild_needs(self._rebuild_needs())
                # may start reloads (not after a failed forward), and so fail to allocate
                self.offloader.end_forward(prefetch=not failed)
        finally:
            self._recipes, self._deps, self._rebuild_inputs = [], [], []
            self._end_forward()

    def _rebuild_needs(self) -> list[tuple[OffloadRef, int]]:
        """(offloaded input, the block whose backward first rebuilds a recipe that reads it). A
        recipe is rebuilt at the first unpack of one of its slots, in the latest block that saved
        one (the backward meets blocks latest first), or, earlier, for a child's rebuild that
        needs it: a recipe's block is the latest of its own and its children's, children first."""
        block = [inst.slot_group for inst in self._recipes]
        for parent, child in reversed(self._deps):  # children come after their parents
            if block[child] is not None and (block[parent] is None or block[child] > block[parent]):
                block[parent] = block[child]
        return [(ref, block[pos]) for ref, pos in self._rebuild_inputs if block[pos] is not None]

    def _end_forward(self) -> None:
        self._group = None
        self._current = None
        self.accountant = None
        refs, self._outrefs = self._outrefs, []
        for ref in refs:  # a saved output changed in place later in the forward, and still alive
            ref.check_version()

    def run(self, site: int, fn: Callable, *inputs: torch.Tensor) -> torch.Tensor:
        """Run site `site` as `fn(*inputs)` and register its output."""
        if not torch.is_grad_enabled():
            # no_grad or inference_mode: autograd saves nothing, so there is no recipe to record
            # and no saved tensor to own (inference tensors have no version counter to read)
            return fn(*inputs)
        if self.offloader is not None and self.groups[site] != self._group:
            self._group = self.groups[site]
            self.offloader.enter_group(self._group)  # bounds the copies out the host has queued
        stored = self.stored[site]
        inst = _Instance(site, fn, needs_rng=(not stored) and self.has_dropout[site])
        # An input that no site produced (a residual add or rotary embedding in a wrapped model) is
        # owned by no site: saved by this site's ops it stays stored, never this site's internal,
        # because recomputing this site would need it anyway.
        for x in inputs:
            if self._lookup(x) is None:
                inst.unowned.add(x.untyped_storage().data_ptr())
        if self.accountant is not None:
            self.accountant.record_inputs(site, inputs)
        if not stored:
            for x in inputs:
                inst.inputs.append(self._ref_for_input(x))
                inst.input_grad.append(x.requires_grad)
            inst.autocast = _autocast_state(self.device.type)
            if self.offloader is not None:
                inst.pos = len(self._recipes)
                self._recipes.append(inst)
                for ref in inst.inputs:
                    if isinstance(ref, _OutRef) and ref.inst.pos is not None:
                        self._deps.append((ref.inst.pos, inst.pos))
                    elif isinstance(ref, OffloadRef):
                        self._rebuild_inputs.append((ref, inst.pos))
            inst.sdp = _sdp_flags()
            if inst.needs_rng:
                inst.rng = _get_rng(self.device)
            # In-place changes between forward and backward must fail as they do without hooks
            # (autograd skips its own version check when hooks are installed).
            owner = getattr(fn, "__self__", None)
            weights = self._weights_of(owner) if isinstance(owner, torch.nn.Module) else []
            inst.versions = [(t, v) for t in weights + [x for x in inst.inputs if isinstance(x, torch.Tensor)]
                             if (v := _version_of(t)) is not None]
        prev, self._current = self._current, inst
        try:
            y = fn(*inputs)
        finally:
            self._current = prev
        st = y.untyped_storage()
        self._owner[st.data_ptr()] = (inst, StorageWeakRef(st), y.storage_offset(), y.size(), y.stride())
        if self.accountant is not None and not stored and inst.rng is not None:
            self.accountant.record_extra(site, sum(s.numel() * s.element_size() for s in inst.rng))
        return y

    def _weights_of(self, owner: torch.nn.Module) -> list[torch.Tensor]:
        """`_params_of(owner)`, once per owner and forward: a block's sites share it. Per forward,
        not longer: FSDP2 registers the unsharded parameters only around the block's forward."""
        key = id(owner)
        if key not in self._weights:
            self._weights[key] = _params_of(owner)
        return self._weights[key]

    def _ref_for_input(self, x: torch.Tensor):
        """Recipes hold stored inputs strongly and recomputed ones by reference.

        Stored inputs are held *detached*: a recipe that referenced the autograd graph would form
        a cycle through C++ nodes (graph -> packed ref -> recipe -> tensor -> graph) that Python's
        garbage collector cannot see, leaking a whole step when a forward has no backward."""
        ent = self._lookup(x)
        if ent is not None and not self.stored[ent[0].site]:
            inst, _, base_offset, _, _ = ent
            return _OutRef(inst, x, base_offset, same=False)
        if ent is not None and self.offloaded[ent[0].site]:  # the recipe reloads it when it rebuilds
            return self.offloader.offload(x, self.groups[ent[0].site], slot=False)
        if self.accountant is not None:
            self.accountant.record(x, None if ent is None else ent[0].site)
        return x.detach()

    def _lookup(self, t: torch.Tensor):
        ent = self._owner.get(t.untyped_storage().data_ptr())
        if ent is None or ent[1].expired():  # unknown, or a freed output whose memory was reused
            return None
        return ent

    def _pack(self, t: torch.Tensor):
        # Kept tensors are held detached (same storage and version counter): a saved *output*
        # held as itself would reference its own grad_fn from inside that node, a cycle through
        # C++ that the garbage collector cannot free when a forward has no backward.
        cur = self._current
        if cur is not None:
            cur.n_packs += 1
        if is_parameter(t, self.state_ptrs):  # never an activation
            return _Kept(t)
        ent = self._lookup(t)
        if ent is not None:
            inst, _, base_offset, size, stride = ent
            if self.stored[inst.site]:
                if self.offloaded[inst.site]:
                    return _Off(self.offloader.offload(t, self.groups[inst.site]), t)
                if self.accountant is not None:
                    self.accountant.record(t, inst.site)
                return _Kept(t)
            inst.slots += 1
            self._note_slot(inst)
            same = t.size() == size and t.stride() == stride and t.storage_offset() == base_offset
            ref = _OutRef(inst, t, base_offset, same)
            self._outrefs.append(ref)
            return ref
        ptr = t.untyped_storage().data_ptr()
        if cur is None or ptr in self._inputs or ptr in cur.unowned:
            if self.accountant is not None:
                self.accountant.record(t, None)
            return _Kept(t)
        if self.stored[cur.site]:
            if self.offloaded[cur.site]:
                return _Off(self.offloader.offload(t, self.groups[cur.site]), t)
            if self.accountant is not None:
                self.accountant.record(t, cur.site)
            return _Kept(t)
        cur.slots += 1
        cur.internal_ks.add(cur.n_packs - 1)
        cur.internal_meta[cur.n_packs - 1] = (t.shape, t.dtype)
        self._note_slot(cur)
        return _IntRef(cur, cur.n_packs - 1)

    def _note_slot(self, inst: _Instance) -> None:
        g = self._group
        if inst.pos is not None and g is not None and (inst.slot_group is None or g > inst.slot_group):
            inst.slot_group = g

    # ----------------------------------------------------------------- backward side
    def _unpack(self, ref):
        if isinstance(ref, _Kept):
            return ref.get()
        if isinstance(ref, _Off):
            ref.check_version()
            return self.offloader.get(ref.ref)
        inst = ref.inst
        if isinstance(ref, _OutRef):
            ref.check_version()
        y, internals, _ = self._own_rebuild(inst)
        out = ref.view_of(y) if isinstance(ref, _OutRef) else internals[ref.k]
        inst.slots -= 1
        if inst.slots <= 0:  # every saved slot of this site is consumed: free the rebuild
            self._track(inst.cache, -1)
            inst.cache = None
        return out

    def _own_rebuild(self, inst: _Instance):
        """The site's cached rebuild (output, internals, bytes), built with its internals on
        first use; the bytes (distinct storages) are counted once, for the live/peak statistics."""
        if inst.cache is None:
            y, internals = self._rebuild(inst, capture=True)
            storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                        for t in (y, *internals.values())}
            inst.cache = (y, internals, sum(storages.values()))
            self._track(inst.cache, +1)
        return inst.cache

    def _track(self, cache, sign: int) -> None:
        y, internals, nbytes = cache
        self.live_rebuilt_bytes += sign * nbytes
        self.peak_rebuilt_bytes = max(self.peak_rebuilt_bytes, self.live_rebuilt_bytes)

    def _rebuild(self, inst: _Instance, capture: bool):
        """Re-run a site's forward. With `capture`, also return its saved internals by index."""
        if PROFILE_REBUILDS:  # a named range per rebuild for `drat bench trace` (off: no overhead)
            with torch.profiler.record_function("drat.rebuild"):
                return self._rebuild_site(inst, capture)
        return self._rebuild_site(inst, capture)

    def _rebuild_site(self, inst: _Instance, capture: bool):
        self.rebuilds[inst.site] += 1
        for t, v in inst.versions:
            if t._version != v:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an "
                    f"inplace operation (DRAT recomputes site {inst.site} from it: version {t._version}, "
                    f"expected {v})")
        args = []
        for x, needs_grad in zip(inst.inputs, inst.input_grad):
            if isinstance(x, _OutRef):  # a recomputed parent
                parent = x.inst
                if capture and parent.slots > 0 and self.blocks is not None \
                        and self.blocks[parent.site] == self.blocks[inst.site]:
                    x = x.view_of(self._own_rebuild(parent)[0])  # same block: memoised
                else:
                    x = x.view_of(self._rebuild(parent, capture=False)[0])  # transient
            elif isinstance(x, OffloadRef):  # an offloaded parent: reloaded from host memory
                x = self.offloader.get(x)
            args.append(x.detach().requires_grad_(needs_grad))
        captured: dict[int, torch.Tensor] = {}
        counter = [0]

        def pack(t):
            k = counter[0]
            counter[0] += 1
            d = t.detach()
            if capture and k in inst.internal_ks:
                captured[k] = d
            return d

        device_type, ac_enabled, ac_dtype = inst.autocast
        rng_ctx = _rng_restored(self.device, inst.rng) if inst.rng is not None else contextlib.nullcontext()
        # the SDPA flags differ only if the user changed them between forward and backward
        sdp_ctx = contextlib.nullcontext() if _sdp_flags() == inst.sdp else _sdp_flags_restored(inst.sdp)
        with rng_ctx, sdp_ctx, torch.enable_grad(), \
                torch.autocast(device_type, ac_dtype, enabled=ac_enabled):
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y = inst.fn(*args)
        if counter[0] != inst.n_packs or any(
                (captured[k].shape, captured[k].dtype) != meta for k, meta in inst.internal_meta.items()
                if capture):
            raise RuntimeError(
                f"recomputing site {inst.site} saved different tensors than its forward (was the model "
                "switched to eval, or compiled, between forward and backward?)")
        return y.detach(), captured  # captured: detached at pack


# ----------------------------------------------------------------------------- RNG
def _get_rng(device: torch.device) -> tuple[torch.Tensor, ...]:
    if device.type == "cuda":
        return (torch.get_rng_state(), torch.cuda.get_rng_state(device))
    return (torch.get_rng_state(),)


@contextlib.contextmanager
def _rng_restored(device: torch.device, state: tuple[torch.Tensor, ...]):
    """Replay the RNG of the original forward without disturbing the current stream."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.set_rng_state(state[0])
        if devices:
            torch.cuda.set_rng_state(state[1], device)
        yield
