"""Provenance recorded in every result file: torch version, device, git commit, host, and a hash
of the package's source."""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parent.parent


# what the pipeline writes: raw results (committed at paper scale) and every derived file, the
# paper's figures and generated tables included (results/<scale>/paper/, gitignored)
OUTPUT_PATHS = ("results",)


def git_commit() -> tuple[str, bool]:
    """(commit hash or 'unknown', whether the work tree has uncommitted changes).

    `DRAT_GIT_COMMIT` overrides: a copy of the tree without history (a remote GPU machine)
    is told the commit it was made from."""
    env = os.environ.get("DRAT_GIT_COMMIT", "")
    if re.fullmatch(r"[0-9a-f]{40}", env):
        return env, os.environ.get("DRAT_GIT_DIRTY", "0") == "1"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        # dirty = code that differs from the commit; the pipeline's own outputs under OUTPUT_PATHS
        # are written while a build runs and do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){p}" for p in OUTPUT_PATHS)], cwd=_REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            return "unknown", False
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


MEASURE_FREE = ("analysis",)  # subpackages left out of source_sha256: they only read results


@functools.lru_cache(maxsize=1)
def source_sha256() -> str:
    """sha256 over the `drat` package's Python sources (path and bytes, in sorted order), less
    `drat/analysis/` (MEASURE_FREE): the code that turns raw results into tables and figures
    measures nothing, so it may change while a grid is being collected.

    Two results with the same hash ran the same mechanism, even from different commits (a commit
    that only adds results, docs, the paper or analysis changes no file hashed here), so the
    paper's "one mechanism" is checked on this rather than on the commit. Computed from the files
    imported, so a copy without git history (a remote GPU machine) reports it too."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg)
        if "__pycache__" in f.parts or rel.parts[0] in MEASURE_FREE:
            continue
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def provenance(device: torch.device | str = "cpu") -> dict:
    commit, dirty = git_commit()
    return {
        "torch_version": torch.__version__,
        "device": device_name(device),
        "git_commit": commit,
        "git_dirty": dirty,
        "source_sha256": source_sha256(),
        "python": platform.python_version(),
        "host": platform.node(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


