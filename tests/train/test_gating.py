"""λ has one owner while a run trains (drat.train.gating), and the budget arithmetic both closed
loops share (drat.budget.PeakBudget): the bench's offline re-planning and training's dual ascent."""

import json

import pytest
import torch

from drat.budget import PeakBudget
from drat.gates import BudgetInfeasibleError, dual_ascent, fit_gates
from drat.measure import build_costs
from drat.train import DEFAULT_LAMBDA, ResourceAwareTrainer, TrainingConfig
from drat.train.gating import configured_lam

from ..conftest import make_batch, make_model
from .test_trainer import records, run, small_cfg

GIB = 2**30


def test_peak_budget_moves_the_activation_share_by_the_measured_excess():
    b = PeakBudget(1.0, base_bytes=0.25 * GIB)
    assert b.act_bytes == 0.75 * GIB  # before anything ran: the budget less the model states
    # a plan counted to keep 0.5 GiB peaked at 1.1 GiB: 0.6 GiB were something else
    assert b.close(1.1 * GIB, 0.5 * GIB) == pytest.approx(0.4 * GIB)
    assert b.close(0.7 * GIB, 0.5 * GIB) == pytest.approx(0.8 * GIB)  # not ratcheted: it grows back
    aiming = PeakBudget(1.0, base_bytes=0.25 * GIB, margin_frac=0.005)
    assert aiming.close(1.1 * GIB, 0.5 * GIB) == pytest.approx(0.395 * GIB)
    ratchet = PeakBudget(1.0, base_bytes=0.25 * GIB, ratchet=True)
    ratchet.close(1.1 * GIB, 0.5 * GIB)
    assert ratchet.close(0.7 * GIB, 0.5 * GIB) == pytest.approx(0.4 * GIB)  # a lean step loosens nothing
    assert ratchet.other_bytes == pytest.approx(0.6 * GIB)
    assert ratchet.close(2.0 * GIB, 0.0) < 0  # the excess alone exceeds the budget
    with pytest.raises(BudgetInfeasibleError, match="below the feasible floor"):
        PeakBudget(0.1, base_bytes=0.25 * GIB)


def test_dual_ascent_is_a_step_and_holds_no_lambda():
    assert dual_ascent(0.5, mem_frac=0.6, budget_frac=0.4) == pytest.approx(0.5 + 2.0 * 0.2)
    assert dual_ascent(0.1, mem_frac=0.2, budget_frac=0.9) == 0.0  # λ >= 0


def test_a_budget_fit_reports_the_lambda_it_ended_at():
    model = make_model(n_layer=2)
    idx, tgt = make_batch()
    costs = build_costs(model, idx, tgt, "activation_size")
    act = 0.5 * costs.total_bytes
    fit = fit_gates(costs, budget_act_bytes=act, steps=50)
    last = fit.history[-1]
    assert fit.lam == dual_ascent(last["lam"], last["mem_frac"], act / costs.total_bytes)
    assert fit_gates(costs, lam=0.3, steps=5).lam == 0.3


def test_the_config_asks_for_lambda_and_the_run_holds_it(tmp_path, tokenizer_path):
    assert configured_lam(TrainingConfig(strategy="drat")) == DEFAULT_LAMBDA
    assert configured_lam(TrainingConfig(strategy="drat", lam=0.2)) == 0.2
    assert configured_lam(TrainingConfig(strategy="drat", budget_gib=4.0)) == 0.0
    assert configured_lam(TrainingConfig(strategy="none")) is None

    probe = ResourceAwareTrainer(small_cfg(tmp_path / "probe", tokenizer_path, steps=1, strategy="none"))
    budget_gib = (probe.model.num_params() * 16 + 0.4 * sum(probe.site_bytes)) / GIB
    probe.close()
    cfg = small_cfg(tmp_path / "b", tokenizer_path, steps=4, budget_gib=budget_gib, ckpt_every=0)
    trainer = ResourceAwareTrainer(cfg)
    try:
        start = trainer.gating.lam  # where the warm-start fit left it
        summary = trainer.train()
        lams = [r["lam"] for r in records(tmp_path / "b")]
        assert lams[0] == start  # each record: the λ its step priced memory at
        assert summary["lam"] == trainer.gating.lam  # the λ after the last step's dual ascent
    finally:
        trainer.close()
    assert cfg.lam is None and cfg.budget_gib == budget_gib  # the config is input only
    assert not hasattr(trainer, "lam") and not hasattr(trainer, "dual")
    state = torch.load(tmp_path / "b" / "checkpoints" / "ckpt_0000004.pt", weights_only=True)
    assert state["lam"] == summary["lam"]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["derived"]["lam"] == 0.0


def test_a_run_without_gates_has_no_lambda(tmp_path, tokenizer_path):
    summary = run(small_cfg(tmp_path / "n", tokenizer_path, steps=2, strategy="none", ckpt_every=0))
    assert summary["lam"] is None and all(r["lam"] is None for r in records(tmp_path / "n"))
    assert json.loads((tmp_path / "n" / "config.json").read_text())["derived"]["lam"] is None
