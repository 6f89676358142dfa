import json
import subprocess
import sys

import pytest

from drat.cli import main


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["none", "full", "selective", "sac", "drat"])
def test_profile_json_contract(capsys, strategy):
    rc, out, _ = run_cli(capsys, "profile", "--size", "tiny", "--strategy", strategy, "--device", "cpu",
                         "--seq-len", "16", "--batch-size", "2", "--vocab-size", "512", "--json")
    assert rc == 0
    d = json.loads(out)
    assert isinstance(d["saved_activation_bytes"], int) and d["saved_activation_bytes"] > 0
    assert d["strategy"] == strategy and d["torch_version"] and d["device"].startswith("cpu")
    assert {"layer", "site", "decision", "bytes"} <= set(d["sites"][0])
    assert len(d["sites"]) == 4 * 8 + 3
    # the token ids and targets held for backward (B·S int64 each): in the total, and reported apart
    assert d["input_bytes"] == 2 * 2 * 16 * 8 < d["saved_activation_bytes"]


@pytest.mark.slow
def test_profile_drat_lambda_and_budget(capsys):
    common = ["profile", "--strategy", "drat", "--seq-len", "16", "--vocab-size", "512", "--json"]
    rc, out, _ = run_cli(capsys, *common, "--lambda", "0")
    none = json.loads(out)
    assert rc == 0 and all(s["decision"] == "store" for s in none["sites"])
    rc, out, _ = run_cli(capsys, *common, "--lambda", "5")
    heavy = json.loads(out)
    assert heavy["saved_activation_bytes"] < none["saved_activation_bytes"]
    floor = heavy["model_state_bytes"] / 2**30
    budget = floor + 0.5 * none["saved_activation_bytes"] / 2**30
    rc, out, _ = run_cli(capsys, *common, "--budget-gib", str(budget))
    d = json.loads(out)
    assert rc == 0 and d["plan"]["planned_activation_bytes"] <= 0.5 * none["saved_activation_bytes"]


@pytest.mark.parametrize("argv, message", [
    (["--size", "huge"], "unknown model size"),
    (["--strategy", "magic"], "unknown strategy"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--strategy", "drat", "--budget-gib", "0.001"], "below the feasible floor"),
])
def test_profile_bad_input_is_one_line_and_exit_2(capsys, argv, message, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, out, err = run_cli(capsys, "profile", *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_console_script_runs():
    p = subprocess.run([sys.executable, "-m", "drat.cli", "profile", "--size", "huge"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown model size" in p.stderr


@pytest.mark.parametrize("argv, message", [
    (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["eval"], "the following arguments are required: --ckpt"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["bench", "frontier", "--out", "x", "--lambdas", "0.1,inf"], "argument --lambdas"),
])
def test_every_parser_error_is_one_line_and_exit_2(capsys, argv, message):
    """argparse's own errors follow the convention too: no usage block, `drat: error:` and status 2."""
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("drat: error: ")
    assert message in err


def test_help_exits_0(capsys):
    rc, out, _ = run_cli(capsys, "train", "--help")
    assert rc == 0 and "--allow-unverified" in out
