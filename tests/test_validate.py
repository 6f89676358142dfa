"""drat.validate: one set of rules for every command's flags and every config field. Every command,
given a bad value of each kind its flags can take, prints one line `drat: error: ...`, exits 2 and
writes nothing."""

import argparse
import json
import os
from pathlib import Path

import pytest

from drat.cli import build_parser, main
from drat.train import TrainingConfig, TrainingError
from drat.validate import (
    FRACTION,
    NONNEG,
    OUT_DIR,
    OUT_FILE,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    InputError,
    Number,
    NumberList,
    out_path_problem,
)

# A valid invocation of every command that writes or reads, less the flag under test: each case
# below changes one flag of it. `{tmp}` is the test's folder (and the working directory).
COMMANDS = {
    "train": ["train", "--out", "{tmp}/run"],
    "eval": ["eval", "--ckpt", "{tmp}/ckpt.pt"],
    "generate": ["generate", "--ckpt", "{tmp}/ckpt.pt"],
    "tokenizer train": ["tokenizer", "train", "--corpus", "stdlib", "--out", "{tmp}/tok.json"],
    "profile": ["profile", "--out", "{tmp}/profile.json"],
    "bench frontier": ["bench", "frontier", "--out", "{tmp}/bench"],
    "bench capacity": ["bench", "capacity", "--out", "{tmp}/bench"],
    "bench trace": ["bench", "trace", "--out", "{tmp}/bench"],
    "bench exactness": ["bench", "exactness", "--out", "{tmp}/bench"],
    "bench offload": ["bench", "offload", "--out", "{tmp}/bench"],
    "bench planners": ["bench", "planners", "--costs", "{tmp}/costs.json", "--out", "{tmp}/bench"],
    "bench adapt": ["bench", "adapt", "--seq-lens", "16,32", "--out", "{tmp}/bench"],
    "data pin": ["data", "pin", "--corpus", "stdlib", "--out", "{tmp}/corpus.json"],
    "data tokenize": ["data", "tokenize", "--corpus", "stdlib", "--pinned", "{tmp}/corpus.json",
                      "--tokenizer", "{tmp}/tok.json", "--out", "{tmp}/tokens"],
}


def _leaf_parsers(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_parsers(sub, (*path, name))
    if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        yield " ".join(path), parser


LEAVES = dict(_leaf_parsers(build_parser()))


def _bad_numbers(rule: Number) -> list[str]:
    """Values the rule refuses: not finite, not a number, below its low bound, above its high one."""
    bad = ["nan", "inf", "-inf", "two"]
    if rule.kind is int:
        bad.append("1.5")
    if rule.low is not None:
        bad.append(f"{rule.low:g}" if rule.low_open else f"{rule.low - 1:g}")
    if rule.high is not None:
        bad.append(f"{rule.high:g}" if rule.high_open else str(int(rule.high) + 1))
    return bad


def _unwritable(tmp: Path) -> Path:
    """A folder nobody may write in: a read-only one of ours, or where root cannot write either."""
    if os.geteuid() != 0:
        d = tmp / "locked"
        d.mkdir()
        d.chmod(0o500)
        return d
    for candidate in (Path("/proc/1"), Path("/sys/kernel")):
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("no folder here is unwritable for root")


def _cases():
    """(command, flag, value) for every flag with a rule of every command, and every bad value."""
    cases = []
    for command, parser in LEAVES.items():
        for action in parser._actions:
            if not action.option_strings:
                continue
            flag, rule = action.option_strings[0], action.type
            if isinstance(rule, Number):
                cases += [(command, flag, v) for v in _bad_numbers(rule)]
            elif isinstance(rule, NumberList):
                cases += [(command, flag, f"0.5,{v}") for v in _bad_numbers(rule.rule) if v != "two"]
            elif rule in (OUT_DIR, OUT_FILE):  # an existing file is a file output's to replace
                cases += [(command, flag, "<a file>" if rule is OUT_DIR else "<a folder>")]
                cases += [(command, flag, kind) for kind in ("<below a file>", "<unwritable>")]
    return cases


def _snapshot(root: Path) -> dict:
    """Every file and folder below `root`: kind, size and mtime."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0,
                                       p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def run_cli(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_refused(rc, out, err, *needles):
    assert rc == 2 and out == "", (rc, out, err)
    assert err.count("\n") == 1 and err.startswith("drat: error: "), err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("command, flag, value", _cases())
def test_every_command_refuses_every_bad_value_in_one_line_and_writes_nothing(
        tmp_path, monkeypatch, capsys, command, flag, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    paths = {"<a file>": tmp_path / "a_file", "<below a file>": tmp_path / "a_file" / "sub",
             "<a folder>": tmp_path, "<unwritable>": lambda: _unwritable(tmp_path) / "out"}
    if value in paths:
        value = paths[value]() if callable(paths[value]) else paths[value]
    before = _snapshot(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    argv = [a for i, a in enumerate(argv) if not (a == flag or (i and argv[i - 1] == flag))]  # replaced below
    rc, out, err = run_cli(capsys, [*argv, f"{flag}={value}"])
    assert_refused(rc, out, err, f"argument {flag}")
    assert _snapshot(tmp_path) == before


def test_the_table_covers_every_command_and_every_numeric_or_output_flag():
    """A new command or flag cannot slip past the rules: every leaf command is in COMMANDS, no flag
    parses with a bare int or float, and every output path has a path rule."""
    assert set(LEAVES) == set(COMMANDS)
    for command, parser in LEAVES.items():
        for action in parser._actions:
            assert action.type not in (int, float), f"drat {command} {action.option_strings}: no rule"
            if action.dest in ("out", "prepare_only"):
                assert action.type in (OUT_DIR, OUT_FILE), f"drat {command} {action.option_strings}"
    flags = {(c, f) for c, f, _ in _cases()}
    for must in [("train", "--heads"), ("train", "--layers"), ("train", "--lambda"), ("train", "--lr"),
                 ("profile", "--vocab-size"), ("profile", "--lambda"), ("eval", "--max-batches"),
                 ("generate", "--top-k"), ("bench frontier", "--lambdas"), ("data pin", "--out")]:
        assert must in flags


def test_one_rule_for_a_flag_everywhere(capsys):
    """`--lambda -1` is refused by `profile` exactly as by `train` (the same rule, the same words)."""
    errs = []
    for argv in (["train", "--out", "x", "--lambda=-1"], ["profile", "--lambda=-1"]):
        rc, out, err = run_cli(capsys, argv)
        assert_refused(rc, out, err)
        errs.append(err)
    assert errs[0] == errs[1] == "drat: error: argument --lambda: must be a finite number >= 0, got '-1'\n"


@pytest.mark.parametrize("text, message", [
    ("steps: two\n", "training field steps must be an integer, got 'two' (str)"),
    ("steps: 2.5\n", "training field steps must be an integer, got 2.5"),
    ("lr: .inf\n", "lr must be a finite number > 0, got inf"),
    ("lam: .nan\n", "lam must be a finite number >= 0, got nan"),
    ("n_layer: -1\n", "n_layer must be a positive integer, got -1"),
    ("n_head: 0\n", "n_head must be a positive integer, got 0"),
    ("n_embd: 30\nn_head: 4\n", "n_embd=30 is not divisible by n_head=4"),
    ("tensorboard: 'yes'\n", "training field tensorboard must be true or false"),
    ("dropout: 1\n", "dropout must be a finite number in [0, 1), got 1"),
    ("corpus: 7\n", "training field corpus must be a string"),
    ("out: a_file\n", "out: a_file exists and is not a folder"),
    ("out: a_file/run\n", "lies below a_file, which is a file"),
])
def test_a_config_file_of_wrong_values_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                                             text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "run.yaml").write_text("corpus: stdlib\n" * ("corpus" not in text) + text)
    before = _snapshot(tmp_path)
    out_flag = [] if "out:" in text else ["--out", "o"]
    rc, out, err = run_cli(capsys, ["train", "--config", "run.yaml", *out_flag])
    assert_refused(rc, out, err, message)
    assert _snapshot(tmp_path) == before


def test_a_yaml_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads `1e-3` as a string; the config loader reads it as YAML 1.2 does."""
    from drat.train.config import load_config_file

    (tmp_path / "c.yaml").write_text("lr: 1e-3\nmin_lr: 5.0e-5\nsteps: 10\nwarmup: 1_0\n")
    fields = load_config_file(tmp_path / "c.yaml")
    assert fields == {"lr": 0.001, "min_lr": 5e-05, "steps": 10, "warmup": 10}
    assert TrainingConfig(**fields).lr == 0.001


def test_inline_json_config_of_a_wrong_type_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, ["train", "--config-json", json.dumps({"grad_accum": "2"}), "--out", "o"])
    assert_refused(rc, out, err, "training field grad_accum must be an integer, got '2' (str)")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the rules themselves
