"""Training with the offload arm: the losses of `none`, a bitwise resume, the transfer fields of
the metrics, and the refusals of settings the arm does not support."""

import pytest

from drat.train import TrainingError

from .test_trainer import TIMING_KEYS, records, run, small_cfg


def test_three_arm_training_writes_the_losses_of_store_all_and_resumes_bitwise(tmp_path, tokenizer_path):
    run(small_cfg(tmp_path / "none", tokenizer_path, strategy="none", grad_accum=2))
    # layer_weighted costs price a site's bytes at most 1, so moving them over the link is nearly
    # free and every priced site goes to host memory
    three = dict(arms=3, lam=1.0, grad_accum=2, cost_model="layer_weighted")
    run(small_cfg(tmp_path / "straight", tokenizer_path, **three))
    ref, got = records(tmp_path / "none"), records(tmp_path / "straight")
    assert [r["loss"] for r in got] == [r["loss"] for r in ref]  # exact: offloading is a copy
    assert all(r["n_offloaded"] > 0 and r["d2h_bytes"] > 0 and r["link_utilisation"] > 0 for r in got)
    assert got[-1]["host_pinned_bytes"] == got[1]["host_pinned_bytes"]  # the pool is reused, not grown

    split = small_cfg(tmp_path / "split", tokenizer_path, **three)
    run(split, stop_after=3)
    run(split, resume="latest")
    for a, b in zip(got, records(tmp_path / "split")):
        skip = TIMING_KEYS | {"host_pinned_bytes", "host_allocs", "host_peak_in_use_bytes",
                              "link_utilisation"}
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


@pytest.mark.parametrize("kw, msg", [
    (dict(strategy="full", arms=3), "strategy drat only"),
    (dict(arms=4), "arms"),
])
def test_unsupported_three_arm_settings_are_refused(tmp_path, tokenizer_path, kw, msg):
    with pytest.raises(TrainingError, match=msg):
        small_cfg(tmp_path / "x", tokenizer_path, **kw)


def _gating(tmp_path, tokenizer_path, tight: float):
    """Three-arm gates on a 2-layer site graph with a link that waits (`tight` > 1: slower), as
    a CUDA run would hold them (the check runs on CUDA only; here it is driven by hand)."""
    import logging
    import random

    import torch

    from drat.costs import SiteCosts
    from drat.sites import SiteGraph
    from drat.train.distributed import Dist
    from drat.train.gating import GateTraining

    cfg = small_cfg(tmp_path, tokenizer_path, arms=3, lam=2.0)
    g = SiteGraph(2, 2)
    rng = random.Random(0)
    costs = SiteCosts.build(g, [rng.uniform(1, 100) for _ in g.keys], [rng.uniform(0.05, 1) for _ in g.keys],
                            step_ms=10.0, kind="synthetic")
    bw = 50 / (1e6 * tight)
    costs.link = {"d2h_gbps": bw, "h2d_gbps": bw, "copy_overhead_ms": 0.0}
    gt = GateTraining(cfg, [k.label() for k in g.keys], 1e3, Dist(), torch.device("cpu"),
                      logging.getLogger("t"))
    gt.set_costs(costs, list(costs.mem_bytes))
    gt.warm_start()
    return gt


def test_a_link_that_waits_more_than_predicted_is_replanned_and_the_scale_survives_a_resume(tmp_path,
                                                                                             tokenizer_path):
    from drat.costs import predicted_wait_ms

    gt = _gating(tmp_path / "a", tokenizer_path, tight=0.3)
    plan = [bool(v) for v in gt.gates.hard_offload().tolist()]
    assert any(plan)
    pred = predicted_wait_ms(plan, gt.costs)
    # measured as predicted (within 2% of the step): nothing changes
    rec = gt.check_link([(plan, pred + 0.1)] * 6, step=7)
    assert rec["kind"] == "replan" and not rec["replanned"] and gt.link_scale == 1.0
    # the link waits 3 ms a step more than the model says: re-planned on a slower link
    rec = gt.check_link([(plan, pred + 3.0)] * 6, step=13)
    assert rec["replanned"] and gt.link_scale < 1.0 and rec["n_offloaded_after"] <= rec["n_offloaded_before"]
    assert predicted_wait_ms(plan, gt.costs) == pytest.approx(pred + 3.0, rel=1e-4)
    # a resumed run prices the same slower link (set_costs gets the measured costs after the state)
    again = _gating(tmp_path / "b", tokenizer_path, tight=0.3)
    again.load_state_dict(gt.state_dict())
    again.set_costs(gt._measured_costs, gt.site_bytes)
    assert again.link_scale == gt.link_scale and again.costs.link == gt.costs.link
    assert again.link_checks_left == gt.link_checks_left


