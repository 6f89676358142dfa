"""The offload arm: three-arm plans are bitwise exact, the host pool is reused across steps and
capped, and releasing a host buffer too early is caught (the synchronisation is needed)."""

import random

import pytest
import torch

from drat.costs import SiteCosts
from drat.offload import HostMemoryError, HostPool, Offloader
from drat.strategies import FullOffload, NoneAC, OffloadAll, PlanAC, SaveOnCPU

from .conftest import make_batch, make_model
from .test_exactness import CONFIGS, assert_bitwise, run


def random_arms(n: int, rng: random.Random) -> tuple[list[bool], list[bool]]:
    """(stored, offloaded) of a random plan over store / recompute / offload."""
    arms = [rng.choice("sro") for _ in range(n)]
    return [a == "s" for a in arms], [a == "o" for a in arms]


@pytest.mark.filterwarnings("ignore:this plan rebuilds")
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_random_three_arm_plans_are_bitwise_exact(ci):
    model = make_model(seed=ci, **CONFIGS[ci])
    model.train()
    idx, tgt = make_batch(seq=12, seed=ci)
    ref = run(model, NoneAC(), idx, tgt)
    n = len(model.graph)
    rng = random.Random(100 + ci)
    plans = [random_arms(n, rng) for _ in range(6)]
    for stored, offloaded in plans:
        prefetch = rng.choice([0, 1, 2, 5])  # how far ahead reloads start changes no value
        s = PlanAC(stored=stored, offloaded=offloaded, prefetch_blocks=prefetch)
        assert_bitwise(run(model, s, idx, tgt), ref, f"plan {stored} {offloaded}, prefetch {prefetch}")
        stats = s.host_stats()
        assert stats["d2h_bytes"] > 0 and stats["h2d_bytes"] >= stats["d2h_bytes"]  # really moved
        if not all(stored[i] or offloaded[i] for i in range(n)):
            assert sum(s.last_runtime.rebuilds) > 0


@pytest.mark.parametrize("strategy", [OffloadAll, FullOffload, SaveOnCPU])
def test_offload_baselines_are_bitwise_exact(strategy):
    model = make_model(dropout=0.1, loss_chunks=3)
    idx, tgt = make_batch(seq=12)
    ref = run(model, NoneAC(), idx, tgt)
    assert_bitwise(run(model, strategy(), idx, tgt), ref, strategy.name)


def test_a_recomputed_site_reloads_its_offloaded_input():
    """attn_norm offloaded, qkv recomputed: rebuilding qkv reads attn_norm's output back from host
    memory, and nothing is rebuilt but qkv."""
    model = make_model(n_layer=1, dropout=0.0)
    idx, tgt = make_batch(seq=8)
    ref = run(model, NoneAC(), idx, tgt)
    g = model.graph
    stored = [True] * len(g)
    offloaded = [False] * len(g)
    offloaded[g.idx(0, "attn_norm")] = True
    stored[g.idx(0, "qkv")] = False
    s = PlanAC(stored=stored, offloaded=offloaded)
    assert_bitwise(run(model, s, idx, tgt), ref, "offloaded input of a rebuild")
    assert s.last_runtime.rebuilds[g.idx(0, "qkv")] == 1
    assert sum(s.last_runtime.rebuilds) == 1


def test_pool_serves_every_step_after_the_first():
    model = make_model(dropout=0.0)
    idx, tgt = make_batch(seq=12)
    s = OffloadAll()
    run(model, s, idx, tgt)
    allocs, pinned = s.host_stats()["host_allocs"], s.host_stats()["host_pinned_bytes"]
    for _ in range(3):
        run(model, s, idx, tgt)
    assert s.host_stats()["host_allocs"] == allocs and s.host_stats()["host_pinned_bytes"] == pinned
    assert s.offloader.pool.in_use_bytes == 0  # every buffer came back when its graph died


def test_host_cap_refuses_a_plan_that_does_not_fit():
    model = make_model(dropout=0.0)
    idx, tgt = make_batch(seq=12)
    with pytest.raises(HostMemoryError, match="host-memory cap"):
        run(model, OffloadAll(host_cap_bytes=1024), idx, tgt)


