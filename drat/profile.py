"""`drat profile`: what one strategy keeps for backward, and on CUDA what it costs in time.

CPU: exact saved-activation bytes (saved-tensor accounting) and the per-site plan.
CUDA: additionally peak allocated/reserved memory and step time (median of CUDA-event-timed
training steps after warm-up, forward + backward + fused AdamW).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass

import torch

from .accounting import saved_activation_bytes
from .costs import build_costs, model_state_bytes
from .gates import budget_to_activation_bytes, fit_gates
from .gc_control import gc_paused
from .model import GPT, config_for
from .provenance import provenance, resolve_device
from .strategies import STRATEGY_NAMES, DRATGates, make_strategy

PROFILE_STRATEGIES = ("none", "full", "selective", "sac", "drat")


@dataclass
class ProfileArgs:
    size: str = "tiny"
    strategy: str = "none"
    lam: float | None = None
    budget_gib: float | None = None
    device: str = "cpu"
    seq_len: int = 64
    batch_size: int = 2
    cost_model: str = "measured"
    vocab_size: int | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    steps: int = 12
    warmup: int = 3
    seed: int = 0


def random_batch(vocab: int, batch: int, seq: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    return idx[:, :-1].contiguous().to(device), idx[:, 1:].contiguous().to(device)


def autocast_ctx(device: torch.device):
    """bf16 autocast on CUDA, plain fp32 on CPU (the CPU is where exactness is tested)."""
    if device.type == "cuda":
        return torch.autocast("cuda", torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


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


def measure_steps(model: GPT, idx, targets, steps: int = 12, warmup: int = 3, compiled=None) -> dict:
    """Full training steps (forward, backward, AdamW): median step time after warm-up, CUDA-event
    timed on GPU (wall-clock on CPU), and the peak allocated/reserved GiB on GPU (NaN on CPU).
    `compiled` is a torch.compile'd wrapper of `model` to run instead."""
    device = idx.device
    fwd = compiled if compiled is not None else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    model.zero_grad(set_to_none=True)  # gradients a failed (OOM) step left behind
    gc.collect()  # nothing of the previous row may stay alive into this row's peak
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with gc_paused():  # no collector pass lands in some timed steps and not others (gc_control.py)
        times = [_timed_step(fwd, idx, targets, opt) for _ in range(warmup + steps)][warmup:]
        ms = _elapsed_ms(times, device)
    if device.type == "cuda":
        out = {"peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
               "reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
               **gpu_state(device)}  # right after the timed steps: the clock they ran at
    else:
        out = {"peak_gib": float("nan"), "reserved_gib": float("nan")}
    del opt
    gc.collect()
    out["step_ms"] = statistics.median(ms)
    out["step_ms_all"] = ms
    out["gc_paused"] = True  # bench rows without this field were timed with the collector on
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
                t = _timed_step(model, idx, targets, opt)
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


def plan_drat(model: GPT, idx, targets, lam: float | None, budget_gib: float | None,
              cost_model: str = "measured", base_bytes: float | None = None, seed: int = 0):
    """Fit gates for λ or a peak budget; returns (DRATGates strategy, GateFit, SiteCosts)."""
    costs = build_costs(model, idx, targets, cost_model)
    if budget_gib is not None:
        base = model_state_bytes(model) if base_bytes is None else base_bytes
        fit = fit_gates(costs, budget_act_bytes=budget_to_activation_bytes(budget_gib, base), seed=seed,
                        base_bytes=base)
    else:
        fit = fit_gates(costs, lam=0.05 if lam is None else lam, seed=seed)
    return DRATGates(fit.gates), fit, costs


def run_profile(a: ProfileArgs) -> dict:
    if a.strategy not in PROFILE_STRATEGIES:
        raise ValueError(f"unknown strategy {a.strategy!r}; choose one of {', '.join(PROFILE_STRATEGIES)}")
    if a.lam is not None and a.budget_gib is not None:
        raise ValueError("give --lambda or --budget-gib, not both")
    if (a.lam is not None or a.budget_gib is not None) and a.strategy != "drat":
        raise ValueError("--lambda and --budget-gib apply to --strategy drat only")
    if a.seq_len < 1 or a.batch_size < 1:
        raise ValueError("--seq-len and --batch-size must be positive")
    device = resolve_device(a.device)
    cfg = config_for(a.size, vocab_size=a.vocab_size, n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head)
    if a.seq_len > cfg.block_size:
        cfg = config_for(a.size, vocab_size=a.vocab_size, n_layer=a.n_layer, n_embd=a.n_embd,
                         n_head=a.n_head, block_size=a.seq_len)
    torch.manual_seed(a.seed)
    model = GPT(cfg).to(device)
    idx, targets = random_batch(cfg.vocab_size, a.batch_size, a.seq_len, device, a.seed)

    fit = None
    costs = None
    if a.strategy == "drat":
        strategy, fit, costs = plan_drat(model, idx, targets, a.lam, a.budget_gib, a.cost_model, seed=a.seed)
    else:
        strategy = make_strategy(a.strategy)
    model.set_strategy(strategy)
    with autocast_ctx(device):
        total, per_site = saved_activation_bytes(model, idx, targets)
    decisions = strategy.decisions(model)
    if costs is None:  # bytes each site owns when stored, for the report
        from .costs import measure_site_bytes

        with autocast_ctx(device):
            owned = measure_site_bytes(model, idx, targets)
    else:
        # owned bytes, not the LM head's peak saving that a peak-aware table plans with
        owned = [int(m) for m in (costs.owned_bytes or costs.mem_bytes)]
    sites = []
    for i, k in enumerate(model.graph.keys):
        if decisions is None:
            decision = {"none": "store", "full": "recompute"}.get(a.strategy, "policy")
            if a.strategy == "selective":
                decision = "recompute" if k.name == "attn_core" else "store"
            if a.strategy == "full" and k.layer is None:
                decision = "store"
        else:
            decision = "store" if decisions[i] else "recompute"
        sites.append({"layer": k.layer, "site": k.name, "decision": decision, "bytes": int(owned[i]),
                      "held_bytes": int(per_site.get(i, 0))})
    out = {
        "strategy": a.strategy,
        "size": a.size,
        "config": cfg.to_dict(),
        "params": model.num_params(),
        "batch_size": a.batch_size,
        "seq_len": a.seq_len,
        "saved_activation_bytes": int(total),
        "model_state_bytes": model_state_bytes(model),
        "sites": sites,
        **provenance(device),
    }
    if fit is not None:
        out["drat"] = {"lambda": fit.lam, "budget_gib": a.budget_gib, "objective": fit.objective,
                       "planned_activation_bytes": fit.mem_bytes, "recompute_time_frac": fit.time_frac,
                       "cost_model": a.cost_model}
    if device.type == "cuda":
        out.update(time_training_steps(model, idx, targets, a.steps, a.warmup))
    return out


assert set(PROFILE_STRATEGIES) <= set(STRATEGY_NAMES)
