"""Text the paper's macros are made of (drat.analysis.report): intervals only where they mean one."""

from drat.analysis.report import ci_phrase
from drat.analysis.stats import MIN_CI_SEEDS


def test_ci_phrase_draws_an_interval_only_where_the_stats_did():
    five = {"m": 0.2, "m_lo": 0.1, "m_hi": 0.3, "m_seeds": "0.1;0.2;0.3;0.25;0.15"}
    assert ci_phrase("95", five, "m") == "(95\\% CI [10.0, 30.0]\\%)"
    # fewer seeds: the stats leave the interval out, and the text gives every seed's value
    three = {"m": 1.2, "m_lo": "", "m_hi": "", "m_seeds": "1.15;1.27;1.139"}
    assert ci_phrase("95", three, "m", shift=-1.0) == \
        f"(per seed: 15.0, 27.0, 13.9\\%; no interval under {MIN_CI_SEEDS} seeds)"
    assert ci_phrase("95", {}, "m") == ""


def test_a_degenerate_interval_is_not_called_a_confidence_interval():
    """Every seed equal (a plan that stores everything reduces nothing in each): the bootstrap's
    [x, x] is no CI, and the text says the seeds agree instead."""
    same = {"m": 6e-5, "m_lo": 6e-5, "m_hi": 6e-5, "m_seeds": "6e-05;6e-05;6e-05"}
    assert ci_phrase("95", same, "m") == "(the same in each of the 3 seeds)"
