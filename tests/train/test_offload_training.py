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
