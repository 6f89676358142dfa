"""The compiler's own activation offloading on one plan: compiled peak and step, offloaded vs stored."""

import torch

from drat.bench.common import bench_model
from drat.measure import measure_steps
from drat.runtime import autocast_ctx
from drat.strategies import CompiledPlanAC, compiler_offloading

dev, cfg, model, idx, tgt = bench_model("medium", 2048, 8, "cuda", 12, 1024, 16)
n = len(model.graph)
# offload every block's qkv and mlp_up outputs (the large matmul outputs), store the rest
off = [k.name in ("qkv", "mlp_up") for k in model.graph.keys]
for tag, o in (("stored", None), ("offload", off)):
    torch._dynamo.reset()
    s = CompiledPlanAC([True] * n, offloaded=o)
    model.set_strategy(s)
    s.prepare(model, idx, autocast_ctx(dev))
    try:
        with compiler_offloading(54.9):
            m = measure_steps(model, idx, tgt, 10, 2, compiled=torch.compile(model))
        print(f"compiled-{tag}: peak {m['peak_gib']:.3f} GiB, step {m['step_ms']:.2f} ms", flush=True)
    except Exception as e:
        print(f"compiled-{tag}: failed {type(e).__name__}: {str(e)[:400]}", flush=True)
