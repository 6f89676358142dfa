"""Per-site costs and the dependency-aware expected recompute cost.

For every site i:
    M_i  bytes the site holds for backward when stored (from saved-tensor accounting),
    T_i  time to run the site's forward once (CUDA events on GPU, a FLOP/byte roofline on CPU).

Recompute semantics (mirroring `recompute.py`). A recomputed site j has n_j rebuild units (1, or
`loss_chunks` for the LM head). Each unit is rebuilt once *for its own saved slots* and cached
until they are consumed. A child needs j as input whenever the child is rebuilt:
  * a child in the same block (same layer; the model-level sites form one group) rebuilt for its
    own slots uses j's cached rebuild, building it if need be: it costs j nothing extra;
  * every other rebuild of a child (a child in another block, or a child's transient rebuild)
    rebuilds j transiently, for that one use, and drops it: memory stays bounded by one block.
So with s_j = 1 when j is stored, X(j) the children in other blocks and W(j) those in j's block,

    R_j = (1 − s_j) · (n_j + Σ_{c ∈ X(j)} R_c + Σ_{c ∈ W(j)} (R_c − (1 − s_c) n_c)),

and the recompute time is Σ_j R_j · T_j / n_j. R is multilinear in s, so with gate probabilities
the same recursion gives the exact expected cost under independent gates. `SiteRuntime.rebuilds`
counts the same R_j (tests/test_accounting.py checks it on random plans).

The offload arm (o_i = 1: site i's tensors wait in host memory). For the recursion an offloaded
site is available like a stored one (s_j above is "stored or offloaded"); its bytes leave the
device, and its time cost is the part of its transfers that compute does not hide. With F_k the
forward time after site k, B_k the backward time of the sites after k (the step's backward share,
spread over the sites in proportion to their forward time) and D_k = Σ_{i ≥ k} o_i M_i the bytes
offloaded from site k on:

    L_d = max_k (D_k / bw_d2h − F_k)⁺   the device-to-host queue's backlog when the forward ends
                                        (copies leave in forward order, the last one last)
    L_h = max_k (D_k / bw_h2d − B_k)⁺   how late the reloads run: backward reaches site k after
                                        B_k, and the bytes from k on must be back by then
    exposed = L_d + L_h                 the first reload needs the last copy out, so the backlog
                                        delays every reload

plus, per offloaded site and step, a fixed host cost to queue its copy and the compute its
copies slow down (the link probe measures how much slower matmuls run under a copy: 3–16% on an
H100 or H200 for a device-to-host copy; `offload_site_ms`). Both maxima are linear constraints
in o, so the oracle keeps them exactly (oracle.py).

An offloaded site's bytes leave the peak except those the offloader still holds there. The
caching allocator reuses a storage only once the offloader lets go of it, and the host, which
decides that, runs ahead of the GPU; at every block it enters, the offloader lets go of the
copies more than r = `run_ahead_blocks` blocks back, behind a wait for them on the compute
stream (offload.py; with a plan, only beyond an allowance, `hold_bytes_by_block`). At the LM
head, where the peak is, it so holds the copies of the last r blocks and of the head's own
sites, whatever the link's speed (a slow link stalls the forward instead). The planners price
that stall as L_d, the backlog at the end of the forward; the runtime's rule can wait earlier
and longer, and `copy_stall_ms` simulates it (≥ L_d; equal when the allowance covers the
backlog), which the offload bench reports beside the prediction. With H the set of
those sites, a plan's device memory is Σ_i s_i M_i + Σ_{i ∈ H} o_i M_i (no H on a synchronous
link: a CPU copy ends before the next site runs). The reloads that the backward prefetches at
the head are those of the last `prefetch_blocks` blocks: H covers them while the distance is at
most r, and a link that names a longer one widens H to it.

L_h assumes the reloads stream from the start of the backward. The offloader starts them
`prefetch_blocks` blocks ahead of their use (offload.py); `reload_stall_ms` simulates that
site by site, and `plan_prefetch_blocks` plans the shortest distance that hides the reloads
as well as any longer one does (a longer one holds reloaded bytes for longer).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import torch

from .offload import RUN_AHEAD_BLOCKS
from .sites import SiteGraph, flow_groups

if TYPE_CHECKING:
    from torch import nn

COST_MODELS = ("measured", "uniform", "layer_weighted", "activation_size")


@dataclass
class SiteCosts:
    """Raw per-site costs plus the normalisers that make them unitless."""

    labels: list[str]
    mem_bytes: list[float]  # M_i, bytes held when stored
    time_ms: list[float]  # T_i, forward time of the whole site (all rebuild units)
    parents: list[list[int]]
    instances: list[int]
    step_ms: float  # time normaliser: one training step
    kind: str = "measured"
    # per-rebuild cost that T_i (site forwards timed under no_grad) leaves out: the hooks, the
    # rebuild's own autograd graph, autocast re-casts, Python; already added into time_ms as
    # rebuild_overhead_ms × n_i (see measure_rebuild_overhead_ms)
    rebuild_overhead_ms: float = 0.0
    # the bytes each site owns when stored, kept where M_i was replaced by a measured peak
    # saving (the LM head on CUDA: see measure_peak_saving_bytes); None when M_i is what it owns
    owned_bytes: list[float] | None = None
    # the host link, for the offload arm: {"d2h_gbps", "h2d_gbps" (1e9 bytes/s, measured while
    # the GPU computes), "copy_overhead_ms" (host time per offloaded site and step),
    # "d2h_compute_slowdown" and "h2d_compute_slowdown" (how much slower matmuls run under a
    # copy), "synchronous" (CPU: copies hide behind nothing)}; see measure.measure_link. None:
    # no offload arm
    link: dict | None = None

    @classmethod
    def build(cls, graph: SiteGraph, mem_bytes, time_ms, step_ms: float, kind: str) -> SiteCosts:
        return cls([k.label() for k in graph.keys], [float(m) for m in mem_bytes],
                   [float(t) for t in time_ms], [list(p) for p in graph.parents],
                   list(graph.instances), float(step_ms), kind)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def children(self) -> list[list[int]]:
        ch: list[list[int]] = [[] for _ in self.labels]
        for i, ps in enumerate(self.parents):
            for p in ps:
                ch[p].append(i)
        return ch

    @property
    def total_bytes(self) -> float:
        return sum(self.mem_bytes)

    def normalized(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, T): bytes as a fraction of store-everything, time as a fraction of a step."""
        M = torch.tensor(self.mem_bytes, dtype=torch.float64) / max(self.total_bytes, 1.0)
        T = torch.tensor(self.time_ms, dtype=torch.float64) / max(self.step_ms, 1e-12)
        return M, T

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def groups(self) -> list[int]:
        """The block of each site (its layer; -1 for the model-level sites), from its label."""
        return [int(lb[1:lb.index(".")]) if lb.startswith("L") and "." in lb else -1 for lb in self.labels]

    @property
    def flow(self) -> list[int]:
        """The block of each site as the offloader numbers them (`sites.flow_groups`): −1 the
        embedding, the layer, one past the last layer the head."""
        return flow_groups([g if g >= 0 else None for g in self.groups], len(self))

    @property
    def same_block_children(self) -> list[list[int]]:
        g = self.groups
        return [[c for c in ch if g[c] == g[j]] for j, ch in enumerate(self.children)]


