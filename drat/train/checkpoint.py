"""Training checkpoints: atomic saves, the last k kept, loads that fail clearly.

A checkpoint is one `torch.save` file, `ckpt_<step>.pt`, in a run's `checkpoints/` folder, plus a
sidecar `ckpt_<step>.pt.sha256` with the file's size and hash. The sidecar exists because
`torch.load` notices a truncated file but happily loads one with flipped bytes in a tensor; so a
checkpoint without one is refused unless the caller allows it unverified (`--allow-unverified`).

Saving is crash-safe: the payload goes to a temporary file in the same folder, is fsynced, and
only then renamed over the final name (`os.replace` is atomic within a file system). A save that
dies midway leaves a stray temp file at worst, never a half-written `ckpt_*.pt`, so the previous
checkpoint stays the latest one. Old checkpoints are pruned only after a new one is in place.

What goes into a checkpoint is `trainer_state`: every piece of state the next step reads, so that
a resumed run continues bitwise (`restore_trainer` puts it back). A checkpoint and the run resuming
from it must agree on the config (beyond the fields that may change on resume), the tokenizer,
whether there are gates, and the number of processes (`check_resumable`). Checkpoints written
before the gates had an optimizer of their own still resume (`upgrade_legacy_state`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import TrainingConfig, TrainingError, config_changes
from .distributed import load_model_state, load_optimizer_state, model_state, optimizer_state
from .gating import NO_GATES_STATE

CHECKPOINT_FORMAT = "drat-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
_NAME_RE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint is missing, truncated, corrupt or from something else; the message says which."""


def checkpoint_path(ckpt_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt_{step:07d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def list_checkpoints(ckpt_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in the folder, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def _sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> tuple[str, int]:
    digest, size_bytes = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
            size_bytes += len(chunk)
    return digest.hexdigest(), size_bytes


def _fsync_dir(path: Path) -> None:
    # the rename itself lives in the directory entry; without this a power cut can undo it
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], ckpt_dir: str | os.PathLike[str], step: int,
                    keep_last_k: int | None = None) -> Path:
    """Write `state` as the checkpoint of `step` atomically; then keep only the newest k."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(ckpt_dir, step)
    payload = {"format": CHECKPOINT_FORMAT, "step": int(step), **state}
    fd, tmp_name = tempfile.mkstemp(dir=ckpt_dir, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a checkpoint is an ordinary artifact
        sha, size_bytes = _sha256_file(tmp)
        # sidecar first: a checkpoint file that exists always has its hash next to it
        _atomic_write_text(_sidecar(path), json.dumps({"sha256": sha, "size_bytes": size_bytes}) + "\n")
        os.replace(tmp, path)
        _fsync_dir(ckpt_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if keep_last_k is not None and keep_last_k > 0:
        for _, old in list_checkpoints(ckpt_dir)[:-keep_last_k]:
            old.unlink(missing_ok=True)
            _sidecar(old).unlink(missing_ok=True)
    return path


def _previous_hint(path: Path) -> str:
    """'resume from X instead' where an older checkpoint sits beside the bad one."""
    m = _NAME_RE.match(path.name)
    older = [p for s, p in list_checkpoints(path.parent) if m and s < int(m.group(1))]
    if older:
        return f"; resume from the previous checkpoint {older[-1]} instead (or delete {path.name})"
    return "; no earlier checkpoint is left beside it, so the run has to start again (--overwrite)"


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint was loaded without its digest (allowed by `--allow-unverified`)."""


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    allow_unverified: bool = False,
                    warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Read a checkpoint, verified against its sidecar hash. One without a sidecar is refused:
    `torch.load` would load flipped bytes in a tensor without a word. `allow_unverified` loads it
    anyway and says so through `warn` (default: an UnverifiedCheckpointWarning)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    side = _sidecar(path)
    if not side.is_file():
        if not allow_unverified:
            raise CheckpointError(f"checkpoint {path} has no {side.name} beside it, so its bytes cannot be "
                                  f"verified; copy that file along with it, or pass --allow-unverified to "
                                  f"load it unverified")
        msg = (f"checkpoint {path} is loaded UNVERIFIED (no {side.name}): damaged bytes in it would go "
               f"unnoticed")
        if warn is None:
            warnings.warn(msg, UnverifiedCheckpointWarning, stacklevel=2)
        else:
            warn(msg)
    else:
        try:
            expected = json.loads(side.read_text())
            want_sha, want_size = expected["sha256"], int(expected["size_bytes"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint hash file {side} is unreadable ({e})"
                                  + _previous_hint(path)) from e
        sha, size_bytes = _sha256_file(path)
        if size_bytes != want_size:
            raise CheckpointError(f"checkpoint {path} is truncated: {size_bytes} of {want_size} bytes"
                                  + _previous_hint(path))
        if sha != want_sha:
            raise CheckpointError(f"checkpoint {path} is corrupt: its sha256 does not match {side.name}"
                                  + _previous_hint(path))
    try:
        # weights_only: a checkpoint is tensors and plain values, so never unpickle arbitrary code
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip -> RuntimeError, empty file -> EOFError, junk -> UnpicklingError
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {detail})"
                              + _previous_hint(path)) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint" + _previous_hint(path))
    return state


