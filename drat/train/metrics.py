"""Where a run's numbers go: metrics.jsonl (always), TensorBoard and Weights & Biases (optional),
the progress line on the console, and model FLOPs utilisation.

metrics.jsonl holds one JSON object a line: `kind: "train"` every `log_every` steps (loss, lr, λ,
throughput, saved activation bytes, on CUDA the peak memory and MFU, under drat the gates) and
`kind: "eval"` at every evaluation (val_loss, val_ppl, val_tokens).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from ..measure import matmul_tflops, model_flops_per_step
from .config import TrainingConfig

PROGRESS_EVERY_S = 10.0  # a progress line at least this often, whatever log_every is


class MetricSinks:
    """metrics.jsonl, plus tb/ and W&B when the config asks for them. Rank 0 opens these."""

    def __init__(self, out: Path, cfg: TrainingConfig, step: int, log: logging.Logger):
        self._metrics = open(out / "metrics.jsonl", "a")
        self._tb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events that a launch which died logged after the checkpoint resumed from
            self._tb = SummaryWriter(str(out / "tb"), purge_step=step or None)
        self._wandb = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                log.warning("wandb is not installed (pip install 'drat[wandb]'); not logging to W&B")
            else:
                mode = os.environ.get("WANDB_MODE", "offline")  # offline unless the user opts in
                self._wandb = wandb.init(project=cfg.wandb_project, dir=str(out), mode=mode,
                                         config=cfg.to_dict(), resume="allow")

    def emit(self, rec: dict) -> None:
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            prefix = {"train": "train", "eval": "val"}.get(rec["kind"], rec["kind"])
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(f"{prefix}/{k}", v, rec["step"])
            if "gates" in rec:
                self._tb.add_histogram("gates/p_store", torch.tensor(
                    [g["p_store"] for g in rec["gates"].values()]), rec["step"])
        if self._wandb is not None:
            self._wandb.log({f"{rec['kind']}/{k}": v for k, v in rec.items()
                             if isinstance(v, (int, float)) and k != "step"}, step=rec["step"])

    def close(self) -> None:
        self._metrics.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class MFU:
    """Model FLOPs utilisation against a bf16 matmul rate measured on this GPU at the first call."""

    def __init__(self, model: torch.nn.Module, seq_len: int, device: torch.device, world: int):
        self.model, self.seq_len, self.device, self.world = model, seq_len, device, world
        self.peak_tflops: float | None = None

    def __call__(self, tokens_per_s: float) -> float:
        if self.peak_tflops is None:
            self.peak_tflops = matmul_tflops(self.device)
        flops_per_token = model_flops_per_step(self.model, 1, self.seq_len) / self.seq_len
        # per GPU: tokens_per_s counts the tokens of every rank
        return tokens_per_s / self.world * flops_per_token / (self.peak_tflops * 1e12)


class ProgressLine:
    """A line of progress at least every `every_s` seconds (step, loss, tokens/s, elapsed), so a
    run whose output is not a terminal (no progress bar) still shows that it moves."""

    def __init__(self, step: int, steps: int, tokens_per_step: int, every_s: float | None = None):
        self.steps, self.tokens_per_step = steps, tokens_per_step
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.t_start = time.perf_counter()
        self.reset(step)

    def reset(self, step: int) -> None:
        """Another line just reported `step`: the next one is due `every_s` from now."""
        self.t_last, self.step_last = time.perf_counter(), step

    def due(self) -> bool:
        return time.perf_counter() - self.t_last >= self.every_s

    def line(self, step: int, loss: float) -> str:
        now = time.perf_counter()
        tokens_per_s = (step - self.step_last) * self.tokens_per_step / max(now - self.t_last, 1e-9)
        self.reset(step)
        return (f"step {step}/{self.steps}: loss {loss:.4f}, {tokens_per_s:.0f} tok/s, "
                f"{now - self.t_start:.0f} s elapsed")
