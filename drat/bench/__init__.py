"""Benchmarks: strategies measured side by side in one process.

    drat bench frontier     every strategy's peak memory against its step time
    drat bench capacity     the largest batch each strategy fits under a memory cap
    drat bench trace        where a step's time goes (kernels, rebuilds, idle GPU)
    drat bench exactness    losses and gradients of every plan against `none`, bit for bit
    drat bench offload      the offload arm against save-on-cpu, offload-all and full-offload
    drat bench planners     ILP, gates, local search and greedy on cost tables: quality and time
    drat bench adapt        a sequence-length warm-up: gates online against the ILP solved once or per shape
    drat profile            one plan: what it keeps for backward, its step time (on CUDA its peak)
"""

from .adapt import add_adapt_parser, run_adapt
from .capacity import add_capacity_parser, run_capacity
from .exactness import add_exactness_parser, run_exactness
from .frontier import add_frontier_parser, run_frontier
from .offload import add_offload_parser, run_offload
from .planners import add_planners_parser, run_planners
from .profile import ProfileArgs, run_profile
from .trace import add_trace_parser, run_trace


def add_bench_parser(sub) -> None:
    """`drat bench ...`: one subcommand per benchmark module."""
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    add_frontier_parser(bsub)
    add_capacity_parser(bsub)
    add_trace_parser(bsub)
    add_exactness_parser(bsub)
    add_offload_parser(bsub)
    add_planners_parser(bsub)
    add_adapt_parser(bsub)


__all__ = ["ProfileArgs", "add_bench_parser", "run_adapt", "run_capacity", "run_exactness", "run_frontier",
           "run_offload", "run_planners", "run_profile", "run_trace"]
