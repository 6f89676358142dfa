"""What `drat train` (and eval) refuses, and that a refusal touches nothing: every check runs before
the first write. Also: temporary files an interrupted write left are cleared, a checkpoint without
its digest is refused unless allowed unverified, and a run whose loss turns NaN stops."""

import dataclasses
import json
import shutil

import pytest
import torch

from drat.data import load_corpus, train_tokenizer
from drat.train import ResourceAwareTrainer
from drat.train.config import TrainingDiverged

from .conftest import CORPUS_BYTES
from .test_trainer import cli, records, run, small_cfg


def snapshot(root):
    """Every file and folder below `root`: kind, bytes and mtime, to compare before and after."""
    return {str(p.relative_to(root)): (p.is_dir(), p.read_bytes() if p.is_file() else None,
                                       p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1], err
    assert errors[0].startswith("drat: error: "), err
    return errors[0]


def train_args(out, *extra, tokenizer=None, vocab_size=None):
    args = ["train", "--corpus", "stdlib", "--max-corpus-bytes", CORPUS_BYTES, "--layers", 2, "--hidden", 32,
            "--heads", 4, "--seq-len", 32, "--batch-size", 4, "--steps", 4, "--ckpt-every", 2,
            "--device", "cpu", "--eval-batches", 1, "--log-every", 1, "--no-tensorboard", "--out", out]
    if tokenizer is not None:
        args += ["--tokenizer", tokenizer]
    if vocab_size is not None:
        args += ["--vocab-size", vocab_size]
    return [*args, *extra]


@pytest.fixture(scope="module")
def own_tokenizer_run(tmp_path_factory):
    """A run that trained its own tokenizer, stopped at step 2 of 4 (checkpoints at 2)."""
    out = tmp_path_factory.mktemp("runs") / "own"
    cfg = small_cfg(out, "unused", tokenizer=None, vocab_size=300, steps=4, ckpt_every=2)
    run(cfg, stop_after=2)
    return out, cfg


@pytest.fixture
def run_copy(own_tokenizer_run, tmp_path):
    src, _ = own_tokenizer_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst)  # copy2: contents and mtimes
    return dst


def _other_tokenizer(run):
    """The run's tokenizer.json replaced by one with another vocabulary."""
    tok = train_tokenizer(load_corpus("stdlib", max_bytes=CORPUS_BYTES), 320)
    tok.save(run / "tokenizer.json")


def _drop_digest(run):
    (run / "checkpoints" / "ckpt_0000002.pt.sha256").unlink()


def _truncate(run):
    p = run / "checkpoints" / "ckpt_0000002.pt"
    p.write_bytes(p.read_bytes()[:1000])


@pytest.mark.parametrize("damage, flags, message", [
    (_other_tokenizer, [], "was trained with another tokenizer"),
    (None, ["--lr", "0.5"], "cannot resume the run in"),
    (None, ["--seed", "3"], "different config (seed: 0 -> 3)"),
    (_drop_digest, [], "has no ckpt_0000002.pt.sha256 beside it"),
    (_truncate, [], "ckpt_0000002.pt is truncated"),
    (None, ["--tokens", "elsewhere"], "a resumed run keeps its own"),
    (None, ["--overwrite"], "give --resume or --overwrite, not both"),
])
def test_a_refused_resume_leaves_the_run_folder_as_it_was(run_copy, capsys, damage, flags, message):
    if damage is not None:
        damage(run_copy)
    before = snapshot(run_copy)
    rc, out, err = cli(capsys, "train", "--out", run_copy, "--resume", *flags)
    assert rc == 2 and out == "" and message in one_error_line(err)
    assert snapshot(run_copy) == before  # tokens/, meta.json, metrics, train.log: not a byte, not a touch


def test_the_refused_resume_was_not_a_false_alarm(run_copy, capsys):
    """The same folder resumes once the tokenizer is the run's again."""
    rc, out, _ = cli(capsys, "train", "--out", run_copy, "--resume")
    assert rc == 0 and json.loads(out)["step"] == 4


