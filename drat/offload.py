"""The offload arm: saved activations parked in (pinned) host memory between forward and backward.

`Offloader` is the transport that `SiteRuntime` uses for the tensors of an offloaded site. It works
on *storages*, not tensors: every saved view of one storage (q, k and v of the fused qkv output)
shares one host copy, and a reloaded view gets the geometry it was saved with.

The synchronisation, on CUDA (docs/offload.md has the timeline):

    forward   compute ─ site runs ──▶ event ─┐
              d2h     ───────────────────────┴─ copy storage → pinned buffer ─ event (d2h_done)
              the Offloader holds the device storage until d2h_done has completed (polled at every
              offload and reload, FIFO: one stream's events complete in order), then drops it. Its
              bytes in flight so count as allocated, so a measured peak sees them; `record_stream`
              would hide them in the allocator's pending blocks, which a cap then runs into.
              Copies of blocks more than `run_ahead_blocks` back are let go of unseen: compute
              waits d2h_done (an event on the stream, not a host sync), then the storage drops.
    backward  h2d     waits the compute stream (the reload's memory is allocated there, so that it
              returns to the compute stream's pool, not to a second pool of its own) and d2h_done ─
              copy pinned buffer → that storage ─ event (h2d_done)
              compute waits h2d_done before the first use (an event, never a host sync).

Reloads are *prefetched*: when the backward enters block b (`enter_backward_group`, called at
the first saved tensor of b that autograd unpacks, offloaded or not), the reloads of every
offloaded tensor of blocks b−1 … b−`prefetch_blocks` start, so they cross the link while block b's
backward computes; `costs.plan_prefetch_blocks` plans that distance for a plan's bytes. A copy a
rebuild needs before its own block is prefetched by the block whose backward runs that rebuild,
which the runtime works out in the forward (`set_rebuild_needs`); what the head's block needs
starts at the end of the forward. Host buffers come from a `HostPool` that keeps them across
steps (no `cudaHostAlloc` per step); a buffer goes back to the pool when the last reference to
its copy dies, with the event of its last reload, which the next copy into it waits for.

On the CPU the same code runs with plain host buffers and synchronous copies, so the bookkeeping
and the exactness are tested without a GPU.
"""

from __future__ import annotations

import os
import weakref
from collections import deque
from dataclasses import dataclass

import torch
from torch.multiprocessing.reductions import StorageWeakRef


class HostMemoryError(RuntimeError, ValueError):
    """An offload plan needs more pinned host memory than the cap allows (a ValueError too: the
    commands refuse it in one line, as any input they cannot use)."""


def available_host_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


RUN_AHEAD_BLOCKS = 1  # blocks the forward runs past a copy out before compute waits for it (Offloader)

HOST_MEM_FRACTION = 0.5  # default cap: half of the available RAM (page-locked memory is not swappable)


def default_host_cap_bytes() -> int:
    return int(HOST_MEM_FRACTION * available_host_bytes())


class HostPool:
    """Host buffers (uint8), reused by exact size. A training step offloads the same storages in
    the same sizes every step, so after the first step every request is served from the pool."""

    def __init__(self, pin: bool, cap_bytes: float | None = None):
        self.pin = pin
        self.cap_bytes = cap_bytes  # the default cap of `take`
        self._free: dict[int, list[tuple[torch.Tensor, object]]] = {}  # nbytes -> [(buffer, event)]
        self.total_bytes = 0  # allocated, free or in use
        self.in_use_bytes = 0
        self.peak_in_use_bytes = 0
        self.n_allocs = 0

    def take(self, nbytes: int, cap_bytes: float | None = None) -> tuple[torch.Tensor, object]:
        """A buffer of `nbytes` and the event its last reader recorded (None: free to write).
        `cap_bytes` (default: the pool's) caps the bytes in use and, by evicting free buffers of
        other sizes, the bytes pinned."""
        cap = self.cap_bytes if cap_bytes is None else cap_bytes
        if cap is not None and self.in_use_bytes + nbytes > cap:
            raise HostMemoryError(
                f"offloading needs more than the host-memory cap of {cap / 2**30:.4g} GiB "
                f"({(self.in_use_bytes + nbytes) / 2**30:.4g} GiB in host memory so far this step); raise "
                "--host-mem-gib or offload fewer sites")
        free = self._free.get(nbytes)
        if free:
            buf, ev = free.pop()
        else:
            if cap is not None and self.total_bytes + nbytes > cap:
                self._evict(self.total_bytes + nbytes - cap)
            buf, ev = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin), None
            self.total_bytes += nbytes
            self.n_allocs += 1
        self.in_use_bytes += nbytes
        self.peak_in_use_bytes = max(self.peak_in_use_bytes, self.in_use_bytes)
        return buf, ev

    def _evict(self, need: int) -> None:
        """Drop free buffers of other sizes (another plan's) until `need` bytes are released."""
        for size in sorted(self._free, reverse=True):
            while self._free[size] and need > 0:
                buf, ev = self._free[size].pop()
                if ev is not None:
                    ev.synchronize()  # its last reload has read it
                self.total_bytes -= size
                need -= size
                del buf
        if self.pin and hasattr(torch._C, "_host_emptyCache"):
            torch._C._host_emptyCache()  # PyTorch's own pinned-block cache would keep them

    def give(self, buf: torch.Tensor, event=None) -> None:
        self.in_use_bytes -= buf.numel()
        self._free.setdefault(buf.numel(), []).append((buf, event))


