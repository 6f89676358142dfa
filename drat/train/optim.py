"""The model's optimizer and learning-rate schedule (the gates have their own: `gating.py`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .config import ADAM_BETAS, TrainingConfig


def lr_multiplier(step: int, warmup: int, steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to `min_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(1, steps - warmup), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: TrainingConfig, device: torch.device,
                    lr_lambda: Callable[[int], float]):
    """(AdamW, LambdaLR) of the model. `lr_lambda`: the step's multiplier of `cfg.lr`, read by the
    schedule at every step (a resumed run with more `steps` re-stretches it from there on)."""
    # nanoGPT: decay matrices (weights, embeddings), not biases and LayerNorm gains
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=ADAM_BETAS, eps=1e-8, fused=device.type == "cuda")
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, [lr_lambda, lr_lambda])
