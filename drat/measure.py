"""Measuring on a device: the site cost table, timed training steps, peaks, FLOPs.

`costs.py` is the pure cost model (a plan's memory and recompute time from a table); this module
fills that table in by running the model: each site's bytes from the saved-tensor accountant, its
time from CUDA events (or a FLOP/byte roofline on CPU), the per-rebuild overhead and the LM head's
measured peak saving. It also holds the step timers every benchmark and the trainer share, and the
FLOP count behind MFU.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time

import torch

from .accounting import SavedTensorAccountant, analytic_site_bytes
from .costs import COST_MODELS, SiteCosts, rebuild_counts
from .model import GPT
from .runtime import autocast_ctx, gc_paused
from .strategies import PlanAC


def measure_site_bytes(model: GPT, idx, targets) -> list[int]:
    """M_i: bytes each site frees when recomputed, from one all-store forward under the accountant:
    the bytes it owns, less those of its inputs that only its recipe would hold (none in DRAT's GPT;
    see SavedTensorAccountant.input_hold_bytes)."""

    saved = model.strategy
    model.set_strategy(PlanAC(stored=[True] * len(model.graph)))
    try:
        with SavedTensorAccountant(model) as acct:
            loss = model.step_loss(idx, targets)
        per_site, hold = acct.by_site(), acct.input_hold_bytes()
        del loss
    finally:
        model.set_strategy(saved)
    return [max(per_site.get(i, 0) - hold.get(i, 0), 0) for i in range(len(model.graph))]


def _site_flops_bytes(model: GPT, batch: int, seq: int, act_bytes: int) -> list[tuple[float, float]]:
    """Analytic forward (FLOPs, bytes moved) per site: the CPU roofline's inputs."""
    if hasattr(model, "site_flops_bytes"):  # a wrapped model counts its own sites
        return model.site_flops_bytes(batch, seq, act_bytes)
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
    model.set_strategy(PlanAC(stored=stored))


def _forward_backward(model: GPT, idx, targets) -> None:
    """One forward + backward under the model's strategy; gradients dropped (no optimizer step)."""
    with autocast_ctx(idx.device):
        loss = model.step_loss(idx, targets)
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
    cheap = ([not c for c in model.cheap_sites()] if hasattr(model, "cheap_sites")  # a wrapped model
             else [k.name not in ("attn_norm", "mlp_norm", "mlp_act") for k in model.graph.keys])
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
        # a heuristic: early layers' activations live longest, so they cost more
        L = max(graph.n_layer, 1)
        depth = [0 if k.layer is None and k.name == "embed" else (L if k.layer is None else k.layer)
                 for k in graph.keys]
        mem = [(L + 1 - d) / (L + 1) for d in depth]
        return SiteCosts.build(graph, mem, [1.0] * len(graph), len(graph), kind)
    if kind == "activation_size":
        if not hasattr(model, "cfg"):
            raise ValueError("the activation_size cost model knows DRAT's GPT only; use measured costs")
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
    # the site that holds the loss's log-probabilities: DRAT's chunked head, or a wrapped model's loss
    head = next((i for i, k in enumerate(graph.keys)
                 if k.layer is None and k.name in ("lm_head_loss", "loss")), None)
    if peak_aware and head is not None:
        saving = measure_peak_saving_bytes(model, idx, targets, head)
        costs.owned_bytes = list(costs.mem_bytes)
        costs.mem_bytes[head] = min(max(saving, 0.0), costs.mem_bytes[head])
    return costs