@dataclass
class OffloadStats:
    """Per-forward transfer counters (reset by `Offloader.begin_forward`)."""

    d2h_bytes: int = 0
    h2d_bytes: int = 0
    copies: int = 0
    reloads_on_demand: int = 0  # reloads that prefetching did not start in time (waited for at use)
    late_reloads: int = 0  # reloads started only once the backward had reached their block (`key`)


class _HostCopy:
    """One offloaded storage: its host buffer and, while backward needs it, its device copy."""

    __slots__ = ("nbytes", "buf", "d2h_done", "dev", "h2d_done", "group", "index", "key", "pending",
                 "waited", "last_read", "__weakref__")

    def __init__(self, nbytes: int, buf: torch.Tensor, group: int, index: int):
        self.nbytes = nbytes
        self.buf = buf  # [nbytes] uint8 host
        self.d2h_done = None  # torch.cuda.Event on CUDA
        self.dev: torch.Tensor | None = None  # [nbytes] uint8 on the device, once reloaded
        self.h2d_done = None
        self.group = group
        self.index = index  # its place in its forward's offload order
        self.key = group  # the block by which its reload is prefetched (`set_rebuild_needs`)
        self.pending = 0  # autograd slots not yet unpacked
        self.waited = False  # the compute stream already waits for this reload
        # [event of the latest reload]: shared with the finaliser that gives `buf` back to the
        # pool, which must not reference the copy itself
        self.last_read: list = [None]

    def __del__(self):
        # a reload that no use waited for (backward abandoned): its memory returns to the compute
        # stream's pool, so the compute stream must not reuse it before the copy has written it
        if self.dev is not None and not self.waited and self.h2d_done is not None:
            torch.cuda.current_stream(self.dev.device).wait_event(self.h2d_done)


class OffloadRef:
    """A saved tensor living in host memory: its copy and its geometry in the storage."""

    __slots__ = ("copy", "dtype", "size", "stride", "offset", "slot")

    def __init__(self, copy: _HostCopy, t: torch.Tensor, slot: bool):
        self.copy = copy
        self.dtype = t.dtype
        self.size = t.size()
        self.stride = t.stride()
        self.offset = t.storage_offset()
        self.slot = slot  # an autograd slot (unpacked once) rather than a recipe's input


