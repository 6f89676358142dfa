"""A peak-memory budget closed on measured peaks: the part both budget loops share.

A plan is made for an activation budget, the bytes its stored activations may keep. Before
anything ran, that is the budget less an estimate of everything else a step holds (model states:
`budget_to_activation_bytes`). Once a step has run a plan and its peak was measured, what the step
held beyond the activations counted for the plan (gradients, working memory, the allocator's
slack, and whatever the count of the plan missed) is known, and the activation budget becomes the
budget less that excess. `PeakBudget` is that arithmetic and nothing else.

Two loops use it, and the rest of them cannot be shared:

* the bench (`drat.bench.common.plan_under_measured_peak`) re-plans offline: each round fits a
  fresh plan for the moved activation budget, runs one step and moves the budget either way (an
  unused budget is recompute paid for nothing), aiming a margin under the budget and keeping the
  best round that fitted. It counts a plan's activations as the budget it was planned for, because
  a compiled plan keeps less than the cost table says.
* a training run (`drat.train.gating`) cannot re-plan between steps: its plan is the gates' sample
  of each step, and the budget steers them only through λ, by dual ascent across steps. It counts
  a plan's activations from the measured site bytes, and the excess only ratchets up: successive
  steps run different sampled plans, and a transient seen once (a rebuild on top of the peak,
  fragmentation) can come back, so a lean step must not loosen the target λ is chasing.
"""

from __future__ import annotations

from .gates import budget_to_activation_bytes


class PeakBudget:
    """A peak budget and the share of it a plan's activations may keep (`act_bytes`).

    `margin_frac`: aim this fraction of the budget under it. `ratchet`: keep the largest excess
    measured, so the activation budget only tightens."""

    def __init__(self, budget_gib: float, base_bytes: float, margin_frac: float = 0.0, ratchet: bool = False):
        self.budget_bytes = budget_gib * 2**30
        # raises BudgetInfeasibleError when the estimate alone leaves no room for activations
        self.act_bytes = budget_to_activation_bytes(budget_gib, base_bytes)
        self.margin_frac = margin_frac
        self.ratchet = ratchet
        # what a measured step held beyond its plan's counted activations (ratchet: the most any
        # step held); 0 until a peak is measured
        self.other_bytes = 0.0

    def close(self, peak_bytes: float, kept_bytes: float) -> float:
        """Take a step's measured peak of a plan counted to keep `kept_bytes` of activations;
        returns the new activation budget (negative when the excess alone exceeds the budget)."""
        other = float(peak_bytes) - float(kept_bytes)
        self.other_bytes = max(self.other_bytes, other) if self.ratchet else other
        self.act_bytes = self.budget_bytes - self.other_bytes - self.margin_frac * self.budget_bytes
        return self.act_bytes