def link_windows(costs: SiteCosts) -> tuple[list[float], list[float]]:
    """(F_k, B_k) in ms for every site k: the forward time after k and the backward time of the
    sites after k (the module docstring)."""
    T = [max(t, 0.0) for t in costs.time_ms]
    if costs.link is not None and costs.link.get("synchronous"):  # CPU copies: nothing hides them
        return [0.0] * len(T), [0.0] * len(T)
    fwd = max(sum(T), 1e-12)
    bwd_per_fwd = max(costs.step_ms - fwd, 0.0) / fwd
    F, acc = [0.0] * len(T), 0.0
    for k in range(len(T) - 1, -1, -1):
        F[k] = acc
        acc += T[k]
    return F, [f * bwd_per_fwd for f in F]


def expected_exposed_transfer(o: torch.Tensor, costs: SiteCosts) -> torch.Tensor:
    """exposed / step (module docstring) for offload probabilities (or flags) `o`; differentiable
    (piecewise linear: its gradient prices the suffix where the link is tightest)."""
    if costs.link is None:
        return o.sum() * 0.0
    per_site = torch.tensor(offload_site_ms(costs), dtype=torch.float64)
    over = (o.to(torch.float64) * per_site).sum()
    return (_late_ms(o, costs) + over) / max(costs.step_ms, 1e-12)


