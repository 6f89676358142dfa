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

import math
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


def profile_steps(model, idx, targets, steps: int = 3, warmup: int = 2) -> dict:
    """Per-step breakdown of `steps` training steps (forward, backward, AdamW) under the profiler."""
    dev = idx.device
    cuda = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)

    def step():
        with autocast_ctx(dev):
            loss = model.step_loss(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
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