def test_releasing_host_buffers_early_breaks_exactness():
    """The guard for the pool's synchronisation: a buffer given back as soon as its copy is queued
    is overwritten by a later offload of the same size, and the gradients change. If this test
    ever passes exactness, the exactness tests above could not catch a release bug."""
    model = make_model(dropout=0.0, n_layer=3)
    idx, tgt = make_batch(seq=12)
    ref = run(model, NoneAC(), idx, tgt)
    s = OffloadAll()
    s.attach(model)
    s.offloader = Offloader(idx.device, HostPool(pin=False), unsafe_early_release=True)
    out = run(model, s, idx, tgt)
    differs = not torch.equal(out[0], ref[0]) or any(not torch.equal(out[1][k], ref[1][k]) for k in ref[1])
    assert differs


def test_offloader_round_trips_views_of_one_storage_once():
    off = Offloader(torch.device("cpu"))
    off.begin_forward()
    base = torch.randn(4, 6)
    q, k = base[:, :3], base[:, 3:]
    want_q, want_k = q.clone(), k.clone()
    rq, rk = off.offload(q, 0), off.offload(k, 0)
    assert off.stats.copies == 1 and off.stats.d2h_bytes == base.untyped_storage().nbytes()
    off.end_forward()
    base.add_(1.0)  # the device copy changes after the offload: the host copy must not
    got_k, got_q = off.get(rk), off.get(rq)
    assert torch.equal(got_k, want_k) and torch.equal(got_q, want_q)
    assert got_k.stride() == k.stride()
    assert got_q.untyped_storage().data_ptr() == got_k.untyped_storage().data_ptr()  # one reload


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_synchronisation_is_needed_and_sufficient():
    """A 1 GiB storage takes ~20 ms to cross the link. Dropped right after its copy is queued and
    overwritten by the compute stream, it arrives intact in host memory only because the Offloader
    holds it until the copy's event; reloaded into memory that holds other values and read at
    once, it reads right only because the compute stream waits for the reload's event. The cache
    is emptied first, so that the memory reused is the one this test means (not a block an
    earlier test left holding ones)."""
    dev = torch.device("cuda")
    n = 2**28  # float32: 1 GiB

    def round_trip(unsafe: bool) -> tuple[bool, bool]:
        off = Offloader(dev, unsafe_no_sync=unsafe)
        off.begin_forward()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        x = torch.ones(n, device=dev)
        ref = off.offload(x, 0)
        del x
        y = torch.full((n,), 2.0, device=dev)  # reuses x's memory at once if nothing guards it
        off.end_forward()
        torch.cuda.synchronize()
        host_ok = bool((ref.copy.buf.view(torch.float32) == 1.0).all())
        torch.cuda.empty_cache()
        w = torch.full((n,), 3.0, device=dev)
        del w  # the one free block of this size: the reload's memory, holding threes
        z = off.get(ref)
        read_ok = bool((z == 1.0).all())
        del y, z
        torch.cuda.synchronize()
        return host_ok, read_ok

    assert round_trip(unsafe=False) == (True, True)
    assert round_trip(unsafe=True) == (False, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bytes_in_flight_stay_allocated_until_their_copy_completes():
    """A storage its owner drops while its copy out is queued stays allocated, so a measured peak
    (max_memory_allocated) counts the bytes in flight; the first poll after the copy has completed
    releases it. Without the hold, the memory would be free at once."""
    dev = torch.device("cuda")
    n = 2**26  # float32: 256 MiB

    def held_bytes(unsafe: bool) -> tuple[int, int]:
        off = Offloader(dev, unsafe_no_sync=unsafe)
        off.begin_forward()
        x = torch.ones(n, device=dev)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(dev)
        torch.cuda._sleep(200_000_000)  # the compute stream busy: the copy (which waits for it) is queued
        ref = off.offload(x, 0)
        del x
        held = before - torch.cuda.memory_allocated(dev)  # 0 while held, 4n once released
        torch.cuda.synchronize()
        off._retire()
        released = before - torch.cuda.memory_allocated(dev)
        off.end_forward()
        off.get(ref)
        torch.cuda.synchronize()
        return held, released

    assert held_bytes(unsafe=False) == (0, 4 * n)
    assert held_bytes(unsafe=True) == (4 * n, 4 * n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_compute_stream_waits_for_copies_more_than_run_ahead_blocks_back():
    """With the compute stream busy, the host queues four blocks' copies out. Unbounded, all
    four storages stay allocated (the allocator cannot reuse what the host has not seen copied);
    with run_ahead_blocks=1 the offloader lets go of blocks 0 and 1 at block 3, behind a wait on
    the compute stream, so two are held. The host itself never waits: the last copy is still
    queued when the forward has moved on. Nothing is held once the forward ends."""
    dev = torch.device("cuda")
    n = 2**26  # float32: 256 MiB

    # pinned buffers allocated up front too: a cudaHostAlloc can hold the host until the GPU
    # catches up (on an H100 the unbounded case so held two blocks, not four)
    pool = HostPool(pin=True)
    bufs = [pool.take(4 * n)[0] for _ in range(4)]
    for b in bufs:
        pool.give(b)
    del bufs

    def held_bytes(run_ahead: int) -> tuple[int, int, int, bool]:
        off = Offloader(dev, pool=pool, run_ahead_blocks=run_ahead)
        off.begin_forward()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(dev)
        # allocated up front: a cudaMalloc inside the loop can hold the host until the GPU catches up
        xs = [torch.ones(n, device=dev) for _ in range(4)]
        torch.cuda.synchronize()
        refs = []
        for g in range(4):
            torch.cuda._sleep(50_000_000)  # ~25 ms of compute before this block's copy may start
            refs.append(off.offload(xs[g], g))
            xs[g] = None
        held = torch.cuda.memory_allocated(dev) - base
        off.enter_group(5)  # a block that offloads nothing: lets go of blocks 0 … 3
        entered = torch.cuda.memory_allocated(dev) - base
        host_ran_ahead = not refs[-1].copy.d2h_done.query()  # a host wait would have seen it done
        off.end_forward()
        after = torch.cuda.memory_allocated(dev) - base
        for r in reversed(refs):
            off.get(r)
        torch.cuda.synchronize()
        return held, entered, after, host_ran_ahead

    assert held_bytes(10**6) == (4 * 4 * n, 4 * 4 * n, 0, True)
    assert held_bytes(1) == (2 * 4 * n, 0, 0, True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("guarded", [True, False])
def test_a_storage_let_go_of_behind_a_stream_wait_is_copied_before_its_reuse(guarded, monkeypatch):
    """run_ahead_blocks=0: entering block 1 lets go of block 0's 1 GiB storage while its copy is
    still queued behind ~50 ms of compute, and the allocator hands the memory straight to a tensor
    the compute stream fills with twos. The host copy still reads ones, because the fill is queued
    after the compute stream's wait for the copy's event; without that wait, the fill overwrites
    the storage before the copy reads it."""
    dev = torch.device("cuda")
    n = 2**28  # float32: 1 GiB
    pool = HostPool(pin=True)  # the pinned buffer up front: a cudaHostAlloc in offload() could
    pool.give(pool.take(4 * n)[0])  # hold the host until the GPU catches up, and the copy with it
    off = Offloader(dev, pool=pool, run_ahead_blocks=0)
    if not guarded:
        monkeypatch.setattr(off, "_stream_wait", lambda event: None)
    off.begin_forward()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    x = torch.ones(n, device=dev)
    ptr = x.data_ptr()
    torch.cuda._sleep(100_000_000)  # the copy waits for this compute
    ref = off.offload(x, 0)
    del x
    off.enter_group(1)
    assert not ref.copy.d2h_done.query()  # let go of before the copy ran: the host did not wait
    y = torch.full((n,), 2.0, device=dev)
    assert y.data_ptr() == ptr  # the very memory, handed out at once
    off.end_forward()
    torch.cuda.synchronize()
    assert bool((ref.copy.buf.view(torch.float32) == 1.0).all()) == guarded
    del y
    off.get(ref)
    torch.cuda.synchronize()


class _Event:
    """A stand-in for a CUDA event whose completion the test decides."""

    def __init__(self, name: int, done: bool = False):
        self.name, self.done = name, done

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        raise AssertionError("the host waited for a copy")


@pytest.mark.parametrize("run_ahead", [0, 1, 2])
def test_entering_a_block_waits_for_the_copies_more_than_run_ahead_blocks_back(run_ahead):
    """The bookkeeping of the wait, on the CPU with events the test controls: entering block 5
    lets go of completed copies without waiting, and has the compute stream wait once, for the
    newest copy of the blocks before 5 − run_ahead (one stream's copies complete in order); the
    host never waits."""
    log: list = []
    off = Offloader(torch.device("cpu"), run_ahead_blocks=run_ahead)
    off._stream_wait = lambda event: log.append(event.name)
    groups = [0, 1, 1, 2, 3, 3, 4]
    off._in_flight.extend((_Event(i, done=i == 0), None, g) for i, g in enumerate(groups))
    off.enter_group(5)
    older = [i for i, g in enumerate(groups) if g < 5 - run_ahead and i > 0]
    assert log == older[-1:]  # one stream wait, on the newest of them
    assert [g for _, _, g in off._in_flight] == [g for g in groups if g >= 5 - run_ahead]
    off.enter_group(5)  # nothing more to wait for
    assert log == older[-1:]


def test_with_an_allowance_entering_a_block_lets_go_of_the_oldest_copies_beyond_it():
    """`hold_bytes` on top of `run_ahead_blocks` (1): entering block 5 with 700 bytes of copies
    out held and 250 allowed lets go of the five oldest (one stream wait, on the newest of them),
    keeping blocks 3 and 4; with nothing allowed in block 6, of everything more than one block
    back, keeping block 6's own copy; within the distance, nothing is let go of however much is
    held."""
    log: list = []
    off = Offloader(torch.device("cpu"))
    off._stream_wait = lambda event: log.append(event.name)
    off.hold_bytes = {5: 250.0, 6: 0.0}
    groups = [0, 1, 1, 2, 3, 3, 4]
    off._in_flight.extend((_Event(i), torch.empty(100, dtype=torch.uint8), g) for i, g in enumerate(groups))
    off.enter_group(5)
    assert log == [4]
    assert [g for _, _, g in off._in_flight] == [3, 4]
    off._in_flight.append((_Event(7), torch.empty(100, dtype=torch.uint8), 6))
    off.enter_group(6)
    assert log == [4, 6] and [g for _, _, g in off._in_flight] == [6]
    off.hold_bytes = {7: 0.0}
    off._in_flight.append((_Event(8), torch.empty(100, dtype=torch.uint8), 7))
    off.enter_group(7)  # block 6 is within the distance
    assert log == [4, 6] and [g for _, _, g in off._in_flight] == [6, 7]
    # a block's output is first saved, and offloaded under its owner's block, in the next block:
    # the rule is the block the forward is in, whose allowance (here none) the copy counts in
    off.hold_bytes = {7: 0.0, 8: 0.0, 9: 1e9}
    off.enter_group(9)  # nothing let go of: the allowance holds it all
    assert log == [4, 6]
    off.hold_bytes[9] = 0.0
    off._throttle(8)  # a copy owned by block 8, made in block 9: block 9's rule lets go of 6 and 7
    assert log == [4, 6, 8] and not off._in_flight


def test_the_runtime_enters_each_block_once_in_forward_order(monkeypatch):
    """SiteRuntime tells the offloader of every block the forward enters (−1 the embedding, one
    past the last block the head), in order, once each, and nothing during the backward."""
    entered: list[int] = []
    monkeypatch.setattr(Offloader, "enter_group", lambda self, g: entered.append(g))
    model = make_model(n_layer=3)
    idx, tgt = make_batch(seq=12)
    n = len(model.graph)
    offloaded = [k.name == "mlp_up" for k in model.graph.keys]
    s = PlanAC(stored=[True] * n, offloaded=offloaded)
    s.attach(model)
    loss = s.forward(model, idx, tgt)
    assert entered == [-1, 0, 1, 2, 3]
    loss.backward()
    assert entered == [-1, 0, 1, 2, 3]


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_the_backward_prefetches_blocks_that_offload_nothing_themselves(prefetch, monkeypatch):
    """Only block 0 offloads (its mlp_up output). Entering the backward of a block that holds no
    offloaded tensor still starts the reloads of the `prefetch` blocks before it: with a distance
    of 1 or more, block 0's reloads start in block 1's backward, none once the backward is in
    block 0 itself; with 0 every reload starts only at its own block. Exact either way."""
    model = make_model(n_layer=3)
    idx, tgt = make_batch(seq=12)
    ref = run(model, NoneAC(), idx, tgt)
    n = len(model.graph)
    offloaded = [k.layer == 0 and k.name == "mlp_up" for k in model.graph.keys]
    entered: list[int] = []
    s = PlanAC(stored=[True] * n, offloaded=offloaded, prefetch_blocks=prefetch)
    assert_bitwise(run(model, s, idx, tgt), ref, f"prefetch {prefetch}")
    st = s.offloader.stats
    assert st.copies == 1 and st.h2d_bytes == st.d2h_bytes > 0
    assert st.late_reloads == (1 if prefetch == 0 else 0)
    # the backward enters the blocks in reverse order, the head (one past the last) first
    orig = Offloader.enter_backward_group
    monkeypatch.setattr(Offloader, "enter_backward_group",
                        lambda self, g: (entered.append(g), orig(self, g))[1])
    run(model, s, idx, tgt)
    firsts = [g for i, g in enumerate(entered) if g not in entered[:i]]
    assert firsts == [3, 2, 1, 0, -1]


def _record_starts(monkeypatch) -> list[tuple[int, int, int | None]]:
    """(copy index, its block, the backward's block when its reload started: None before it)."""
    starts: list[tuple[int, int, int | None]] = []
    orig = Offloader._copy_in
    monkeypatch.setattr(Offloader, "_copy_in",
                        lambda self, c: (starts.append((c.index, c.group, self._bw_group)), orig(self, c))[1])
    return starts


def _rebuilds_from_an_offloaded_output(model):
    """Block 2 (the last) and the final norm recomputed, four sites of blocks 0 and 1 offloaded:
    the head's backward rebuilds block 2 from block 1's offloaded output."""
    keys = model.graph.keys
    stored = [not (k.layer == 2 or k.name == "final_norm") for k in keys]
    offloaded = [s and k.layer in (0, 1) and k.name in ("qkv", "attn_out", "mlp_up", "mlp_down")
                 for s, k in zip(stored, keys)]
    return stored, offloaded


def _rebuild_plan():
    """The three-block model, a batch, `none`'s loss and gradients, and the plan of
    `_rebuilds_from_an_offloaded_output`, prefetching one block ahead."""
    model = make_model(n_layer=3)
    idx, tgt = make_batch(seq=12)
    ref = run(model, NoneAC(), idx, tgt)
    stored, offloaded = _rebuilds_from_an_offloaded_output(model)
    return model, idx, tgt, ref, PlanAC(stored=stored, offloaded=offloaded, prefetch_blocks=1)


def test_a_reload_a_rebuild_needs_early_starts_before_it_is_needed(monkeypatch):
    """The head's backward rebuilds block 2 from block 1's offloaded output. The runtime works out
    in the forward which block's backward runs each rebuild, so from the first step on that
    reload starts at the end of the forward, and every other copy one block ahead of its own
    block; nothing is reloaded on demand or late. Exact at every step."""
    model, idx, tgt, ref, s = _rebuild_plan()
    starts = _record_starts(monkeypatch)
    for step in range(2):
        starts.clear()
        assert_bitwise(run(model, s, idx, tgt), ref, f"step {step}")
        assert (s.offloader.stats.reloads_on_demand, s.offloader.stats.late_reloads) == (0, 0)
        # copies in offload order: block 0's four, block 1's four; the last, block 1's output, is
        # what the head's rebuild reads. Block 0's output, which block 1 saves (a slot, not a
        # rebuild), is prefetched by its own block
        assert sorted((i, bw) for i, _, bw in starts) == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2),
                                                          (6, 2), (7, None)]
    # without the runtime's needs, that reload waits for the rebuild that reads it
    monkeypatch.setattr(Offloader, "set_rebuild_needs", lambda self, needs: None)
    assert_bitwise(run(model, s, idx, tgt), ref, "without the needs")
    assert s.offloader.stats.reloads_on_demand == 1


def test_only_the_copies_a_rebuild_needs_early_move_ahead(monkeypatch):
    """Blocks 1–3 rebuild attn_out, mlp_down and the norms and offload the rest; block 0 offloads
    its output. The reloads that start before the backward does are exactly those of the copies
    that a rebuild in the head's backward reads; every other copy starts where it does without
    the runtime's needs, not earlier."""
    model = make_model(n_layer=4)
    idx, tgt = make_batch(seq=12)
    ref = run(model, NoneAC(), idx, tgt)
    keys = model.graph.keys
    rebuilt = ("attn_out", "mlp_down", "attn_norm", "mlp_norm", "final_norm")
    stored = [not ((k.layer or 0) >= 1 and k.name in rebuilt or k.name == "final_norm") for k in keys]
    offloaded = [s and (k.layer == 0 and k.name == "mlp_down" or (k.layer or 0) >= 1 and
                        k.name in ("qkv", "attn_core", "mlp_up", "mlp_act")) for s, k in zip(stored, keys)]
    s = PlanAC(stored=stored, offloaded=offloaded, prefetch_blocks=1)
    needs: dict[int, int] = {}  # copy index -> the block whose backward rebuilds from it
    orig = Offloader.set_rebuild_needs
    monkeypatch.setattr(Offloader, "set_rebuild_needs", lambda self, ns: (
        needs.update({r.copy.index: max(b, needs.get(r.copy.index, b)) for r, b in ns}), orig(self, ns))[1])
    starts = _record_starts(monkeypatch)
    assert_bitwise(run(model, s, idx, tgt), ref, "with the needs")
    with_needs = sorted(starts)
    assert (s.offloader.stats.reloads_on_demand, s.offloader.stats.late_reloads) == (0, 0)
    monkeypatch.setattr(Offloader, "set_rebuild_needs", lambda self, ns: None)
    starts.clear()
    assert_bitwise(run(model, s, idx, tgt), ref, "without")
    without = {i: bw for i, _, bw in starts}
    head = 4  # the head's block: one past the last
    early = {i for i, b in needs.items() if b == head}
    assert early and len(early) < len(with_needs)
    assert {i for i, _, bw in with_needs if bw is None} == early
    assert all(bw == without[i] for i, _, bw in with_needs if i not in early)


@pytest.mark.filterwarnings("ignore:this plan rebuilds")
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_the_forward_knows_where_each_rebuild_reads_its_offloaded_input(ci, monkeypatch):
    """On random three-arm plans, the block the runtime works out in the forward for each offloaded
    input of a rebuild (`SiteRuntime._rebuild_needs`) is the block the backward is in when that
    input is first read by a rebuild, and its reload has started by then. Exact throughout."""
    model = make_model(seed=ci, **CONFIGS[ci])
    model.train()
    idx, tgt = make_batch(seq=12, seed=ci)
    ref = run(model, NoneAC(), idx, tgt)
    needs: dict[int, int] = {}
    # id(copy) -> (its block, the backward's, whether its reload had started) at a rebuild's first read
    reads: dict[int, tuple[int, int | None, bool]] = {}
    orig_set, orig_get = Offloader.set_rebuild_needs, Offloader.get
    monkeypatch.setattr(Offloader, "set_rebuild_needs", lambda self, ns: (
        needs.update({id(r.copy): max(b, needs.get(id(r.copy), b)) for r, b in ns}), orig_set(self, ns))[1])
    monkeypatch.setattr(Offloader, "get", lambda self, r: (
        (not r.slot and reads.setdefault(id(r.copy), (r.copy.group, self._bw_group, r.copy.dev is not None))),
        orig_get(self, r))[1])
    rng = random.Random(300 + ci)
    n_reads = 0
    for t in range(8):
        stored, offloaded = random_arms(len(model.graph), rng)
        s = PlanAC(stored=stored, offloaded=offloaded, prefetch_blocks=rng.choice([0, 1, 2]))
        needs.clear()
        reads.clear()
        assert_bitwise(run(model, s, idx, tgt), ref, f"plan {t}")
        for key, (group, bw, started) in reads.items():
            assert max(needs.get(key, group), group) == max(group, group if bw is None else bw), f"plan {t}"
            assert started, f"plan {t}: a rebuild's input reloaded on demand"
        n_reads += len(reads)
    assert n_reads > 0


def test_an_input_only_a_rebuild_reads_is_prefetched():
    """Site 0 (a matmul) is offloaded and site 1 (a scale, which saves nothing) recomputed: the
    only reader of site 0's output in backward is site 1's rebuild, so its copy has no autograd
    slot and the walk by block, which reloads slots, never starts it. It is prefetched all the
    same, not reloaded on demand; the gradients match storing everything."""
    from drat.recompute import SiteRuntime

    torch.manual_seed(0)
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8, 8, requires_grad=True)

    def step(stored, offloaded):
        off = Offloader(torch.device("cpu"))
        rt = SiteRuntime(stored, [False, False], torch.device("cpu"), site_blocks=[0, 0],
                         offloaded=offloaded, offloader=off)
        with rt.hooks():
            a = rt.run(0, torch.matmul, x, w)
            b = rt.run(1, lambda t: t * 2.0, a)
            loss = (b * b).sum()
        rt.end_forward()
        gx, gw = torch.autograd.grad(loss, (x, w))
        return loss.detach(), gx, gw, off.stats

    *ref, _ = step([True, True], [False, False])
    *got, stats = step([True, False], [True, False])
    assert all(torch.equal(r, g) for r, g in zip(ref, got))
    assert stats.copies == 1 and stats.h2d_bytes == stats.d2h_bytes > 0
    assert stats.reloads_on_demand == 0