def offload_site_ms(costs: SiteCosts) -> list[float]:
    """ms a step pays for each site it offloads beyond the link's late time: the host's time to
    queue the copy (`copy_overhead_ms`), and the compute slowed while the site's bytes cross the
    link each way: a copy hides by running under compute, and the link probe measures the matmul
    time a copy adds per ms of copy under them (`<dir>_compute_ms_per_copy_ms`; a table measured
    before the probe recorded it has only the slowdown over a matmul run three times the copies'
    length, `<dir>_compute_slowdown`, which then stands in as a lower bound). A measured value
    below zero is noise and counts as none. Zeros without a link."""
    lk = costs.link
    if lk is None:
        return [0.0] * len(costs)
    host_ms = lk.get("copy_overhead_ms", 0.0)
    if lk.get("synchronous"):  # nothing runs under a CPU copy: its whole time is in the late terms
        return [host_ms] * len(costs)
    def added_ms_per_copy_ms(d: str) -> float:
        return max(lk.get(f"{d}_compute_ms_per_copy_ms", lk.get(f"{d}_compute_slowdown", 0.0)), 0.0)

    ms_per_byte = sum(added_ms_per_copy_ms(d) / (lk[f"{d}_gbps"] * 1e6) for d in ("d2h", "h2d"))
    return [host_ms + m * ms_per_byte for m in costs.mem_bytes]


