"""What a training run is asked to do: `TrainingConfig`, its defaults and checks, and where its
fields come from (defaults < the stored config of a resumed run < a config file < flags).

The config is input only. What a run derives from it while training (the current λ, the
activation budget closed on the measured peak) lives in `drat.train.gating`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..costs import COST_MODELS
from ..model import GPT, SIZES, GPTConfig, config_for
from ..validate import (
    FINITE,
    FRACTION,
    NONNEG,
    NONNEG_INT,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    Number,
    check_field_types,
)
from ..wrap import HF_FAMILIES, hf_model, wrap

TRAIN_STRATEGIES = ("none", "full", "selective", "sac", "drat")
DEFAULT_VOCAB_SIZE = 8192
ADAM_BETAS = (0.9, 0.95)  # nanoGPT/GPT-3 values; β2=0.95 is steadier than 0.999 at small batch

# Fields that may change when a run is resumed: they steer logging and bookkeeping, not the maths
# of the steps already taken. (`steps` re-stretches the schedules from the resume point on.)
RESUMABLE_CHANGES = frozenset({
    "steps", "eval_every", "eval_batches", "log_every", "ckpt_every", "keep_last_k", "device",
    "tensorboard", "wandb", "wandb_project", "out", "deterministic", "gc_every_steps",
})


# The rule (drat.validate) of every numeric field; `drat train` parses its flags with the same rules.
FIELD_RULES: dict[str, Number] = {
    "n_layer": POSITIVE_INT, "n_embd": POSITIVE_INT, "n_head": POSITIVE_INT, "dropout": FRACTION,
    "max_corpus_bytes": POSITIVE_INT, "vocab_size": POSITIVE_INT, "seq_len": POSITIVE_INT,
    "batch_size": POSITIVE_INT, "grad_accum": POSITIVE_INT, "steps": POSITIVE_INT, "lr": POSITIVE,
    "min_lr": NONNEG, "warmup": NONNEG_INT, "weight_decay": NONNEG, "grad_clip": NONNEG, "lam": NONNEG,
    "budget_gib": POSITIVE, "host_mem_gib": POSITIVE, "arms": Number(int, low=2, high=3),
    "gate_lr": POSITIVE, "gate_init_logit": FINITE, "tau_start": POSITIVE,
    "tau_end": POSITIVE, "eval_every": POSITIVE_INT, "eval_batches": POSITIVE_INT, "log_every": POSITIVE_INT,
    "ckpt_every": NONNEG_INT, "keep_last_k": POSITIVE_INT, "gc_every_steps": NONNEG_INT, "seed": SEED,
}


class TrainingError(ValueError):
    """A training run cannot start or continue as asked; the message says what to change."""


class TrainingDiverged(TrainingError):
    """The training loss (or the weights) turned NaN or infinite; the message names the step."""


@dataclass
class TrainingConfig:
    # model: a named size, optionally shrunk (tests) or widened
    size: str = "tiny"
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    dropout: float = 0.0
    # a transformers family (llama | gpt2 | qwen2): train a random-init model of it, with the size's
    # shape, through drat.wrap instead of DRAT's own GPT (one process; needs the `hf` extra)
    hf: str | None = None
    # data
    corpus: str = "shakespeare"  # shakespeare | stdlib | text:PATH | hf:NAME (see drat.data)
    max_corpus_bytes: int | None = None  # keep only this many bytes of documents (fast runs)
    vocab_size: int | None = None  # BPE target; None: DEFAULT_VOCAB_SIZE, or the vocabulary of `tokenizer`
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
    lam: float | None = None  # λ, price of memory in recompute time; None: DEFAULT_LAMBDA (drat, no budget)
    budget_gib: float | None = None  # peak budget: λ becomes a dual variable
    arms: int = 2  # 2: store or recompute; 3: also offload to pinned host memory (eager, CUDA streams)
    host_mem_gib: float | None = None  # cap on the offloaded bytes in host memory; None: half the free RAM
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
    # runs every this many steps instead (drat.runtime.ScheduledGC: full passes stalled recompute
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
        """Refuse a config that cannot run (TrainingError, one line): values of the wrong type (a
        config file's `steps: "two"`), numbers outside their field's rule (FIELD_RULES; NaN and inf
        never pass), unknown names, combinations that exclude each other, a model shape that does
        not divide. The config alone: the run folder is checked by `run_folder.check_run_folder`."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise TrainingError(msg)

        check_field_types(self, TrainingError, "training field")
        for name, rule in FIELD_RULES.items():
            if getattr(self, name) is not None:
                rule.check(getattr(self, name), name, TrainingError)
        need(self.size in SIZES, f"unknown model size {self.size!r}; choose one of {', '.join(SIZES)}")
        need(self.strategy in TRAIN_STRATEGIES,
             f"unknown strategy {self.strategy!r}; choose one of {', '.join(TRAIN_STRATEGIES)}")
        need(self.cost_model in COST_MODELS,
             f"unknown cost model {self.cost_model!r}; choose one of {', '.join(COST_MODELS)}")
        need(self.min_lr <= self.lr, f"need min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        need(self.lam is None or self.budget_gib is None, "give lam (--lambda) or budget_gib, not both")
        need(self.strategy == "drat" or (self.lam is None and self.budget_gib is None),
             "lam (--lambda) and budget_gib apply to strategy drat only")
        need(self.arms == 2 or self.strategy == "drat", "arms 3 (offload) apply to strategy drat only")
        need(self.arms == 2 or self.distributed is None,
             "the offload arm trains on one process; drop --distributed")
        need(self.tau_end <= self.tau_start,
             f"need tau_end <= tau_start, got tau_start={self.tau_start}, tau_end={self.tau_end}")
        try:  # the shape alone (n_embd divisible by n_head); the vocabulary comes with the tokenizer
            config_for(self.size, n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head)
        except ValueError as e:
            raise TrainingError(f"model shape: {e}") from None
        need(self.hf is None or self.hf in HF_FAMILIES,
             f"unknown --hf family {self.hf!r}; choose one of {', '.join(HF_FAMILIES)}")
        need(self.hf is None or self.distributed is None, "--hf trains on one process; drop --distributed")
        need(self.distributed in (None, "ddp", "fsdp"),
             f"unknown distributed mode {self.distributed!r}; choose ddp or fsdp (or leave it unset)")

    @property
    def warmup_steps(self) -> int:
        return max(1, self.steps // 20) if self.warmup is None else self.warmup

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one step on one process; under torchrun the step is world size times this."""
        return self.batch_size * self.seq_len * self.grad_accum

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The GPT this config trains, on a tokenizer of `vocab_size` tokens."""
        gcfg = config_for(self.size, vocab_size=vocab_size, n_layer=self.n_layer, n_embd=self.n_embd,
                          n_head=self.n_head, dropout=self.dropout)
        if self.seq_len > gcfg.block_size:
            gcfg = replace(gcfg, block_size=self.seq_len)
        return gcfg

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


def build_model(cfg: TrainingConfig, model_cfg: GPTConfig):
    """The model a config trains: DRAT's GPT of `model_cfg`, or with `cfg.hf` a random-init
    transformers model of the same shape, wrapped by drat.wrap."""
    if cfg.hf is None:
        return GPT(model_cfg)
    return wrap(hf_model(cfg.hf, model_cfg.n_layer, model_cfg.n_embd, model_cfg.n_head, model_cfg.vocab_size,
                         model_cfg.block_size, cfg.dropout))


def config_changes(mine: dict, theirs: dict) -> list[str]:
    """Fields of `mine` that differ from a stored config `theirs`, beyond RESUMABLE_CHANGES. A
    field the stored config lacks (written before the field existed) counts as its default, so
    adding a field never makes older runs unresumable."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingConfig)
                if f.default is not dataclasses.MISSING}
    return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k, defaults.get(k)))


def _as_fields(data: Any, where: str) -> dict:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TrainingError(f"{where} must hold a mapping of training fields")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _yaml_loader():
    """PyYAML's safe loader, reading floats as YAML 1.2 does: `lr: 1e-3` is the number 0.001 (YAML
    1.1 wants `1.0e-3` and would give the string "1e-3", which the field's type check refuses)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)\.?[0-9_]*(?:[eE][-+]?[0-9]+)$|^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"),
        list("-+0123456789."))
    return Loader


def load_config_file(path: str | os.PathLike[str]) -> dict:
    """A YAML or JSON file of TrainingConfig fields (`batch-size` and `batch_size` both work)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise TrainingError(f"cannot read config file {path}: {e.strerror or e}") from e
    import yaml

    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_yaml_loader())
    except (ValueError, yaml.YAMLError) as e:  # json.JSONDecodeError is a ValueError
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise TrainingError(f"config file {path} is not valid {kind}: {str(e).splitlines()[0]}") from e
    return _as_fields(data, f"config file {path}")


def parse_config_json(text: str) -> dict:
    """TrainingConfig fields given inline as one JSON object (`drat train --config-json`)."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TrainingError(f"--config-json is not valid JSON: {str(e).splitlines()[0]}") from e
    return _as_fields(data, "--config-json")


def read_run_config(out: str | os.PathLike[str]) -> dict | None:
    """The resolved config.json of the run in `out`, or None when there is none."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TrainingError(f"{path} is unreadable ({e}); fix it or start again with --overwrite") from e


def resolve_training_config(overrides: dict, config_file: str | None = None, resume: bool = False,
                            config_fields: dict | None = None) -> TrainingConfig:
    """Defaults < the stored config of a resumed run < `config_file` < `config_fields` (given inline)
    < `overrides` (given flags).

    λ and the budget exclude each other: a layer that sets one clears the other from earlier layers."""
    layers: list[dict] = []
    file_fields = load_config_file(config_file) if config_file else {}
    inline = config_fields or {}
    if resume:
        out = overrides.get("out", inline.get("out", file_fields.get("out", TrainingConfig.out)))
        stored = read_run_config(out)
        if stored is not None:
            layers.append(stored["training"])
    layers += [file_fields, inline, overrides]
    merged: dict[str, Any] = {}
    for layer in layers:
        layer = {k.replace("-", "_"): v for k, v in layer.items()}
        if "budget_gib" in layer and "lam" not in layer:
            merged.pop("lam", None)
        if "lam" in layer and "budget_gib" not in layer:
            merged.pop("budget_gib", None)
        merged.update(layer)
    return TrainingConfig.from_dict(merged)
