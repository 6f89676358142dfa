"""Training checkpoints: atomic saves, the last k kept, loads that fail clearly.

A checkpoint is one `torch.save` file, `ckpt_<step>.pt`, in a run's `checkpoints/` folder, plus a
sidecar `ckpt_<step>.pt.sha256` with the file's size and hash. The sidecar exists because
`torch.load` notices a truncated file but happily loads one with flipped bytes in a tensor.

Saving is crash-safe: the payload goes to a temporary file in the same folder, is fsynced, and
only then renamed over the final name (`os.replace` is atomic within a file system). A save that
dies midway leaves a stray temp file at worst, never a half-written `ckpt_*.pt`, so the previous
checkpoint stays the latest one. Old checkpoints are pruned only after a new one is in place.

What goes into a checkpoint is the trainer's business (`drat/train.py`); this module only moves
dicts of tensors and plain values to and from disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

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


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, verifying it against its sidecar hash when one is present."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    side = _sidecar(path)
    if side.is_file():
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
