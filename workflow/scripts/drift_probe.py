"""Why do recompute rows' step times drift on the H200 while store-all rows hold steady?

Session 7's paper bench (large, S=1024, B=8) measured `none` at 55–59 ms in every step, while the
same recompute plan ran at 74–117 ms in one row and 83–145 ms in the next, with the GPU drawing
*less* power and clocking *higher* in the slow rows: the signature of a GPU waiting for its host.
This probe tests that on one model, strategy by strategy, repeated in rounds:

  host_ms  the Python time to enqueue one step, from perf_counter
  gpu_ms   the same step's CUDA-event time
  gc       how many garbage-collector passes ran inside the timed steps (gc.callbacks)

under three conditions, none with a sync between steps unless named: the automatic collector on
(how the benches ran until session 7), off (how they run since, drat/gc_control.py), and on with
a sync before each step. Without syncs a full launch queue makes the
host wait for the GPU, so host_ms tracks gpu_ms either way; after a sync the GPU starts idle, and
a step whose host_ms still reaches its gpu_ms is host-bound: its time is the launch path's.

Session 7's first run used a plan recomputing everything but attention's core, and never
finished a step on `large`: with the residual stream recomputed in every block, each rebuild
repeats the ones before it (PlanAC warns about such plans now). The recompute-heavy plan here
stores each block's output instead.

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
from drat.profile import _elapsed_ms, _timed_step
from drat.provenance import provenance
from drat.strategies import FullAC, NoneAC, PlanAC

# (name, collector disabled around the steps, sync before each step)
CONDITIONS = (("gc-on", False, False), ("gc-off", True, False), ("synced", False, True))


def timed_steps(model, idx, targets, steps: int, warmup: int, gc_off: bool, sync: bool) -> dict:
    cuda = idx.device.type == "cuda"
    sync_fn = torch.cuda.synchronize if cuda else (lambda: None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
    model.zero_grad(set_to_none=True)
    gc.collect()
    sync_fn()
    passes = [0]

    def count(phase, info):
        if phase == "start":
            passes[0] += 1

    gc.callbacks.append(count)
    was_enabled = gc.isenabled()
    if gc_off:
        gc.disable()
    else:
        gc.enable()
    host, timings = [], []
    try:
        for i in range(warmup + steps):
            if i == warmup:
                passes[0] = 0
            if sync:
                sync_fn()
            t0 = time.perf_counter()
            timing = _timed_step(model, idx, targets, opt)  # the benches' own step and its timing
            if i >= warmup:
                host.append(1e3 * (time.perf_counter() - t0))
                timings.append(timing)
        gpu = _elapsed_ms(timings, idx.device)  # CUDA-event ms (the CPU: its wall-clock ms)
    finally:
        (gc.enable if was_enabled else gc.disable)()
        gc.callbacks.remove(count)
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
    p.add_argument("--layers", type=int, default=None, help="override the size's layer count")
    p.add_argument("--device", default="cuda", help="cuda (what it is for) or cpu (to test the script)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    dev, cfg, model, idx, targets = bench_model(a.size, a.seq_len, a.batch_size, a.device,
                                                n_layer=a.layers, vocab_size=a.vocab_size)
    # recompute-heavy and linear: every site rebuilt but each block's output (and the embedding)
    labels = [k.label() for k in model.graph.keys]
    heavy = [lab.endswith("mlp_down") or lab == "embed" for lab in labels]
    strategies = {"none": NoneAC(), "full": FullAC(), "plan-store-block-outputs": PlanAC(heavy)}
    meta = {"config": cfg.to_dict(), "seq_len": a.seq_len, "batch_size": a.batch_size, **provenance(dev)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(a.rounds):
        for cond, gc_off, sync in CONDITIONS:
            for name, strat in strategies.items():
                model.set_strategy(strat)
                m = timed_steps(model, idx, targets, a.steps, a.warmup, gc_off, sync)
                rows.append({"round": r, "strategy": name, "condition": cond, **m})
                print(f"round {r} {name:<26} {cond:<10} host {m['host_median_ms']:7.2f} ms  "
                      f"gpu {m['gpu_median_ms']:7.2f} ms  gc passes {m['gc_passes']:3d}  "
                      f"gpu steps {' '.join(f'{x:.0f}' for x in m['gpu_ms'])}", flush=True)
                tmp = out / "drift.json.tmp"  # after every measurement: a cut-off run keeps its rows
                tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
                tmp.replace(out / "drift.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