def test_a_failed_forward_starts_no_reload(monkeypatch):
    """A forward that raises (an out-of-memory error, say) after its copies went out starts none
    of the reloads its plan starts at the end of the forward: nothing is allocated for a backward
    that will never run. The next step runs and is exact."""
    model, idx, tgt, ref, s = _rebuild_plan()
    starts = _record_starts(monkeypatch)
    assert_bitwise(run(model, s, idx, tgt), ref, "a step")
    assert any(bw is None for _, _, bw in starts)  # a reload started at the end of the forward
    starts.clear()
    forward_sites = type(model).forward_sites

    def fails_at_the_end(self, *args, **kw):  # every site ran, the head's slots are packed
        forward_sites(self, *args, **kw)
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(type(model), "forward_sites", fails_at_the_end)
        with pytest.raises(RuntimeError, match="boom"):
            run(model, s, idx, tgt)
    assert s.offloader.stats.copies > 0 and starts == []
    assert_bitwise(run(model, s, idx, tgt), ref, "after the failure")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_three_arm_plans_are_bitwise_exact_on_the_gpu_in_deterministic_mode():
    from drat.runtime import set_deterministic

    restore = set_deterministic()
    try:
        model = make_model(dropout=0.1, n_layer=3, loss_chunks=3).cuda()
        idx, tgt = (t.cuda() for t in make_batch(seq=32))

        def run_bf16(strategy):
            with torch.autocast("cuda", torch.bfloat16):
                return run(model, strategy, idx, tgt)

        ref = run_bf16(NoneAC())
        rng = random.Random(7)
        n = len(model.graph)
        for t in range(8):
            stored, offloaded = random_arms(n, rng)
            s = PlanAC(stored=stored, offloaded=offloaded, prefetch_blocks=t % 3)
            if t >= 4:  # planned on a link: the offloader's allowance per block lets go of less
                c = SiteCosts.build(model.graph, [rng.uniform(0, 8192) for _ in range(n)],
                                    [rng.uniform(0.01, 1) for _ in range(n)], step_ms=10.0, kind="synthetic")
                c.link = {"d2h_gbps": 1e-3, "h2d_gbps": 1e-3, "copy_overhead_ms": 0.0}
                s.plan_prefetch(c, offloaded)
            assert_bitwise(run_bf16(s), ref, f"gpu three-arm plan {t}")
            assert s.host_stats()["d2h_bytes"] > 0
            assert (s.offloader.hold_bytes is not None) == (t >= 4)
        for strat in (OffloadAll(), FullOffload(), SaveOnCPU()):
            assert_bitwise(run_bf16(strat), ref, strat.name)
    finally:
        restore()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_rebuild_reload_prefetched_at_the_end_of_the_forward_is_exact_on_the_gpu():
    """On the device, the reload that the head's rebuild needs starts at the end of the forward on
    the H→D stream, right after the drain of the copies out (memory the
    allocator has just freed): bitwise equal to `none` at every step, in deterministic mode, and
    nothing on demand or late by then."""
    from drat.runtime import set_deterministic

    restore = set_deterministic()
    try:
        model = make_model(n_layer=3).cuda()
        idx, tgt = (t.cuda() for t in make_batch(seq=32))
        ref = run(model, NoneAC(), idx, tgt)
        stored, offloaded = _rebuilds_from_an_offloaded_output(model)
        s = PlanAC(stored=stored, offloaded=offloaded, prefetch_blocks=1)
        for step in range(3):
            assert_bitwise(run(model, s, idx, tgt), ref, f"gpu step {step}")
            assert (s.offloader.stats.reloads_on_demand, s.offloader.stats.late_reloads) == (0, 0)
    finally:
        restore()


