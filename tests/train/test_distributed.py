"""Data-parallel training on the CPU: 2 processes, gloo, DDP and FSDP2 (drat.train.distributed).

What is pinned down:
  * recomputation stays bitwise exact inside DDP and inside FSDP2 blocks, and the reason some
    FSDP2 blocks must keep their parameters after forward (a rebuild outside the block's backward
    meets sharded weights);
  * 2 ranks with per-rank batch B train like one process with batch 2B: same losses, gradients
    and weights after 3 steps (float32 reduction-order tolerance), same gate plans;
  * every rank samples, executes and rebuilds the same plan each step;
  * a run resumed from rank 0's checkpoint under torchrun writes the losses of an uninterrupted one.

Processes are started with torch.multiprocessing.spawn (workers below) or, for the command line,
`torchrun --standalone` (which picks a free port itself).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from drat.cli import main
from drat.model import GPT, GPTConfig
from drat.sites import SiteGraph
from drat.strategies import PlanAC
from drat.train import ResourceAwareTrainer, TrainingConfig, TrainingError
from drat.train.distributed import Dist, blocks_rebuilt_outside, full_tensor, set_block_resharding

from .test_trainer import CORPUS_BYTES, records, small_cfg

WORLD = 2
MODES = ("ddp", "fsdp")
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available in this build")
torchrun_exe = shutil.which("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, fn, args) -> None:
    """Spawned process: torchrun's environment, a gloo group, then `fn(rank, *args)`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)  # 2 processes on a 2-core machine; also a fixed reduction order
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))  # a hang fails instead of stalling CI
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, *args) -> None:
    mp.spawn(_entry, args=(_free_port(), fn, args), nprocs=WORLD, join=True)


# ------------------------------------------------------------------------------ which blocks keep params
def test_blocks_rebuilt_outside_their_own_backward():
    g = SiteGraph(3, 2)
    n = len(g)

    def plan(*recompute):
        return [(k.layer, k.name) not in recompute for k in g.keys]

    assert blocks_rebuilt_outside(g, [True] * n) == set()
    # inside a block: rebuilt in that block's backward (qkv saves attn_norm's output, and so on)
    inside = plan((1, "attn_norm"), (1, "qkv"), (1, "attn_core"), (1, "mlp_act"))
    assert blocks_rebuilt_outside(g, inside) == set()
    # a block output is saved by the next block's attn_norm, the last one by the root's final_norm
    assert blocks_rebuilt_outside(g, plan((0, "mlp_down"))) == {0}
    assert blocks_rebuilt_outside(g, plan((2, "mlp_down"))) == {2}
    # chains carry it on: a rebuilt block output rebuilds attn_out transiently, and that the block input
    assert blocks_rebuilt_outside(g, plan((1, "attn_out"), (1, "mlp_down"))) == {1}
    assert blocks_rebuilt_outside(g, plan((0, "mlp_down"), (1, "attn_out"))) == {0}
    # model-level sites are the root's, which FSDP2 never reshards after forward
    assert blocks_rebuilt_outside(g, plan((None, "embed"), (None, "final_norm"))) == set()
    assert blocks_rebuilt_outside(g, [False] * n) == {0, 1, 2}


# ------------------------------------------------------------------------------ exactness inside wrappers
def _tiny_gpt() -> GPT:
    torch.manual_seed(0)  # every rank builds the same weights
    return GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=32, loss_chunks=4))


def _grads(model, wrapped, stored, batch) -> tuple[torch.Tensor, dict]:
    model.set_strategy(PlanAC(stored=stored))
    model.zero_grad(set_to_none=True)
    loss = wrapped(*batch)
    loss.backward()
    return loss.detach(), {n: full_tensor(p.grad).clone() for n, p in model.named_parameters()}