class Offloader:
    """Moves storages to host memory after their site runs and back ahead of their use.

    `prefetch_blocks`: how many blocks ahead of the current one the backward reloads.
    `run_ahead_blocks`: how many blocks the forward may run past a copy out before the compute
    stream waits for that copy to complete. An eager forward's host runs far ahead of the GPU, so
    a storage held until the host *sees* its copy complete stays allocated long after: unbounded,
    every byte offloaded in a forward was still allocated at its end (measured on an H100:
    three-arm plans at `none`'s peak). At every block the forward enters (`enter_group`) and at
    every offload, the copies of older blocks are let go of after a wait queued on the compute
    stream, which bounds the bytes held to the copies of the last `run_ahead_blocks` + 1 blocks;
    at the LM head, where the peak is, those of the last block and of the head itself
    (`costs.in_flight_bytes` prices exactly these). A host wait (`Event.synchronize`) bounds the same
    bytes but idles the GPU while the host, released, queues the next block's kernels
    (docs/offload.md has the measurements of both).
    `hold_bytes` ({block: bytes}, set by the strategy from its plan: `costs.hold_bytes_by_block`)
    adds an allowance: in block g a copy past the distance is let go of (oldest first) only while
    more than `hold_bytes[g]` bytes of copies are held. Early in the forward the allowance is
    large, since the blocks after g have yet to allocate what they store, so a copy of an early
    block may finish under the rest of the forward, as the cost model's L_d assumes; at the head
    it is what the peak holds anyway, the copies of the last `run_ahead_blocks` blocks and the
    head's, so the peak is bounded as without it.
    `unsafe_early_release` exists for the tests that prove the synchronisation is needed: it gives
    a host buffer back to the pool as soon as its copy is queued, so a later offload overwrites it.
    """

    def __init__(self, device: torch.device, pool: HostPool | None = None, prefetch_blocks: int = 1,
                 host_cap_bytes: float | None = None, unsafe_early_release: bool = False,
                 unsafe_no_sync: bool = False, run_ahead_blocks: int = RUN_AHEAD_BLOCKS):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.pool = pool if pool is not None else HostPool(pin=self.cuda)
        self.prefetch_blocks = int(prefetch_blocks)
        self.run_ahead_blocks = int(run_ahead_blocks)
        self.host_cap_bytes = host_cap_bytes
        self.unsafe_early_release = unsafe_early_release
        self.unsafe_no_sync = unsafe_no_sync  # CUDA tests only: skip holding sources and every wait
        # bytes of copies out that may stay held in each block, on top of run_ahead_blocks
        self.hold_bytes: dict[int, float] | None = None
        self._fw_group: int | None = None  # the block the forward is in (`enter_group`)
        if self.cuda:
            self.d2h = torch.cuda.Stream(self.device)
            self.h2d = torch.cuda.Stream(self.device)
        self.stats = OffloadStats()
        # with time_waits, each wait of the compute stream on a reload is bracketed by two timing
        # events; pop_wait_ms sums them (the measured exposed transfer of `costs.predicted_wait_ms`)
        self.time_waits = False
        self._waits: list[tuple] = []
        self._by_ptr: dict[int, tuple[_HostCopy, StorageWeakRef]] = {}
        self._order: list[weakref.ref] = []  # this forward's copies in offload order
        self._next = -1  # the latest copy in `_order` whose reload has not been started
        self._in_flight: deque = deque()  # (d2h_done, device storage, group): copies not known complete
        self._bw_group: int | None = None  # the earliest block the backward has entered
        self._early: deque = deque()  # copies a rebuild needs before their own block, latest first

    # ----------------------------------------------------------------- forward
    def begin_forward(self) -> None:
        self._retire(drain=True)
        self._early = deque()
        self.stats = OffloadStats()
        self._by_ptr.clear()
        self._order.clear()
        self._next = -1
        self._bw_group = None
        self._fw_group = None

    def end_forward(self, prefetch: bool = True) -> None:
        """The forward ended; `prefetch` False (it failed) starts no reload."""
        # the backward starts after the last copy out (stream order), so nothing stays held past
        # the forward: a held storage would count in whatever runs next
        self._retire(drain=True)
        self._by_ptr.clear()  # backward finds copies through the saved references only
        self._next = len(self._order) - 1
        if prefetch and self._fw_group is not None:  # the backward starts in the head's block:
            self._prefetch(self._fw_group + 1)  # what it needs first starts with it

    def set_rebuild_needs(self, needs: list[tuple[OffloadRef, int]]) -> None:
        """(a rebuild's input, the block whose backward runs that rebuild), from the runtime at the
        end of the forward. A rebuild reloads the offloaded input it needs when it runs, which can
        be a block before that input's own: with the last block recomputed, the head's backward
        rebuilds it from the block before's offloaded output. Prefetched by its own block, that
        reload would start only once it is needed; such a copy is prefetched by the block that
        needs it instead (`_early`), every other copy by its own block, as before."""
        early = {}
        for ref, block in needs:
            copy = ref.copy
            # a copy only recipes read (no autograd slot) is not in the walk by block at all
            if block > copy.key or copy.pending == 0:
                copy.key = max(copy.key, block)
                early[id(copy)] = copy
        # latest need first, and within a block the latest copy first: the backward's order
        self._early = deque(weakref.ref(c) for c in sorted(early.values(), key=lambda c: (-c.key, -c.index)))

    def enter_group(self, group: int) -> None:
        """The forward enters block `group` (monotone): let go of the copies out that completed,
        and, after a wait on the compute stream, of those more than `run_ahead_blocks` blocks
        back. Letting go here, and not only at
        the next offload, keeps a plan that offloads nothing late from holding its last copies
        through the rest of the forward."""
        self._fw_group = group
        if self._in_flight:
            self._retire()
            self._throttle(group)

    def offload(self, t: torch.Tensor, group: int, slot: bool = True) -> OffloadRef:
        self._retire()
        st = t.untyped_storage()
        ent = self._by_ptr.get(st.data_ptr())
        if ent is None or ent[1].expired():
            copy = self._copy_out(st, group)
            self._by_ptr[st.data_ptr()] = (copy, StorageWeakRef(st))
        else:
            copy = ent[0]
        if slot:
            copy.pending += 1
        return OffloadRef(copy, t, slot)

    def _copy_out(self, st, group: int) -> _HostCopy:
        nbytes = st.nbytes()
        buf, last_read = self.pool.take(nbytes, self.host_cap_bytes)
        copy = _HostCopy(nbytes, buf, group, len(self._order))
        src = torch.empty(0, dtype=torch.uint8, device=self.device).set_(st)  # [nbytes] view of the storage
        if self.cuda:
            self.d2h.wait_stream(torch.cuda.current_stream(self.device))  # the site's kernels first
            if last_read is not None:
                self.d2h.wait_event(last_read)  # the buffer's previous reload has read it
            with torch.cuda.stream(self.d2h):
                buf.copy_(src, non_blocking=True)
                copy.d2h_done = torch.cuda.Event()
                copy.d2h_done.record(self.d2h)
            if not self.unsafe_no_sync:  # its memory is not reused before the copy has read it
                self._in_flight.append((copy.d2h_done, src, group))
                self._throttle(group)
        else:
            buf.copy_(src)
        self.stats.d2h_bytes += nbytes
        self.stats.copies += 1
        self._order.append(weakref.ref(copy))
        if self.unsafe_early_release:
            self.pool.give(buf)
        else:
            weakref.finalize(copy, _release, self.pool, buf, copy.last_read)
        return copy

    # ----------------------------------------------------------------- backward
    def enter_backward_group(self, group: int) -> None:
        """The backward has reached block `group` (monotone, decreasing): start the reloads of
        blocks [group − prefetch_blocks, group] (and of the copies first needed there, `_early`).
        Triggered by any saved tensor of the block, so a block that offloads nothing still
        prefetches the blocks before it."""
        if self._bw_group is None or group < self._bw_group:
            self._bw_group = group
            self._retire()
            self._prefetch(group)

    def get(self, ref: OffloadRef) -> torch.Tensor:
        copy = ref.copy
        self._retire()
        # an autograd slot's use says the backward has reached its block; a rebuild's use of its
        # input does not (the head's backward may rebuild the last block from the block before's
        # output), and moving on there would start every earlier block's reloads at once. The
        # unpack that set off the rebuild has entered the backward's block, and so prefetched.
        if ref.slot:
            if self._bw_group is None or copy.group < self._bw_group:
                self._bw_group = copy.group  # the backward uses block `copy.group`'s tensors by now
            self._prefetch(copy.group)
        if copy.dev is None:  # not prefetched (or reloaded again for a recipe after its slots)
            self.stats.reloads_on_demand += 1
            self._copy_in(copy)
        dev = copy.dev
        if self.cuda and not copy.waited:
            cur = torch.cuda.current_stream(self.device)
            if not self.unsafe_no_sync:
                if self.time_waits:  # the stall, measured on the compute stream: event, wait, event
                    before, after = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    before.record(cur)
                cur.wait_event(copy.h2d_done)
                if self.time_waits:
                    after.record(cur)
                    self._waits.append((before, after))
            copy.waited = True
        out = torch.empty(0, dtype=ref.dtype, device=self.device).set_(
            dev.untyped_storage(), ref.offset, ref.size, ref.stride)
        if ref.slot:
            copy.pending -= 1
            if copy.pending <= 0:  # every autograd slot has its tensor: the copy may go
                copy.dev, copy.waited = None, False
        return out

    def pop_wait_ms(self) -> float:
        """ms the compute stream stalled on reloads since the last call (with `time_waits`; 0 on
        the CPU, whose copies are synchronous). Waits for the last timed event: a host sync."""
        waits, self._waits = self._waits, []
        if not waits:
            return 0.0
        waits[-1][1].synchronize()
        return float(sum(a.elapsed_time(b) for a, b in waits))

    def _throttle(self, group: int) -> None:
        """Let go of the copies out of blocks before `group − run_ahead_blocks` (with `hold_bytes`,
        of the oldest of them only until no more than `hold_bytes[group]` bytes are held), the
        compute stream first waiting for the newest of them (one stream's copies complete in
        order). The wait is queued on the device, not taken by the host: every kernel queued after
        it, and so every later use of the memory the allocator hands out again, runs after the
        copies have read it, while the host goes on queueing the next block's kernels."""
        # a tensor is offloaded under its owner's block, which may be behind the forward's (a
        # block's output is first saved by the next block): the rule is the current block's
        if self._fw_group is not None:
            group = max(group, self._fw_group)
        q, n = self._in_flight, 0
        # with an allowance (costs.hold_bytes_by_block), a copy past the distance stays while the
        # bytes held are within it: early in the forward the later blocks have yet to allocate
        cap = None if self.hold_bytes is None else self.hold_bytes.get(group, 0.0)
        held = sum(src.numel() for _, src, _ in q) if cap is not None else 0
        while n < len(q) and q[n][2] < group - self.run_ahead_blocks and (cap is None or held > cap):
            held -= q[n][1].numel() if cap is not None else 0
            n += 1
        if n:
            self._stream_wait(q[n - 1][0])
            for _ in range(n):
                q.popleft()

    def _stream_wait(self, event) -> None:
        torch.cuda.current_stream(self.device).wait_event(event)

    def _retire(self, drain: bool = False) -> None:
        """Drop the device storages whose copies out have completed. `drain`: all of them, the
        compute stream first waiting for the last copy (stream order keeps reuse safe)."""
        q = self._in_flight
        while q and q[0][0].query():
            q.popleft()
        if drain and q:
            self._stream_wait(q[-1][0])
            q.clear()

    def _copy_in(self, copy: _HostCopy) -> None:
        if self.cuda:
            cur = torch.cuda.current_stream(self.device)
            # allocated on the compute stream, which uses and frees it; the memory may still be
            # read by compute kernels queued before it was freed, so the copy waits for them
            copy.dev = torch.empty(copy.nbytes, dtype=torch.uint8, device=self.device)
            if not self.unsafe_no_sync:
                self.h2d.wait_stream(cur)
            self.h2d.wait_event(copy.d2h_done)
            with torch.cuda.stream(self.h2d):
                copy.dev.copy_(copy.buf, non_blocking=True)
                ev = copy.h2d_done or torch.cuda.Event()
                ev.record(self.h2d)
                copy.h2d_done = ev
            copy.last_read[0] = ev
        else:
            copy.dev = copy.buf.clone()
        copy.waited = False
        self.stats.h2d_bytes += copy.nbytes
        if self._bw_group is not None and self._bw_group <= copy.key:
            self.stats.late_reloads += 1

    def _prefetch(self, group: int) -> None:
        """Start the reloads of every copy of blocks [group − prefetch_blocks, group], and of every
        copy first needed there (`_early`)."""
        early = self._early
        while early and (early[0]() is None or early[0]().key >= group - self.prefetch_blocks):
            copy = early.popleft()()
            if copy is not None and copy.dev is None:  # a rebuild's input only: no slot pending
                self._copy_in(copy)
        while self._next >= 0:
            copy = self._order[self._next]()
            if copy is not None and copy.group < group - self.prefetch_blocks:
                break
            if copy is not None and copy.dev is None and copy.pending > 0:
                self._copy_in(copy)
            self._next -= 1


def _release(pool: HostPool, buf: torch.Tensor, events: list) -> None:
    pool.give(buf, events[0])


__all__ = ["HostPool", "HostMemoryError", "Offloader", "OffloadRef", "OffloadStats", "available_host_bytes",
           "default_host_cap_bytes", "HOST_MEM_FRACTION", "RUN_AHEAD_BLOCKS"]
