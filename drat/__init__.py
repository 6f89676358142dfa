"""DRAT: per-site store/recompute plans that cut the activation memory of transformer training,
with losses and gradients bitwise equal to storing everything.

The library in one import:

    import drat
    model = drat.GPT(drat.config_for("tiny"))
    costs = drat.build_costs(model, idx, targets)        # what each site holds and costs to rebuild
    fit = drat.fit_gates(costs, lam=0.05)                 # or budget_act_bytes=...
    model.set_strategy(drat.DRATGates(fit.gates))         # same loss and gradients, less memory

See docs/design.md for how it works.
"""

from .accounting import saved_activation_bytes
from .costs import SiteCosts, plan_cost
from .gates import GateBank, fit_gates
from .measure import build_costs
from .model import GPT, GPTConfig, config_for
from .oracle import solve_oracle, solve_oracle3
from .strategies import (
    SAC,
    CompiledPlanAC,
    DRATGates,
    FullAC,
    FullOffload,
    NoneAC,
    OffloadAll,
    PlanAC,
    SaveOnCPU,
    SelectiveAC,
    make_strategy,
)
from .train import ResourceAwareTrainer, TrainingConfig
from .wrap import GatedModel, unwrap, wrap

__version__ = "0.1.0"

__all__ = [
    "GPT", "GPTConfig", "config_for",
    "NoneAC", "FullAC", "SelectiveAC", "SAC", "PlanAC", "DRATGates", "CompiledPlanAC", "make_strategy",
    "SaveOnCPU", "OffloadAll", "FullOffload",
    "SiteCosts", "build_costs", "plan_cost", "GateBank", "fit_gates", "solve_oracle", "solve_oracle3",
    "saved_activation_bytes", "ResourceAwareTrainer", "TrainingConfig", "wrap", "unwrap", "GatedModel",
]
