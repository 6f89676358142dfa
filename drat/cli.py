"""The `drat` command line: a thin entry point over the library.

    drat profile   what a plan keeps for backward, its step time (and on CUDA its peak)
    drat bench     strategies side by side on one device (the memory/time frontier)
    drat train     train a gated GPT on a corpus (checkpoints, resume, metrics.jsonl);
                   under torchrun with --distributed ddp|fsdp on several GPUs
    drat eval      validation/test loss and perplexity of a checkpoint
    drat generate  sample text from a checkpoint
    drat tokenizer train   a byte-level BPE tokenizer from a corpus
    drat data pin | tokenize   a corpus pinned by its sha256; its splits as token memmaps

Bad input (a value outside its flag's rule, an unknown size, strategy or corpus, an --out that
cannot be written, CUDA without a GPU, an infeasible budget) prints one line, `drat: error: ...`,
and exits with status 2 before anything is written; the rules live in `drat.validate`, and
docs/cli-errors.md lists them. A training run that diverges (its loss turns NaN or inf) stops with
status 3, its last good checkpoint kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .bench import add_bench_parser
from .bench.profile import add_profile_parser
from .data import DataError, load_corpus, train_tokenizer
from .data.commands import add_data_parser
from .model import SHAPE_FLAGS, add_shape_args
from .train import (
    DEFAULT_LAMBDA,
    CheckpointError,
    ResourceAwareTrainer,
    TrainingDiverged,
    evaluate_checkpoint,
    generate_text,
    parse_config_json,
    prepare_run_folder,
    resolve_training_config,
    write_json_atomic,
)
from .train.config import FIELD_RULES
from .validate import ARMS, NONNEG, NONNEG_INT, OUT_DIR, OUT_FILE, POSITIVE_INT, SEED

EXIT_USAGE = 2  # bad input: one line on stderr, nothing written
EXIT_DIVERGED = 3  # `drat train`: the loss turned NaN or inf; the last good checkpoint is kept


class UsageError(Exception):
    """Input the user can fix; reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with drat's convention for bad input: one line `drat: error: ...` and status 2
    (argparse would print the usage first). Every subcommand's parser is of this class."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"drat: error: {message}\n")


