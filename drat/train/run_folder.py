"""The run folder (`TrainingConfig.out`): what a run writes there, and how the folder is made
ready for a new, replaced or resumed run.

    config.json     the resolved config (training fields, model, derived values, data hashes)
    tokenizer.json  the BPE tokenizer trained for the run (absent when `tokenizer` names one)
    tokens/         the corpus as token memmaps, one per split, and their meta.json
    metrics.jsonl   one JSON record per log step and per evaluation
    summary.json    the outcome, rewritten at the end of every launch
    train.log       the log lines the console shows
    checkpoints/    ckpt_<step>.pt and their .sha256 sidecars
    tb/, wandb/     TensorBoard events; Weights & Biases files when asked for

Under torchrun rank 0 owns the folder: only it prepares the folder and writes into it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..validate import check_out_path
from .checkpoint import CHECKPOINT_DIR, latest_checkpoint, list_checkpoints
from .config import TrainingConfig, TrainingError, config_changes, read_run_config

# Files and folders a run writes; `--overwrite` removes exactly these and nothing else in `out`.
RUN_ARTIFACTS = ("config.json", "metrics.jsonl", "summary.json", "train.log", "tokenizer.json",
                 "tokens", CHECKPOINT_DIR, "tb", "wandb")


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def prepare_run_folder(cfg: TrainingConfig, resume: str | None, overwrite: bool,
                       tokens_from: str | os.PathLike[str] | None = None) -> Path | None:
    """Make `cfg.out` ready and refuse to mix two runs in one folder: `check_run_folder`, then
    `make_run_folder`. Returns the checkpoint to resume from (None for a new run). `tokens_from`:
    a folder of token files (e.g. a pipeline's shared ones) to link into the new run's tokens/, so
    that it does not tokenize the corpus again."""
    path = check_run_folder(cfg, resume, overwrite, tokens_from)
    make_run_folder(cfg, overwrite, tokens_from)
    return path


def check_run_folder(cfg: TrainingConfig, resume: str | None, overwrite: bool,
                     tokens_from: str | os.PathLike[str] | None = None) -> Path | None:
    """Every refusal of the run folder, before anything is written (this writes nothing): `--out`
    must be a folder that can be written, hold no other run unless `overwrite`, and hold the run
    to resume with a config that may resume it. Returns the checkpoint to resume from, or None."""
    out = Path(cfg.out)
    if resume and overwrite:
        raise TrainingError("give --resume or --overwrite, not both")
    if resume and tokens_from:
        raise TrainingError("--tokens seeds the tokens/ of a new run; a resumed run keeps its own")
    check_out_path(out, "dir", "out", TrainingError)
    stored = read_run_config(out)
    if stored is not None and not resume and not overwrite:
        raise TrainingError(f"{out} already holds a run (config.json); pass --resume to continue "
                            f"it or --overwrite to replace it, or choose another --out")
    if tokens_from and not (Path(tokens_from) / "meta.json").is_file():
        raise TrainingError(f"--tokens {tokens_from} holds no token files (no meta.json)")
    if not resume:
        return None
    if stored is None:
        raise TrainingError(f"nothing to resume: {out} holds no run (no config.json)")
    mine, theirs = cfg.to_dict(), stored["training"]
    changed = config_changes(mine, theirs)
    if changed:
        diffs = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine[k]!r}" for k in changed)
        raise TrainingError(f"cannot resume the run in {out} with a different config ({diffs}); "
                            f"drop those flags or start a new run with --out/--overwrite")
    ckpt_dir = out / CHECKPOINT_DIR
    path = latest_checkpoint(ckpt_dir) if resume == "latest" else Path(resume)
    if path is None:
        raise TrainingError(f"nothing to resume: no checkpoint in {ckpt_dir}; start again with --overwrite")
    return path


def make_run_folder(cfg: TrainingConfig, overwrite: bool,
                    tokens_from: str | os.PathLike[str] | None = None) -> tuple[int, int]:
    """The writes that make a checked run folder ready: with `overwrite` the old run's artifacts
    go, the folder is made, `tokens_from` linked in, and the temporary files an interrupted write
    left behind are removed. Returns (files, bytes) of those."""
    out = Path(cfg.out)
    if overwrite:
        for name in RUN_ARTIFACTS:
            p = out / name
            if cfg.tokenizer and p.resolve() == Path(cfg.tokenizer).resolve():
                continue  # the tokenizer this run is told to use, not one it made
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if tokens_from:
        link_tokens(Path(tokens_from), out / "tokens")
    return remove_stray_temp_files(out)


def stray_temp_files(out: Path) -> list[Path]:
    """Temporary files a killed run left in its folder: every writer here writes `.<name>...tmp`
    beside its target and renames it into place, so only an interrupted write leaves one."""
    found = [p for name in ("config.json", "summary.json", "metrics.jsonl", "tokenizer.json")
             for p in out.glob(f".{name}*.tmp")]
    found += (out / CHECKPOINT_DIR).glob(".ckpt_*.tmp")
    found += (out / "tokens").glob(".*.tmp")
    return sorted(p for p in found if p.is_file())


def remove_stray_temp_files(out: Path) -> tuple[int, int]:
    """Remove `stray_temp_files(out)`; returns how many, and their bytes."""
    n, size_bytes = 0, 0
    for p in stray_temp_files(out):
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            continue
        n, size_bytes = n + 1, size_bytes + size
    return n, size_bytes


def link_tokens(src: Path, dst: Path) -> None:
    """Hard-link (or, across file systems, copy) the token files of `src` into `dst`."""
    if not (src / "meta.json").is_file():
        raise TrainingError(f"--tokens {src} holds no token files (no meta.json)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            target = dst / f.name
            target.unlink(missing_ok=True)
            try:
                os.link(f, target)
            except OSError:  # another file system
                shutil.copy2(f, target)


def discard_after(out: Path, step: int) -> None:
    """Forget what a run wrote after `step` (metrics, newer checkpoints): it is about to be redone."""
    for s, p in list_checkpoints(out / CHECKPOINT_DIR):
        if s > step:
            p.unlink()
            p.with_name(p.name + ".sha256").unlink(missing_ok=True)
    metrics = out / "metrics.jsonl"
    if metrics.is_file():
        kept = []
        for line in metrics.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                pass  # a line cut short when the previous launch died
        write_text_atomic(metrics, "".join(line + "\n" for line in kept))


class _ConsoleHandler(logging.Handler):
    """Log lines to stderr without tearing the progress bar. A record logged with
    `extra={"console": False}` goes to train.log only (periodic lines while the bar shows them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True) and super().filter(record)

    def emit(self, record):
        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(out: Path, name: str, rank: int) -> tuple[logging.Logger, list[logging.Handler]]:
    """A logger of its own (tests run several trainers in one process): rank 0 logs to the console
    and train.log; the other ranks speak up only when something is wrong, and say who they are."""
    log = logging.getLogger(name)
    log.propagate = False
    handlers: list[logging.Handler]
    if rank == 0:
        log.setLevel(logging.INFO)
        fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
        handlers = [logging.FileHandler(out / "train.log"), _ConsoleHandler()]
    else:
        log.setLevel(logging.WARNING)
        fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(message)s", "%H:%M:%S")
        handlers = [_ConsoleHandler()]
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    return log, handlers
