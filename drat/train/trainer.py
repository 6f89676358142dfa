"""Training a GPT whose store/recompute gates learn alongside it (or under a baseline strategy).

    cfg = TrainingConfig(size="tiny", corpus="stdlib", steps=200, strategy="drat", lam=0.05, out="runs/x")
    summary = ResourceAwareTrainer(cfg).train()

A run folder (`cfg.out`) holds config.json (resolved), tokenizer.json, tokens/ (memmaps),
metrics.jsonl, summary.json, train.log, checkpoints/ and tb/ (TensorBoard).

One optimizer step under `strategy="drat"`:
  1. anneal τ, draw one straight-through sample `st` of the gates and pin its hard part on the
     model (under torchrun: rank 0's), so the forward executes the very plan whose cost the gates
     are trained on;
  2. forward/backward the task loss over `grad_accum` micro-batches. The gates change what
     autograd keeps, never what the model computes, so these gradients are bitwise those of `none`;
  3. backward the resource term `resource_loss(st, costs, λ)`: the gates' only gradient;
  4. clip the model's gradients, AdamW steps (the model's, and the gates' own), LR schedule step;
     in budget mode dual ascent on λ.

Resume is exact: batches are a pure function of (seed, step), and a checkpoint carries every other
piece of state the next step reads (weights, AdamW moments, schedule, gate logits and their
generator, λ, the site costs, each rank's CPU/CUDA RNG that drives dropout). On the CPU a run
resumed from step k writes bitwise the losses of an uninterrupted run.

Under torchrun (`distributed="ddp"` or `"fsdp"`, see `drat/distributed.py`) every rank runs the
same steps on its own slice of the global batch (batch_size × grad_accum × world size); rank 0
writes the run folder and the checkpoints, the gates stay replicated outside the wrapped model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..accounting import saved_activation_bytes
from ..costs import COST_MODELS, SiteCosts, model_state_bytes
from ..data import (
    DataError,
    TokenDataset,
    Tokenizer,
    load_corpus,
    load_meta,
    load_tokenizer,
    prepare_tokens,
    train_tokenizer,
)
from ..gates import DualAscent, GateBank, anneal_tau, budget_to_activation_bytes, fit_gates, resource_loss
from ..measure import build_costs, matmul_tflops, measure_site_bytes, model_flops_per_step
from ..model import GPT, SIZES, GPTConfig, config_for
from ..provenance import provenance
from ..runtime import ScheduledGC, autocast_ctx, resolve_device, set_deterministic
from ..strategies import DRATGates, NoneAC, make_strategy
from .checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .distributed import (
    full_tensor,
    grad_sync,
    init_distributed,
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_state,
    set_block_resharding,
    wrap_model,
)

TRAIN_STRATEGIES = ("none", "full", "selective", "sac", "drat")
DEFAULT_VOCAB_SIZE = 8192
DEFAULT_LAMBDA = 0.05
ADAM_BETAS = (0.9, 0.95)  # nanoGPT/GPT-3 values; β2=0.95 is steadier than 0.999 at small batch

# Fields that may change when a run is resumed: they steer logging and bookkeeping, not the maths
# of the steps already taken. (`steps` re-stretches the schedules from the resume point on.)
RESUMABLE_CHANGES = frozenset({
    "steps", "eval_every", "eval_batches", "log_every", "ckpt_every", "keep_last_k", "device",
    "tensorboard", "wandb", "wandb_project", "out", "deterministic", "gc_every_steps",
})


def config_changes(mine: dict, theirs: dict) -> list[str]:
    """Fields of `mine` that differ from a stored config `theirs`, beyond RESUMABLE_CHANGES. A
    field the stored config lacks (written before the field existed) counts as its default, so
    adding a field never makes older runs unresumable."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingConfig)
                if f.default is not dataclasses.MISSING}
    return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k, defaults.get(k)))


class TrainingError(ValueError):
    """A training run cannot start or continue as asked; the message says what to change."""