def _late_parts(o: torch.Tensor, costs: SiteCosts) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_d, L_h) in ms: the D→H backlog at the end of the forward, and the reloads still late at
    their use (maxima over suffixes)."""
    dtype = torch.float64
    o = o.to(dtype)
    F, B = (torch.tensor(x, dtype=dtype) for x in link_windows(costs))
    M = torch.tensor(costs.mem_bytes, dtype=dtype)
    D = torch.flip(torch.cumsum(torch.flip(o * M, [0]), 0), [0])  # [n] bytes offloaded from k on
    lk = costs.link
    late_d = (D / (lk["d2h_gbps"] * 1e6) - F).clamp(min=0).max()
    late_h = (D / (lk["h2d_gbps"] * 1e6) - B).clamp(min=0).max()
    return late_d, late_h


def _late_ms(o: torch.Tensor, costs: SiteCosts) -> torch.Tensor:
    """L_d + L_h in ms: the time the compute stream waits on the link."""
    late_d, late_h = _late_parts(o, costs)
    return late_d + late_h


def held_at_peak(costs: SiteCosts) -> list[bool]:
    """The sites H whose offloaded bytes the offloader still holds at the peak (module
    docstring): those in the last `run_ahead_blocks` blocks and the model-level sites after them.
    Empty without a link or on a synchronous one."""
    lk = costs.link
    if lk is None or lk.get("synchronous"):
        return [False] * len(costs)
    flow = costs.flow
    tail = max(flow, default=0)
    r = int(lk.get("run_ahead_blocks", RUN_AHEAD_BLOCKS))  # the offloader's default unless named
    r = max(r, int(lk.get("prefetch_blocks", 0)))  # reloads the head's backward has prefetched
    return [f >= tail - r for f in flow]


def in_flight_bytes(o: torch.Tensor, costs: SiteCosts) -> torch.Tensor:
    """Offloaded bytes still on the device at the peak: Σ_{i ∈ H} o_i M_i (`held_at_peak`).
    Linear in `o` (offload probabilities or flags); 0 without a link and on a synchronous one."""
    H = torch.tensor([1.0 if h else 0.0 for h in held_at_peak(costs)], dtype=torch.float64)
    return (o.to(torch.float64) * H * torch.tensor(costs.mem_bytes, dtype=torch.float64)).sum()


def reload_stall_ms(offloaded: list[bool], costs: SiteCosts, prefetch_blocks: int) -> float:
    """ms the backward waits on reloads when the offloader prefetches `prefetch_blocks` blocks
    ahead (offload.py). The backward runs the sites last to first, each for its share of the
    step's backward (B_k of `link_windows`); entering a block queues the reloads of the blocks it
    now reaches, latest site first, on the one H→D stream; a site whose bytes are not back when
    the backward reaches it waits, and everything after it runs that much later. With the whole
    backward as the distance every reload is queued at its start, and the wait is L_h exactly."""
    lk = costs.link
    if lk is None or lk.get("synchronous") or not any(offloaded):
        return 0.0
    flow = costs.flow
    T = [max(t, 0.0) for t in costs.time_ms]
    fwd_ms = max(sum(T), 1e-12)
    bwd_ms = [x * max(costs.step_ms - fwd_ms, 0.0) / fwd_ms for x in T]  # each site's own backward
    bytes_per_ms = lk["h2d_gbps"] * 1e6
    t = link_free = stall = 0.0
    back = [0.0] * len(flow)  # when site i's bytes are back
    queued = len(flow)  # sites [queued, n) have their reloads queued
    for k in range(len(flow) - 1, -1, -1):
        if k == len(flow) - 1 or flow[k] != flow[k + 1]:  # it enters a block: queue those in reach
            while queued > 0 and flow[queued - 1] >= flow[k] - prefetch_blocks:
                queued -= 1
                if offloaded[queued]:
                    link_free = max(link_free, t) + costs.mem_bytes[queued] / bytes_per_ms
                    back[queued] = link_free
        if offloaded[k] and back[k] > t:
            stall += back[k] - t
            t = back[k]
        t += bwd_ms[k]
    return stall


def hold_bytes_by_block(stored: list[bool], offloaded: list[bool], costs: SiteCosts) -> dict[int, float]:
    """For every block g of the forward, how many bytes of copies out the offloader may still hold
    as the forward runs g: those the peak holds anyway (`in_flight_bytes`) plus the bytes the plan
    stores in the blocks after g, which are not yet allocated while the forward is in g. Holding
    that much at g never takes the activations above what they are at the LM head, where the peak
    is, and lets a copy of an early block finish under the rest of the forward, as L_d assumes,
    instead of within `run_ahead_blocks` blocks (the offloader applies it on top of the distance,
    so it never waits more than the distance alone would)."""
    flow = costs.flow
    o = torch.tensor([1.0 if x else 0.0 for x in offloaded], dtype=torch.float64)
    at_peak = float(in_flight_bytes(o, costs))
    per_block: dict[int, float] = {}  # bytes each block stores
    for f, m, keep, off in zip(flow, costs.mem_bytes, stored, offloaded):
        per_block[f] = per_block.get(f, 0.0) + (m if keep and not off else 0.0)
    later, caps = 0.0, {}
    for g in sorted(per_block, reverse=True):
        caps[g] = at_peak + later  # later: the bytes stored in the blocks after g
        later += per_block[g]
    return caps


def copy_stall_ms(offloaded: list[bool], costs: SiteCosts, run_ahead_blocks: int | None = None,
                  hold_bytes: dict[int, float] | None = None) -> float:
    """ms the forward waits on copies out, plus the backlog the backward then waits for, when the
    offloader lets go of copies `run_ahead_blocks` blocks behind and, with `hold_bytes`, only
    while more than `hold_bytes[g]` bytes of them are held in block g (offload.py). The forward
    runs the sites first to last, each for its forward time; an offloaded site's copy joins the
    one D→H stream as the site ends; entering a block and after each copy, the offloader lets go
    of the copies out of reach and compute waits until they are out; the backward starts once the
    last copy is out. With nothing let go of before the forward ends, only that last wait is
    left: L_d exactly."""
    lk = costs.link
    if lk is None or lk.get("synchronous") or not any(offloaded):
        return 0.0
    if run_ahead_blocks is None:  # the offloader's default unless the link names it
        run_ahead_blocks = int(lk.get("run_ahead_blocks", RUN_AHEAD_BLOCKS))
    flow = costs.flow
    bytes_per_ms = lk["d2h_gbps"] * 1e6
    copies: list[tuple[int, float, float]] = []  # (block, bytes, when it is out), in copy order
    st = {"t": 0.0, "stall": 0.0, "held": 0.0, "gone": 0}  # copies [0, gone) let go of

    def let_go(g: int) -> None:
        while st["gone"] < len(copies) and copies[st["gone"]][0] < g - run_ahead_blocks and (
                hold_bytes is None or st["held"] > hold_bytes.get(g, 0.0)):
            _, nbytes, out = copies[st["gone"]]
            st["stall"] += max(out - st["t"], 0.0)
            st["t"] = max(st["t"], out)
            st["held"] -= nbytes
            st["gone"] += 1

    link_free = 0.0
    for k in range(len(flow)):
        if k == 0 or flow[k] != flow[k - 1]:
            let_go(flow[k])
        st["t"] += max(costs.time_ms[k], 0.0)
        if offloaded[k]:
            link_free = max(link_free, st["t"]) + costs.mem_bytes[k] / bytes_per_ms
            copies.append((flow[k], costs.mem_bytes[k], link_free))
            st["held"] += costs.mem_bytes[k]
            let_go(flow[k])
    return st["stall"] + max(link_free - st["t"], 0.0)


def plan_prefetch_blocks(offloaded: list[bool], costs: SiteCosts, tol_ms: float = 0.01) -> int:
    """The shortest prefetch distance (≥ 1) whose reload stall (`reload_stall_ms`) is within
    `tol_ms` of the least any distance gets: reloading earlier than that only holds reloaded bytes
    on the device for longer. 1, the offloader's default, when nothing is offloaded."""
    n_blocks = len(set(costs.flow))  # the blocks, the embedding and the head
    least = reload_stall_ms(offloaded, costs, n_blocks)
    for d in range(1, n_blocks):
        if reload_stall_ms(offloaded, costs, d) <= least + tol_ms:
            return d
    return n_blocks


