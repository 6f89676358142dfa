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
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import asdict, dataclass

import torch

from .accounting import SavedTensorAccountant, analytic_site_bytes
from .gc_control import gc_paused
from .model import GPT
from .sites import SiteGraph

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
    def same_block_children(self) -> list[list[int]]:
        g = self.groups
        return [[c for c in ch if g[c] == g[j]] for j, ch in enumerate(self.children)]


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
    every training step on the host, and rebuilding these from the labels was half its time.
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


def plan_cost(stored: list[bool], costs: SiteCosts, lam: float) -> tuple[float, float, float]:
    """(λ·mem + time, normalised stored memory, normalised recompute time) of a hard plan."""
    M, T = costs.normalized()
    s = torch.tensor([1.0 if x else 0.0 for x in stored], dtype=torch.float64)
    mem = float((s * M).sum())
    t = float(expected_recompute(s, T, costs))
    return lam * mem + t, mem, t


# ----------------------------------------------------------------------------- measuring
def measure_site_bytes(model: GPT, idx, targets) -> list[int]:
    """M_i: bytes each site owns, from one all-store forward under the accountant."""
    from .strategies import PlanAC

    saved = model.strategy
    model.set_strategy(PlanAC(stored=[True] * len(model.graph)))
    try:
        with SavedTensorAccountant(model) as acct:
            loss = model(idx, targets)
        per_site = acct.by_site()
        del loss
    finally:
        model.set_strategy(saved)
    return [per_site.get(i, 0) for i in range(len(model.graph))]


def _site_flops_bytes(model: GPT, batch: int, seq: int, act_bytes: int) -> list[tuple[float, float]]:
    """Analytic forward (FLOPs, bytes moved) per site: the CPU roofline's inputs."""
    cfg = model.cfg
    n, h, f, v = batch * seq, cfg.n_embd, cfg.mlp_hidden, cfg.vocab_size
    up = 2 * f if cfg.mlp == "swiglu" else f
    fb = {
        "embed": (2 * n * h, 3 * 4 * n * h),
        "attn_norm": (8 * n * h, (4 + act_bytes) * n * h),
        "qkv": (2 * n * h * 3 * h, act_bytes * (n * h + 3 * h * h + 3 * n * h)),
        "attn_core": (2 * batch * seq * seq * h, act_bytes * 4 * n * h),  # causal: half of 4·S²·h
        "attn_out": (2 * n * h * h, act_bytes * (n * h + h * h) + 3 * 4 * n * h),
        "mlp_norm": (8 * n * h, (4 + act_bytes) * n * h),
        "mlp_up": (2 * n * h * up, act_bytes * (n * h + h * up + n * up)),
        "mlp_act": (10 * n * f, act_bytes * (n * up + n * f)),
        "mlp_down": (2 * n * f * h, act_bytes * (n * f + f * h) + 3 * 4 * n * h),
        "final_norm": (8 * n * h, (4 + act_bytes) * n * h),
        "lm_head_loss": (2 * n * h * v + 6 * n * v, act_bytes * (n * h + h * v) + 3 * 4 * n * v),
    }
    return [fb[k.name] for k in model.graph.keys]


def cpu_roofline_rates() -> tuple[float, float]:
    """(FLOP/s, bytes/s) of this CPU, measured in a few milliseconds."""
    a = torch.randn(256, 256)
    torch.mm(a, a)
    t0 = time.perf_counter()
    for _ in range(8):
        torch.mm(a, a)
    flops = 8 * 2 * 256**3 / (time.perf_counter() - t0)
    x = torch.empty(1 << 22)
    y = torch.empty_like(x)
    y.copy_(x)
    t0 = time.perf_counter()
    for _ in range(4):
        y.copy_(x)
    bw = 4 * 2 * x.numel() * 4 / (time.perf_counter() - t0)
    return flops, bw


def estimate_site_time_ms(model: GPT, batch: int, seq: int, act_bytes: int = 4,
                          rates: tuple[float, float] | None = None) -> list[float]:
    flops_per_s, bytes_per_s = rates or cpu_roofline_rates()
    return [1e3 * max(fl / flops_per_s, by / bytes_per_s)
            for fl, by in _site_flops_bytes(model, batch, seq, act_bytes)]


