"""Why do recompute rows' step times drift on the H200 while store-all rows hold steady?

Session 7's paper bench (large, S=1024, B=8) measured `none` at 55–59 ms in every step, while the
same recompute plan ran at 74–117 ms in one row and 83–145 ms in the next, with the GPU drawing
*less* power and clocking *higher* in the slow rows: the signature of a GPU waiting for its host.
This probe tests that on one model, strategy by strategy, repeated in rounds:

  host_ms  the Python time to enqueue one step (no sync inside it), from perf_counter
  gpu_ms   the same step's CUDA-event time
  gc       how many garbage-collector passes ran inside the timed steps (gc.callbacks)

under the default interpreter and with the collector disabled around the steps. A step whose
host_ms reaches its gpu_ms is host-bound: its time is the launch path's, not the kernels'.

    python workflow/scripts/drift_probe.py --size large --seq-len 1024 --batch-size 8 --out DIR
Writes DIR/drift.json (every step, provenance) and prints a summary per strategy and condition.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch

from drat.bench import bench_model
from drat.profile import autocast_ctx
from drat.provenance import provenance
from drat.strategies import FullAC, NoneAC, PlanAC


def timed_steps(model, idx, targets, steps: int, warmup: int, gc_off: bool) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    model.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.synchronize()
    passes = [0]

    def count(phase, info):
        if phase == "start":
            passes[0] += 1

    gc.callbacks.append(count)
    if gc_off:
        gc.disable()
    host, events = [], []
    try:
        for i in range(warmup + steps):
            if i == warmup:
                passes[0] = 0
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            s.record()
            with autocast_ctx(idx.device):
                loss = model(idx, targets)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            e.record()
            if i >= warmup:
                host.append(1e3 * (time.perf_counter() - t0))
                events.append((s, e))
        torch.cuda.synchronize()
    finally:
        gc.enable()
        gc.callbacks.remove(count)
    gpu = [s.elapsed_time(e) for s, e in events]  # ms
    del opt
    return {"host_ms": host, "gpu_ms": gpu, "gc_passes": passes[0],
            "host_median_ms": statistics.median(host), "gpu_median_ms": statistics.median(gpu)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="large")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("drift_probe.py times CUDA steps: run it on a GPU machine")
    dev, cfg, model, idx, targets = bench_model(a.size, a.seq_len, a.batch_size, "cuda",
                                                vocab_size=a.vocab_size)
    # the large budget-¼ plan of the paper bench: everything recomputed but attention's core
    heavy = [model.graph.keys[i].label().endswith("attn_core") for i in range(len(model.graph))]
    strategies = {"none": NoneAC(), "full": FullAC(), "plan-recompute-all-but-attn-core": PlanAC(heavy)}
    rows = []
    for r in range(a.rounds):
        for gc_off in (False, True):
            for name, strat in strategies.items():
                model.set_strategy(strat)
                m = timed_steps(model, idx, targets, a.steps, a.warmup, gc_off)
                rows.append({"round": r, "strategy": name, "gc_off": gc_off, **m})
                print(f"round {r} {name:<34} gc_off={gc_off!s:<5} host {m['host_median_ms']:7.2f} ms  "
                      f"gpu {m['gpu_median_ms']:7.2f} ms  gc passes {m['gc_passes']:3d}  "
                      f"gpu steps {' '.join(f'{x:.0f}' for x in m['gpu_ms'])}", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "drift.json.tmp"
    tmp.write_text(json.dumps({"meta": {"config": cfg.to_dict(), "seq_len": a.seq_len,
                                        "batch_size": a.batch_size, **provenance(dev)},
                               "rows": rows}, indent=1, default=str))
    tmp.replace(out / "drift.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
