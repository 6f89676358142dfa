"""Failure injection: a run SIGKILLed again and again, during its steps and during its checkpoint
writes, and resumed each time, ends bitwise where an uninterrupted run ends (every logged loss,
the final weights), with no temporary file left behind."""

import json
import random
import signal
import subprocess
import sys

import pytest
import torch

from drat.train.checkpoint import latest_checkpoint, list_checkpoints
from drat.train.run_folder import stray_temp_files

from .conftest import CORPUS_BYTES

STEPS, CKPT_EVERY = 24, 3

# Runs `drat train ARGV...` and dies by SIGKILL where SPEC says:
#   none              not at all
#   early:S           S seconds after the imports (set-up, resume, the first steps: wherever)
#   time:S            S seconds into the launch's first step (a step, an evaluation, a write)
#   step:K            inside step K, after its backward, before the optimizer update
#   payload:K         writing checkpoint K: part of its temporary file written
#   sidecar:K         checkpoint K's .sha256 in place, the checkpoint not yet renamed into place
#   rename:K          checkpoint K renamed into place, older ones not yet pruned
DRIVER = r"""
import os, signal, sys, threading, time

spec, argv = sys.argv[1], sys.argv[2:]
import torch
import drat.train.checkpoint as ck
import drat.train.trainer as tr
from drat.cli import main

def die():
    os.kill(os.getpid(), signal.SIGKILL)

kind, _, arg = spec.partition(":")
if kind == "early":
    threading.Timer(float(arg), die).start()
elif kind == "time":
    real_train_step = tr.ResourceAwareTrainer.train_step
    def train_step(self):
        if not hasattr(die, "timer"):
            die.timer = threading.Timer(float(arg), die)
            die.timer.start()
        return real_train_step(self)
    tr.ResourceAwareTrainer.train_step = train_step
elif kind == "step":
    real_step = tr.ResourceAwareTrainer._optimizer_step
    def _optimizer_step(self):
        if self.step + 1 == int(arg):
            die()
        return real_step(self)
    tr.ResourceAwareTrainer._optimizer_step = _optimizer_step
elif kind == "payload":
    real_save = torch.save
    def save(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("step") == int(arg):
            f.write(b"PK\x03\x04 part of a checkpoint")
            f.flush()
            die()
        return real_save(obj, f, *a, **kw)
    torch.save = save
elif kind == "sidecar":
    real_write = ck._atomic_write_text
    def write(path, text):
        real_write(path, text)
        if path.name == f"ckpt_{int(arg):07d}.pt.sha256":
            die()
    ck._atomic_write_text = write
elif kind == "rename":
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if os.path.basename(dst) == f"ckpt_{int(arg):07d}.pt":
            die()
    ck.os.replace = replace
sys.exit(main(argv))
"""


def train_argv(out, tokenizer_path) -> list[str]:
    return ["train", "--corpus", "stdlib", "--max-corpus-bytes", str(CORPUS_BYTES), "--tokenizer",
            str(tokenizer_path), "--layers", "2", "--hidden", "32", "--heads", "4", "--seq-len", "32",
            "--batch-size", "4", "--grad-accum", "2", "--dropout", "0.1", "--steps", str(STEPS),
            "--ckpt-every", str(CKPT_EVERY), "--keep-last-k", "2", "--log-every", "1", "--eval-every", "6",
            "--eval-batches", "1", "--strategy", "drat", "--lambda", "0.5",
            "--cost-model", "activation_size", "--device", "cpu", "--threads", "1", "--no-tensorboard",
            "--out", str(out)]


def launch(spec: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, spec, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def progress(out) -> int:
    """The step a relaunch resumes from (0: none to resume)."""
    done = list_checkpoints(out / "checkpoints")
    return done[-1][0] if done and (out / "config.json").is_file() else 0


def next_argv(out, tokenizer_path, again: bool = False) -> list[str]:
    """How a scheduler would relaunch: resume a run that has a checkpoint, else start it afresh
    (`again`: afresh anyway, as a user would rerun a finished run to kill it some more)."""
    if 0 < progress(out) and not again:
        return ["train", "--out", str(out), "--resume", "--threads", "1"]
    return [*train_argv(out, tokenizer_path), "--overwrite"]


def losses(out) -> list[tuple]:
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r.get("loss", r.get("val_loss"))) for r in recs]


@pytest.mark.slow
def test_a_run_killed_at_random_points_resumes_bitwise_to_the_uninterrupted_result(tmp_path, tokenizer_path):
    straight = tmp_path / "straight"
    reference = launch("none", train_argv(straight, tokenizer_path))  # alongside: two cores

    rng = random.Random(20240611)
    kinds = ["early", "time", "time", "time", "step", "step", "payload", "payload", "sidecar", "sidecar",
             "rename", "rename"]
    rng.shuffle(kinds)
    out, kills = tmp_path / "killed", []
    for kind in kinds:
        step = progress(out)
        if kind == "early":
            spec = f"early:{rng.uniform(0.0, 0.8):.3f}"
        elif kind == "time":
            spec = f"time:{rng.uniform(0.0, 0.2):.3f}"
        elif kind == "step":
            spec = f"step:{rng.randint(step + 1, min(step + CKPT_EVERY + 1, STEPS))}"
        else:  # the checkpoint this launch writes next, or the one after
            spec = f"{kind}:{min((step // CKPT_EVERY + rng.randint(1, 2)) * CKPT_EVERY, STEPS)}"
        proc = launch(spec, next_argv(out, tokenizer_path, again=step >= STEPS))
        _, err = proc.communicate(timeout=120)
        # killed as planned (an early timer can fire after a launch that had little to do finished)
        assert proc.returncode in (-signal.SIGKILL, 0), (spec, proc.returncode, err[-2000:])
        kills.append((spec, proc.returncode))
    final = launch("none", next_argv(out, tokenizer_path))
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-2000:]
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]

    assert sum(rc == -signal.SIGKILL for _, rc in kills) >= 10, kills
    for kind in ("time", "step", "payload", "sidecar", "rename"):  # during steps, during checkpoint writes
        assert any(s.startswith(kind) and rc == -signal.SIGKILL for s, rc in kills), kills
    # every logged loss, training and validation, in order, once each, bitwise
    assert losses(out) == losses(straight), kills
    assert [step for kind, step, _ in losses(out) if kind == "train"] == list(range(1, STEPS + 1))
    a = torch.load(latest_checkpoint(out / "checkpoints"), weights_only=True)
    b = torch.load(latest_checkpoint(straight / "checkpoints"), weights_only=True)
    assert a["step"] == b["step"] == STEPS
    for name, w in b["model"].items():
        assert torch.equal(a["model"][name], w), name
    assert torch.equal(a["gates"]["logits"], b["gates"]["logits"]) and a["lam"] == b["lam"]
    assert stray_temp_files(out) == [] and not list(out.rglob("*.tmp")), kills
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == STEPS