def _exactness_worker(rank: int, out: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    g = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    batch = (torch.randint(0, 97, (2, 16), generator=g), torch.randint(0, 97, (2, 16), generator=g))
    graph = _tiny_gpt().graph
    n = len(graph)
    inner = [k.name not in ("qkv", "attn_core", "mlp_up", "mlp_act") for k in graph.keys]  # within blocks
    cross = [k.name not in ("mlp_down", "attn_out", "attn_norm") for k in graph.keys]  # across blocks
    plans = {"store": [True] * n, "inner": inner, "cross": cross, "all": [False] * n}
    d = Dist("ddp", rank, WORLD)  # the trainer's helpers for logged numbers
    x = torch.tensor(float(rank))
    res: dict = {"mean": d.mean(x).item(), "max": d.max(x).item()}

    model = _tiny_gpt()
    ddp = DistributedDataParallel(model)
    res["ddp"] = {name: _grads(model, ddp, stored, batch) for name, stored in plans.items()}

    def sharded_gpt():
        model = _tiny_gpt()
        for block in model.blocks:
            fully_shard(block)  # reshard_after_forward=True, FSDP2's default
        fully_shard(model)
        return model

    model = sharded_gpt()
    res["fsdp_inner_resharded"] = _grads(model, model, inner, batch)
    res["fsdp"] = {}
    for name, stored in plans.items():
        set_block_resharding(model, stored)
        res["fsdp"][name] = _grads(model, model, stored, batch)

    model = sharded_gpt()
    try:  # a cross-block plan with every block resharded: the rebuild meets sharded weights
        _grads(model, model, cross, batch)
        res["fsdp_cross_resharded_error"] = None
    except RuntimeError as e:
        res["fsdp_cross_resharded_error"] = str(e).splitlines()[0]
    torch.save(res, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
@needs_gloo
def test_recompute_is_bitwise_exact_inside_ddp_and_fsdp2(tmp_path):
    spawn(_exactness_worker, str(tmp_path))
    for rank in range(WORLD):
        res = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert res["mean"] == 0.5 and res["max"] == 1.0
        for mode in MODES:
            ref_loss, ref_grads = res[mode]["store"]
            for plan in ("inner", "cross", "all"):
                loss, grads = res[mode][plan]
                assert torch.equal(loss, ref_loss), (mode, plan)
                for name in ref_grads:  # reduced (DDP) / reduce-scattered (FSDP2) gradients, bitwise
                    assert torch.equal(grads[name], ref_grads[name]), (mode, plan, name)
        # FSDP2's pre-backward unshard precedes the unpack hooks of the block's own backward ...
        loss, grads = res["fsdp_inner_resharded"]
        assert torch.equal(loss, res["fsdp"]["store"][0])
        assert all(torch.equal(grads[k], res["fsdp"]["store"][1][k]) for k in grads)
        # ... but not a rebuild during the next block's backward: why set_block_resharding exists
        assert "mixed torch.Tensor and DTensor" in res["fsdp_cross_resharded_error"]
        # DDP averages the gradients of both ranks: they agree with each other
        other = torch.load(tmp_path / f"rank{1 - rank}.pt", weights_only=False)
        assert all(torch.equal(res["ddp"]["all"][1][k], other["ddp"]["all"][1][k]) for k in ref_grads)


# ------------------------------------------------------------------------------ trainer: 2 ranks vs 1
STEPS = 3


def _dist_cfg(out, tokenizer, **kw) -> TrainingConfig:
    # recompute-heavy gates at τ≈1 (no warm start): the sampled plans differ from step to step
    base = dict(steps=STEPS, dropout=0.0, grad_accum=2, lam=1000.0, gate_init_logit=-0.5,
                gate_warm_start=False, tau_end=0.5, ckpt_every=STEPS, eval_every=STEPS, eval_batches=1)
    base.update(kw)
    return small_cfg(out, tokenizer, **base)


def _instrumented_train(cfg: TrainingConfig) -> dict:
    """Train, recording each step's sampled and executed plan, its rebuild counts, and the
    gradients the optimizer stepped on last (full tensors, also under FSDP2)."""
    trainer = ResourceAwareTrainer(cfg)
    rec: dict = {"sampled": [], "executed": [], "rebuilds": [], "grads": {}}

    def record_grads(opt, args, kwargs):
        rec["grads"] = {n: full_tensor(p.grad).clone() for n, p in trainer.model.named_parameters()}

    trainer.optimizer.register_step_pre_hook(record_grads)
    train_step = trainer.train_step

    def recorded_step():
        out = train_step()
        rt = trainer.strategy.last_runtime
        rec["sampled"].append([bool(v) for v in (out["st"] > 0.5).tolist()])
        rec["executed"].append(list(rt.stored))
        rec["rebuilds"].append(list(rt.rebuilds))
        return out

    trainer.train_step = recorded_step
    try:
        trainer.train()
    finally:
        trainer.close()
    return rec


def _train_worker(rank: int, cfg_dict: dict, out: str) -> None:
    rec = _instrumented_train(TrainingConfig.from_dict(cfg_dict))
    torch.save(rec, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module", params=MODES)
def two_ranks_and_one(request, tmp_path_factory, tokenizer_path):
    """The same 3 steps: 2 ranks × grad_accum 2 × batch 4, and 1 process × grad_accum 4 × batch 4."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available in this build")
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"dist_{mode}")
    cfg = _dist_cfg(tmp / "dist", tokenizer_path, distributed=mode)
    spawn(_train_worker, cfg.to_dict(), str(tmp))
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    one_cfg = _dist_cfg(tmp / "one", tokenizer_path, grad_accum=2 * WORLD)
    one = _instrumented_train(one_cfg)
    return mode, tmp, ranks, one


def _close(a, b, what, atol=1e-7):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.mark.slow
def test_two_ranks_train_like_one_process_with_the_global_batch(two_ranks_and_one):
    mode, tmp, ranks, one = two_ranks_and_one
    d, o = records(tmp / "dist"), records(tmp / "one")
    assert [r["step"] for r in d] == [1, 2, 3]
    assert all(r["tokens_seen"] == r["step"] * WORLD * 2 * 4 * 32 for r in d)  # ranks × accum × batch × seq
    _close(torch.tensor([r["loss"] for r in d]), torch.tensor([r["loss"] for r in o]), f"{mode} losses")
    assert [r["gates"] for r in d] == [r["gates"] for r in o]  # same costs, seed, gradients: same gates
    assert [r["lam"] for r in d] == [r["lam"] for r in o]
    for rec in ranks:  # the last step's (averaged) gradients, every parameter
        assert rec["grads"].keys() == one["grads"].keys()
        for name in one["grads"]:
            _close(rec["grads"][name], one["grads"][name], f"{mode} grad {name}")
    # The weights after 3 steps, as rank 0 wrote them: an ordinary state dict in both modes.
    # AdamW divides each update by the gradient's own scale, so a reduction-order difference in a
    # near-zero gradient can move a weight by ~lr·1e-4 = 1e-7 per step: hence atol 1e-6.
    ckpt = f"checkpoints/ckpt_{STEPS:07d}.pt"
    dw = torch.load(tmp / "dist" / ckpt, weights_only=True)["model"]
    ow = torch.load(tmp / "one" / ckpt, weights_only=True)["model"]
    assert dw.keys() == ow.keys()
    for name in ow:
        assert not hasattr(dw[name], "full_tensor")  # a plain tensor, not a DTensor shard
        _close(dw[name], ow[name], f"{mode} weight {name}", atol=1e-6)
    summary = json.loads((tmp / "dist" / "summary.json").read_text())
    assert summary["world_size"] == WORLD and summary["finished"]


@pytest.mark.slow
def test_every_rank_samples_executes_and_rebuilds_the_same_plan(two_ranks_and_one):
    mode, _, ranks, one = two_ranks_and_one
    r0, r1 = ranks
    assert r0["sampled"] == r1["sampled"]  # identical generators and logits: no broadcast needed
    assert r0["executed"] == r1["executed"] == r0["sampled"]
    assert r0["rebuilds"] == r1["rebuilds"]  # the mechanism really recomputed the same sites
    assert r0["sampled"] == one["sampled"]  # and the plans of the one-process run
    assert len({tuple(p) for p in r0["sampled"]}) > 1, "plans should vary from step to step"
    assert all(0 < sum(p) < len(p) for p in r0["executed"]) and all(sum(r) > 0 for r in r0["rebuilds"])


# ------------------------------------------------------------------------------ torchrun: resume
@pytest.mark.slow
@needs_gloo
@pytest.mark.skipif(torchrun_exe is None, reason="torchrun is not on PATH")
@pytest.mark.parametrize("mode", MODES)
def test_torchrun_resume_from_rank0_checkpoint_continues_the_run(tmp_path, tokenizer_path, mode):
    out = tmp_path / "run"
    argv = [torchrun_exe, "--standalone", "--nproc_per_node", str(WORLD), "-m", "drat.cli", "train",
            "--distributed", mode, "--out", str(out)]
    flags = ["--corpus", "stdlib", "--max-corpus-bytes", CORPUS_BYTES, "--tokenizer", tokenizer_path,
             "--layers", 2, "--hidden", 32, "--heads", 4, "--seq-len", 32, "--batch-size", 4, "--steps", 4,
             "--grad-accum", 2, "--dropout", 0.1, "--lambda", 0.5, "--cost-model", "activation_size",
             "--log-every", 1, "--eval-every", 2, "--eval-batches", 1, "--ckpt-every", 2, "--device", "cpu",
             "--no-tensorboard"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(*extra):
        r = subprocess.run([*argv, *map(str, extra)], capture_output=True, text=True, timeout=240, env=env,
                           cwd=Path(__file__).resolve().parents[2])
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    r = launch(*flags)
    assert len([line for line in r.stdout.splitlines() if line.startswith("{")]) == 1  # rank 0 prints
    straight = (out / "metrics.jsonl").read_text()
    # an interruption after step 2: the step-4 checkpoint never got written
    for p in (out / "checkpoints").glob("ckpt_0000004.pt*"):
        p.unlink()
    launch("--resume")
    assert "resumed from" in (out / "train.log").read_text()
    a = [json.loads(x) for x in straight.splitlines()]
    b = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["step"]) for x in a] == [(x["kind"], x["step"]) for x in b]
    for x, y in zip(a, b):  # dropout on both ranks: each rank's RNG came back from rank 0's file
        for key in ("loss", "val_loss", "lam", "gates", "grad_norm"):
            assert x.get(key) == y.get(key), (x["step"], key)
    state = torch.load(out / "checkpoints" / "ckpt_0000004.pt", weights_only=True)
    assert state["world_size"] == WORLD and state["distributed"] == mode and len(state["rng_ranks"]) == WORLD


# ------------------------------------------------------------------------------ refusals
def test_distributed_needs_torchrun_and_torchrun_needs_distributed(tmp_path, tokenizer_path, capsys,
                                                                  monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TrainingError, match="unknown distributed mode 'zero3'"):
        small_cfg(tmp_path / "a", tokenizer_path, distributed="zero3")
    rc = main(["train", "--distributed", "ddp", "--out", str(tmp_path / "b"), "--tokenizer",
               str(tokenizer_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs a torchrun launch" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="without --distributed"):
        ResourceAwareTrainer(small_cfg(tmp_path / "c", tokenizer_path))
    assert not (tmp_path / "c").exists()  # refused before touching the run folder