def test_number_rules():
    assert POSITIVE_INT("3") == 3 and POSITIVE.check(0.5, "lr") == 0.5 and FRACTION("0") == 0.0
    assert SEED(str(2**63 - 1)) == 2**63 - 1
    for rule, text in [(POSITIVE_INT, "0"), (POSITIVE_INT, "1e3"), (NONNEG, "nan"), (POSITIVE, "inf"),
                       (FRACTION, "1"), (SEED, "-1"), (SEED, str(2**63))]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got '{text}'"):
            rule(text)
    assert POSITIVE_INT.problem(True) == "must be a positive integer, got True (bool)"
    assert POSITIVE_INT.problem(2.0) == "must be a positive integer, got 2.0"
    with pytest.raises(InputError, match="^--top-k must be a non-negative integer, got -1$"):
        Number(int, low=0).check(-1, "--top-k")
    with pytest.raises(TrainingError):
        NONNEG.check(float("-inf"), "lam", TrainingError)


def test_out_path_rules(tmp_path):
    (tmp_path / "f").write_text("x")
    assert out_path_problem(tmp_path / "new" / "deeper", "dir") is None
    assert out_path_problem(tmp_path / "new.json", "file") is None
    assert "is not a folder" in out_path_problem(tmp_path / "f", "dir")
    assert "is a folder" in out_path_problem(tmp_path, "file")
    assert "which is a file" in out_path_problem(tmp_path / "f" / "x" / "y", "dir")
    assert "no write permission" in out_path_problem(_unwritable(tmp_path) / "x", "file")
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.json").exists()  # looked, wrote nothing


def test_the_python_api_applies_the_same_rules():
    from drat.bench import ProfileArgs, run_profile
    from drat.model import GPTConfig

    with pytest.raises(TrainingError, match="n_head must be a positive integer, got 0"):
        TrainingConfig(n_head=0)
    with pytest.raises(TrainingError, match="lr must be a finite number > 0, got inf"):
        TrainingConfig(lr=float("inf"))
    with pytest.raises(ValueError, match="n_head must be a positive integer, got 0"):
        GPTConfig(n_head=0)
    with pytest.raises(ValueError, match="--vocab-size must be a positive integer, got 0"):
        run_profile(ProfileArgs(vocab_size=0))
    with pytest.raises(ValueError, match="--lambda must be a finite number >= 0, got -1"):
        run_profile(ProfileArgs(strategy="drat", lam=-1))
