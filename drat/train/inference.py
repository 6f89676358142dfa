"""Using what a run trained: held-out loss of a checkpoint (`drat eval`), text sampled from it
(`drat generate`), and the evaluation loop the trainer runs every `eval_every` steps."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import TokenDataset, load_corpus, load_tokenizer, prepare_tokens
from ..model import GPT, GPTConfig
from ..runtime import autocast_ctx, resolve_device
from ..strategies import NoneAC
from ..validate import NONNEG, NONNEG_INT, POSITIVE_INT, SEED
from .checkpoint import CHECKPOINT_DIR, load_checkpoint
from .config import TrainingConfig, TrainingError, build_model

EVAL_PROGRESS_EVERY_S = 10.0  # without a terminal: a line about an evaluation's batches this often


@torch.no_grad()
def evaluate_loss(model: GPT, data: TokenDataset, batch_size: int, max_batches: int | None,
                  device: torch.device, progress: Callable[[int, int], None] | None = None) -> dict:
    """Mean next-token loss over the first `max_batches` sequential batches (None: the split).
    `progress(done, total)` is called after every batch."""
    was_training, strategy = model.training, model.strategy
    # Gates only decide what backward keeps; there is no backward here. NoneAC also keeps a
    # sampling DRATGates from drawing (and so advancing its generator) during evaluation.
    model.set_strategy(NoneAC())
    model.eval()
    try:
        n_batches = data.n_sequential_batches(batch_size)
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        loss_sum, n_tokens = 0.0, 0
        for i in range(n_batches):
            x, y = data.sequential_batch(i, batch_size)  # x, y: [batch_size, seq_len]
            with autocast_ctx(device):
                loss = model.step_loss(x.to(device), y.to(device))
            loss_sum += loss.item() * y.numel()
            n_tokens += y.numel()
            if progress is not None:
                progress(i + 1, n_batches)
    finally:
        model.set_strategy(strategy)
        model.train(was_training)
    mean = loss_sum / max(n_tokens, 1)
    return {"loss": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": n_tokens}


class _SplitProgress:
    """Batches of one split on stderr: a bar on a terminal; otherwise a line every
    EVAL_PROGRESS_EVERY_S seconds (a log file gets no carriage-return bars). Either way a last
    line with the split's loss."""

    def __init__(self, split: str):
        self.split, self.t0 = split, time.perf_counter()
        self.t_last = self.t0
        self.bar = tqdm(desc=f"eval {split}", unit="batch", file=sys.stderr, leave=False,
                        disable=not sys.stderr.isatty())

    def __call__(self, done: int, total: int) -> None:
        if not self.bar.disable:
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            return
        now = time.perf_counter()
        if done == 1 or now - self.t_last >= EVAL_PROGRESS_EVERY_S:  # the first batch: it has started
            self.t_last = now
            print(f"eval {self.split}: {done}/{total} batches, {now - self.t0:.0f} s", file=sys.stderr,
                  flush=True)

    def done(self, result: dict, n_batches: int) -> None:
        self.bar.close()
        print(f"eval {self.split}: {n_batches} batches, loss {result['loss']:.4f}, ppl {result['ppl']:.2f} "
              f"({time.perf_counter() - self.t0:.0f} s)", file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    print(f"drat: warning: {msg}", file=sys.stderr, flush=True)


def load_trained(ckpt: str | os.PathLike[str], device: str = "cpu", allow_unverified: bool = False):
    """(model, tokenizer, TrainingConfig, run folder, step) from a checkpoint of `ResourceAwareTrainer`.
    `allow_unverified`: load a checkpoint without its .sha256 (refused otherwise), warning on stderr."""
    ckpt = Path(ckpt)
    dev = resolve_device(device)
    state = load_checkpoint(ckpt, map_location="cpu", allow_unverified=allow_unverified, warn=_warn)
    cfg = TrainingConfig.from_dict(state["config"])
    run_dir = ckpt.parent.parent if ckpt.parent.name == CHECKPOINT_DIR else Path(cfg.out)
    tok = load_tokenizer(cfg.tokenizer or run_dir / "tokenizer.json")
    if tok.sha256 != state["tokenizer_sha256"]:
        raise TrainingError(f"the tokenizer next to {ckpt} is not the one it was trained with")
    model = build_model(cfg, GPTConfig(**state["model_config"])).to(dev)
    model.load_state_dict(state["model"])
    model.eval()
    return model, tok, cfg, run_dir, state["step"]


def evaluate_checkpoint(ckpt: str | os.PathLike[str], device: str = "cpu", max_batches: int | None = None,
                        splits: tuple[str, ...] = ("val", "test"), progress: bool = False,
                        allow_unverified: bool = False) -> dict:
    """Loss and perplexity of a checkpoint on held-out splits (all of each split by default, else
    the first `max_batches` >= 1 of each). `progress`: report each split's batches on stderr."""
    if max_batches is not None:
        POSITIVE_INT.check(max_batches, "--max-batches", TrainingError)
    model, tok, cfg, run_dir, step = load_trained(ckpt, device, allow_unverified)
    tokens = run_dir / "tokens"
    if not (tokens / "meta.json").is_file():  # the run folder was copied without its memmaps
        prepare_tokens(load_corpus(cfg.corpus, max_bytes=cfg.max_corpus_bytes), tok, tokens)
    out: dict[str, Any] = {"ckpt": str(ckpt), "step": step}
    dev = next(model.parameters()).device
    for split in splits:
        data = TokenDataset(tokens, split, cfg.seq_len)
        report = _SplitProgress(split) if progress else None
        out[split] = evaluate_loss(model, data, cfg.batch_size, max_batches, dev, progress=report)
        if report is not None:
            n_batches = data.n_sequential_batches(cfg.batch_size)
            report.done(out[split], n_batches if max_batches is None else min(n_batches, max_batches))
    return out


def generate_text(ckpt: str | os.PathLike[str], prompt: str, n_tokens: int, seed: int = 0,
                  temperature: float = 0.8, top_k: int | None = 200, device: str = "cpu",
                  allow_unverified: bool = False) -> str:
    """Sample `n_tokens` after `prompt` (empty prompt: start of a document), among the `top_k` most
    likely tokens (0 or None: among all)."""
    NONNEG_INT.check(n_tokens, "--tokens", TrainingError)
    SEED.check(seed, "--seed", TrainingError)
    NONNEG.check(temperature, "--temperature", TrainingError)
    if top_k is not None:
        top_k = NONNEG_INT.check(top_k, "--top-k", TrainingError) or None
    model, tok, cfg, _, _ = load_trained(ckpt, device, allow_unverified)
    if cfg.hf:
        raise TrainingError("generate samples DRAT's own GPT; a --hf run's model is a transformers model: "
                            "use its own generate() on drat.unwrap(model)")
    dev = next(model.parameters()).device
    ids = tok.encode(prompt) if prompt else [tok.eot_id]
    gen = torch.Generator(dev).manual_seed(seed)
    out = model.generate(torch.tensor([ids], device=dev), n_tokens, temperature=temperature, top_k=top_k,
                         generator=gen)
    return tok.decode(out[0].tolist()[0 if prompt else 1:])
