"""The names of runs and profiled plans, defined once for the CLI, the pipeline and the analysis.

    none | full | selective | sac                      a baseline strategy
    drat-lam<λ>  | drat-budget<GiB>                    DRAT at a price of memory, or under a peak budget
    oracle-lam<λ> | oracle-budget<GiB>                 the exact ILP plan for the same target

Numbers are written with Python's `g` format (0.05 -> "0.05", 6.0 -> "6"), so a name read back
gives the same number and the same number always gives the same name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BASELINES = ("none", "full", "selective", "sac")
PLANNERS = ("drat", "oracle")
_NUM = r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
NAME_RE = re.compile(rf"^(?:(?P<baseline>{'|'.join(BASELINES)})|"
                     rf"(?P<planner>{'|'.join(PLANNERS)})-(?P<target>lam|budget)(?P<value>{_NUM}))$")


@dataclass(frozen=True)
class RunName:
    """A parsed name: `kind` is a baseline name, "drat" or "oracle"; exactly one of `lam` and
    `budget_gib` is set for the planners, neither for a baseline."""

    kind: str
    lam: float | None = None
    budget_gib: float | None = None

    @property
    def is_baseline(self) -> bool:
        return self.kind in BASELINES

    def __str__(self) -> str:
        return run_name(self.kind, self.lam, self.budget_gib)

    def sort_key(self) -> tuple:
        """Baselines in their usual order, then λ runs by λ, then budget runs by budget."""
        if self.is_baseline:
            return (0, BASELINES.index(self.kind), 0.0)
        return (1 if self.lam is not None else 2, PLANNERS.index(self.kind),
                self.lam if self.lam is not None else self.budget_gib)


def fmt_number(x: float) -> str:
    return f"{float(x):g}"


def run_name(kind: str, lam: float | None = None, budget_gib: float | None = None) -> str:
    """The name of a baseline (`kind` alone) or of a planner's run at λ or at a budget."""
    if kind in BASELINES:
        if lam is not None or budget_gib is not None:
            raise ValueError(f"baseline {kind!r} takes no λ or budget")
        return kind
    if kind not in PLANNERS:
        raise ValueError(f"unknown run kind {kind!r}; choose one of {', '.join(BASELINES + PLANNERS)}")
    if (lam is None) == (budget_gib is None):
        raise ValueError(f"a {kind} run needs exactly one of λ and a budget")
    return f"{kind}-lam{fmt_number(lam)}" if lam is not None else f"{kind}-budget{fmt_number(budget_gib)}"


def parse_run_name(name: str) -> RunName:
    """'drat-lam0.05' -> RunName('drat', lam=0.05); raises ValueError naming the grammar otherwise."""
    m = NAME_RE.match(name)
    if m is None:
        raise ValueError(f"unknown run name {name!r}; expected one of {', '.join(BASELINES)}, "
                         "drat-lam<λ>, drat-budget<GiB>, oracle-lam<λ> or oracle-budget<GiB>")
    if m["baseline"]:
        return RunName(m["baseline"])
    value = float(m["value"])
    if m["target"] == "lam":
        return RunName(m["planner"], lam=value)
    return RunName(m["planner"], budget_gib=value)


def sort_runs(names) -> list[str]:
    """Names in reading order; names outside the grammar go last, alphabetically."""
    known, other = [], []
    for n in names:
        try:
            known.append((parse_run_name(n).sort_key(), n))
        except ValueError:
            other.append(n)
    return [n for _, n in sorted(known)] + sorted(other)
