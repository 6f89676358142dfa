"""What `drat train` and `drat eval` say while they work, also when their output is not a terminal
(a log file, a batch job), and what a resume of a finished run says."""

import json
import logging

import pytest

import drat.train.inference as inference
import drat.train.metrics as metrics
from drat.train.run_folder import setup_logging

from .test_trainer import CORPUS_BYTES, cli, records, run, small_cfg


def train_flags(tokenizer_path, out, *extra):
    return ["train", "--corpus", "stdlib", "--max-corpus-bytes", CORPUS_BYTES, "--tokenizer", tokenizer_path,
            "--layers", 2, "--hidden", 32, "--heads", 4, "--seq-len", 32, "--batch-size", 4,
            "--device", "cpu", "--eval-batches", 1, "--no-tensorboard", "--out", out, *extra]


def test_training_without_a_terminal_logs_progress_between_log_records(tmp_path, tokenizer_path, capsys,
                                                                        monkeypatch):
    """With no progress bar (stderr is not a terminal under pytest), a line with step, loss, tokens/s
    and elapsed time comes at least every PROGRESS_EVERY_S seconds, on the console and in train.log,
    however far apart log_every puts the step lines. (The interval is 0 here: every step is due.)"""
    monkeypatch.setattr(metrics, "PROGRESS_EVERY_S", 0.0)
    out = tmp_path / "r"
    rc, stdout, err = cli(capsys, *train_flags(tokenizer_path, out, "--steps", 4, "--log-every", 100,
                                               "--eval-every", 100))
    assert rc == 0 and json.loads(stdout)["step"] == 4
    progress = [line for line in err.splitlines() if "tok/s" in line and "s elapsed" in line]
    assert [line.split("step ")[1].split(":")[0] for line in progress] == ["1/4", "2/4", "3/4"]
    assert all("loss " in line for line in progress)
    log = (out / "train.log").read_text()
    assert all(line.split(" ", 1)[1] in log for line in progress)  # the same lines, after the time stamp
    assert "step 4: loss" in log  # the last step has its step line, not a progress line


def test_progress_stays_out_of_the_console_while_a_bar_shows_it(tmp_path):
    log, handlers = setup_logging(tmp_path, "drat.train.test-console", rank=0)
    try:
        console = [h for h in handlers if not isinstance(h, logging.FileHandler)]
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "progress", None, None)
        assert all(h.filter(record) for h in console)
        record.console = False  # what train() passes while the bar is on
        assert not any(h.filter(record) for h in console)
        log.info("only in the file", extra={"console": False})
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
    assert "only in the file" in (tmp_path / "train.log").read_text()


def test_eval_shows_the_batches_of_each_split_without_a_terminal(tmp_path, tokenizer_path, capsys,
                                                                 monkeypatch):
    run(small_cfg(tmp_path / "r", tokenizer_path, steps=2, ckpt_every=0))
    monkeypatch.setattr(inference, "EVAL_PROGRESS_EVERY_S", 0.0)
    rc, stdout, err = cli(capsys, "eval", "--ckpt", tmp_path / "r" / "checkpoints" / "ckpt_0000002.pt",
                          "--max-batches", 3)
    res = json.loads(stdout)  # stdout stays one JSON object
    assert rc == 0 and res["step"] == 2
    for split in ("val", "test"):
        said = [line for line in err.splitlines() if line.startswith(f"eval {split}: ")]
        n = int(said[-1].split(": ")[1].split(" batches, loss ")[0])  # the split's last line: its total
        assert 1 <= n <= 3 and said[0].startswith(f"eval {split}: 1/{n} batches")
        assert said[-2].startswith(f"eval {split}: {n}/{n} batches")
        assert said[-1].startswith(f"eval {split}: {n} batches, loss {res[split]['loss']:.4f}")


def test_resuming_a_finished_run_says_so_and_leaves_it_alone(tmp_path, tokenizer_path, capsys):
    cfg = small_cfg(tmp_path / "r", tokenizer_path, steps=3, ckpt_every=0)
    run(cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.json*")}
    rc, stdout, err = cli(capsys, "train", "--out", tmp_path / "r", "--resume")
    assert rc == 0 and json.loads(stdout)["step"] == 3
    said = [line for line in err.splitlines() if "nothing to do" in line]
    assert len(said) == 1
    assert said[0].endswith(f"run in {tmp_path / 'r'} already finished at step 3; nothing to do")
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.json*")} == before  # metrics, summary
    assert [r["step"] for r in records(tmp_path / "r")] == [1, 2, 3]
    assert "nothing to do" in (tmp_path / "r" / "train.log").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--config-json", "{steps: 3"], "--config-json is not valid JSON"),
    (["--config-json", "[1, 2]"], "--config-json must hold a mapping"),
    (["--threads", "0"], "argument --threads: must be a positive integer, got '0'"),
])
def test_bad_train_flags_are_one_line_and_exit_2(tmp_path, tokenizer_path, capsys, flags, message):
    rc, stdout, err = cli(capsys, *train_flags(tokenizer_path, tmp_path / "o", "--steps", 1, *flags))
    assert rc == 2 and stdout == "" and err.splitlines()[-1].startswith("drat: error: ")
    assert message in err.splitlines()[-1]