@pytest.mark.parametrize("flags, message", [
    (["--budget-gib", "1e-9"], "below the feasible floor"),
    (["--vocab-size", "512"], "has 300 tokens but vocab_size=512"),
    (["--seq-len", "100000"], "too small for one batch"),
    (["--seq-len", "250", "--batch-size", "1"], "too small to validate on"),
    (["--tokens", "{tmp}/nothing"], "holds no token files"),
    (["--heads", "5"], "n_embd=32 is not divisible by n_head=5"),
    (["--resume"], "nothing to resume"),
])
@pytest.mark.parametrize("out_state", ["absent", "empty"])
def test_a_refused_new_run_writes_nothing(tmp_path, tokenizer_path, capsys, flags, message, out_state):
    out = tmp_path / "fresh"
    if out_state == "empty":
        out.mkdir()
    before = snapshot(tmp_path)
    flags = [f.format(tmp=tmp_path) for f in flags]
    rc, stdout, err = cli(capsys, *train_args(out, *flags, tokenizer=tokenizer_path))
    assert rc == 2 and stdout == "" and message in one_error_line(err)
    assert snapshot(tmp_path) == before  # no tokens/, no train.log, no folder made


def test_a_new_run_that_trains_its_tokenizer_is_refused_before_writing_it(tmp_path, capsys):
    """The tokenizer is trained in memory first: a budget below the floor leaves no tokenizer.json."""
    rc, _, err = cli(capsys, *train_args(tmp_path / "fresh", "--budget-gib", "1e-6", vocab_size=300))
    assert rc == 2 and "below the feasible floor" in one_error_line(err)
    assert not (tmp_path / "fresh").exists()


def test_a_budget_below_every_model_of_the_config_is_refused_before_the_corpus_is_read(tmp_path, capsys):
    """The states of the smallest vocabulary already exceed it: decided from the config alone, so
    a corpus that could not even be read is never touched."""
    rc, _, err = cli(capsys, *train_args(tmp_path / "fresh", "--budget-gib", "1e-9", "--corpus",
                                         f"text:{tmp_path / 'nowhere'}", vocab_size=300))
    assert rc == 2 and "below the feasible floor" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_overwrite_keeps_the_old_run(run_copy, tokenizer_path, capsys):
    before = snapshot(run_copy)
    rc, _, err = cli(capsys, *train_args(run_copy, "--overwrite", "--budget-gib", "1e-9",
                                          tokenizer=tokenizer_path))
    assert rc == 2 and "below the feasible floor" in one_error_line(err)
    assert snapshot(run_copy) == before


# ----------------------------------------------------------------------------- stray temporary files
def test_temporary_files_of_interrupted_writes_are_removed_and_reported(run_copy, capsys):
    strays = {run_copy / "checkpoints" / ".ckpt_0000004.pt.k2j3.tmp": 1500,
              run_copy / "checkpoints" / ".ckpt_0000004.pt.sha256.x9.tmp": 20,
              run_copy / ".summary.json.tmp": 7, run_copy / ".metrics.jsonl.tmp": 3,
              run_copy / "tokens" / ".train.bin.ab.tmp": 100}
    for p, n in strays.items():
        p.write_bytes(b"x" * n)
    keep = run_copy / "notes.tmp"  # not a run's temporary file: left alone
    keep.write_text("mine")
    rc, _, err = cli(capsys, "train", "--out", run_copy, "--resume")
    assert rc == 0
    line = f"removed 5 stray temporary file(s), {sum(strays.values()):,} bytes, left in {run_copy}"
    assert line in err and line in (run_copy / "train.log").read_text()
    assert not any(p.exists() for p in strays) and keep.read_text() == "mine"

