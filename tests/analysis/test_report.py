"""Text the paper's macros are made of (drat.analysis.report): intervals only where they mean one."""

import json
from pathlib import Path

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


def test_paper_figures_carry_no_provenance_footer(tmp_path):
    """The PDF that the paper includes shows data only; the PNG (a quick look) and the sidecar
    JSON carry the devices, torch versions and commits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drat.analysis.report import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    texts_at_save = {}
    real_savefig = fig.savefig

    def savefig(path, **kw):
        texts_at_save[Path(path).suffix] = [t.get_text() for t in fig.texts]
        return real_savefig(path, **kw)

    fig.savefig = savefig
    prov = {"device": ["GPU-X"], "torch_version": ["9.9"], "git_commit": ["c" * 40]}
    save_figure(fig, "f", tmp_path, prov, ["tables/x.csv"])
    assert texts_at_save[".pdf"] == []
    assert any("GPU-X" in t and "cccccccccc" in t for t in texts_at_save[".png"])
    side = json.loads((tmp_path / "f.json").read_text())
    assert side["data_provenance"] == prov and (tmp_path / "f.pdf").stat().st_size > 0