def test_profile_three_arm_plan_moves_the_bytes_it_planned(capsys):
    import json

    from drat.cli import main

    rc = main(["profile", "--size", "tiny", "--strategy", "oracle", "--budget-gib", "0.077", "--arms",
               "store,recompute,offload", "--steps", "1", "--warmup", "0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["plan"]["arms"] == 3
    moved = out["offload"]["d2h_bytes"]
    assert moved > 0 and moved == out["plan"]["offload_bytes_per_step"]  # the planned bytes crossed
    assert out["offload"]["h2d_bytes"] == moved and out["offload"]["reloads_on_demand"] == 0
    assert sum(s["decision"] == "offload" for s in out["sites"]) == out["plan"]["offloaded_sites"]


def test_a_bad_arms_flag_is_one_line_and_exit_2(capsys):
    from drat.cli import main

    rc = main(["profile", "--size", "tiny", "--arms", "store,offload"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--arms" in err


def test_compiled_plan_marks_offloaded_sites_and_stays_exact_eagerly():
    """CompiledPlanAC's offloaded sites become CPU_OFFLOAD policies (acted on only by the compiler,
    under `compiler_offloading`); run eagerly, the plan is still bitwise exact."""
    from drat.runtime import autocast_ctx
    from drat.strategies import CompiledPlanAC

    model = make_model(dropout=0.0)
    idx, tgt = make_batch()
    ref = run(model, NoneAC(), idx, tgt)
    stored, offloaded = random_arms(len(model.graph), random.Random(0))
    s = CompiledPlanAC([a or o for a, o in zip(stored, offloaded)], offloaded=offloaded)
    model.set_strategy(s)
    s.prepare(model, idx, autocast_ctx(idx.device))
    assert_bitwise(run(model, s, idx, tgt), ref, "compiled plan with offload marks, eager")


def test_an_inplace_change_of_an_offloaded_tensor_fails_as_autograd_would():
    from drat.recompute import SiteRuntime

    rt = SiteRuntime([True, True], [False, False], torch.device("cpu"), offloaded=[True, False],
                     offloader=Offloader(torch.device("cpu")), site_blocks=[0, 0])
    x = torch.randn(8, requires_grad=True)
    with rt.hooks():
        y = rt.run(0, torch.sin, x)  # site 0's output: offloaded when site 1 saves it
        z = rt.run(1, lambda t: t * t, y)
    rt.end_forward()
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*offloaded"):
        z.sum().backward()