# ---------------------------------------------------------------------------------- a trainer's state
def trainer_state(t: Any) -> dict:
    """Everything the next step of the `ResourceAwareTrainer` `t` reads: what a checkpoint holds.
    Collective under torchrun (FSDP2 gathers the full state to rank 0, every rank contributes its
    RNG), so every rank calls it."""
    rng = capture_rng(t.device, t.dist)
    return {
        "model": model_state(t.model, t.dist),
        "optimizer": optimizer_state(t.model, t.optimizer, t.dist),
        "scheduler": t.scheduler.state_dict(),
        **(t.gating.state_dict() if t.gating is not None else NO_GATES_STATE),  # incl. λ
        "costs": t.gating.costs.to_dict() if t.gating is not None else None,
        "site_bytes": t.site_bytes,
        "plan_bytes": t.plan_bytes,
        **rng,
        "world_size": t.dist.world,
        "distributed": t.dist.mode,
        "config": t.cfg.to_dict(),
        "model_config": t.model_cfg.to_dict(),
        "tokenizer_sha256": t.tokenizer.sha256,
        "train_time_s": t.train_time_s,
        "initial_val": t.initial_val,
        "last_val": t.last_val,
    }


def restore_trainer(t: Any, state: dict, path: Path) -> None:
    """Put a checkpoint's state (from `trainer_state`) back into a freshly set-up `ResourceAwareTrainer`."""
    check_resumable(state, path, t.cfg, t.tokenizer.sha256, has_gates=t.gating is not None,
                    world=t.dist.world)
    upgrade_legacy_state(state)
    load_model_state(t.model, state["model"], t.dist)
    load_optimizer_state(t.model, t.optimizer, state["optimizer"], t.dist)
    t.scheduler.load_state_dict(state["scheduler"])
    if t.gating is not None:
        t.gating.load_state_dict(state)
    # The measured costs are restored, not re-measured: CPU timings differ run to run, and the
    # gates must see the same costs as before the interruption.
    t.set_costs(state)
    t.step = state["step"]
    t.train_time_s = state["train_time_s"]
    t.initial_val, t.last_val = state["initial_val"], state["last_val"]
    restore_rng(state, t.device, t.dist.rank)


# ---------------------------------------------------------------------------------- resuming a run
def check_resumable(state: dict, path: Path, cfg: TrainingConfig, tokenizer_sha256: str, has_gates: bool,
                    world: int) -> None:
    """Refuse a checkpoint whose run is not this one; the message says what differs."""
    changed = config_changes(cfg.to_dict(), state["config"])
    if changed:  # e.g. --resume CKPT of another run
        raise TrainingError(f"checkpoint {path} belongs to a run with another config (differs in "
                            f"{', '.join(changed)})")
    if state.get("tokenizer_sha256") != tokenizer_sha256:
        raise TrainingError(f"checkpoint {path} was trained with another tokenizer (sha256 differs)")
    if (state["gates"] is None) == has_gates:
        raise TrainingError(f"checkpoint {path} and this config disagree on whether there are gates")
    saved_world = state.get("world_size", 1)
    if saved_world != world:  # the step's batches are split by rank: another split is another run
        raise TrainingError(f"checkpoint {path} was written by a run on {saved_world} process(es), this is "
                            f"{world}; resume it with torchrun --nproc_per_node {saved_world}")


def upgrade_legacy_state(state: dict) -> None:
    """Bring a checkpoint of an earlier layout up to the current one, in place."""
    if "gate_optimizer" not in state:
        _split_legacy_gate_group(state)


def _split_legacy_gate_group(state: dict) -> None:
    """Checkpoints written before the gates had their own optimizer kept the gate logits as a
    third AdamW group (one parameter, the last); split it off in place so they still resume."""
    osd, sched = state["optimizer"], state["scheduler"]
    if state["gates"] is None or len(osd["param_groups"]) != 3:
        state["gate_optimizer"] = None
        return
    *groups, gate_group = osd["param_groups"]
    (pid,) = gate_group["params"]
    gate_group = {k: v for k, v in gate_group.items() if k != "initial_lr"}  # LambdaLR's bookkeeping
    state["gate_optimizer"] = {"state": {0: osd["state"][pid]} if pid in osd["state"] else {},
                               "param_groups": [{**gate_group, "params": [0]}]}
    state["optimizer"] = {"state": {k: v for k, v in osd["state"].items() if k != pid},
                          "param_groups": groups}
    for key in ("base_lrs", "_last_lr", "lr_lambdas"):  # the scheduler drove all three groups
        if isinstance(sched.get(key), list):
            sched[key] = sched[key][:2]


def capture_rng(device: torch.device, dist) -> dict:
    """The random streams the next step reads (dropout): this process's CPU and CUDA generators,
    and under torchrun every rank's (collective: every rank calls it)."""
    rng_cpu = torch.get_rng_state()
    rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {
        "rng_cpu": rng_cpu,
        "rng_cuda": rng_cuda,
        # each rank's own dropout stream (None for one process: rng_cpu/rng_cuda are it)
        "rng_ranks": dist.all_gather_object((rng_cpu, rng_cuda)) if dist.mode else None,
    }


def restore_rng(state: dict, device: torch.device, rank: int) -> None:
    rng_cpu, rng_cuda = state["rng_cpu"], state["rng_cuda"]
    if state.get("rng_ranks"):
        rng_cpu, rng_cuda = state["rng_ranks"][rank]
    torch.set_rng_state(rng_cpu)
    if device.type == "cuda" and rng_cuda is not None:
        torch.cuda.set_rng_state(rng_cuda, device)