def test_the_cpu_offloader_measures_no_waits():
    import torch

    from drat.offload import Offloader

    off = Offloader(torch.device("cpu"))
    off.time_waits = True
    ref = off.offload(torch.arange(8.0), group=0)
    off.end_forward()
    assert torch.equal(off.get(ref), torch.arange(8.0)) and off.pop_wait_ms() == 0.0


def test_the_link_check_reads_one_window_per_forward_and_backward(tmp_path, tokenizer_path):
    """observe_link skips the first step, checks after six more, and divides the waits of a step by
    its micro-batches (the prediction is per forward and backward)."""
    import torch

    from drat.costs import predicted_wait_ms
    from drat.train.gating import LINK_WINDOW

    gt = _gating(tmp_path / "a", tokenizer_path, tight=0.3)
    gt.cfg.grad_accum = 2
    off = [bool(v) for v in gt.gates.hard_offload().tolist()]
    pred = predicted_wait_ms(off, gt.costs)
    arm = [2 if o else 0 if s else 1 for s, o in zip(gt.gates.hard().tolist(), off)]
    plan = torch.nn.functional.one_hot(torch.tensor(arm), 3).float()  # [n_sites, 3]

    class Waits:  # what the CUDA offloader's events would report: two micro-batches' waits
        time_waits = False

        def pop_wait_ms(self):
            return 2 * (pred + 0.05)

    gt.strategy.offloader, gt.link_checks_left = Waits(), 2
    recs = [gt.observe_link(plan, step) for step in range(LINK_WINDOW + 1)]
    assert recs[:-1] == [None] * LINK_WINDOW and gt.strategy.offloader.time_waits
    assert recs[-1]["measured_wait_ms"] == pytest.approx(pred + 0.05) and not recs[-1]["replanned"]
    assert gt.link_checks_left == 1


def test_the_gates_prefetch_as_far_as_their_plan_needs_and_again_after_a_replan(tmp_path, tokenizer_path):
    """The trainer's offloader prefetches as far ahead as the gates' deterministic plan needs on
    the link they are priced on, and re-plans the distance with the plan."""
    from drat.costs import plan_prefetch_blocks, predicted_wait_ms

    gt = _gating(tmp_path, tokenizer_path, tight=0.3)
    plan = [bool(v) for v in gt.gates.hard_offload().tolist()]
    assert any(plan) and gt.plan_prefetch() == plan_prefetch_blocks(plan, gt.costs) == 1
    # gates that offload block 0, a backward twice the forward, and reloads slower than one block
    # of it: they start earlier
    import torch

    logits = gt.gates.logits.data.clone()
    early = [lb.startswith("L0.") for lb in gt.labels]
    gt.gates.logits.data.copy_(torch.tensor([[0.0, 0.0, 3.0] if e else [3.0, 0.0, 0.0] for e in early]))
    step_ms, gt.costs.step_ms = gt.costs.step_ms, 3 * sum(gt.costs.time_ms)
    gt.costs.link["h2d_gbps"] /= 8
    d = gt.plan_prefetch()
    assert d > 1 and d == plan_prefetch_blocks(early, gt.costs) == gt.strategy.prefetch_blocks
    gt.costs.link["h2d_gbps"] *= 8
    gt.costs.step_ms = step_ms
    gt.gates.logits.data.copy_(logits)
    rec = gt.check_link([(plan, predicted_wait_ms(plan, gt.costs) + 3.0)] * 6, step=7)
    after = [bool(v) for v in gt.gates.hard_offload().tolist()]
    assert rec["replanned"] and gt.strategy.prefetch_blocks == plan_prefetch_blocks(after, gt.costs)