def measure_site_time_ms(model: GPT, idx, targets, reps: int = 5,
                         autocast_dtype=torch.bfloat16) -> list[float]:
    """T_i on CUDA: each site's forward timed with CUDA events, median over `reps` forwards."""
    graph = model.graph
    samples: list[list[float]] = [[] for _ in graph.keys]
    events: list[tuple[int, torch.cuda.Event, torch.cuda.Event]] = []

    def run(site, fn, *inputs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y = fn(*inputs)
        end.record()
        events.append((site, start, end))
        return y

    with gc_paused():  # one collection up front, none inside the timed forwards (as bench steps)
        for rep in range(reps + 1):
            events.clear()
            with torch.no_grad(), torch.autocast("cuda", autocast_dtype):
                model.forward_sites(idx, targets, run=run)
            torch.cuda.synchronize()
            if rep == 0:
                continue  # warm-up
            per = [0.0] * len(graph)
            for site, s, e in events:
                per[site] += s.elapsed_time(e)
            for i, t in enumerate(per):
                samples[i].append(t)
    return [sorted(s)[len(s) // 2] for s in samples]


@contextlib.contextmanager
def _model_as_found(model: GPT, dev):
    """Measuring steps leave the model exactly as found: its strategy, its gradients (backward
    would accumulate into the caller's) and the RNG stream (dropout masks drawn while measuring)."""
    saved_strategy = model.strategy
    grads = [p.grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [], device_type="cuda"):
            yield
    finally:
        model.set_strategy(saved_strategy)
        for p, g in zip(model.parameters(), grads):
            p.grad = g


def _set_plan(model: GPT, stored: list[bool]) -> None:
    from .strategies import PlanAC

    model.set_strategy(PlanAC(stored=stored))


def _forward_backward(model: GPT, idx, targets) -> None:
    """One forward + backward under the model's strategy; gradients dropped (no optimizer step)."""
    from .profile import autocast_ctx

    with autocast_ctx(idx.device):
        loss = model(idx, targets)
    loss.backward()
    del loss
    for p in model.parameters():
        p.grad = None


def measure_peak_saving_bytes(model: GPT, idx, targets, site: int, reps: int = 2) -> float:
    """CUDA: how far the peak of a forward + backward drops when `site` alone is recomputed.

    For a block site this is its M_i: it is rebuilt late in backward, after the blocks above
    have freed theirs. The LM head is rebuilt first, at the very top of the memory curve, while
    every stored activation is still live; its rebuild (one chunk's fp32 log-probabilities and
    their gradient) adds to that peak, so it saves less than the bytes it owns. Measured on the
    H200 (medium, S=2048, B=8): it owns 2.00 GiB, and plans recomputing it peaked 0.35-0.39 GiB
    above the owned-bytes model, plans without it within 0.03 GiB."""
    dev = idx.device
    if dev.type != "cuda":
        raise ValueError("peak memory is measured on CUDA only")
    n = len(model.graph)
    only = [i != site for i in range(n)]
    peaks = {}
    with _model_as_found(model, dev):
        for name, plan in (("store", [True] * n), ("recompute", only)):
            _set_plan(model, plan)
            for _ in range(reps):  # the last rep's peak: allocator state settled
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
                _forward_backward(model, idx, targets)
                torch.cuda.synchronize()
                peaks[name] = torch.cuda.max_memory_allocated(dev)
    return float(peaks["store"] - peaks["recompute"])


def measure_rebuild_overhead_ms(model: GPT, idx, targets, costs: SiteCosts, steps: int = 5,
                                warmup: int = 2) -> float:
    """What one rebuild costs beyond its site's forward time, calibrated on this device.

    Two plans run forward + backward side by side: store-all (no hooks) and one that recomputes
    every norm and the MLP activation (many rebuilds of cheap sites). The second's extra time
    minus what the cost model already charges for it (Σ_j R_j T_j / n_j), divided by its number
    of rebuilds, is the per-rebuild overhead. In launch-bound eager steps it is what makes cheap
    sites expensive to recompute. The model is left exactly as found: no optimizer step, the
    gradients and the RNG state restored."""
    import statistics

    dev = idx.device
    cheap = [k.name not in ("attn_norm", "mlp_norm", "mlp_act") for k in model.graph.keys]
    counts = rebuild_counts(cheap, costs)
    n_rebuilds = sum(counts)
    if n_rebuilds == 0:
        return 0.0
    modelled_ms = sum(r * t / n for r, t, n in zip(counts, costs.time_ms, costs.instances))

    def timed(plan) -> float:
        _set_plan(model, plan)  # once: a strategy's first forward may pay one-off costs
        ms = []
        for i in range(warmup + steps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            _forward_backward(model, idx, targets)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                ms.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(ms)

    with _model_as_found(model, dev), gc_paused():  # timed as bench and training steps run
        t_store = timed([True] * len(cheap))
        t_cheap = timed(cheap)
    return max(0.0, (t_cheap - t_store - modelled_ms) / n_rebuilds)


def build_costs(model: GPT, idx, targets, kind: str = "measured", step_ms: float | None = None,
                calibrate_rebuilds: bool | None = None, peak_aware: bool | None = None) -> SiteCosts:
    """Site costs under one of the cost models (`COST_MODELS`). `calibrate_rebuilds` (default:
    on CUDA with measured costs) adds the measured per-rebuild overhead to every T_i.
    `peak_aware` (same default) replaces the LM head's M_i by the measured drop of the peak
    when it is recomputed (`measure_peak_saving_bytes`), so that a plan's modelled memory is
    its peak's and a budget is met on the first try."""
    if kind not in COST_MODELS:
        raise ValueError(f"unknown cost model {kind!r}; choose one of {', '.join(COST_MODELS)}")
    graph = model.graph
    batch, seq = idx.shape
    on_cuda = idx.device.type == "cuda"
    act_bytes = 2 if on_cuda else 4
    if kind == "uniform":
        return SiteCosts.build(graph, [1.0] * len(graph), [1.0] * len(graph), len(graph), kind)
    if kind == "layer_weighted":
        # the seed's heuristic: early layers' activations live longest, so they cost more
        L = max(graph.n_layer, 1)
        depth = [0 if k.layer is None and k.name == "embed" else (L if k.layer is None else k.layer)
                 for k in graph.keys]
        mem = [(L + 1 - d) / (L + 1) for d in depth]
        return SiteCosts.build(graph, mem, [1.0] * len(graph), len(graph), kind)
    if kind == "activation_size":
        an = analytic_site_bytes(model.cfg, batch, seq, act_bytes=act_bytes,
                                 mask_bytes=1 if on_cuda else 4, training=model.training)
        mem = [an[k.name] for k in graph.keys]
        t = estimate_site_time_ms(model, batch, seq, act_bytes, rates=(1e12, 1e11))
        return SiteCosts.build(graph, mem, t, 3 * sum(t), kind)
    # measured. The measuring forwards draw dropout masks: the RNG is forked so that a run that
    # measures costs (drat) and one that does not (none) see the same random stream afterwards.
    with torch.random.fork_rng(devices=[idx.device] if on_cuda else [], device_type="cuda"):
        if on_cuda:
            with torch.autocast("cuda", torch.bfloat16):
                mem = measure_site_bytes(model, idx, targets)
            t = measure_site_time_ms(model, idx, targets)
        else:
            mem = measure_site_bytes(model, idx, targets)
            t = estimate_site_time_ms(model, batch, seq, act_bytes)
    # a step is ~3 forwards (forward + backward at twice the cost) unless measured
    costs = SiteCosts.build(graph, mem, t, step_ms if step_ms else 3 * sum(t), kind)
    if calibrate_rebuilds is None:
        calibrate_rebuilds = on_cuda
    if calibrate_rebuilds:
        c = measure_rebuild_overhead_ms(model, idx, targets, costs)
        costs.time_ms = [ms + c * n for ms, n in zip(costs.time_ms, costs.instances)]
        costs.rebuild_overhead_ms = c
    if peak_aware is None:
        peak_aware = on_cuda
    if peak_aware:
        head = graph.idx(None, "lm_head_loss")
        saving = measure_peak_saving_bytes(model, idx, targets, head)
        costs.owned_bytes = list(costs.mem_bytes)
        costs.mem_bytes[head] = min(max(saving, 0.0), costs.mem_bytes[head])
    return costs


def model_state_bytes(model: GPT, optimizer_states: int = 2) -> int:
    """Parameters + gradients + AdamW moments, fp32: the floor no recompute plan goes under."""
    n = sum(p.numel() for p in model.parameters())
    return int(n * 4 * (2 + optimizer_states))


def gib(nbytes: float) -> float:
    return nbytes / 2**30


def fmt_gib(nbytes: float) -> str:
    return f"{gib(nbytes):.4g} GiB"


__all__ = [
    "COST_MODELS", "SiteCosts", "build_costs", "expected_recompute", "plan_cost", "rebuild_counts",
    "measure_site_bytes", "measure_site_time_ms", "estimate_site_time_ms", "model_state_bytes",
    "measure_rebuild_overhead_ms",
    "gib", "fmt_gib",
]