# `drat train` flags: (flag, TrainingConfig field, type, help). Their argparse default is SUPPRESS,
# so only the flags actually given reach the namespace and override --config and a resumed run. A
# numeric flag parses with its field's rule (FIELD_RULES), so a flag and the config field agree.
_TRAIN_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--dropout", "dropout", float, "dropout probability"),
    ("--hf", "hf", str, "llama | gpt2 | qwen2: a random-init transformers model, trained through drat.wrap"),
    ("--corpus", "corpus", str, "shakespeare | stdlib | text:PATH | hf:NAME"),
    ("--max-corpus-bytes", "max_corpus_bytes", int, "keep only this many bytes of the corpus"),
    ("--tokenizer", "tokenizer", str, "use this tokenizer.json instead of training one"),
    ("--seq-len", "seq_len", int, "tokens per sequence"),
    ("--batch-size", "batch_size", int, "sequences per micro-batch"),
    ("--grad-accum", "grad_accum", int, "micro-batches per optimizer step"),
    ("--steps", "steps", int, "optimizer steps"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--min-lr", "min_lr", float, "learning rate at the end of the cosine"),
    ("--warmup", "warmup", int, "warm-up steps (default 5%% of --steps)"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay of the model's matrices"),
    ("--grad-clip", "grad_clip", float, "max global gradient norm (0: off)"),
    ("--strategy", "strategy", str, "none | full | selective | sac | drat"),
    ("--gate-lr", "gate_lr", float, "learning rate of the gate logits"),
    ("--gate-init-logit", "gate_init_logit", float, "initial gate logit (>0 starts out storing)"),
    ("--tau-start", "tau_start", float, "gate temperature at the start"),
    ("--tau-end", "tau_end", float, "gate temperature at the end"),
    ("--cost-model", "cost_model", str, "measured | uniform | layer_weighted | activation_size"),
    ("--eval-every", "eval_every", int, "steps between validation runs"),
    ("--eval-batches", "eval_batches", int, "validation batches per evaluation"),
    ("--log-every", "log_every", int, "steps between metrics.jsonl records"),
    ("--ckpt-every", "ckpt_every", int, "steps between checkpoints (0: only the last)"),
    ("--keep-last-k", "keep_last_k", int, "checkpoints to keep"),
    ("--gc-every-steps", "gc_every_steps", int,
     "Python's collector paused, a young-generation pass every N steps (0: automatic collection)"),
    ("--seed", "seed", int, "seed of the model init, batches, dropout and gate noise"),
    ("--device", "device", str, "cpu | cuda | auto (under torchrun each rank takes cuda:LOCAL_RANK)"),
    ("--distributed", "distributed", str, "ddp | fsdp: data-parallel training, launched by torchrun"),
    ("--out", "out", OUT_DIR, "run folder"),
)


def _usage_errors(fn):
    """Report the data and checkpoint errors of the library in the one-line convention of main()."""

    def wrapped(args) -> int:
        try:
            return fn(args)
        except (DataError, CheckpointError) as e:
            raise UsageError(str(e)) from e

    return wrapped


@_usage_errors
def cmd_train(args) -> int:
    overrides = {field: getattr(args, field) for _, field, _, _ in SHAPE_FLAGS + _TRAIN_FLAGS
                 if hasattr(args, field)}
    for field in ("lam", "budget_gib", "arms", "host_mem_gib", "wandb", "tensorboard", "gate_warm_start",
                  "deterministic"):
        if hasattr(args, field):
            overrides[field] = getattr(args, field)
    resume, overwrite = getattr(args, "resume", None), getattr(args, "overwrite", False)
    inline = parse_config_json(args.config_json) if hasattr(args, "config_json") else None
    cfg = resolve_training_config(overrides, getattr(args, "config", None), resume=resume is not None,
                                  config_fields=inline)
    threads, tokens = getattr(args, "threads", None), getattr(args, "tokens", None)
    if threads is not None:
        torch.set_num_threads(threads)
    if hasattr(args, "prepare_only"):
        # the run folder made ready in this one process, and the resolved fields written for a
        # launch that follows (`torchrun ... -m drat.cli train --config FILE --distributed ...`)
        prepare_run_folder(cfg, resume, overwrite, tokens_from=tokens)
        target = Path(args.prepare_only)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target, cfg.to_dict())
        print(json.dumps({"out": cfg.out, "config": str(target)}))
        return 0
    trainer = ResourceAwareTrainer(cfg, resume=resume, overwrite=overwrite, tokens_from=tokens,
                                   allow_unverified=getattr(args, "allow_unverified", False))
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    keys = ("step", "initial_val_loss", "final_val_loss", "final_val_ppl", "tokens_seen", "wall_time_s")
    if trainer.dist.is_main:  # under torchrun: one summary line, not one per rank
        print(json.dumps({"out": cfg.out, **{k: summary[k] for k in keys}}))
    return 0


@_usage_errors
def cmd_eval(args) -> int:
    print(json.dumps(evaluate_checkpoint(args.ckpt, device=args.device, max_batches=args.max_batches,
                                         progress=True, allow_unverified=args.allow_unverified)))
    return 0


@_usage_errors
def cmd_generate(args) -> int:
    print(generate_text(args.ckpt, args.prompt, args.tokens, seed=args.seed, temperature=args.temperature,
                        top_k=args.top_k, device=args.device, allow_unverified=args.allow_unverified))
    return 0


@_usage_errors
def cmd_tokenizer_train(args) -> int:
    tok = train_tokenizer(load_corpus(args.corpus, max_bytes=args.max_corpus_bytes), args.vocab_size,
                          out_path=args.out)
    print(json.dumps({"out": args.out, "vocab_size": tok.vocab_size, "sha256": tok.sha256}))
    return 0


