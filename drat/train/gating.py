"""The gates of a `strategy="drat"` run, and the one owner of λ while it trains.

λ is the price of memory in recompute time. `TrainingConfig.lam` only asks for one (None: the
default); once a run starts, `GateTraining.lam` is the λ, and nothing else holds it:

  * λ mode: λ stays at the asked value for the whole run;
  * budget mode (`budget_gib`): λ starts at 0, or where the warm-start fit left it, and moves by
    dual ascent after every step, on what the executed plan keeps against the activations'
    share of the budget (`drat.gates.dual_ascent`). On CUDA that share is closed on the measured
    peak (`drat.budget.PeakBudget`): what a step held beyond its plan's activations comes off it.

With `arms=3` every gate chooses among store, recompute and offload (a row of three logits, a
Gumbel-softmax sample); the costs then carry the host link measured on the device, and the
offloaded bytes stay under `host_mem_gib`. The link is the part of the cost table least likely to
hold in training (other traffic, the host's own load, copies slowing the matmuls), so on CUDA the
run checks it: over the first `LINK_WINDOW` steps after the first, the offloader times every wait
of the compute stream on a reload (`Offloader.pop_wait_ms`), and if their median misses the
predicted wait (`costs.predicted_wait_ms`) by more than `REPLAN_FRAC` of the step, the link is
rescaled to what was measured (`costs.link_scale_for_wait`) and the gates re-fitted on it, as at
the warm start. Two such checks at most. The losses do not depend on it (no plan changes them);
which plan runs after a re-plan does, since it reads the clock.

Each step the gates are annealed, sampled once (straight-through), and the hard part of the sample
is pinned on the model, so the forward executes the very plan whose cost the gates are trained
on. The resource term `resource_loss(st, costs, λ)` is the gates' only gradient.

The gates live on the CPU, with the costs: a step's plan must be known on the host before its
forward, and a GPU-side bank made every step wait for the GPU twice (the plan's .tolist() and the
resource loss's .cpu()), which cost a store-all run 10-30% step time on an H200, where small
models are launch-bound. Their sampling noise comes from the bank's own CPU generator, never from
the dropout stream. Under torchrun they stay outside the wrapped model, replicated: every rank has
the same costs, seed and gradient, so every rank updates them alike.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics

import torch

from ..budget import PeakBudget
from ..costs import SiteCosts, link_scale_for_wait, predicted_wait_ms, scaled_link
from ..gates import DEFAULT_LAMBDA, GateBank, anneal_tau, dual_ascent, fit_gates, resource_loss
from ..offload import default_host_cap_bytes
from ..strategies import DRATGates
from .config import ADAM_BETAS, TrainingConfig
from .distributed import Dist

LINK_WINDOW = 6  # steps per link check
LINK_CHECKS = 2  # checks per run; a re-plan's window is checked once more
REPLAN_FRAC = 0.02  # of the modelled step: a wait mispredicted by more is re-planned


def configured_lam(cfg: TrainingConfig) -> float | None:
    """The λ a config starts a run at: None without gates, 0 in budget mode (dual ascent, or the
    warm start, moves it from there), else `lam` or DEFAULT_LAMBDA."""
    if cfg.strategy != "drat":
        return None
    if cfg.budget_gib is not None:
        return 0.0
    return DEFAULT_LAMBDA if cfg.lam is None else cfg.lam


class GateTraining:
    """The gate bank, its optimizer, λ, and in budget mode the budget closed on the measured peak.

    `site_labels`: the model's sites, in gate order. `model_state_bytes`: parameters, gradients and
    AdamW moments of one process, the part of a step's memory no plan changes."""

    def __init__(self, cfg: TrainingConfig, site_labels: list[str], model_state_bytes: float, dist: Dist,
                 device: torch.device, log: logging.Logger):
        self.cfg, self.labels, self.dist, self.device, self.log = cfg, site_labels, dist, device, log
        self.model_state_bytes = model_state_bytes
        self.gates = GateBank(len(site_labels), init_logit=cfg.gate_init_logit, tau=cfg.tau_start,
                              seed=cfg.seed, arms=cfg.arms)
        self.host_cap_bytes = (cfg.host_mem_gib * 2**30 if cfg.host_mem_gib is not None
                               else default_host_cap_bytes()) if cfg.arms == 3 else None
        self.strategy = DRATGates(self.gates, sample=True, host_cap_bytes=self.host_cap_bytes)
        # Their own AdamW: the gates are not part of the (possibly wrapped) model and its state
        # dict. No decay (it would pull logits to 0, i.e. towards coin flips) and a constant lr:
        # τ annealing already sharpens them on schedule.
        self.optimizer = torch.optim.AdamW(self.gates.parameters(), lr=cfg.gate_lr, betas=ADAM_BETAS,
                                           eps=1e-8, weight_decay=0.0)
        self.lam: float = configured_lam(cfg)
        # budget mode; raises BudgetInfeasibleError when the model states alone exceed the budget.
        # The excess only ratchets up: see drat/budget.py for why the training loop needs that.
        self.budget = (PeakBudget(cfg.budget_gib, model_state_bytes, ratchet=True)
                       if cfg.budget_gib is not None else None)
        self.costs: SiteCosts | None = None  # set_costs, before the first step
        self._measured_costs: SiteCosts | None = None
        self.site_bytes: list[float] | None = None
        # the link check (module docstring): the scale applied to the measured link so far, how
        # many checks are left, and the current window's (plan, measured wait ms) per step
        self.link_scale = 1.0
        self.link_checks_left = LINK_CHECKS if cfg.arms == 3 and device.type == "cuda" else 0
        self._window: list[tuple[list[bool], float]] = []

    # ------------------------------------------------------------------------- set-up
    def set_costs(self, costs: SiteCosts, site_bytes: list[float]) -> None:
        """The site costs the resource term prices, and each site's saved bytes, as measured once
        (or as a checkpoint stored them: re-measured CPU timings would differ)."""
        self._measured_costs, self.site_bytes = costs, site_bytes
        self._apply_link_scale()

    def _apply_link_scale(self) -> None:
        """The costs the gates price: the measured ones, with the link as the last re-plan found it."""
        c = self._measured_costs
        if c is not None and c.link is not None and self.link_scale != 1.0:
            c = dataclasses.replace(c, link=scaled_link(c.link, self.link_scale))
        self.costs = c

    def warm_start(self) -> None:
        """Start the gates (and λ in budget mode) from `fit_gates` on the measured costs: the run
        executes a good plan from its first step, and training refines it."""
        cfg = self.cfg

        arms = dict(arms=cfg.arms, host_cap_bytes=self.host_cap_bytes)

        def fit() -> tuple[list[bool], float, list[bool] | None]:
            if self.budget is not None:
                res = fit_gates(self.costs, budget_act_bytes=self.budget.act_bytes, seed=cfg.seed,
                                base_bytes=self.model_state_bytes, **arms)
                return res.stored, res.lam, res.offloaded
            res = fit_gates(self.costs, lam=self.lam, seed=cfg.seed, **arms)
            return res.stored, self.lam, res.offloaded

        # one fit, on rank 0; every rank starts from it
        stored, self.lam, offloaded = self.dist.main_first(fit)
        mag = abs(cfg.gate_init_logit) or 1.0
        with torch.no_grad():
            if cfg.arms == 3:  # the fitted arm of each site ahead by `mag`
                arm = [2 if o else 0 if s else 1 for s, o in zip(stored, offloaded)]
                logits = torch.zeros(len(arm), 3)
                logits[torch.arange(len(arm)), torch.tensor(arm)] = mag
                self.gates.logits.copy_(logits)
            else:
                self.gates.logits.copy_(torch.tensor([mag if s else -mag for s in stored],
                                                     device=self.gates.logits.device))
        moved = f", {sum(offloaded)} offloaded" if offloaded else ""
        self.log.info(f"gates warm-started from the cost model: {sum(stored)}/{len(stored)} sites "
                      f"kept{moved}")

    # ------------------------------------------------------------------------- the link, checked
    def observe_link(self, plan: torch.Tensor, step: int) -> dict | None:
        """After a step of a three-arm CUDA run: the measured wait of its plan; at the end of a
        window, the check (module docstring). Returns a `kind: replan` record when one is made."""
        off = self.strategy.offloader
        if self.link_checks_left <= 0 or off is None or self.costs is None or self.costs.link is None:
            return None
        off.time_waits = True
        wait_ms = off.pop_wait_ms() / max(self.cfg.grad_accum, 1)  # per forward and backward, as predicted
        if step == 0:  # the first step fills the host pool: its waits are not the plan's
            return None
        self._window.append(([bool(v) for v in (plan[:, 2] > 0.5).tolist()], wait_ms))
        if len(self._window) < LINK_WINDOW:
            return None
        window, self._window = self._window, []
        self.link_checks_left -= 1
        off.time_waits = self.link_checks_left > 0
        return self.check_link(window, step)

    def check_link(self, window: list[tuple[list[bool], float]], step: int) -> dict:
        """Compare the window's measured waits with the predicted ones and re-plan on a miss."""
        pred = [predicted_wait_ms(p, self.costs) for p, _ in window]
        meas = [w for _, w in window]
        miss_ms = statistics.median(m - p for m, p in zip(meas, pred))
        rec = {"kind": "replan", "step": step, "measured_wait_ms": statistics.median(meas),
               "predicted_wait_ms": statistics.median(pred), "step_ms_model": self.costs.step_ms,
               "replanned": False, "link_scale": self.link_scale}
        if abs(miss_ms) <= REPLAN_FRAC * self.costs.step_ms:
            return rec
        scale = link_scale_for_wait([p for p, _ in window], sum(meas), self.costs)
        self.link_scale *= scale
        self._apply_link_scale()
        before = [bool(v) for v in self.gates.hard_offload().tolist()]
        self.warm_start()
        self.plan_prefetch()
        after = [bool(v) for v in self.gates.hard_offload().tolist()]
        self.log.info(f"step {step}: the link waited {rec['measured_wait_ms']:.2f} ms a step against "
                      f"{rec['predicted_wait_ms']:.2f} predicted; re-planned on a link x{scale:.3g}: "
                      f"{sum(before)} -> {sum(after)} sites offloaded")
        return {**rec, "replanned": True, "link_scale": self.link_scale,
                "n_offloaded_before": sum(before), "n_offloaded_after": sum(after)}

    def plan_prefetch(self) -> int:
        """The offloader's prefetch distance, planned on the costs for the gates' deterministic
        offloads (`costs.plan_prefetch_blocks`): the plans sampled in training are close to it."""
        offloaded = None if self.cfg.arms == 2 else [bool(v) for v in self.gates.hard_offload().tolist()]
        return self.strategy.plan_prefetch(self.costs, offloaded)

    def agree_across_ranks(self) -> None:
        """Rank 0's logits on every rank: identical already (same costs, same seed); made certain."""
        self.dist.broadcast_(self.gates.logits.data)

    # ------------------------------------------------------------------------- one step
    def sample_plan(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Anneal τ, draw this step's straight-through sample `st` (n_sites,) and pin its hard part,
        the plan (n_sites,) in {0, 1}, on the model: every micro-batch of the step runs it. With
        three arms both are (n_sites, 3): one-hot rows of store / recompute / offload."""
        cfg = self.cfg
        self.gates.set_temperature(anneal_tau(step, cfg.steps, cfg.tau_start, cfg.tau_end))
        st = self.gates.sample_st()
        plan = self._agree_on_plan((st.detach() > 0.5).to(st.dtype), step)
        self.strategy.pin(plan)
        return st, plan

    def backward_resource(self, st: torch.Tensor) -> dict:
        """Backward of λ·mem + time of the sample. The task loss has no path to the gates
        (recomputation is exact), so this backward is their only gradient, kept apart so that the
        model's gradients are computed exactly as under `none`. Costs live on the CPU in float64."""
        res, mem, t = resource_loss(st, self.costs, self.lam)
        res.backward()
        return {"resource_t": res.detach(), "mem_t": mem.detach(), "time_t": t.detach()}

    def step(self, plan: torch.Tensor, step_peak_bytes: int | None) -> None:
        """The gates' optimizer step; in budget mode then λ's dual-ascent step on what the executed
        plan keeps, against the activation budget (closed on `step_peak_bytes`, CUDA's peak of the
        step, where there is one)."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.budget is None:
            return
        site = self.peak_site_bytes()
        total, kept = max(sum(site), 1.0), self.plan_bytes(plan, site)
        if step_peak_bytes is not None:
            peak = float(step_peak_bytes)
            if self.dist.mode:  # the max over ranks keeps every rank's λ equal (one process: no GPU sync)
                peak_t = torch.tensor(peak, device=self.device, dtype=torch.float64)
                peak = float(self.dist.max(peak_t).item())
            self.close_budget_on_peak(peak, kept)
        self.lam = dual_ascent(self.lam, kept / total, self.budget_frac())

    def close_budget_on_peak(self, step_peak_bytes: float, kept_bytes: float) -> float:
        """Whatever a step held beyond its plan's activations (model states, gradients, working
        memory) comes off the activations' share of the budget; the largest such excess seen is
        kept, so the target only tightens. Returns the new target as a fraction of store-all bytes."""
        self.budget.close(step_peak_bytes, kept_bytes)
        return self.budget_frac()

    def budget_frac(self) -> float:
        """The activation budget as a fraction of what storing every site adds to the peak."""
        return max(self.budget.act_bytes, 0.0) / max(sum(self.peak_site_bytes()), 1.0)

    def _agree_on_plan(self, plan: torch.Tensor, step: int) -> torch.Tensor:
        """Rank 0's hard plan. The ranks sample the same plan (same logits, same generator state);
        the broadcast makes certain every rank recomputes the same sites regardless."""
        if not self.dist.mode:
            return plan
        mine = plan.clone()
        self.dist.broadcast_(plan)
        if not torch.equal(plan, mine):
            self.log.warning(f"step {step}: this rank sampled another gate plan than rank 0; "
                             f"running rank 0's")
        return plan

    # ------------------------------------------------------------------------- bytes of a plan
    def peak_site_bytes(self) -> list[float]:
        """What storing each site adds to a step's peak: its saved bytes, less what a peak-aware cost
        table found the peak does not drop by when the site is recomputed (the LM head: its chunked
        rebuild sits on top of the peak; `costs.measure_peak_saving_bytes`). The budget loop counts
        these, as the gates' resource loss does; with the owned bytes instead, a plan recomputing
        the head would leave its rebuild transient in the budget's excess for good, and every later
        plan that stores the head would be held that much under the budget."""
        c = self.costs
        if c is None or c.owned_bytes is None:
            return self.site_bytes
        return [b - (o - m) for b, o, m in zip(self.site_bytes, c.owned_bytes, c.mem_bytes)]

    def plan_bytes(self, plan: torch.Tensor, site_bytes: list[float] | None = None) -> float:
        """Saved activation bytes of `plan`: Σ bytes of its stored sites, counted in `site_bytes`
        where given (the budget loop's `peak_site_bytes`), else in the measured site bytes."""
        stored = _on_device(plan).tolist()
        return float(sum(b for b, s in zip(site_bytes or self.site_bytes, stored) if s))

    # ------------------------------------------------------------------------- records, checkpoints
    def record(self, out: dict) -> dict:
        """The gate fields of a `kind: train` metrics record of the step `out` describes."""
        probs = self.gates.probs().detach().cpu().tolist()
        stored = _on_device(out["plan"]).cpu().tolist()
        extra = {}
        if self.gates.arms == 3:
            extra = {"n_offloaded": int((out["plan"][:, 2] > 0.5).sum()),
                     **{k: v for k, v in self.strategy.host_stats().items() if v is not None}}
        return {**extra,
            "tau": float(self.gates.tau),
            "resource_loss": out["resource_t"].item(),
            "mem_frac": out["mem_t"].item(),
            "recompute_frac": out["time_t"].item(),
            "n_stored": int(sum(stored)),
            "gates": {lab: {"p_store": p, "stored": bool(s)}
                      for lab, p, s in zip(self.labels, probs, stored)},
        }

    def final_plan(self) -> dict:
        stored = [bool(v) for v in self.gates.hard().cpu().tolist()]
        off = self.gates.hard_offload()
        offloaded = [False] * len(stored) if off is None else [bool(v) for v in off.tolist()]
        on_dev = [s and not o for s, o in zip(stored, offloaded)]
        out = {"stored": stored, "n_stored": sum(stored),
               "saved_activation_bytes": self.plan_bytes(torch.tensor(on_dev, dtype=torch.float32))}
        if off is not None:
            out["offloaded"] = offloaded
            out["offloaded_bytes"] = float(sum(b for b, o in zip(self.site_bytes, offloaded) if o))
        return out

    def state_dict(self) -> dict:
        """The checkpoint's gate entries (the bank carries its generator: a resumed run draws the
        same samples)."""
        return {"gates": self.gates.state_dict(), "gate_optimizer": self.optimizer.state_dict(),
                "lam": self.lam, "other_bytes": self.budget.other_bytes if self.budget is not None else 0.0,
                "link_scale": self.link_scale, "link_checks_left": self.link_checks_left}

    def load_state_dict(self, state: dict) -> None:
        self.gates.load_state_dict(state["gates"])
        self.optimizer.load_state_dict(state["gate_optimizer"])
        self.lam = state["lam"]
        if self.budget is not None:
            self.budget.other_bytes = state.get("other_bytes", 0.0)
        # the link as the run last re-planned on it (the checkpoint's costs hold the measured one)
        self.link_scale = state.get("link_scale", 1.0)
        self.link_checks_left = min(self.link_checks_left, state.get("link_checks_left", LINK_CHECKS))
        self._apply_link_scale()


def _on_device(plan: torch.Tensor) -> torch.Tensor:
    """(n_sites,) bool: the sites a plan keeps on the device (two arms: stored; three: the store
    column of the one-hot rows)."""
    plan = plan.detach()
    return plan[:, 0] > 0.5 if plan.dim() == 2 else plan > 0.5


# the checkpoint's gate entries of a run without gates
NO_GATES_STATE = {"gates": None, "gate_optimizer": None, "lam": None, "other_bytes": 0.0}
