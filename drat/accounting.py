"""Exact saved-activation bytes, counted through saved-tensor hooks.

`SavedTensorAccountant` is a context manager around a forward pass. Every tensor that autograd
keeps for backward is recorded once per storage (views and tensors saved by several ops count
once), attributed to the site that owns it where DRAT's mechanism knows the owner. Parameters
are never counted. The numbers are what is held between forward and backward: read them before
calling `backward()`.

Besides tensors, what recomputation keeps to replay randomness is counted too: the RNG state of
a recomputed dropout site (DRAT's mechanism reports it), and the RNG state that every call of
`torch.utils.checkpoint` (non-reentrant, `preserve_rng_state=True`, the default) stashes for its
recomputation: the CPU generator's state (5056 bytes) plus the state of each GPU its inputs live
on. `full`, `selective` and SAC keep one per checkpointed block. These bytes are unowned (key -1
of `by_site`). `held_bytes_of(idx, targets)` says how much of the total the model's inputs are:
the embedding keeps the token ids for backward and the loss its targets (2·B·S·8 bytes).

`analytic_site_bytes` is the closed-form count of the same quantities, which the tests compare
against the measurement (Korthikanti et al. 2022 give ~34·h bytes per token per block in bf16).
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.utils.checkpoint as _checkpoint

from .model import GPTConfig
from .recompute import _ACCOUNTANT, _Kept, is_parameter, model_state_ptrs


def _unpack(k):
    return k.get()


class SavedTensorAccountant:
    def __init__(self, model=None):
        # storages of parameters and buffers: model state, never activations (frozen ones too)
        self._state_ptrs = model_state_ptrs(model) if model is not None else set()
        self._seen: dict[int, list] = {}  # storage data_ptr -> [nbytes, owner site or None, storage]
        self._extra: dict[int, int] = defaultdict(int)
        self._sac_storages: list = []
        # site -> {storage data_ptr: [nbytes, storage]}: what each site reads (see input_hold_bytes)
        self._site_inputs: dict[int, dict[int, list]] = defaultdict(dict)
        self._token = None
        self._hooks = None

    # --- context ------------------------------------------------------------------------
    def __enter__(self):
        self._token = _ACCOUNTANT.set(self)
        _count_checkpoint_rng(+1)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self._hooks = None  # the hooks hold bound methods of self: break the cycle
        _count_checkpoint_rng(-1)
        _ACCOUNTANT.reset(self._token)
        self._flush_sac()
        for ent in self._seen.values():  # counted: stop pinning the storages
            ent[2] = None
        for ins in self._site_inputs.values():
            for ent in ins.values():
                ent[1] = None
        return False

    def _pack(self, t):
        self.record(t, None)
        return _Kept(t)  # detached (see SiteRuntime._pack) and version-checked

    # --- recording ----------------------------------------------------------------------
    def record(self, t: torch.Tensor, site: int | None) -> None:
        if is_parameter(t, self._state_ptrs):  # parameters are model state, not activations
            return
        st = t.untyped_storage()
        ent = self._seen.get(st.data_ptr())
        if ent is None:
            # keep the storage alive so its address cannot be reused while we count
            self._seen[st.data_ptr()] = [st.nbytes(), site, st]
        elif ent[1] is None and site is not None:
            ent[1] = site

    def record_inputs(self, site: int, inputs) -> None:
        """The tensors a site reads (called by the mechanism for every site it runs)."""
        for x in inputs:
            if isinstance(x, torch.Tensor) and not is_parameter(x, self._state_ptrs):
                st = x.untyped_storage()
                self._site_inputs[site].setdefault(st.data_ptr(), [st.nbytes(), st])

    def input_hold_bytes(self) -> dict[int, int]:
        """Per site, the bytes of its inputs that the forward saved nowhere: a recomputed site's recipe
        must hold them (unless they are a recomputed parent's output), so recomputing the site frees
        its own bytes less these. DRAT's GPT has none (every site input is saved by the site's own
        ops); a wrapped model has some, e.g. logits that only the loss reads and the loss does not save."""
        return {site: sum(nb for ptr, (nb, _) in ins.items() if ptr not in self._seen)
                for site, ins in self._site_inputs.items()}

    def record_extra(self, site: int, nbytes: int) -> None:
        """Bytes a recipe keeps besides tensors (the RNG state of a dropout site; -1: unowned)."""
        self._extra[site] += nbytes

    def held_bytes_of(self, *tensors: torch.Tensor) -> int:
        """Bytes of the storages of `tensors` that the forward kept for backward (e.g. the token ids
        and targets), part of `total_bytes`."""
        ptrs = {t.untyped_storage().data_ptr() for t in tensors if t is not None}
        return sum(self._seen[p][0] for p in ptrs if p in self._seen)

    def add_sac_storage(self, storage) -> None:
        self._sac_storages.append(storage)

    def _flush_sac(self) -> None:
        def walk(obj):
            if isinstance(obj, torch.Tensor):
                self.record(obj, None)
            elif hasattr(obj, "val") and isinstance(obj.val, torch.Tensor):
                self.record(obj.val, None)
            elif isinstance(obj, (list, tuple)):
                for o in obj:
                    walk(o)
            elif isinstance(obj, dict):
                for o in obj.values():
                    walk(o)

        for storage in self._sac_storages:
            walk(storage)
        self._sac_storages.clear()

    # --- results ------------------------------------------------------------------------
    @property
    def total_bytes(self) -> int:
        self._flush_sac()
        return sum(e[0] for e in self._seen.values()) + sum(self._extra.values())

    def by_site(self) -> dict[int, int]:
        """Bytes per owner site index (unowned bytes are under key -1)."""
        self._flush_sac()
        out: dict[int, int] = defaultdict(int)
        for nbytes, site, _ in self._seen.values():
            out[-1 if site is None else site] += nbytes
        for site, nbytes in self._extra.items():
            out[site] += nbytes
        return dict(out)


def _rng_state_bytes(args) -> int:
    """What one `torch.utils.checkpoint` call stashes to replay randomness: the CPU generator's state,
    and that of every GPU a tensor argument lives on (what checkpoint's `get_device_states` takes)."""
    cpu = torch.get_rng_state()
    _, states = _checkpoint.get_device_states(*args)
    return cpu.numel() * cpu.element_size() + sum(s.numel() * s.element_size() for s in states)


_ORIGINAL_GENERATOR = getattr(_checkpoint, "_checkpoint_without_reentrant_generator", None)
_counting_depth = 0


def _counting_generator(fn, preserve_rng_state=True, *rest, **kwargs):
    """torch.utils.checkpoint's non-reentrant set-up, reporting the RNG state it keeps to the
    active accountant. `rest`: context_fn, determinism_check, debug, early_stop, then fn's args."""
    acct = _ACCOUNTANT.get()
    if acct is not None and preserve_rng_state and torch.is_grad_enabled():
        acct.record_extra(-1, _rng_state_bytes(rest[4:]))
    return _ORIGINAL_GENERATOR(fn, preserve_rng_state, *rest, **kwargs)


def _count_checkpoint_rng(delta: int) -> None:
    """While an accountant is open, checkpoint calls go through `_counting_generator` (it only
    counts, and only for a thread whose context has an accountant); the last one closed restores
    torch's own function. `checkpoint()` looks the generator up in its module at every call."""
    global _counting_depth
    if _ORIGINAL_GENERATOR is None:  # a torch without it: the test of this count says so
        return
    _counting_depth += delta
    _checkpoint._checkpoint_without_reentrant_generator = (
        _counting_generator if _counting_depth > 0 else _ORIGINAL_GENERATOR)


def saved_activation_bytes(model, idx: torch.Tensor, targets: torch.Tensor) -> tuple[int, dict[int, int]]:
    """Bytes held for backward by one training forward of `model` under its strategy.

    Returns (total bytes, bytes per site index with -1 for unattributed). Runs no backward."""
    with SavedTensorAccountant(model) as acct:
        loss = model.step_loss(idx, targets)
    total, per_site = acct.total_bytes, acct.by_site()
    del loss
    return total, per_site


def analytic_site_bytes(cfg: GPTConfig, batch: int, seq: int, act_bytes: int = 4,
                        residual_bytes: int = 4, mask_bytes: int = 4,
                        training: bool = True) -> dict[str, int]:
    """Closed-form bytes each site owns when stored (per instance; block sites per layer).

    `act_bytes` is the element size of matmul-side activations (4 in fp32, 2 under bf16
    autocast), `residual_bytes` that of the residual stream (fp32 in both cases), `mask_bytes`
    that of a dropout mask (CPU dropout keeps a float mask, the fused CUDA kernel a bool one)."""
    n = batch * seq
    h, f, nh, v = cfg.n_embd, cfg.mlp_hidden, cfg.n_head, cfg.vocab_size
    mask = mask_bytes * n * h if (cfg.dropout > 0 and training) else 0
    stats = 2 * 4 * n  # LayerNorm keeps fp32 mean and rstd per token
    swiglu = cfg.mlp == "swiglu"
    return {
        "embed": residual_bytes * n * h + mask + 8 * seq,  # + int64 positions
        "attn_norm": act_bytes * n * h + stats,
        "qkv": act_bytes * n * 3 * h,
        "attn_core": act_bytes * n * h + 4 * n * nh,  # output + fp32 log-sum-exp
        "attn_out": residual_bytes * n * h + mask,
        "mlp_norm": act_bytes * n * h + stats,
        "mlp_up": act_bytes * n * (2 * f if swiglu else f),
        "mlp_act": act_bytes * n * f * (2 if swiglu else 1),  # SwiGLU also keeps silu(a)
        "mlp_down": residual_bytes * n * h + mask,
        "final_norm": act_bytes * n * h + stats,
        "lm_head_loss": 4 * n * v + 4 * cfg.loss_chunks,  # fp32 log-probs + per-chunk weight sums
    }
