"""The `drat` command line: a thin entry point over the library.

    drat profile   what a strategy keeps for backward (and on CUDA, its peak and step time)
    drat bench     strategies side by side on one device (the memory/time frontier)
    drat train     train a gated GPT on a corpus (checkpoints, resume, metrics.jsonl);
                   under torchrun with --distributed ddp|fsdp on several GPUs
    drat eval      validation/test loss and perplexity of a checkpoint
    drat generate  sample text from a checkpoint
    drat tokenizer train   a byte-level BPE tokenizer from a corpus

Bad input (unknown size, strategy or corpus; CUDA without a GPU; an infeasible budget) prints one
line, `drat: error: ...`, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .bench import ProfileArgs, add_bench_parser, run_profile
from .data import DataError, load_corpus, train_tokenizer
from .model import SHAPE_FLAGS, add_shape_args, shape_overrides
from .train import ResourceAwareTrainer, evaluate_checkpoint, generate_text, resolve_training_config
from .train.checkpoint import CheckpointError


class UsageError(Exception):
    """Input the user can fix; reported in one line with exit status 2."""


def cmd_profile(args) -> int:
    out = run_profile(ProfileArgs(
        size=args.size, strategy=args.strategy, lam=args.lam, budget_gib=args.budget_gib,
        device=args.device, seq_len=args.seq_len, batch_size=args.batch_size,
        cost_model=args.cost_model, **shape_overrides(args), steps=args.steps, seed=args.seed,
    ))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['strategy']}: {out['saved_activation_bytes'] / 2**20:.2f} MiB saved for backward"
              + (f", peak {out['peak_memory_bytes'] / 2**30:.3f} GiB, {out['step_ms']:.1f} ms/step"
                 if "step_ms" in out else ""))
        for s in out["sites"]:
            print(f"  {str(s['layer']):>4} {s['site']:<13} {s['decision']:<9} {s['bytes']:>12,d} B")
    return 0


# `drat train` flags: (flag, TrainingConfig field, type, help). Their argparse default is SUPPRESS,
# so only the flags actually given reach the namespace and override --config and a resumed run.
_TRAIN_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--dropout", "dropout", float, "dropout probability"),
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
    ("--out", "out", str, "run folder"),
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
    for field in ("lam", "budget_gib", "wandb", "tensorboard", "gate_warm_start", "deterministic"):
        if hasattr(args, field):
            overrides[field] = getattr(args, field)
    resume = getattr(args, "resume", None)
    cfg = resolve_training_config(overrides, getattr(args, "config", None), resume=resume is not None)
    trainer = ResourceAwareTrainer(cfg, resume=resume, overwrite=getattr(args, "overwrite", False))
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
    print(json.dumps(evaluate_checkpoint(args.ckpt, device=args.device, max_batches=args.max_batches)))
    return 0


@_usage_errors
def cmd_generate(args) -> int:
    print(generate_text(args.ckpt, args.prompt, args.tokens, seed=args.seed, temperature=args.temperature,
                        top_k=args.top_k, device=args.device))
    return 0


@_usage_errors
def cmd_tokenizer_train(args) -> int:
    if args.vocab_size <= 0:
        raise UsageError(f"--vocab-size must be positive, got {args.vocab_size}")
    tok = train_tokenizer(load_corpus(args.corpus, max_bytes=args.max_corpus_bytes), args.vocab_size,
                          out_path=args.out)
    print(json.dumps({"out": args.out, "vocab_size": tok.vocab_size, "sha256": tok.sha256}))
    return 0


def _add_train_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a gated GPT (checkpoints, resume, metrics.jsonl)",
                       argument_default=argparse.SUPPRESS)
    add_shape_args(p, suppress=True)
    for flag, field, typ, help_ in _TRAIN_FLAGS:
        p.add_argument(flag, dest=field, type=typ, help=help_)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lambda", dest="lam", type=float, help="price of memory (drat; default 0.05)")
    g.add_argument("--budget-gib", dest="budget_gib", type=float, help="peak memory budget (drat)")
    p.add_argument("--config", help="YAML or JSON file of training fields; given flags override it")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                   help="continue the run in --out from its latest checkpoint (or from CKPT)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (offline by default)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="skip tb/ event files")
    p.add_argument("--no-gate-warm-start", dest="gate_warm_start", action="store_false",
                   help="start every gate on store instead of from the cost model's plan")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU kernels, strictly (slower; an op without one stops the run)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="validation/test loss and perplexity of a checkpoint (JSON)")
    p.add_argument("--ckpt", required=True, help="checkpoints/ckpt_*.pt of a run")
    p.add_argument("--max-batches", type=int, default=None, help="cap batches per split (default: all)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("--ckpt", required=True, help="checkpoints/ckpt_*.pt of a run")
    p.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    p.add_argument("--tokens", type=int, default=100, help="tokens to sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a byte-level BPE tokenizer on a corpus")
    t.add_argument("--corpus", required=True, help="shakespeare | stdlib | text:PATH | hf:NAME")
    t.add_argument("--vocab-size", type=int, default=8192)
    t.add_argument("--max-corpus-bytes", type=int, default=None)
    t.add_argument("--out", required=True, help="tokenizer.json to write")
    t.set_defaults(func=cmd_tokenizer_train)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="drat", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="activation bytes (and GPU peak/time) of one strategy")
    add_shape_args(p)
    p.add_argument("--strategy", default="none", help="none | full | selective | sac | drat")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lambda", dest="lam", type=float, default=None, help="price of memory (drat)")
    g.add_argument("--budget-gib", type=float, default=None, help="peak memory budget (drat)")
    p.add_argument("--cost-model", default="measured",
                   help="measured | uniform | layer_weighted | activation_size")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=12, help="timed steps on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_profile)

    add_bench_parser(sub)
    _add_train_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, FileNotFoundError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"drat: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