def test_a_new_run_over_an_old_one_clears_its_temporary_files(own_tokenizer_run, run_copy):
    (run_copy / ".summary.json.tmp").write_bytes(b"y" * 9)  # --overwrite removes checkpoints/ whole
    _, cfg = own_tokenizer_run
    trainer = ResourceAwareTrainer(dataclasses.replace(cfg, out=str(run_copy)), overwrite=True)
    trainer.close()
    assert "removed 1 stray temporary file(s), 9 bytes" in (run_copy / "train.log").read_text()
    assert not list(run_copy.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- checkpoints without a digest
def test_eval_generate_and_resume_refuse_a_checkpoint_without_its_digest(run_copy, capsys):
    ckpt = run_copy / "checkpoints" / "ckpt_0000002.pt"
    _drop_digest(run_copy)
    for command in (["eval", "--ckpt", ckpt, "--max-batches", 1], ["generate", "--ckpt", ckpt, "--tokens", 3],
                    ["train", "--out", run_copy, "--resume"]):
        rc, out, err = cli(capsys, *command)
        assert rc == 2 and out == "" and "--allow-unverified" in one_error_line(err), command
        rc, out, err = cli(capsys, *command, "--allow-unverified")
        assert rc == 0 and out, command
        warned = [line for line in err.splitlines() if "UNVERIFIED" in line]
        assert len(warned) == 1 and "warning" in warned[0] and str(ckpt) in warned[0], err
    assert "UNVERIFIED" in (run_copy / "train.log").read_text()


def test_eval_and_generate_refuse_impossible_requests_and_top_k_0_means_all(run_copy, capsys):
    ckpt = run_copy / "checkpoints" / "ckpt_0000002.pt"
    for argv in (["eval", "--ckpt", ckpt, "--max-batches", "0"], ["eval", "--ckpt", ckpt, "--max-batches=-3"],
                 ["generate", "--ckpt", ckpt, "--top-k=-1"], ["generate", "--ckpt", ckpt, "--tokens=-1"]):
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and out == "" and one_error_line(err)
    texts = [cli(capsys, "generate", "--ckpt", ckpt, "--tokens", 8, "--top-k", k, "--seed", 1)[1]
             for k in (0, 0, 100000)]
    assert texts[0] == texts[1] == texts[2] and texts[0]  # 0: no cut, as a k above the vocabulary


# ----------------------------------------------------------------------------- divergence
def test_a_diverging_run_stops_naming_the_step_and_keeps_its_last_good_checkpoint(tmp_path, tokenizer_path,
                                                                                  capsys):
    out = tmp_path / "div"
    rc, stdout, err = cli(capsys, *train_args(out, "--steps", 20, "--lr", "1e30", "--warmup", 0,
                                              "--min-lr", 0, tokenizer=tokenizer_path))
    line = one_error_line(err)
    assert rc == 3 and stdout == "" and "training diverged: the loss is NaN or inf at step" in line
    step = int(line.split("at step ")[1].split(";")[0])
    assert [r["step"] for r in records(out)] == list(range(1, step))  # nothing logged of the NaN step
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))  # none yet, or only older ones
    assert all(int(name[5:12]) < step for name in kept)
    assert "training diverged" in (out / "train.log").read_text()
    assert not (out / "summary.json").exists()


def test_a_nan_loss_stops_the_run_before_the_next_checkpoint(tmp_path, tokenizer_path, monkeypatch):
    cfg = small_cfg(tmp_path / "nan", tokenizer_path, steps=8, ckpt_every=2, log_every=4, eval_every=4)
    trainer = ResourceAwareTrainer(cfg)
    real = trainer._forward_backward

    def nan_at_step_5():
        loss = real()
        return loss * float("nan") if trainer.step == 4 else loss  # the 5th step (steps count from 0)

    monkeypatch.setattr(trainer, "_forward_backward", nan_at_step_5)
    try:
        with pytest.raises(TrainingDiverged, match="NaN or inf at step 5;.*stays .*ckpt_0000004.pt"):
            trainer.train()
    finally:
        trainer.close()
    # step 6 is a checkpoint step (and the first check after step 5): no checkpoint of it
    assert sorted(p.name for p in (tmp_path / "nan" / "checkpoints").glob("*.pt")) == [
        "ckpt_0000002.pt", "ckpt_0000004.pt"]
    assert [r["step"] for r in records(tmp_path / "nan")] == [4]


def test_weights_broken_by_an_update_are_not_checkpointed(tmp_path, tokenizer_path):
    """A finite loss whose update leaves NaN weights: caught before that state is checkpointed."""
    cfg = small_cfg(tmp_path / "w", tokenizer_path, steps=4, ckpt_every=2)
    trainer = ResourceAwareTrainer(cfg)

    def break_weights(optimizer, args, kwargs):
        if trainer.step == 3:  # the update of step 4
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))

    trainer.optimizer.register_step_post_hook(break_weights)
    try:
        with pytest.raises(TrainingDiverged, match="the weights are NaN or inf after step 4"):
            trainer.train()
    finally:
        trainer.close()
    assert sorted(p.name for p in (tmp_path / "w" / "checkpoints").glob("*.pt")) == ["ckpt_0000002.pt"]
