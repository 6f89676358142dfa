"""drat.train.checkpoint: atomic saves, pruning, clear errors, and a trainer that survives a bad save."""

import json

import pytest
import torch

from drat.cli import main
from drat.train import ResourceAwareTrainer
from drat.train.checkpoint import (
    CheckpointError,
    UnverifiedCheckpointWarning,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

from .test_trainer import records, run, small_cfg


def _state(v: float) -> dict:
    return {"w": torch.full((64,), v), "note": "x", "gen": torch.Generator().manual_seed(3).get_state()}


def test_roundtrip_and_keep_last_k(tmp_path):
    for step in range(1, 6):
        save_checkpoint(_state(step), tmp_path, step, keep_last_k=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt_0000004.pt", "ckpt_0000004.pt.sha256", "ckpt_0000005.pt", "ckpt_0000005.pt.sha256"]
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["step"] == 5 and torch.equal(state["w"], torch.full((64,), 5.0)) and state["note"] == "x"
    assert torch.equal(state["gen"], _state(0)["gen"])


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "is truncated"),
    (lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], "is corrupt"),
])
def test_damaged_checkpoint_names_the_file_and_the_previous_one(tmp_path, damage, message):
    save_checkpoint(_state(1), tmp_path, 1)
    path = save_checkpoint(_state(2), tmp_path, 2)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "previous checkpoint" in str(e.value)
    assert "ckpt_0000001.pt" in str(e.value)
    assert load_checkpoint(tmp_path / "ckpt_0000001.pt")["step"] == 1  # still fine


def test_damage_without_a_hash_file_is_still_caught(tmp_path):
    path = save_checkpoint(_state(1), tmp_path, 1)
    path.with_name(path.name + ".sha256").unlink()  # e.g. a checkpoint copied on its own
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"), \
            pytest.warns(UnverifiedCheckpointWarning):
        load_checkpoint(path, allow_unverified=True)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"), \
            pytest.warns(UnverifiedCheckpointWarning):
        load_checkpoint(path, allow_unverified=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_checkpoint_without_its_digest_is_refused_unless_allowed_unverified(tmp_path):
    """torch.load loads flipped bytes in a tensor without a word: without the .sha256 nothing would
    notice, so the checkpoint is refused; allowed unverified, it loads with a warning."""
    path = save_checkpoint(_state(1), tmp_path, 1)
    path.with_name(path.name + ".sha256").unlink()
    raw = bytearray(path.read_bytes())
    at = raw.index(_state(1)["w"].numpy().tobytes())  # inside the tensor's data
    raw[at + 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="has no ckpt_0000001.pt.sha256 beside it.*--allow-unverified"):
        load_checkpoint(path)
    seen = []
    state = load_checkpoint(path, allow_unverified=True, warn=seen.append)
    assert not torch.equal(state["w"], _state(1)["w"])  # the damage got through: hence the refusal
    assert len(seen) == 1 and "UNVERIFIED" in seen[0] and str(path) in seen[0]


def _partial_save(obj, f, *args, **kwargs):
    """torch.save that dies halfway: some bytes reach the temp file, then an error."""
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full (simulated)")


def test_interrupted_save_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    good = save_checkpoint(_state(1), tmp_path, 1)
    monkeypatch.setattr(torch, "save", _partial_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2), tmp_path, 2, keep_last_k=1)
    assert latest_checkpoint(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0000001.pt", "ckpt_0000001.pt.sha256"]
    assert load_checkpoint(good)["step"] == 1


def test_trainer_resumes_exactly_after_a_save_died_midway(tmp_path, tokenizer_path, monkeypatch):
    cfg = small_cfg(tmp_path / "r", tokenizer_path, ckpt_every=3)
    run(small_cfg(tmp_path / "straight", tokenizer_path, ckpt_every=3))
    run(cfg, stop_after=3)
    with monkeypatch.context() as m:
        m.setattr(torch, "save", _partial_save)
        with pytest.raises(OSError, match="disk full"):
            run(cfg, resume="latest")  # trains 4..6, then the step-6 save dies
    assert latest_checkpoint(tmp_path / "r" / "checkpoints").name == "ckpt_0000003.pt"
    run(cfg, resume="latest")
    assert [r["loss"] for r in records(tmp_path / "r")] == [r["loss"] for r in records(tmp_path / "straight")]


def test_trainer_and_cli_report_a_corrupt_latest_checkpoint(tmp_path, tokenizer_path, capsys):
    cfg = small_cfg(tmp_path / "r", tokenizer_path, ckpt_every=2)
    run(cfg, stop_after=4)
    latest = tmp_path / "r" / "checkpoints" / "ckpt_0000004.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="ckpt_0000004.pt is truncated") as e:
        ResourceAwareTrainer(cfg, resume="latest")
    assert "ckpt_0000002.pt" in str(e.value)

    rc = main(["train", "--out", str(tmp_path / "r"), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.splitlines()[-1].startswith("drat: error: checkpoint ")
    assert "previous checkpoint" in err.splitlines()[-1]
    # following the advice works, and the resumed run is a faithful continuation
    previous = tmp_path / "r" / "checkpoints" / "ckpt_0000002.pt"
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", str(previous)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 6
    assert [r["step"] for r in records(tmp_path / "r")] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_from_before_the_gate_optimizer_still_resumes(tmp_path, tokenizer_path):
    # gates away from saturation, so that their AdamW moments matter after the resume
    kw = dict(lam=0.5, gate_warm_start=False, gate_init_logit=0.5, tau_end=0.5)
    run(small_cfg(tmp_path / "straight", tokenizer_path, **kw))
    cfg = small_cfg(tmp_path / "r", tokenizer_path, **kw)
    run(cfg, stop_after=3)
    path = latest_checkpoint(tmp_path / "r" / "checkpoints")
    state = load_checkpoint(path)
    # the earlier layout: the gate logits were a third group of the model's AdamW and LambdaLR
    osd, gate = state["optimizer"], state.pop("gate_optimizer")
    pid = sum(len(g["params"]) for g in osd["param_groups"])
    gate_lr = gate["param_groups"][0]["lr"]
    osd["param_groups"].append({**gate["param_groups"][0], "params": [pid], "initial_lr": gate_lr})
    osd["state"][pid] = gate["state"][0]
    for key, value in (("base_lrs", gate_lr), ("_last_lr", gate_lr), ("lr_lambdas", None)):
        state["scheduler"][key].append(value)
    for key in ("rng_ranks", "world_size", "distributed"):
        del state[key]
    save_checkpoint(state, path.parent, state["step"])
    run(cfg, resume="latest")
    resumed, straight = records(tmp_path / "r"), records(tmp_path / "straight")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    assert [r["gates"] for r in resumed] == [r["gates"] for r in straight]  # gate AdamW moments came back
