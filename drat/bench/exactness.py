"""`drat bench exactness`: are loss and gradients bitwise those of `none` on this device?

The test suite proves exactness in float32 on the CPU. On a GPU, under bf16 autocast, two things
could break it: a rebuild that picks another kernel than the forward did, and kernels that are
not deterministic run to run (atomics), which would separate even two `none` steps. This command
tells them apart on one batch, one process:

    none (twice)      the reference and its repeat: does `none` itself reproduce bit for bit?
    full, selective   PyTorch-style recomputation (torch.utils.checkpoint)
    drat-lam<λ>       gates fitted on costs measured here
    drat-blocks       every block site recomputed but the block output (`mlp_down`): the longest
                      rebuild chains that stay linear (recomputing the residual stream too would
                      rebuild it exponentially often with depth)
    drat-random       a seeded random plan over the same sites: each stored or recomputed with
                      equal odds, so chains of every length mix with stored breaks
    drat3-random      a seeded random three-arm plan: each of those sites stored, recomputed or
                      offloaded to host memory (pinned, on a side stream, on CUDA) with equal odds

Each row is one forward + backward from the same weights and batch, compared with the first
`none`: `loss_equal` (bitwise), `grads_equal` (every parameter's gradient bitwise), and the
largest absolute gradient difference, so a near miss is told from a real error. With
`--deterministic`, PyTorch's deterministic algorithms are on for the whole run, strictly (an op
that has none stops the run with PyTorch's error naming it; see `runtime.set_deterministic`).
Exit status: 0 every row bitwise equal, 3 some row differs (a measured result), anything else an
error (then the tables may hold only the rows before it).

Outputs in --out: exactness.csv, exactness.json (rows + provenance).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..measure import build_costs
from ..provenance import provenance
from ..runtime import autocast_ctx, set_deterministic
from ..strategies import FullAC, NoneAC, PlanAC, SelectiveAC
from ..validate import NONNEG, NumberList
from .common import add_model_args, bench_model, lambda_plans, model_kwargs, write_rows

EXIT_DIFFERS = 3  # some row differs: a measured result, told apart from a crash
EXACTNESS_FIELDS = ["name", "n_recomputed", "loss", "loss_equal", "grads_equal", "n_params_differing",
                    "max_abs_grad_diff", "rebuilds"]


def loss_and_grads(model, idx, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward + backward from cleared gradients; the loss and every gradient, detached."""
    model.zero_grad(set_to_none=True)
    with autocast_ctx(idx.device):
        loss = model.step_loss(idx, targets)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach().float(), grads


def compare(ref: tuple, got: tuple) -> dict:
    (l0, g0), (l1, g1) = ref, got
    differing = [n for n in g0 if n not in g1 or not torch.equal(g0[n], g1[n])]
    diff = max((float((g0[n].float() - g1[n].float()).abs().max()) for n in g0 if n in g1), default=0.0)
    return {"loss": float(l1), "loss_equal": bool(torch.equal(l0, l1)), "grads_equal": not differing,
            "n_params_differing": len(differing), "max_abs_grad_diff": diff}


def run_exactness(size: str = "tiny", seq_len: int = 64, batch_size: int = 2, device: str = "cpu",
                  n_layer: int | None = None, n_embd: int | None = None, n_head: int | None = None,
                  vocab_size: int | None = None, tie_weights: bool | None = None, lams=(0.5,),
                  deterministic: bool = False, out: str | Path | None = None, log=print) -> list[dict]:
    undo = None
    if deterministic:
        undo = set_deterministic()
    try:
        dev, cfg, model, idx, targets = bench_model(size, seq_len, batch_size, device, n_layer, n_embd,
                                                    n_head, vocab_size, tie_weights)
        meta = {"config": cfg.to_dict(), "batch_size": batch_size, "seq_len": seq_len,
                "deterministic": deterministic, **provenance(dev)}
        model.set_strategy(NoneAC())
        costs = build_costs(model, idx, targets, "measured")  # no weight changes: grads are cleared
        n = len(model.graph)
        plans = [("none", NoneAC(), 0), ("none-repeat", NoneAC(), 0), ("full", FullAC(), None),
                 ("selective", SelectiveAC(), None)]
        plans += lambda_plans(costs, lams)
        blocks = [k.layer is None or k.name == "mlp_down" for k in model.graph.keys]
        plans.append(("drat-blocks", PlanAC(stored=blocks), n - sum(blocks)))
        # the random plans choose only among the sites drat-blocks recomputes (the block outputs
        # stay stored, as there), seeded so every device and mode runs the same plans
        rng = random.Random(0)
        free = [not b for b in blocks]
        stored = [b or rng.random() < 0.5 for b in blocks]
        plans.append(("drat-random", PlanAC(stored=stored), n - sum(stored)))
        arm = [rng.randrange(3) if f else 0 for f in free]  # 0 store, 1 recompute, 2 offload
        stored3 = [a != 1 for a in arm]
        plans.append(("drat3-random", PlanAC(stored=stored3, offloaded=[a == 2 for a in arm]),
                      n - sum(stored3)))
        rows, ref = [], None
        for name, strategy, n_rec in plans:
            model.set_strategy(strategy)
            got = loss_and_grads(model, idx, targets)
            ref = ref or got
            runtime = getattr(strategy, "last_runtime", None)
            row = {"name": name, "n_recomputed": n_rec, **compare(ref, got),
                   "rebuilds": sum(runtime.rebuilds) if runtime is not None else 0}
            rows.append(row)
            if out is not None:
                write_rows(rows, Path(out), "exactness", EXACTNESS_FIELDS, meta)
            log(f"{name:<14} loss {'==' if row['loss_equal'] else '!='}  grads "
                f"{'==' if row['grads_equal'] else '!='} ({row['n_params_differing']} differ, "
                f"max |diff| {row['max_abs_grad_diff']:.3g})  rebuilds {row['rebuilds']}")
        return rows
    finally:
        if undo is not None:
            undo()


def add_exactness_parser(bsub) -> None:
    e = bsub.add_parser("exactness", help="every strategy's loss and gradients vs none, bitwise (one batch)")
    add_model_args(e, steps=1)
    e.add_argument("--lambdas", default="0.5", type=NumberList(NONNEG))
    e.add_argument("--deterministic", action="store_true", help="PyTorch's deterministic algorithms on")
    e.set_defaults(func=_cmd_exactness)


def _cmd_exactness(args) -> int:
    rows = run_exactness(args.size, args.seq_len, args.batch_size, args.device, **model_kwargs(args),
                         lams=tuple(float(x) for x in args.lambdas.split(",") if x),
                         deterministic=args.deterministic, out=args.out)
    # the exit status says whether every recomputing row matched the reference bit for bit; 3, not
    # 1, for "differs", so that a pipeline can accept a difference and still fail on a crash
    return 0 if all(r["loss_equal"] and r["grads_equal"] for r in rows) else EXIT_DIFFERS
