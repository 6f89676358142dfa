"""The `drat` command line: a thin entry point over the library.

    drat profile   what a strategy keeps for backward (and on CUDA, its peak and step time)
    drat bench     strategies side by side on one device (the memory/time frontier)

Bad input (unknown size, strategy or corpus; CUDA without a GPU; an infeasible budget) prints one
line, `drat: error: ...`, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys


class UsageError(Exception):
    """Input the user can fix; reported in one line with exit status 2."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="tiny", help="tiny | small | medium | large")
    p.add_argument("--layers", type=int, default=None, help="override the size's number of layers")
    p.add_argument("--hidden", type=int, default=None, help="override the size's hidden width")
    p.add_argument("--heads", type=int, default=None, help="override the size's number of heads")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary (default 32000)")


def cmd_profile(args) -> int:
    from .profile import ProfileArgs, run_profile

    out = run_profile(ProfileArgs(
        size=args.size, strategy=args.strategy, lam=args.lam, budget_gib=args.budget_gib,
        device=args.device, seq_len=args.seq_len, batch_size=args.batch_size,
        cost_model=args.cost_model, vocab_size=args.vocab_size, n_layer=args.layers,
        n_embd=args.hidden, n_head=args.heads, steps=args.steps, seed=args.seed,
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="drat", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="activation bytes (and GPU peak/time) of one strategy")
    _add_model_args(p)
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

    from .bench import add_bench_parser

    add_bench_parser(sub)
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