def _add_train_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a gated GPT (checkpoints, resume, metrics.jsonl)",
                       argument_default=argparse.SUPPRESS)
    add_shape_args(p, suppress=True)
    for flag, field, typ, help_ in _TRAIN_FLAGS:
        p.add_argument(flag, dest=field, type=FIELD_RULES.get(field, typ), help=help_)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lambda", dest="lam", type=FIELD_RULES["lam"],
                   help=f"price of memory (drat; default {DEFAULT_LAMBDA})")
    g.add_argument("--budget-gib", dest="budget_gib", type=FIELD_RULES["budget_gib"],
                   help="peak memory budget (drat)")
    p.add_argument("--arms", dest="arms", type=ARMS,
                   help="store,recompute (default) or store,recompute,offload: the gates' choices (drat)")
    p.add_argument("--host-mem-gib", dest="host_mem_gib", type=FIELD_RULES["host_mem_gib"],
                   help="cap on offloaded bytes in pinned host memory (default: half the available RAM)")
    p.add_argument("--config", help="YAML or JSON file of training fields; given flags override it")
    p.add_argument("--config-json", dest="config_json", metavar="JSON",
                   help="training fields as one JSON object; overrides --config, given flags override it")
    p.add_argument("--tokens", metavar="DIR",
                   help="a new run links these token files (tokens/ of a tokenized corpus) instead of "
                        "tokenizing its corpus again")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads of this process")
    p.add_argument("--prepare-only", dest="prepare_only", metavar="FILE", type=OUT_FILE,
                   help="make the run folder ready, write the resolved fields to FILE (JSON, for "
                        "`--config FILE` of a torchrun launch) and stop")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                   help="continue the run in --out from its latest checkpoint (or from CKPT)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--allow-unverified", action="store_true",
                   help="resume from a checkpoint that has no .sha256 beside it (its bytes unchecked)")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (offline by default)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="skip tb/ event files")
    p.add_argument("--no-gate-warm-start", dest="gate_warm_start", action="store_false",
                   help="start every gate on store instead of from the cost model's plan")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU kernels, strictly (slower; an op without one stops the run)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="validation/test loss and perplexity of a checkpoint (JSON)")
    p.add_argument("--ckpt", required=True, help="checkpoints/ckpt_*.pt of a run")
    p.add_argument("--max-batches", type=POSITIVE_INT, default=None,
                   help="cap batches per split (default: all)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--allow-unverified", action="store_true",
                   help="load a checkpoint that has no .sha256 beside it (its bytes unchecked)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("--ckpt", required=True, help="checkpoints/ckpt_*.pt of a run")
    p.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    p.add_argument("--tokens", type=NONNEG_INT, default=100, help="tokens to sample")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--temperature", type=NONNEG, default=0.8, help="softmax temperature (0: greedy)")
    p.add_argument("--top-k", type=NONNEG_INT, default=200,
                   help="sample among the k most likely tokens (0: among all)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--allow-unverified", action="store_true",
                   help="load a checkpoint that has no .sha256 beside it (its bytes unchecked)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a byte-level BPE tokenizer on a corpus")
    t.add_argument("--corpus", required=True, help="shakespeare | stdlib | text:PATH | hf:NAME")
    t.add_argument("--vocab-size", type=POSITIVE_INT, default=8192)
    t.add_argument("--max-corpus-bytes", type=POSITIVE_INT, default=None)
    t.add_argument("--out", required=True, type=OUT_FILE, help="tokenizer.json to write")
    t.set_defaults(func=cmd_tokenizer_train)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="drat", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    add_profile_parser(sub)
    add_bench_parser(sub)
    _add_train_parsers(sub)
    add_data_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a flag refused by its rule (2; _Parser printed the line)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except TrainingDiverged as e:
        print(f"drat: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_DIVERGED
    except (UsageError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError,
            IsADirectoryError) as e:
        print(f"drat: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