@dataclass
class TrainingConfig:
    # model: a named size, optionally shrunk (tests) or widened
    size: str = "tiny"
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    dropout: float = 0.0
    # data
    corpus: str = "shakespeare"  # shakespeare | stdlib | text:PATH | hf:NAME (see drat.data)
    max_corpus_bytes: int | None = None  # keep only this many bytes of documents (fast runs)
    vocab_size: int | None = None  # BPE target; None: 8192, or the vocabulary of `tokenizer`
    tokenizer: str | None = None  # a trained tokenizer.json; None trains one into the run folder
    seq_len: int = 256
    batch_size: int = 16
    grad_accum: int = 1
    # optimisation
    steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int | None = None  # warm-up steps; None: 5% of `steps`
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm of the model; 0 disables clipping
    # activation strategy and gates
    strategy: str = "drat"  # none | full | selective | sac | drat
    lam: float | None = None  # λ, price of memory in recompute time; None: 0.05 (drat, no budget)
    budget_gib: float | None = None  # peak budget: λ becomes a dual variable
    gate_lr: float = 0.1
    gate_init_logit: float = 3.0  # σ(3) ≈ 0.95: start out storing, like the ungated model
    # Warm start: fit the gates on the measured costs before step 0 (seconds; the resource term
    # does not need the model), so the run executes a good plan from its first step and training
    # refines it. Off: every gate starts at +gate_init_logit (store).
    gate_warm_start: bool = True
    # Bitwise-reproducible GPU runs: deterministic algorithms, strictly (an op that has none
    # stops the run, naming it), a fixed cuBLAS workspace, no cuDNN autotuning. Off by default:
    # it costs speed. On the CPU, runs are deterministic anyway.
    deterministic: bool = False
    tau_start: float = 1.0
    tau_end: float = 0.05
    cost_model: str = "measured"
    # evaluation, logging, checkpoints
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 10
    ckpt_every: int = 500  # 0: only the final checkpoint
    keep_last_k: int = 3
    # Python's automatic garbage collector is paused during training and a young-generation pass
    # runs every this many steps instead (drat/runtime.py: its full passes stalled recompute
    # steps on the host); 0 leaves the automatic collector on
    gc_every_steps: int = 50
    # run
    seed: int = 0
    device: str = "auto"  # cpu | cuda | cuda:N | auto (under torchrun: cuda:LOCAL_RANK)
    distributed: str | None = None  # None | ddp | fsdp (FSDP2); needs a torchrun launch
    out: str = "runs/train"
    tensorboard: bool = True
    wandb: bool = False  # offline unless WANDB_MODE says otherwise; skipped if wandb is missing
    wandb_project: str = "drat"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise TrainingError(msg)

        need(self.size in SIZES, f"unknown model size {self.size!r}; choose one of {', '.join(SIZES)}")
        need(self.strategy in TRAIN_STRATEGIES,
             f"unknown strategy {self.strategy!r}; choose one of {', '.join(TRAIN_STRATEGIES)}")
        need(self.cost_model in COST_MODELS,
             f"unknown cost model {self.cost_model!r}; choose one of {', '.join(COST_MODELS)}")
        need(self.steps > 0, f"steps must be a positive number of optimizer steps, got {self.steps}")
        for name in ("seq_len", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every"):
            need(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        need(self.ckpt_every >= 0 and self.keep_last_k >= 1,
             "ckpt_every must be >= 0 (0: final checkpoint only) and keep_last_k >= 1")
        need(self.gc_every_steps >= 0, "gc_every_steps must be >= 0 (0: Python's automatic collector)")
        need(self.lr > 0 and 0 <= self.min_lr <= self.lr, f"need 0 <= min_lr <= lr and lr > 0, "
             f"got lr={self.lr}, min_lr={self.min_lr}")
        need(self.warmup is None or self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        need(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay and grad_clip must be >= 0")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.lam is None or self.budget_gib is None, "give lam (--lambda) or budget_gib, not both")
        need(self.strategy == "drat" or (self.lam is None and self.budget_gib is None),
             "lam (--lambda) and budget_gib apply to strategy drat only")
        need(self.lam is None or self.lam >= 0, f"lam must be >= 0, got {self.lam}")
        need(0 < self.tau_end <= self.tau_start, "need 0 < tau_end <= tau_start")
        need(self.gate_lr > 0, f"gate_lr must be positive, got {self.gate_lr}")
        need(self.vocab_size is None or self.vocab_size > 0, "vocab_size must be positive")
        need(self.max_corpus_bytes is None or self.max_corpus_bytes > 0, "max_corpus_bytes must be positive")
        need(self.distributed in (None, "ddp", "fsdp"),
             f"unknown distributed mode {self.distributed!r}; choose ddp or fsdp (or leave it unset)")

    @property
    def warmup_steps(self) -> int:
        return max(1, self.steps // 20) if self.warmup is None else self.warmup

    @property
    def lam_value(self) -> float:
        """λ of λ mode (budget mode starts λ at 0 and lets dual ascent move it)."""
        if self.budget_gib is not None:
            return 0.0
        return DEFAULT_LAMBDA if self.lam is None else self.lam

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one step on one process; under torchrun the step is world size times this."""
        return self.batch_size * self.seq_len * self.grad_accum

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k.replace("-", "_"): v for k, v in d.items()}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainingError(f"unknown training config key(s) {', '.join(unknown)}; "
                                f"valid keys: {', '.join(sorted(names))}")
        return cls(**d)


def load_config_file(path: str | os.PathLike[str]) -> dict:
    """A YAML or JSON file of TrainingConfig fields (`batch-size` and `batch_size` both work)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise TrainingError(f"cannot read config file {path}: {e.strerror or e}") from e
    import yaml

    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # json.JSONDecodeError is a ValueError
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise TrainingError(f"config file {path} is not valid {kind}: {str(e).splitlines()[0]}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TrainingError(f"config file {path} must hold a mapping of training fields")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def read_run_config(out: str | os.PathLike[str]) -> dict | None:
    """The resolved config.json of the run in `out`, or None when there is none."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TrainingError(f"{path} is unreadable ({e}); fix it or start again with --overwrite") from e


def resolve_training_config(overrides: dict, config_file: str | None = None,
                            resume: bool = False) -> TrainingConfig:
    """Defaults < the stored config of a resumed run < `config_file` < `overrides` (given flags).

    λ and the budget exclude each other: a layer that sets one clears the other from earlier layers."""
    layers: list[dict] = []
    file_fields = load_config_file(config_file) if config_file else {}
    if resume:
        out = overrides.get("out", file_fields.get("out", TrainingConfig.out))
        stored = read_run_config(out)
        if stored is not None:
            layers.append(stored["training"])
    layers += [file_fields, overrides]
    merged: dict[str, Any] = {}
    for layer in layers:
        layer = {k.replace("-", "_"): v for k, v in layer.items()}
        if "budget_gib" in layer and "lam" not in layer:
            merged.pop("lam", None)
        if "lam" in layer and "budget_gib" not in layer:
            merged.pop("budget_gib", None)
        merged.update(layer)
    return TrainingConfig.from_dict(merged)


# ---------------------------------------------------------------------------------- pieces
def lr_multiplier(step: int, warmup: int, steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to `min_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(1, steps - warmup), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_loss(model: GPT, data: TokenDataset, batch_size: int, max_batches: int | None,
                  device: torch.device) -> dict:
    """Mean next-token loss over the first `max_batches` sequential batches (None: the split)."""
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
            x, y = data.sequential_batch(i, batch_size)
            with autocast_ctx(device):
                loss = model(x.to(device), y.to(device))
            loss_sum += loss.item() * y.numel()
            n_tokens += y.numel()
    finally:
        model.set_strategy(strategy)
        model.train(was_training)
    mean = loss_sum / max(n_tokens, 1)
    return {"loss": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": n_tokens}


def _gpt_config(cfg: TrainingConfig, vocab_size: int) -> GPTConfig:
    gcfg = config_for(cfg.size, vocab_size=vocab_size, n_layer=cfg.n_layer, n_embd=cfg.n_embd,
                      n_head=cfg.n_head, dropout=cfg.dropout)
    if cfg.seq_len > gcfg.block_size:
        gcfg = replace(gcfg, block_size=cfg.seq_len)
    return gcfg


class _TqdmHandler(logging.Handler):
    """Log lines to stderr without tearing the progress bar."""

    def emit(self, record):
        tqdm.write(self.format(record), file=sys.stderr)


# Files and folders a run writes; `--overwrite` removes exactly these and nothing else in `out`.
RUN_ARTIFACTS = ("config.json", "metrics.jsonl", "summary.json", "train.log", "tokenizer.json",
                 "tokens", CHECKPOINT_DIR, "tb", "wandb")


class ResourceAwareTrainer:
    """Trains `GPT` with DRAT gates (or a baseline strategy); see the module docstring."""

    def __init__(self, cfg: TrainingConfig, resume: str | None = None, overwrite: bool = False):
        """`resume`: None, "latest" (newest checkpoint in cfg.out) or a checkpoint path."""
        cfg.validate()
        self.cfg = cfg
        self._restore_determinism = set_deterministic() if cfg.deterministic else None
        try:
            self.dist, self.device = init_distributed(cfg.distributed, cfg.device)
        except BaseException:
            self.close()
            raise
        self.out = Path(cfg.out)
        try:
            # rank 0 owns the run folder; the other ranks learn what it decided (or its error)
            self.resume_from = self.dist.main_first(self._prepare_out_dir, resume, overwrite)
            self.log = self._setup_logging()
            self._setup(self.resume_from)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------- set-up
    def _prepare_out_dir(self, resume: str | None, overwrite: bool) -> Path | None:
        """Refuse to mix two runs in one folder; returns the checkpoint to resume from, if any."""
        if resume and overwrite:
            raise TrainingError("give --resume or --overwrite, not both")
        stored = read_run_config(self.out)
        if stored is not None and not resume and not overwrite:
            raise TrainingError(f"{self.out} already holds a run (config.json); pass --resume to continue "
                                f"it or --overwrite to replace it, or choose another --out")
        if overwrite:
            for name in RUN_ARTIFACTS:
                p = self.out / name
                if self.cfg.tokenizer and p.resolve() == Path(self.cfg.tokenizer).resolve():
                    continue  # the tokenizer this run is told to use, not one it made
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        if not resume:
            return None
        if stored is None:
            raise TrainingError(f"nothing to resume: {self.out} holds no run (no config.json)")
        mine, theirs = self.cfg.to_dict(), stored["training"]
        changed = config_changes(mine, theirs)
        if changed:
            diffs = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine[k]!r}" for k in changed)
            raise TrainingError(f"cannot resume the run in {self.out} with a different config ({diffs}); "
                                f"drop those flags or start a new run with --out/--overwrite")
        ckpt_dir = self.out / CHECKPOINT_DIR
        path = latest_checkpoint(ckpt_dir) if resume == "latest" else Path(resume)
        if path is None:
            raise TrainingError(f"nothing to resume: no checkpoint in {ckpt_dir}; "
                                f"start again with --overwrite")
        return path

    def _setup_logging(self) -> logging.Logger:
        log = logging.getLogger(f"drat.train.{id(self)}")  # one logger per trainer: tests run several
        log.propagate = False
        if self.dist.is_main:
            log.setLevel(logging.INFO)
            fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
            self._handlers: list[logging.Handler] = [logging.FileHandler(self.out / "train.log"),
                                                     _TqdmHandler()]
        else:  # the other ranks only speak up when something is wrong, and say who they are
            log.setLevel(logging.WARNING)
            fmt = logging.Formatter(f"%(asctime)s [rank {self.dist.rank}] %(message)s", "%H:%M:%S")
            self._handlers = [_TqdmHandler()]
        for h in self._handlers:
            h.setFormatter(fmt)
            log.addHandler(h)
        return log

    def _setup(self, resume_from: Path | None) -> None:
        cfg = self.cfg
        self.corpus = None  # loaded on first use: a resumed run with its tokens in place never needs it
        # CPU first: RNG states must stay CPU byte tensors; load_state_dict copies the rest over.
        # Every rank reads the checkpoint: each needs the optimizer state (DDP) or its shard of it.
        state = load_checkpoint(resume_from, map_location="cpu") if resume_from else None
        # rank 0 trains the tokenizer and writes the token files; then the other ranks read them
        self.dist.main_first(self._prepare_inputs, state is not None)
        if not self.dist.is_main:
            self._prepare_inputs(resuming=True)
        self.model = self._build_model()
        if state is not None and state["model_config"]["vocab_size"] != self.tokenizer.vocab_size:
            raise TrainingError(f"checkpoint {resume_from} has a {state['model_config']['vocab_size']}-token "
                                f"model but the tokenizer has {self.tokenizer.vocab_size} tokens")
        self.gates, self.strategy = self._build_strategy()
        self.model.set_strategy(self.strategy)
        if state is None:
            # on the plain model, before wrapping: rank 0 measures, every rank uses its numbers
            self._set_costs(self.dist.main_first(self._measure_costs))
        self.train_model = wrap_model(self.model, self.dist, self.device)
        self.optimizer, self.scheduler, self.gate_optimizer = self._build_optimizer()
        self.step = 0  # optimizer steps completed
        self.lam = cfg.lam_value if cfg.strategy == "drat" else None  # no gates: no price of memory
        # CUDA budget mode: the most any step held beyond its plan's activations (model states,
        # gradients, working memory), measured; it shrinks the activations' share of the budget
        self.other_bytes = 0.0
        self._interval_peak_bytes = 0  # CUDA: largest step peak since the last log line
        self.train_time_s = 0.0  # time spent in train(), summed over resumed sessions
        self.initial_val: dict | None = None
        self.last_val: dict | None = None
        if state is None:
            if self.gates is not None and cfg.gate_warm_start:
                self._warm_start_gates()
        else:
            self._restore(state, resume_from)
        if self.gates is not None:  # identical already (same costs, same seed); made certain
            self.dist.broadcast_(self.gates.logits.data)
        self.dual = None
        if cfg.budget_gib is not None:
            # the budget covers model states (floor) plus the activations the plan keeps
            act_budget_bytes = budget_to_activation_bytes(cfg.budget_gib, self._model_state_bytes())
            self.dual = DualAscent(act_budget_bytes / max(sum(self._peak_site_bytes()), 1.0), lam0=self.lam)
        if self.dist.is_main:
            self._write_config()

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step over all ranks."""
        return self.cfg.tokens_per_step * self.dist.world

    def _model_state_bytes(self) -> int:
        """Model states per process: FSDP2 shards parameters, gradients and AdamW moments."""
        n = model_state_bytes(self.model)
        return n // self.dist.world if self.dist.mode == "fsdp" else n

    def _prepare_inputs(self, resuming: bool) -> None:
        self.tokenizer = self._prepare_tokenizer(resuming)
        self.train_data, self.val_data = self._prepare_data(resuming)

    def _prepare_tokenizer(self, resuming: bool) -> Tokenizer:
        cfg = self.cfg
        if cfg.tokenizer:
            tok = load_tokenizer(cfg.tokenizer)
            if cfg.vocab_size is not None and cfg.vocab_size != tok.vocab_size:
                raise TrainingError(f"tokenizer {cfg.tokenizer} has {tok.vocab_size} tokens but vocab_size="
                                    f"{cfg.vocab_size} was asked for; drop --vocab-size or use a matching "
                                    f"tokenizer")
            return tok
        path = self.out / "tokenizer.json"
        if resuming:
            return load_tokenizer(path)
        t0 = time.perf_counter()
        self.corpus = self._load_corpus()
        tok = train_tokenizer(self.corpus, cfg.vocab_size or DEFAULT_VOCAB_SIZE, out_path=path)
        self.log.info(f"trained a {tok.vocab_size}-token BPE tokenizer in {time.perf_counter() - t0:.1f} s "
                      f"-> {path}")
        return tok

    def _load_corpus(self):
        if self.corpus is None:
            # the split seed is fixed (not cfg.seed): runs with different seeds share one held-out set
            self.corpus = load_corpus(self.cfg.corpus, max_bytes=self.cfg.max_corpus_bytes)
        return self.corpus

    def _prepare_data(self, resuming: bool) -> tuple[TokenDataset, TokenDataset]:
        cfg = self.cfg
        tokens = self.out / "tokens"
        meta = _own_token_meta(tokens, self.tokenizer, cfg.corpus) if resuming else None
        if meta is None:  # (re)tokenize; prepare_tokens itself skips the work when nothing changed
            meta = prepare_tokens(self._load_corpus(), self.tokenizer, tokens)
        self.token_meta = meta
        n_train, need_tokens = meta["splits"]["train"]["n_tokens"], cfg.batch_size * cfg.seq_len + 1
        if n_train < need_tokens:
            raise TrainingError(
                f"corpus {cfg.corpus!r} is too small for one batch: its train split has {n_train} tokens, "
                f"a batch of {cfg.batch_size}x{cfg.seq_len} needs {need_tokens}; use a larger corpus or "
                f"smaller --batch-size/--seq-len")
        train = TokenDataset(self.out / "tokens", "train", cfg.seq_len)
        val = TokenDataset(self.out / "tokens", "val", cfg.seq_len)
        self.log.info(f"data: {cfg.corpus} -> {train.n_tokens:,} train / {val.n_tokens:,} val tokens")
        return train, val

    def _build_model(self) -> GPT:
        torch.manual_seed(self.cfg.seed)  # the model init is the first draw from the seeded stream
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(self.cfg.seed)
        self.model_cfg = _gpt_config(self.cfg, self.tokenizer.vocab_size)
        model = GPT(self.model_cfg).to(self.device)
        model.train()
        if self.dist.rank > 0:
            # Every rank built the same weights from the same seed (FSDP2 shards them as they are;
            # DDP would broadcast rank 0's anyway). Dropout, though, should differ between ranks.
            torch.manual_seed(_rank_seed(self.cfg.seed, self.dist.rank))
            if self.device.type == "cuda":
                torch.cuda.manual_seed(_rank_seed(self.cfg.seed, self.dist.rank))
        self.log.info(f"model: {self.cfg.size} {model.num_params() / 1e6:.2f}M parameters, "
                      f"{len(model.graph)} sites, strategy {self.cfg.strategy}, device {self.device}")
        return model

    def _build_strategy(self):
        if self.cfg.strategy != "drat":
            return None, make_strategy(self.cfg.strategy)
        # The gates live on the CPU, with the costs: a step's plan must be known on the host
        # before its forward, and a GPU-side bank made every step wait for the GPU twice (the
        # plan's .tolist() and the resource loss's .cpu()), which cost a store-all run +10-30%
        # step time on the H200 where small models are launch-bound. Their sampling noise comes
        # from the bank's own CPU generator, never from the dropout stream.
        gates = GateBank(len(self.model.graph), init_logit=self.cfg.gate_init_logit,
                         tau=self.cfg.tau_start, seed=self.cfg.seed)
        return gates, DRATGates(gates, sample=True)

    def _build_optimizer(self):
        cfg = self.cfg
        # nanoGPT: decay matrices (weights, embeddings), not biases and LayerNorm gains
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = self.device.type == "cuda"
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=ADAM_BETAS, eps=1e-8, fused=fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, [self._lr_lambda, self._lr_lambda])
        gate_opt = None
        if self.gates is not None:
            # Gates: their own AdamW, because they are not part of the (possibly wrapped) model and
            # its state dict. No decay (it would pull logits to 0, i.e. towards coin flips) and a
            # constant lr: τ annealing already sharpens them on schedule.
            gate_opt = torch.optim.AdamW(self.gates.parameters(), lr=cfg.gate_lr, betas=ADAM_BETAS, eps=1e-8,
                                         weight_decay=0.0)
        return opt, sched, gate_opt

    def _lr_lambda(self, step: int) -> float:
        cfg = self.cfg
        return lr_multiplier(step, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)

    def _measure_costs(self) -> dict:
        """Site bytes (and for drat the gate costs) from one real training batch, measured once."""
        x, y = self.train_data.batch_at(0, self.cfg.batch_size, self.cfg.seed)
        x, y = x.to(self.device), y.to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        # Measuring runs forwards (dropout) and a CPU roofline probe (randn): fork the RNG so the
        # training stream, and with it every dropout mask, is that of a run without measurements.
        out: dict[str, Any] = {"site_bytes": None, "plan_bytes": None, "costs": None}
        with torch.random.fork_rng(devices=devices):
            with autocast_ctx(self.device):
                out["site_bytes"] = [float(b) for b in measure_site_bytes(self.model, x, y)]
                if self.gates is None:
                    out["plan_bytes"], _ = saved_activation_bytes(self.model, x, y)
            if self.gates is not None:
                out["costs"] = build_costs(self.model, x, y, self.cfg.cost_model).to_dict()
        self.model.zero_grad(set_to_none=True)
        return out

    def _set_costs(self, measured: dict) -> None:
        """Site bytes and costs as measured (or as stored in a checkpoint): plain numbers, so that
        rank 0's measurement can be broadcast and every rank prices the gates alike."""
        self.site_bytes = measured["site_bytes"]
        if measured["plan_bytes"] is not None:
            self.plan_bytes = measured["plan_bytes"]
        self.costs = SiteCosts(**measured["costs"]) if measured["costs"] is not None else None

    def _warm_start_gates(self) -> None:
        """Initialise the gates (and λ in budget mode) from `fit_gates` on the measured costs."""
        cfg = self.cfg

        def fit() -> tuple[list[bool], float]:
            if cfg.budget_gib is not None:
                act = budget_to_activation_bytes(cfg.budget_gib, self._model_state_bytes())
                res = fit_gates(self.costs, budget_act_bytes=act, seed=cfg.seed,
                                base_bytes=self._model_state_bytes())
                return res.stored, res.lam
            return fit_gates(self.costs, lam=cfg.lam_value, seed=cfg.seed).stored, self.lam

        stored, self.lam = self.dist.main_first(fit)  # one fit, on rank 0; every rank starts from it
        mag = abs(cfg.gate_init_logit) or 1.0
        with torch.no_grad():
            self.gates.logits.copy_(torch.tensor([mag if s else -mag for s in stored],
                                                 device=self.gates.logits.device))
        self.log.info(f"gates warm-started from the cost model: {sum(stored)}/{len(stored)} sites stored")

    def _write_config(self) -> None:
        resolved = {
            "training": self.cfg.to_dict(),
            "model": self.model_cfg.to_dict(),
            "derived": {"warmup_steps": self.cfg.warmup_steps, "lam": self.cfg.lam_value,
                        "tokens_per_step": self.tokens_per_step, "params": self.model.num_params(),
                        "device": str(self.device), "world_size": self.dist.world},
            "tokenizer": {"path": str(self.cfg.tokenizer or self.out / "tokenizer.json"),
                          "vocab_size": self.tokenizer.vocab_size, "sha256": self.tokenizer.sha256},
            "data": {k: self.token_meta[k]
                     for k in ("corpus_spec", "corpus_sha256", "corpus_manifest_sha256")},
            "sites": [k.label() for k in self.model.graph.keys],
        }
        _write_json(self.out / "config.json", resolved)

    # ------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        """What a checkpoint holds. Collective under torchrun (FSDP2 gathers the full state to
        rank 0, every rank contributes its RNG), so every rank calls it; rank 0 writes it."""
        cuda = self.device.type == "cuda"
        rng_cpu, rng_cuda = torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None
        return {
            "model": model_state(self.model, self.dist),
            "optimizer": optimizer_state(self.model, self.optimizer, self.dist),
            "gate_optimizer": self.gate_optimizer.state_dict() if self.gate_optimizer is not None else None,
            "scheduler": self.scheduler.state_dict(),
            "gates": self.gates.state_dict() if self.gates is not None else None,  # incl. generator
            "lam": self.lam,
            "other_bytes": self.other_bytes,
            "costs": self.costs.to_dict() if self.costs is not None else None,
            "site_bytes": self.site_bytes,
            "plan_bytes": getattr(self, "plan_bytes", None),
            "rng_cpu": rng_cpu,
            "rng_cuda": rng_cuda,
            # each rank's own dropout stream (None for one process: rng_cpu/rng_cuda are it)
            "rng_ranks": self.dist.all_gather_object((rng_cpu, rng_cuda)) if self.dist.mode else None,
            "world_size": self.dist.world,
            "distributed": self.dist.mode,
            "config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "tokenizer_sha256": self.tokenizer.sha256,
            "train_time_s": self.train_time_s,
            "initial_val": self.initial_val,
            "last_val": self.last_val,
        }

    def save_checkpoint(self) -> Path:
        state = self.checkpoint_state()
        path = checkpoint_path(self.out / CHECKPOINT_DIR, self.step)
        if self.dist.is_main:
            save_checkpoint(state, self.out / CHECKPOINT_DIR, self.step, self.cfg.keep_last_k)
            self.log.info(f"step {self.step}: checkpoint -> {path}")
        self.dist.barrier()  # nobody runs ahead (or exits) before the file is in place
        return path

    def _restore(self, state: dict, path: Path) -> None:
        mine, theirs = self.cfg.to_dict(), state["config"]
        changed = config_changes(mine, theirs)
        if changed:  # e.g. --resume CKPT of another run
            raise TrainingError(f"checkpoint {path} belongs to a run with another config (differs in "
                                f"{', '.join(changed)})")
        if state.get("tokenizer_sha256") != self.tokenizer.sha256:
            raise TrainingError(f"checkpoint {path} was trained with another tokenizer (sha256 differs)")
        if (state["gates"] is None) != (self.gates is None):
            raise TrainingError(f"checkpoint {path} and this config disagree on whether there are gates")
        world = state.get("world_size", 1)
        if world != self.dist.world:  # the step's batches are split by rank: another split is another run
            raise TrainingError(f"checkpoint {path} was written by a run on {world} process(es), this is "
                                f"{self.dist.world}; resume it with torchrun --nproc_per_node {world}")
        if "gate_optimizer" not in state:
            _split_legacy_gate_group(state)
        load_model_state(self.model, state["model"], self.dist)
        if self.gates is not None:
            self.gates.load_state_dict(state["gates"])
            self.gate_optimizer.load_state_dict(state["gate_optimizer"])
        load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.dist)
        self.scheduler.load_state_dict(state["scheduler"])
        # The measured costs are restored, not re-measured: CPU timings differ run to run, and the
        # gates must see the same costs as before the interruption.
        self._set_costs(state)
        self.lam = state["lam"]
        self.other_bytes = state.get("other_bytes", 0.0)
        self.step = state["step"]
        self.train_time_s = state["train_time_s"]
        self.initial_val, self.last_val = state["initial_val"], state["last_val"]
        rng_cpu, rng_cuda = state["rng_cpu"], state["rng_cuda"]
        if state.get("rng_ranks"):
            rng_cpu, rng_cuda = state["rng_ranks"][self.dist.rank]
        torch.set_rng_state(rng_cpu)
        if self.device.type == "cuda" and rng_cuda is not None:
            torch.cuda.set_rng_state(rng_cuda, self.device)
        if self.dist.is_main:
            self._discard_after(self.step)
        self.log.info(f"resumed from {path} at step {self.step}")

    def _discard_after(self, step: int) -> None:
        """Forget what happened after `step` (metrics, newer checkpoints): it is about to be redone."""
        for s, p in list_checkpoints(self.out / CHECKPOINT_DIR):
            if s > step:
                p.unlink()
                p.with_name(p.name + ".sha256").unlink(missing_ok=True)
        metrics = self.out / "metrics.jsonl"
        if metrics.is_file():
            kept = []
            for line in metrics.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut short when the previous session died
            _write_text(metrics, "".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------------- steps
    def train_step(self) -> dict:
        """One optimizer step (all micro-batches); returns what the log line needs."""
        cfg = self.cfg
        st = plan = None
        if self.gates is not None:
            self.gates.set_temperature(anneal_tau(self.step, cfg.steps, cfg.tau_start, cfg.tau_end))
            st = self.gates.sample_st()  # one sample per step: the plan every micro-batch runs
            plan = self._agree_on_plan((st.detach() > 0.5).to(st.dtype))
            self.strategy.pin(plan)
            if self.dist.mode == "fsdp":
                set_block_resharding(self.model, self.strategy.decisions(self.model))
        lrs = self.scheduler.get_last_lr()
        cuda = self.device.type == "cuda"
        if cuda:  # this step's own peak (the log interval's is the max of its steps')
            torch.cuda.reset_peak_memory_stats(self.device)
        loss_sum = torch.zeros((), device=self.device)
        world, rank = self.dist.world, self.dist.rank
        for micro in range(cfg.grad_accum):
            # The batch is a function of (seed, step, micro, rank) alone: the data position is the
            # step, and the ranks take distinct batches (one process: index step·grad_accum + micro).
            index = (self.step * cfg.grad_accum + micro) * world + rank
            x, y = self.train_data.batch_at(index, cfg.batch_size, cfg.seed)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with grad_sync(self.train_model, self.dist, sync=micro == cfg.grad_accum - 1):
                with autocast_ctx(self.device):
                    loss = self.train_model(x, y)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        out: dict[str, Any] = {"loss_t": loss_sum / cfg.grad_accum, "lr": lrs[0], "lam": self.lam}
        if st is not None:
            # The task loss has no path to the gates (recomputation is exact), so this backward
            # is their only gradient. Kept as its own backward so the model's gradients are
            # computed exactly as under `none`. Costs live on the CPU in float64. The gates are
            # outside DDP/FSDP: every rank computes this same gradient, no reduction needed.
            res, mem, t = resource_loss(st, self.costs, self.lam)
            res.backward()
            out.update(resource_t=res.detach(), mem_t=mem.detach(), time_t=t.detach(), st=st.detach(),
                       plan=plan)
        if cfg.grad_clip > 0:
            # model parameters only: the gates' gradient must not change the model's clip factor
            out["grad_norm_t"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.gate_optimizer is not None:
            self.gate_optimizer.step()
            self.gate_optimizer.zero_grad(set_to_none=True)
        if cuda:
            step_peak = torch.cuda.max_memory_allocated(self.device)
            self._interval_peak_bytes = max(self._interval_peak_bytes, step_peak)
        if self.dual is not None:
            # dual ascent on what the executed (hard) plan adds to the peak, as a fraction of store-all
            site = self._peak_site_bytes()
            total, kept = max(sum(site), 1.0), self._plan_bytes(plan, site)
            if cuda:  # the max over ranks keeps every rank's λ equal (one process: no GPU sync)
                peak = float(step_peak) if not self.dist.mode else float(self.dist.max(
                    torch.tensor(float(step_peak), device=self.device, dtype=torch.float64)).item())
                self.close_budget_on_peak(peak, kept)
            self.lam = self.dual.update(kept / total)
        self.step += 1
        return out

    def close_budget_on_peak(self, step_peak_bytes: float, kept_bytes: float) -> float:
        """Budget mode closed on the measured peak (DESIGN §1): whatever a step held beyond its
        plan's activations (model states, gradients, working memory) comes off the activations'
        share of the budget. The largest such excess seen is kept, so the target only tightens.
        Returns the new activation target as a fraction of store-all bytes."""
        self.other_bytes = max(self.other_bytes, float(step_peak_bytes) - float(kept_bytes))
        total = max(sum(self._peak_site_bytes()), 1.0)
        self.dual.budget_frac = max(self.cfg.budget_gib * 2**30 - self.other_bytes, 0.0) / total
        return self.dual.budget_frac

    def _agree_on_plan(self, plan: torch.Tensor) -> torch.Tensor:
        """Rank 0's hard plan. The ranks sample the same plan (same logits, same generator state);
        the broadcast makes certain every rank recomputes the same sites regardless."""
        if not self.dist.mode:
            return plan
        mine = plan.clone()
        self.dist.broadcast_(plan)
        if not torch.equal(plan, mine):
            self.log.warning(f"step {self.step}: this rank sampled another gate plan than rank 0; "
                             f"running rank 0's")
        return plan

    def _peak_site_bytes(self) -> list[float]:
        """What storing each site adds to a step's peak: its saved bytes, less what a peak-aware cost
        table found the peak does not drop by when the site is recomputed (the LM head: its chunked
        rebuild sits on top of the peak; `costs.measure_peak_saving_bytes`). The budget loop counts
        these, as the gates' resource loss does; with the owned bytes instead, a plan recomputing
        the head would leave its rebuild transient in `other_bytes` for good, and every later plan
        that stores the head would be held that much under the budget."""
        c = self.costs
        if c is None or c.owned_bytes is None:
            return self.site_bytes
        return [b - (o - m) for b, o, m in zip(self.site_bytes, c.owned_bytes, c.mem_bytes)]

    def _plan_bytes(self, plan: torch.Tensor | None, site_bytes: list[float] | None = None) -> float:
        """Saved activation bytes of the current plan: Σ bytes of the stored sites (drat), counted
        in `site_bytes` where given (the budget loop's `_peak_site_bytes`)."""
        if plan is None:
            return float(self.plan_bytes)
        stored = (plan.detach() > 0.5).tolist()
        return float(sum(b for b, s in zip(site_bytes or self.site_bytes, stored) if s))

    def evaluate(self) -> dict:
        cfg = self.cfg
        return evaluate_loss(self.model, self.val_data, cfg.batch_size, cfg.eval_batches, self.device)

    def _mfu(self, tokens_per_s: float) -> float:
        """Model FLOPs utilisation against a bf16 matmul rate measured once on this GPU."""
        if getattr(self, "_peak_tflops", None) is None:
            self._peak_tflops = matmul_tflops(self.device)
        seq = self.cfg.seq_len
        flops_per_token = model_flops_per_step(self.model, 1, seq) / seq
        # per GPU: tokens_per_s counts the tokens of every rank
        return tokens_per_s / self.dist.world * flops_per_token / (self._peak_tflops * 1e12)

    def log_metrics(self, out: dict, elapsed_s: float, n_steps: int) -> dict:
        """One `kind: train` record: reads the step's tensors (a device sync, so only on log steps).
        Every rank calls it (the loss is averaged over ranks); rank 0 writes it."""
        rec: dict[str, Any] = {
            "kind": "train",
            "step": self.step,
            # the loss of the global batch; full precision: resumed/ungated runs compare it exactly
            "loss": self.dist.mean(out["loss_t"]).item(),
            "lr": out["lr"],
            "lam": out["lam"],
            "tokens_seen": self.step * self.tokens_per_step,
            "step_ms": 1e3 * elapsed_s / max(n_steps, 1),
            "tokens_per_s": n_steps * self.tokens_per_step / max(elapsed_s, 1e-9),
            "saved_activation_bytes": self._plan_bytes(out.get("plan")),  # per rank
        }
        if "grad_norm_t" in out:
            rec["grad_norm"] = full_tensor(out["grad_norm_t"]).item()
        if self.device.type == "cuda":
            # peak of this log interval (reset below), so later plans are not masked by early ones
            # the largest over ranks (FSDP2 ranks hold equal shards; the one that differs sets the limit)
            peak = torch.tensor(float(self._interval_peak_bytes), device=self.device, dtype=torch.float64)
            rec["peak_memory_bytes"] = int(self.dist.max(peak).item())
            self._interval_peak_bytes = 0
            if self.dual is not None:
                rec["other_bytes"] = int(self.other_bytes)
            rec["mfu"] = self._mfu(rec["tokens_per_s"])
        if self.gates is not None:
            probs = self.gates.probs().detach().cpu().tolist()
            stored = (out["plan"] > 0.5).cpu().tolist()
            labels = [k.label() for k in self.model.graph.keys]
            rec.update({
                "tau": float(self.gates.tau),
                "resource_loss": out["resource_t"].item(),
                "mem_frac": out["mem_t"].item(),
                "recompute_frac": out["time_t"].item(),
                "n_stored": int(sum(stored)),
                "gates": {lab: {"p_store": p, "stored": bool(s)} for lab, p, s in zip(labels, probs, stored)},
            })
        self._emit(rec)
        return rec

    def _emit(self, rec: dict) -> None:
        if not self.dist.is_main:
            return
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            prefix = "train" if rec["kind"] == "train" else "val"
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(f"{prefix}/{k}", v, rec["step"])
            if "gates" in rec:
                self._tb.add_histogram("gates/p_store", torch.tensor(
                    [g["p_store"] for g in rec["gates"].values()]), rec["step"])
        if self._wandb is not None:
            self._wandb.log({f"{rec['kind']}/{k}": v for k, v in rec.items()
                             if isinstance(v, (int, float)) and k != "step"}, step=rec["step"])

    def run_eval(self) -> dict:
        val = self.evaluate()
        self.last_val = val
        if self.initial_val is None:
            self.initial_val = val
        self._emit({"kind": "eval", "step": self.step, "val_loss": val["loss"], "val_ppl": val["ppl"],
                    "val_tokens": val["tokens"]})
        self.log.info(f"step {self.step}: val loss {val['loss']:.4f}, ppl {val['ppl']:.2f}")
        return val

    # ------------------------------------------------------------------------- the loop
    def train(self, stop_after: int | None = None) -> dict:
        """Train to `cfg.steps`; `stop_after` ends the session early at that step (checkpointed),
        as a preemption would: the schedules still span `cfg.steps`."""
        cfg = self.cfg
        end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
        if self.dist.is_main:
            self._open_sinks()
        if self.device.type == "cuda":  # peak memory of training, not of the cost measurements
            torch.cuda.reset_peak_memory_stats(self.device)
        t_start = time.perf_counter()
        try:
            if self.step == 0 and self.initial_val is None:
                self.run_eval()
            pbar = tqdm(total=cfg.steps, initial=self.step, dynamic_ncols=True, desc="train",
                        disable=not sys.stderr.isatty() or not self.dist.is_main)
            t_log, steps_since_log = time.perf_counter(), 0
            with ScheduledGC(cfg.gc_every_steps) as sgc:  # the collector on a schedule (runtime.py)
                while self.step < end:
                    out = self.train_step()
                    sgc.step(self.step)
                    steps_since_log += 1
                    pbar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == end:
                        rec = self.log_metrics(out, time.perf_counter() - t_log, steps_since_log)
                        pbar.set_postfix(loss=f"{rec['loss']:.4f}")
                        if self.step % (cfg.log_every * 10) == 0 or self.step == end:
                            self.log.info(f"step {self.step}: loss {rec['loss']:.4f}, lr {rec['lr']:.2e}, "
                                          f"{rec['tokens_per_s']:.0f} tok/s")
                        t_log, steps_since_log = time.perf_counter(), 0
                    if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                        self.run_eval()
                    if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == end:
                        self.train_time_s += time.perf_counter() - t_start
                        t_start = time.perf_counter()
                        self.save_checkpoint()
            pbar.close()
            self.train_time_s += time.perf_counter() - t_start
            summary = self._summary(finished=self.step >= cfg.steps)
            if self.dist.is_main:
                _write_json(self.out / "summary.json", summary)
            return summary
        finally:
            self._close_sinks()

    def _summary(self, finished: bool) -> dict:
        plan = None
        if self.gates is not None:
            stored = [bool(v) for v in self.gates.hard().cpu().tolist()]
            plan = {"stored": stored, "n_stored": sum(stored),
                    "saved_activation_bytes": self._plan_bytes(torch.tensor(stored, dtype=torch.float32))}
        return {
            "finished": finished,
            "step": self.step,
            "initial_val_loss": self.initial_val["loss"] if self.initial_val else None,
            "final_val_loss": self.last_val["loss"] if self.last_val else None,
            "final_val_ppl": self.last_val["ppl"] if self.last_val else None,
            "tokens_seen": self.step * self.tokens_per_step,
            "wall_time_s": self.train_time_s,
            "params": self.model.num_params(),
            "lam": self.lam,
            "matmul_tflops": getattr(self, "_peak_tflops", None),
            "final_plan": plan,
            "provenance": provenance(self.device),
            "config": json.loads((self.out / "config.json").read_text()),
            "world_size": self.dist.world,
        }

    def _open_sinks(self) -> None:
        self._metrics = open(self.out / "metrics.jsonl", "a")
        self._tb = None
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed session logged after the checkpoint we resumed from
            self._tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)
        self._wandb = None
        if self.cfg.wandb:
            try:
                import wandb
            except ImportError:
                self.log.warning("wandb is not installed (pip install 'drat[wandb]'); not logging to W&B")
            else:
                mode = os.environ.get("WANDB_MODE", "offline")  # offline unless the user opts in
                self._wandb = wandb.init(project=self.cfg.wandb_project, dir=str(self.out), mode=mode,
                                         config=self.cfg.to_dict(), resume="allow")

    def _close_sinks(self) -> None:
        for sink in ("_metrics", "_tb", "_wandb"):
            s = getattr(self, sink, None)
            if s is not None:
                s.finish() if sink == "_wandb" else s.close()
                setattr(self, sink, None)

    def close(self) -> None:
        self._close_sinks()
        for h in getattr(self, "_handlers", []):
            self.log.removeHandler(h)
            h.close()
        self._handlers = []
        if hasattr(self, "dist"):
            self.dist.close()  # the process group, if this trainer created it
        if getattr(self, "_restore_determinism", None) is not None:
            self._restore_determinism()  # process-wide switches: leave them as they were found
            self._restore_determinism = None


def _rank_seed(seed: int, rank: int) -> int:
    """The dropout seed of rank > 0: unrelated to the streams of other seeds and ranks."""
    digest = hashlib.sha256(f"drat-rank\x00{seed}\x00{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


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


# ---------------------------------------------------------------------------------- using checkpoints
def _own_token_meta(tokens: Path, tokenizer: Tokenizer, corpus_spec: str) -> dict | None:
    """The meta of a run's own token files when they match its tokenizer and corpus, else None.

    Lets a resumed run skip reloading its corpus (slow for hf:, impossible offline)."""
    try:
        meta = load_meta(tokens)
    except DataError:
        return None
    if meta.get("tokenizer_sha256") != tokenizer.sha256 or meta.get("corpus_spec") != corpus_spec:
        return None
    return meta


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def load_trained(ckpt: str | os.PathLike[str], device: str = "cpu"):
    """(model, tokenizer, TrainingConfig, run folder, step) from a checkpoint of `ResourceAwareTrainer`."""
    ckpt = Path(ckpt)
    dev = resolve_device(device)
    state = load_checkpoint(ckpt, map_location="cpu")
    cfg = TrainingConfig.from_dict(state["config"])
    run_dir = ckpt.parent.parent if ckpt.parent.name == CHECKPOINT_DIR else Path(cfg.out)
    tok = load_tokenizer(cfg.tokenizer or run_dir / "tokenizer.json")
    if tok.sha256 != state["tokenizer_sha256"]:
        raise TrainingError(f"the tokenizer next to {ckpt} is not the one it was trained with")
    model = GPT(GPTConfig(**state["model_config"])).to(dev)
    model.load_state_dict(state["model"])
    model.eval()
    return model, tok, cfg, run_dir, state["step"]


def evaluate_checkpoint(ckpt: str | os.PathLike[str], device: str = "cpu", max_batches: int | None = None,
                        splits: tuple[str, ...] = ("val", "test")) -> dict:
    """Loss and perplexity of a checkpoint on held-out splits (all of each split by default)."""
    model, tok, cfg, run_dir, step = load_trained(ckpt, device)
    tokens = run_dir / "tokens"
    if not (tokens / "meta.json").is_file():  # the run folder was copied without its memmaps
        prepare_tokens(load_corpus(cfg.corpus, max_bytes=cfg.max_corpus_bytes), tok, tokens)
    out: dict[str, Any] = {"ckpt": str(ckpt), "step": step}
    for split in splits:
        data = TokenDataset(tokens, split, cfg.seq_len)
        out[split] = evaluate_loss(model, data, cfg.batch_size, max_batches, next(model.parameters()).device)
    return out


def generate_text(ckpt: str | os.PathLike[str], prompt: str, n_tokens: int, seed: int = 0,
                  temperature: float = 0.8, top_k: int | None = 200, device: str = "cpu") -> str:
    """Sample `n_tokens` after `prompt` (empty prompt: start of a document)."""
    if n_tokens < 0:
        raise TrainingError(f"--tokens must be >= 0, got {n_tokens}")
    model, tok, _, _, _ = load_trained(ckpt, device)
    dev = next(model.parameters()).device
    ids = tok.encode(prompt) if prompt else [tok.eot_id]
    gen = torch.Generator(dev).manual_seed(seed)
    out = model.generate(torch.tensor([ids], device=dev), n_tokens, temperature=temperature, top_k=top_k,
                         generator=gen)
    return tok.decode(out[0].tolist()[0 if prompt else 1:])
