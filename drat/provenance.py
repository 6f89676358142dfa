"""Provenance recorded in every result file: torch version, device, git commit, host."""

from __future__ import annotations

import datetime
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
        "python": platform.python_version(),
        "host": platform.node(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


