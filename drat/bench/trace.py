"""`drat bench trace`: where a plan's step time goes, from a torch.profiler trace.

The eager frontier prices recomputation by the forward time of each site (T_i, timed once under
no_grad). A measured step can cost more than that model says, for reasons the model leaves out:
the CPU may not keep the GPU busy (launch-bound steps, where a rebuild costs its Python, hook
and autograd bookkeeping rather than its FLOPs), rebuilds launch extra small kernels, or the
allocator fragments. This command measures each of those per training step, side by side:

    step_ms           median CUDA-event step time, measured without the profiler
    gpu_busy_ms       sum of kernel time per step (one stream: the GPU's busy time)
    gpu_busy_frac     gpu_busy_ms / step_ms; well below 1 means the CPU is the bottleneck
    kernels           kernel launches per step
    rebuilds          DRAT site rebuilds per step (profiler ranges "drat.rebuild")
    rebuild_cpu_ms    CPU time inside rebuilds per step (inclusive: a parent rebuilt inside a
    rebuild_gpu_ms    child's rebuild is counted in both), and the kernel time under them
    reserved_minus_allocated_gib   the allocator's cached-but-unused memory at the peak

Rows: `none`, `full` and DRAT at each λ (gates fitted on costs measured in the same process).
On the CPU the GPU columns are NaN; rebuild counts and CPU times are still real.

Outputs in --out: trace.csv, trace.json (rows + provenance).
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import drat.recompute as recompute

from ..measure import build_costs, measure_steps
from ..provenance import provenance
from ..runtime import autocast_ctx
from ..strategies import FullAC, NoneAC
from ..validate import NONNEG, POSITIVE_INT, NumberList
from .common import add_model_args, bench_model, check_steps, lambda_plans, model_kwargs, write_rows

TRACE_FIELDS = ["name", "step_ms", "gpu_busy_ms", "gpu_busy_frac", "kernels", "rebuilds", "rebuild_cpu_ms",
                "rebuild_gpu_ms", "peak_gib", "reserved_minus_allocated_gib", "n_recomputed"]


def _device_us(e, self_only: bool) -> float:
    """Kernel time of a profiler average in µs (the attribute was renamed cuda -> device)."""
    names = (("self_device_time_total", "self_cuda_time_total") if self_only
             else ("device_time_total", "cuda_time_total"))
    for n in names:
        if hasattr(e, n):
            return float(getattr(e, n))
    return 0.0


def _warm_training_step(model, idx, targets, warmup: int):
    """A full training step (forward, backward, AdamW) as a function, after `warmup` runs of it."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=idx.device.type == "cuda")

    def step():
        with autocast_ctx(idx.device):
            loss = model.step_loss(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    return step


def profile_steps(model, idx, targets, steps: int = 3, warmup: int = 2) -> dict:
    """Per-step breakdown of `steps` training steps (forward, backward, AdamW) under the profiler."""
    cuda = idx.device.type == "cuda"
    step = _warm_training_step(model, idx, targets, warmup)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    recompute.PROFILE_REBUILDS = True
    try:
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize()
    finally:
        recompute.PROFILE_REBUILDS = False
    avgs = prof.key_averages()
    cpu_t, cuda_t = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    # the CPU range (a GPU-side copy of each named range is listed separately)
    rebuild = next((e for e in avgs if e.key == "drat.rebuild" and e.device_type == cpu_t), None)
    # kernels: the device-side entries alone (each kernel's time is also charged, as self device
    # time, to the CPU op that launched it, and named ranges have GPU copies: summing every
    # entry would count kernels twice)
    kernels = [e for e in avgs if e.device_type == cuda_t and not getattr(e, "is_user_annotation", False)]
    kernel_us = sum(_device_us(e, True) for e in kernels)
    rebuild_gpu_us = _device_us(rebuild, False) if rebuild else 0.0
    out = {
        "rebuilds": (rebuild.count if rebuild else 0) / steps,
        "rebuild_cpu_ms": (rebuild.cpu_time_total / 1e3 / steps) if rebuild else 0.0,
        "gpu_busy_ms": kernel_us / 1e3 / steps if cuda else math.nan,
        "rebuild_gpu_ms": rebuild_gpu_us / 1e3 / steps if cuda else math.nan,
        "kernels": sum(e.count for e in kernels if not e.key.startswith(("Memcpy", "Memset"))) / steps
        if cuda else math.nan,
    }
    if cuda and not kernels:  # no CUPTI: the profiler saw no kernels at all
        warnings.warn("the profiler recorded no CUDA kernels (CUPTI unavailable?): GPU columns are NaN",
                      stacklevel=2)
        out.update(gpu_busy_ms=math.nan, rebuild_gpu_ms=math.nan, kernels=math.nan)
    return out


# ----------------------------------------------------------------------------- the link, traced


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint union of [start, end) spans."""
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _overlap_us(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of the intersection of two merged span lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(hi - lo, 0.0)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def transfer_overlap(events: list[dict], steps: int) -> dict:
    """Where the host link's time went, from a Kineto trace's device events (chrome-trace dicts
    with `cat`, `name`, `ts`, `dur` in µs and `args.stream`), per step:

        compute_stream        the stream with the most kernel time (the training step's)
        d2h_ms, h2d_ms        time the D→H and H→D copies were in flight, each a union of spans
        copy_hidden_frac      share of that copy time under a kernel of the compute stream
        compute_idle_ms       gaps of the compute stream inside the traced window
        exposed_transfer_ms   those gaps while a copy was in flight: the compute stream waiting on
                              the link (an event wait or a reload on demand), the time the cost
                              model calls exposed; gaps with no copy in flight are the host's

    The trace shows only what happened, not why a gap began: a gap in which the CPU was late and
    a copy merely happened to run counts as exposed. That makes the number an upper bound."""
    kern = [e for e in events if e.get("cat") == "kernel"]
    copies = [e for e in events if e.get("cat") == "gpu_memcpy"]
    if not kern:
        return {}
    busy: dict[int, float] = {}
    for e in kern:
        busy[e["args"].get("stream", -1)] = busy.get(e["args"].get("stream", -1), 0.0) + e["dur"]
    compute = max(busy, key=busy.get)
    comp = _merge([(e["ts"], e["ts"] + e["dur"]) for e in kern if e["args"].get("stream", -1) == compute])
    t0, t1 = comp[0][0], comp[-1][1]
    gaps = [(a[1], b[0]) for a, b in zip(comp, comp[1:]) if b[0] > a[1]]

    def spans(tag: str) -> list[tuple[float, float]]:
        # copies on the compute stream count too: a synchronous copy (save_on_cpu's) is a gap
        return _merge([(e["ts"], e["ts"] + e["dur"]) for e in copies if tag in e.get("name", "")])

    d2h, h2d = spans("DtoH"), spans("HtoD")
    link = _merge(d2h + h2d)
    link_us = sum(b - a for a, b in link)
    per = 1e3 * steps  # µs -> ms per step
    return {"compute_stream": compute, "traced_ms": (t1 - t0) / per,
            "d2h_ms": sum(b - a for a, b in d2h) / per, "h2d_ms": sum(b - a for a, b in h2d) / per,
            "copy_hidden_frac": _overlap_us(link, comp) / link_us if link_us else math.nan,
            "compute_idle_ms": sum(b - a for a, b in gaps) / per,
            "exposed_transfer_ms": _overlap_us(_merge(gaps), link) / per}


def trace_transfers(model, idx, targets, steps: int = 3, warmup: int = 2) -> dict:
    """`transfer_overlap` of `steps` training steps under the profiler (empty on the CPU, where
    there are no device streams to trace)."""
    if idx.device.type != "cuda":
        return {}
    step = _warm_training_step(model, idx, targets, warmup)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    return transfer_overlap([e for e in events if e.get("ph") == "X"], steps)


def run_trace(size: str = "tiny", seq_len: int = 64, batch_size: int = 2, device: str = "cpu",
              n_layer: int | None = None, n_embd: int | None = None, n_head: int | None = None,
              vocab_size: int | None = None, tie_weights: bool | None = None, lams=(0.5,),
              steps: int = 10, warmup: int = 3, trace_steps: int = 3, out: str | Path | None = None,
              log=print) -> list[dict]:
    dev, cfg, model, idx, targets = bench_model(size, seq_len, batch_size, device, n_layer, n_embd, n_head,
                                                vocab_size, tie_weights)
    meta = {"config": cfg.to_dict(), "batch_size": batch_size, "seq_len": seq_len, "trace_steps": trace_steps,
            **provenance(dev)}
    plans = [("none", NoneAC(), 0), ("full", FullAC(), 0)]
    model.set_strategy(NoneAC())
    costs = build_costs(model, idx, targets, "measured")
    plans += lambda_plans(costs, lams)
    rows: list[dict] = []
    for name, strategy, n_rec in plans:
        model.set_strategy(strategy)
        m = measure_steps(model, idx, targets, steps, warmup)  # timed without the profiler
        row = {"name": name, "step_ms": m["step_ms"], "peak_gib": m["peak_gib"],
               "reserved_minus_allocated_gib": m["reserved_gib"] - m["peak_gib"], "n_recomputed": n_rec,
               **profile_steps(model, idx, targets, trace_steps)}
        row["gpu_busy_frac"] = row["gpu_busy_ms"] / row["step_ms"]
        rows.append(row)
        if out is not None:
            write_rows(rows, Path(out), "trace", TRACE_FIELDS, meta)
        log(f"{name:<14} step {row['step_ms']:8.2f} ms  GPU busy {row['gpu_busy_ms']:8.2f} ms "
            f"({row['gpu_busy_frac']:.0%})  kernels {row['kernels']:.0f}  rebuilds {row['rebuilds']:.0f} "
            f"({row['rebuild_cpu_ms']:.1f} ms CPU, {row['rebuild_gpu_ms']:.1f} ms GPU)")
    return rows


def add_trace_parser(bsub) -> None:
    t = bsub.add_parser("trace", help="per-step breakdown: GPU busy time, kernels, rebuild CPU/GPU time")
    add_model_args(t, steps=10)
    t.add_argument("--lambdas", default="0.5", type=NumberList(NONNEG))
    t.add_argument("--trace-steps", type=POSITIVE_INT, default=3, help="steps under the profiler")
    t.set_defaults(func=_cmd_trace)


def _cmd_trace(args) -> int:
    check_steps(args)
    run_trace(args.size, args.seq_len, args.batch_size, args.device, **model_kwargs(args),
              lams=tuple(float(x) for x in args.lambdas.split(",") if x), steps=args.steps,
              warmup=args.warmup, trace_steps=args.trace_steps, out=args.out)
    return 0