def measure_link(device: torch.device, nbytes: int = 2**30, reps: int = 4, matmul_n: int = 8192) -> dict:
    """The host link as the offload arm uses it (`SiteCosts.link`).

    CUDA: pinned device-to-host and host-to-device bandwidth (1e9 bytes/s) of `nbytes` copies on a
    side stream, alone and while the default stream runs bf16 matmuls (the rates the cost model
    uses: that is how offloading runs), the matmuls' slowdown from the copies (the median of
    `LINK_PROBE_REPEATS` pairs of matmul runs, alone and beside the copies, in turn: single
    pairs read 3.5% and 13.7% on one H100 minutes apart), and the host time to queue one copy with its
    events (`copy_overhead_ms`). CPU: copies are synchronous, so the
    memcpy rate with `synchronous` set (nothing hides behind compute)."""
    if device.type != "cuda":
        src = torch.empty(nbytes // 4, dtype=torch.uint8)
        dst = torch.empty_like(src)
        dst.copy_(src)
        t0 = time.perf_counter()
        for _ in range(reps):
            dst.copy_(src)
        gbps = src.numel() * reps / (time.perf_counter() - t0) / 1e9
        return {"d2h_gbps": gbps, "h2d_gbps": gbps, "copy_overhead_ms": 0.0, "synchronous": True}
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    side = torch.cuda.Stream(device)
    a = torch.randn(matmul_n, matmul_n, device=device, dtype=torch.bfloat16)

    def copies(direction: str) -> float:  # ms per copy, on the side stream
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(side):
            s.record(side)
            for _ in range(reps):
                if direction == "d2h":
                    host.copy_(dev, non_blocking=True)
                else:
                    dev.copy_(host, non_blocking=True)
            e.record(side)
        e.synchronize()
        return s.elapsed_time(e) / reps

    def matmuls(k: int) -> tuple:  # k matmuls on the default stream, between two timing events
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(k):
            a @ a
        e.record()
        return s, e

    matmuls(2)[1].synchronize()  # cuBLAS's first call would inflate the time per matmul
    s, e = matmuls(8)
    e.synchronize()
    per_mm = s.elapsed_time(e) / 8
    out = {}
    for d in ("d2h", "h2d"):
        copies(d)  # warm-up
        alone_ms = copies(d)
        k = max(int(3 * alone_ms * reps / max(per_mm, 1e-3)), 4)  # matmuls outlast the copies
        samples = []  # (slowdown, matmul ms added per ms of copy, ms per copy under the matmuls)
        for _ in range(LINK_PROBE_REPEATS):  # alone and beside copies in turn: drift hits both alike
            torch.cuda.synchronize(device)
            s, e = matmuls(k)
            e.synchronize()
            mm_alone = s.elapsed_time(e)
            s, e = matmuls(k)
            under_ms = copies(d)
            e.synchronize()
            mm_with = s.elapsed_time(e)
            overlap_ms = min(under_ms * reps, mm_alone)  # how long the copies ran beside matmuls
            samples.append((mm_with / mm_alone - 1.0, (mm_with - mm_alone) / max(overlap_ms, 1e-9), under_ms))
        slowdown, per_copy_ms, under_ms = (statistics.median(x) for x in zip(*samples))
        out[f"{d}_gbps_alone"] = nbytes / alone_ms / 1e6
        out[f"{d}_gbps"] = nbytes / under_ms / 1e6
        out[f"{d}_compute_slowdown"] = slowdown  # over the matmuls, ~3× the copies' length
        # what the cost model charges: the matmul time the copies added, per ms they ran beside them
        out[f"{d}_compute_ms_per_copy_ms"] = per_copy_ms
        out[f"{d}_compute_ms_per_copy_ms_samples"] = [x[1] for x in samples]
    small_h = torch.empty(1 << 16, dtype=torch.uint8, pin_memory=True)
    small_d = torch.empty(1 << 16, dtype=torch.uint8, device=device)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(200):  # what offloading one tensor costs the host: a stream switch, a copy, an event
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            small_h.copy_(small_d, non_blocking=True)
            torch.cuda.Event().record(side)
    out["copy_overhead_ms"] = (time.perf_counter() - t0) * 1e3 / 200
    torch.cuda.synchronize(device)
    out["nbytes"] = nbytes
    return out


LINK_PROBE_REPEATS = 3  # the link probe's matmul slowdown is the median of this many pairs

NOMINAL_LINK_GBPS = 25.0  # a PCIe 4 x16 link: the host link of the cost models that measure nothing


def nominal_link(device: torch.device) -> dict:
    """The host link of the unmeasured cost models (`uniform`, `layer_weighted`, `activation_size`):
    fixed, so that their plans are the same on every machine and run, as their times are."""
    return {"d2h_gbps": NOMINAL_LINK_GBPS, "h2d_gbps": NOMINAL_LINK_GBPS, "copy_overhead_ms": 0.0,
            "synchronous": device.type != "cuda"}


def random_batch(vocab: int, batch: int, seq: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    return idx[:, :-1].contiguous().to(device), idx[:, 1:].contiguous().to(device)


def _timed_step(fwd, idx, targets, opt):
    """One training step (forward, backward, optimizer). Returns its timing: a (start, end) pair of
    CUDA events on GPU, read only after all steps (no sync per step); wall-clock ms on CPU."""
    cuda = idx.device.type == "cuda"
    if cuda:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
    else:
        t0 = time.perf_counter()
    with autocast_ctx(idx.device):
        loss = fwd(idx, targets)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        e.record()
        return s, e
    return 1e3 * (time.perf_counter() - t0)


def _elapsed_ms(times: list, device) -> list[float]:
    if device.type != "cuda":
        return list(times)
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in times]


def gpu_state(device) -> dict:
    """The GPU's SM clock (MHz, over NVML's last sample period), temperature (°C) and power draw
    (W), as NVML reports them; None each where NVML is not there (no pynvml, CPU). Recorded with
    every timed row: consecutive rows of the same plan drifted by up to 20% on the H200, and the
    clock is the first suspect."""
    out = {"sm_clock_mhz": None, "temperature_c": None, "power_w": None}
    if device.type != "cuda":
        return out
    for key, read, scale in (("sm_clock_mhz", torch.cuda.clock_rate, 1),
                             ("temperature_c", torch.cuda.temperature, 1),
                             ("power_w", torch.cuda.power_draw, 1e-3)):  # NVML reports mW
        try:
            out[key] = read(device) * scale
        except Exception:  # no pynvml / NVML, or a driver that does not report it: not measured
            pass
    return out


def _alloc_retries(device) -> int:
    return torch.cuda.memory_stats(device).get("num_alloc_retries", 0) if device.type == "cuda" else 0


def measure_steps(model: GPT, idx, targets, steps: int = 12, warmup: int = 3, compiled=None) -> dict:
    """Full training steps (forward, backward, AdamW): median step time after warm-up, CUDA-event
    timed on GPU (wall-clock on CPU), and the peak allocated/reserved GiB on GPU (NaN on CPU).
    `compiled` is a torch.compile'd wrapper of `model` to run instead."""
    device = idx.device
    fwd = compiled if compiled is not None else model.step_loss
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    model.zero_grad(set_to_none=True)  # gradients a failed (OOM) step left behind
    gc.collect()  # nothing of the previous row may stay alive into this row's peak
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    retries = _alloc_retries(device)
    with gc_paused():  # no collector pass lands in some timed steps and not others (runtime.py)
        times = [_timed_step(fwd, idx, targets, opt) for _ in range(warmup + steps)][warmup:]
        ms = _elapsed_ms(times, device)
    if device.type == "cuda":
        out = {"peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
               "reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
               # times the caching allocator ran out, freed its cache (a device sync) and retried:
               # near a memory cap this, not the plan, can set the step time
               "alloc_retries": _alloc_retries(device) - retries,
               **gpu_state(device)}  # right after the timed steps: the clock they ran at
    else:
        out = {"peak_gib": float("nan"), "reserved_gib": float("nan")}
    del opt
    gc.collect()
    out["step_ms"] = statistics.median(ms)
    out["step_ms_all"] = ms
    out["gc_paused"] = True  # a bench row without this field timed its steps with the collector on
    return out


def interleaved_step_ms(model: GPT, idx, targets, strategies: list, steps: int = 12,
                        warmup: int = 3) -> list[float]:
    """Median step time of each strategy, timed in alternation (A B A B ...) under one optimizer.

    Two rows timed one after the other see whatever the device does in between (clocks, other
    work, allocator state): on the H200 the same plan measured as consecutive rows differed by up
    to 8.6% in median. Alternating steps exposes both to the same drift, so their ratio is the
    plans' own. Each step is CUDA-event timed (wall-clock on CPU); no peak memory is kept."""
    device = idx.device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    model.zero_grad(set_to_none=True)
    times: list[list] = [[] for _ in strategies]
    with gc_paused():
        for i in range(warmup + steps):
            for k, strategy in enumerate(strategies):
                model.set_strategy(strategy)
                t = _timed_step(model.step_loss, idx, targets, opt)
                if i >= warmup:
                    times[k].append(t)
        times = [_elapsed_ms(t, device) for t in times]
    del opt
    gc.collect()
    return [statistics.median(t) for t in times]


def time_training_steps(model: GPT, idx, targets, steps: int = 12, warmup: int = 3) -> dict:
    """The CUDA fields of `drat profile --json`."""
    m = measure_steps(model, idx, targets, steps, warmup)
    return {
        "step_ms": m["step_ms"],
        "step_ms_all": m["step_ms_all"],
        "tokens_per_s": idx.numel() / (m["step_ms"] / 1e3),
        "peak_memory_bytes": int(m["peak_gib"] * 2**30),
        "reserved_memory_bytes": int(m["reserved_gib"] * 2**30),
    }


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """bf16 dense matmul rate of this GPU, measured now (the MFU denominator)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        a @ b
    e.record()
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (s.elapsed_time(e) / 1e3) / 1e12


def model_flops_per_step(model: GPT, batch: int, seq: int) -> float:
    """6·params·tokens for the matmuls plus causal attention (PaLM appendix B, halved for causality).
    Embedding lookups are not matmuls: an untied input embedding is left out."""
    if hasattr(model, "flops_per_step"):  # a wrapped model counts its own sites
        return model.flops_per_step(batch, seq)
    cfg = model.cfg
    n = model.num_params(exclude_positions=True)
    if not cfg.tie_weights:
        n -= model.wte.weight.numel()
    return batch * seq * (6 * n + 6 * cfg.n_layer * seq * cfg.n_embd)
