"""`drat profile`: plans named by the run-name grammar, the shared cost table, CPU timing, --out."""

from __future__ import annotations

import json

import pytest

from drat.bench.profile import ProfileArgs, resolve_plan
from drat.cli import main
from drat.runs import RunName

FLAGS = ["profile", "--size", "tiny", "--seq-len", "16", "--batch-size", "2", "--vocab-size", "512",
         "--steps", "1", "--warmup", "0", "--cost-model", "activation_size"]


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_plans_by_point_or_by_strategy():
    assert resolve_plan(ProfileArgs(point="sac")) == RunName("sac")
    assert resolve_plan(ProfileArgs(point="drat-lam0.05")) == RunName("drat", lam=0.05)
    assert resolve_plan(ProfileArgs(point="oracle-budget6")) == RunName("oracle", budget_gib=6.0)
    assert resolve_plan(ProfileArgs(strategy="oracle", budget_gib=6)) == RunName("oracle", budget_gib=6.0)
    assert resolve_plan(ProfileArgs(strategy="drat")) == RunName("drat", lam=0.05)  # the default λ
    assert resolve_plan(ProfileArgs()) == RunName("none")
    with pytest.raises(ValueError, match="unknown run name 'drat-0.05'"):
        resolve_plan(ProfileArgs(point="drat-0.05"))
    with pytest.raises(ValueError, match="--point names its λ"):
        resolve_plan(ProfileArgs(point="drat-lam0.5", lam=0.5))
    with pytest.raises(ValueError, match="apply to --strategy drat or oracle only"):
        resolve_plan(ProfileArgs(strategy="full", lam=0.5))


def test_a_point_writes_the_pipeline_json_with_cpu_step_times(capsys, tmp_path):
    dest = tmp_path / "deep" / "sac.json"
    rc, out, err = run_cli(capsys, *FLAGS, "--steps", "3", "--point", "sac", "--out", str(dest))
    assert rc == 0 and "sac:" in out and f"-> {dest}" in out and "timing 3 training steps" in err
    d = json.loads(dest.read_text())
    names = (d["point"], d["kind"], d["strategy"], d["lam"], d["budget_gib"])
    assert names == ("sac", "baseline", "sac", None, None)
    assert len(d["step_ms_all"]) == 3 and d["step_ms"] > 0 and d["tokens_per_s"] > 0  # timed on the CPU
    assert d["saved_activation_bytes"] > 0 and "git_commit" in d and d["plan"] is None
    assert not list(dest.parent.glob("*.tmp"))  # written through a temporary file, then renamed


def test_drat_and_oracle_points_plan_on_one_shared_cost_table(capsys, tmp_path):
    """`--costs-only` writes the table; drat and oracle points given it plan on it exactly (the
    oracle's objective is then a true lower bound of the gates' on the same problem), and a table
    of another setting is refused in one line, before anything is written."""
    table = tmp_path / "costs.json"
    rc, out, _ = run_cli(capsys, *FLAGS, "--costs-only", "--out", str(table))
    assert rc == 0 and json.loads(out)["sites"] > 0
    d = json.loads(table.read_text())
    assert len(d["costs"]["labels"]) == len(d["costs"]["mem_bytes"]) > 0 and "git_commit" in d
    plans = {}
    for point in ("drat-lam0.5", "oracle-lam0.5"):
        dest = tmp_path / f"{point}.json"
        rc, _, _ = run_cli(capsys, *FLAGS, "--point", point, "--costs", str(table), "--out", str(dest))
        assert rc == 0
        prof = json.loads(dest.read_text())
        plans[point] = prof["plan"]
        assert prof["plan"]["costs_file"] == str(table) and prof["point"] == point
    assert json.loads((tmp_path / "oracle-lam0.5.json").read_text())["strategy"] == "fixed"
    assert plans["oracle-lam0.5"]["objective"] <= plans["drat-lam0.5"]["objective"] + 1e-12
    other = [*FLAGS[:6], "4", *FLAGS[7:]]  # batch 4 instead of 2
    dest = tmp_path / "x.json"
    rc, out, err = run_cli(capsys, *other, "--point", "drat-lam0.5", "--costs", str(table),
                           "--out", str(dest))
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "another setting (batch_size differ); measure it again with --costs-only" in err
    assert not dest.exists()


@pytest.mark.parametrize("argv, message", [
    (["--point", "drat-0.05"], "unknown run name"),
    (["--point", "sac", "--strategy", "sac"], "give --point or --strategy, not both"),
    (["--strategy", "magic"], "unknown strategy"),
    (["--costs-only"], "--costs-only needs --out FILE"),
    (["--costs-only", "--point", "none", "--out", "x.json"], "no plan and no --costs"),
    (["--point", "drat-lam0.5", "--costs", "nowhere.json"], "cannot read the cost table"),
    (["--steps", "-1"], "argument --steps: must be a non-negative integer, got '-1'"),
    (["--costs-only", "--size", "huge", "--out", "c.json"], "unknown model size"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, *FLAGS, *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []
