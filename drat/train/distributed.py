"""Data-parallel training under torchrun: DDP or FSDP2 around the model, DRAT's gates beside it.

    torchrun --standalone --nproc_per_node 4 -m drat.cli train --distributed fsdp ...

One process per device: cuda:LOCAL_RANK with NCCL, or the CPU with gloo. The model is wrapped
(`DistributedDataParallel`, or FSDP2 `fully_shard` on every block and then on the root); the gate
logits are not. They are a small replicated parameter that every rank updates alike, which works
because the resource loss depends only on the gates and the site costs:
  * the site costs are measured once, on rank 0, and broadcast;
  * every rank seeds its GateBank generator with the run's seed, so the Gumbel samples agree;
  * the hard plan of each step is still broadcast from rank 0 (one small tensor), so every rank
    recomputes the same sites even if floating point ever made two ranks sample differently.

FSDP2 and recomputation. FSDP2 all-gathers a block's parameters before its forward, frees them
after it (`reshard_after_forward=True`), and all-gathers them again when the gradient reaches the
block's output in backward. DRAT rebuilds a recomputed site inside the unpack hook of the op that
saved it. If that op belongs to the site's own block, the block is unsharded by then and the
rebuild is exact (tested). But a site whose output another unit saves (the block output
`mlp_down`, which the next block's `attn_norm` or the root's `final_norm` saves) is rebuilt during
*that* unit's backward, while its own block is still sharded, and its linear meets a sharded
weight: `RuntimeError: aten.mm.default got mixed torch.Tensor and DTensor`. A chain of recomputed
sites carries this further. So, each step, the blocks whose plan may be rebuilt outside their own
backward keep their parameters from forward to backward (`set_reshard_after_forward(False)`);
the rest reshard as usual. FSDP2 never reshards the root (embedding, final norm, LM head) after
forward, so model-level sites are always safe.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ..runtime import resolve_device
from ..sites import SiteGraph

MODES = ("ddp", "fsdp")


@dataclass
class Dist:
    """Where this process stands; with `mode=None` (one process) every method is a no-op."""

    mode: str | None = None  # None | "ddp" | "fsdp"
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this process created the group, so it destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.mode:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        if not self.mode:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_(self, t: torch.Tensor) -> torch.Tensor:
        """Overwrite `t` with rank 0's values, in place. NCCL moves device tensors only: a CPU
        tensor (the gate logits and plans live on the CPU) is staged through this rank's GPU."""
        if self.mode:
            if t.device.type == "cpu" and dist.get_backend() == "nccl":
                staged = t.to(torch.device("cuda", torch.cuda.current_device()))
                dist.broadcast(staged, src=0)
                t.copy_(staged.cpu())
            else:
                dist.broadcast(t, src=0)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average over ranks (a sum and a division: gloo has no ReduceOp.AVG)."""
        if not self.mode:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world

    def max(self, t: torch.Tensor) -> torch.Tensor:
        if not self.mode:
            return t
        t = t.detach().clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def all_gather_object(self, obj: Any) -> list:
        if not self.mode:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def main_first(self, fn: Callable, *args) -> Any:
        """Run `fn` on rank 0 alone (file writes, measurements); every rank gets its result.

        An error on rank 0 is raised on every rank: a rank that waited on a barrier instead
        would hang until the collective timeout."""
        if not self.mode:
            return fn(*args)
        result, error = None, None
        if self.is_main:
            try:
                result = fn(*args)
            except Exception as e:  # re-raised below, on every rank
                error = e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}")
        result, error = self.broadcast_object((result, error))
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:
        return False


def init_distributed(mode: str | None, device: str) -> tuple[Dist, torch.device]:
    """The process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if mode is None:
        if world_env > 1:  # n copies of one run writing into one folder
            raise ValueError(f"launched on {world_env} processes (torchrun) without --distributed; "
                             f"pass --distributed ddp or --distributed fsdp")
        return Dist(), resolve_device(device)
    if mode not in MODES:
        raise ValueError(f"unknown distributed mode {mode!r}; choose one of {', '.join(MODES)}")
    if "RANK" not in os.environ and not dist.is_initialized():
        raise ValueError(f"--distributed {mode} needs a torchrun launch (RANK, WORLD_SIZE are not set): "
                         f"torchrun --nproc_per_node N -m drat.cli train --distributed {mode} ...")
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return Dist(mode, dist.get_rank(), dist.get_world_size(), owns), dev


def wrap_model(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """The module the training forward calls. DDP wraps the model; FSDP2 shards it in place
    (every block its own unit, so one block's parameters are gathered at a time, then the root)."""
    if d.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if d.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    return model


@contextlib.contextmanager
def grad_sync(train_model: nn.Module, d: Dist, sync: bool):
    """Gradient accumulation: reduce gradients across ranks only on the last micro-batch."""
    if d.mode == "ddp" and not sync:
        with train_model.no_sync():
            yield
        return
    if d.mode == "fsdp":
        train_model.set_requires_gradient_sync(sync)
    yield


def blocks_rebuilt_outside(graph: SiteGraph, stored: Sequence[bool]) -> set[int]:
    """Layers holding a recomputed site that may be rebuilt during another unit's backward.

    A recomputed site is rebuilt where its saved tensors are unpacked: its internals in its own
    backward, its output in the backward of each child (the child's ops saved it, or the child is
    recomputed and refers to it), and transiently wherever a recomputed child is rebuilt. Units are
    the blocks and the root (None). Conservative: every child edge counts as a save."""
    unit = [k.layer for k in graph.keys]
    where: list[set] = [set() for _ in graph.keys]  # units whose backward may rebuild site i
    for i in reversed(range(len(graph))):  # forward order: children come after their parents
        if stored[i]:
            continue
        where[i] = {unit[i]}
        for c in graph.children[i]:
            where[i].add(unit[c])
            if not stored[c]:
                where[i] |= where[c]
    return {unit[i] for i in range(len(graph))
            if not stored[i] and unit[i] is not None and where[i] != {unit[i]}}


def set_block_resharding(model: nn.Module, stored: Sequence[bool]) -> set[int]:
    """FSDP2: keep unsharded after forward exactly the blocks a plan rebuilds outside their own
    backward (see the module docstring); returns those layers."""
    keep = blocks_rebuilt_outside(model.graph, stored)
    for block in model.blocks:
        block.set_reshard_after_forward(block.layer not in keep, recurse=False)
    return keep


# ---------------------------------------------------------------------------------- checkpoints
def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def model_state(model: nn.Module, d: Dist) -> dict:
    """An ordinary state dict (FSDP2: gathered to full CPU tensors on rank 0, empty elsewhere)."""
    if d.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_full_options(cpu_offload=True))
    return model.state_dict()


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist) -> dict:
    """FSDP2: the full optimizer state keyed by parameter name, on rank 0; else `state_dict()`."""
    if d.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    return optimizer.state_dict()


def load_model_state(model: nn.Module, state: dict, d: Dist) -> None:
    if d.mode == "fsdp":  # every rank holds the full dict and keeps its own shard of it
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state, options=_full_options())
    else:
        model.load_state_dict(state)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, d: Dist) -> None:
    if d.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=_full_options())
    else:
        optimizer.load_state_dict(state)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2's gradient norm) as the plain tensor it stands for; others unchanged."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