def predicted_wait_ms(offloaded: list[bool], costs: SiteCosts) -> float:
    """The compute stream's predicted wait on the link per step for a hard offload plan: the
    exposed transfer less each offloaded site's own cost (`offload_site_ms`: host time and slowed
    compute, which are not waits), i.e. what `Offloader.pop_wait_ms` measures."""
    if costs.link is None or not any(offloaded):
        return 0.0
    return float(_late_ms(torch.tensor([float(x) for x in offloaded]), costs))


def scaled_link(link: dict, scale: float) -> dict:
    """`link` with both bandwidths times `scale` (what a re-plan on a measured step assumes)."""
    return {**link, "d2h_gbps": link["d2h_gbps"] * scale, "h2d_gbps": link["h2d_gbps"] * scale}


def link_scale_for_wait(plans: list[list[bool]], measured_ms: float, costs: SiteCosts,
                        lo: float = 1 / 16, hi: float = 16.0) -> float:
    """The factor on both link bandwidths at which the predicted waits of `plans` sum to
    `measured_ms` (bisection in log space: a wider link waits less). Clamped to [lo, hi]."""
    def excess(scale: float) -> float:
        c = replace(costs, link=scaled_link(costs.link, scale))
        return sum(predicted_wait_ms(p, c) for p in plans) - measured_ms

    if excess(lo) <= 0:
        return lo
    if excess(hi) >= 0:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(40):
        m = (a + b) / 2
        if excess(math.exp(m)) > 0:
            a = m
        else:
            b = m
    return math.exp(b)


def expected_recompute(s: torch.Tensor, T: torch.Tensor, costs: SiteCosts) -> torch.Tensor:
    """Σ_j R_j(s) T_j / n_j for store probabilities (or hard flags) `s`; differentiable.

    The recursion of the module docstring is linear in R: with C the child matrix (C[j, c] = 1,
    strictly upper triangular because children come later in forward order), W its same-block
    part and D = diag(1 − s), R = D(n + C R − W D n), i.e. (I − D C) R = D (n − W D n): one
    triangular solve instead of a scalar autograd graph of every edge."""
    dtype = T.dtype
    s = s.to(dtype)
    C, W, inst = (m.to(dtype) for m in _structure(tuple(costs.labels), tuple(map(tuple, costs.parents)),
                                                  tuple(costs.instances)))
    d = 1 - s  # [n]
    A = torch.eye(len(d), dtype=dtype) - d[:, None] * C  # [n, n] unit upper triangular
    rhs = d * (inst - W @ (d * inst))  # [n]
    R = torch.linalg.solve_triangular(A, rhs[:, None], upper=True, unitriangular=True)[:, 0]
    return (R * T / inst).sum()


@functools.lru_cache(maxsize=16)
def _structure(labels: tuple, parents: tuple, instances: tuple) -> tuple[torch.Tensor, ...]:
    """(C, W, n) of `expected_recompute`, built once per site graph: the gates' resource loss runs
    every training step on the host, and rebuilding these from the labels would be half its time.
    Built outside inference mode, whatever the first caller runs under: an inference tensor in
    the cache could never be saved for a later backward."""
    with torch.inference_mode(False):
        return _build_structure(labels, parents, instances)


def _build_structure(labels: tuple, parents: tuple, instances: tuple) -> tuple[torch.Tensor, ...]:
    costs = SiteCosts(list(labels), [0.0] * len(labels), [0.0] * len(labels), [list(p) for p in parents],
                      list(instances), 1.0)
    n = len(costs)
    C = torch.zeros(n, n, dtype=torch.float64)
    rows = [j for j, ch in enumerate(costs.children) for _ in ch]
    cols = [c for ch in costs.children for c in ch]
    if rows:
        C[rows, cols] = 1.0
    W = torch.zeros(n, n, dtype=torch.float64)
    rows = [j for j, ch in enumerate(costs.same_block_children) for _ in ch]
    cols = [c for ch in costs.same_block_children for c in ch]
    if rows:
        W[rows, cols] = 1.0
    return C, W, torch.tensor(costs.instances, dtype=torch.float64)


def rebuild_counts(stored: list[bool], costs: SiteCosts) -> list[float]:
    """R_j for hard decisions (what `SiteRuntime.rebuilds` should count)."""
    children, same, n = costs.children, costs.same_block_children, costs.instances
    R = [0.0] * len(costs)
    for j in reversed(range(len(costs))):
        if not stored[j]:  # a same-block child's own rebuilds reuse j's cached rebuild
            R[j] = n[j] + sum(R[c] for c in children[j]) - sum(n[c] for c in same[j] if not stored[c])
    return R


def plan_cost(stored: list[bool], costs: SiteCosts, lam: float,
              offloaded: list[bool] | None = None) -> tuple[float, float, float]:
    """(λ·mem + time, normalised device memory, normalised added time) of a hard plan. With
    `offloaded`, a site offloaded there is neither on the device nor rebuilt, except for the bytes
    still in flight at the peak (`in_flight_bytes`), and the time adds the transfers that compute
    does not hide."""
    M, T = costs.normalized()
    o = torch.tensor([1.0 if x else 0.0 for x in (offloaded or [False] * len(stored))], dtype=torch.float64)
    s = torch.tensor([1.0 if x else 0.0 for x in stored], dtype=torch.float64) * (1 - o)
    mem = float((s * M).sum())
    if offloaded is not None and any(offloaded):  # the bytes still leaving at the peak
        mem += float(in_flight_bytes(o, costs)) / max(costs.total_bytes, 1.0)
    t = float(expected_recompute(s + o, T, costs))
    if offloaded is not None and any(offloaded):
        t += float(expected_exposed_transfer(o, costs))
    return lam * mem + t, mem, t


def link_utilisation(moved_bytes: float, step_ms: float, link: dict) -> float:
    """The share of a step the host link is busy: bytes each way ÷ step time ÷ the slower
    direction's measured bandwidth."""
    return moved_bytes / (step_ms / 1e3) / (min(link["d2h_gbps"], link["h2d_gbps"]) * 1e9)


def offload_report(offloaded: list[bool], costs: SiteCosts) -> dict:
    """What an offload plan moves and what it is predicted to cost: bytes each way per step, the
    pinned host bytes it needs, the exposed ms, the predicted link utilisation, and the planned
    prefetch distance with its simulated reload stall."""
    nbytes = sum(m for m, o in zip(costs.mem_bytes, offloaded) if o)
    exposed_ms = float(expected_exposed_transfer(torch.tensor([float(x) for x in offloaded]), costs)) \
        * costs.step_ms if costs.link else 0.0
    step_ms = costs.step_ms + exposed_ms
    o = torch.tensor([float(x) for x in offloaded])
    in_flight = float(in_flight_bytes(o, costs)) if costs.link else 0.0
    prefetch = plan_prefetch_blocks(offloaded, costs) if costs.link else 1
    return {"prefetch_blocks": prefetch,
            "reload_stall_ms": reload_stall_ms(offloaded, costs, prefetch) if costs.link else 0.0,
            "offloaded_sites": sum(map(bool, offloaded)), "offload_bytes_per_step": nbytes,
            "host_bytes": nbytes, "in_flight_bytes": in_flight, "exposed_transfer_ms": exposed_ms,
            "link_utilisation": link_utilisation(nbytes, step_ms, costs.link)
            if costs.link and step_ms > 0 else 0.0}


# ----------------------------------------------------------------------------- measuring


def model_state_bytes(model: nn.Module, optimizer_states: int = 2) -> int:
    """Parameters + gradients + AdamW moments, fp32: the floor no recompute plan goes under."""
    n = sum(p.numel() for p in model.parameters())
    return int(n * 4 * (2 + optimizer_states))


def gib(nbytes: float) -> float:
    return nbytes / 2**30


def fmt_gib(nbytes: float) -> str:
    return f"{gib(nbytes):.4g} GiB"


__all__ = [
    "COST_MODELS", "SiteCosts", "expected_recompute", "expected_exposed_transfer",
    "held_at_peak", "in_flight_bytes", "link_windows",
    "link_scale_for_wait", "link_utilisation", "offload_report", "plan_cost", "predicted_wait_ms",
    "rebuild_counts", "model_state_bytes", "scaled_link",
    "gib", "fmt_gib",
]
