"""The run folder: a new run seeded with token files made elsewhere (`drat train --tokens`), and
one prepared in one process for a torchrun launch that follows (`--prepare-only`)."""

import json
import os

from .test_trainer import cli, records, run, small_cfg


def test_a_run_on_linked_tokens_trains_as_one_that_tokenized_its_corpus(tmp_path, tokenizer_path, capsys):
    own = small_cfg(tmp_path / "own", tokenizer_path, steps=3, ckpt_every=0)
    run(own)
    fields = {k: v for k, v in own.to_dict().items() if k not in ("out", "tokenizer")}
    linked = tmp_path / "linked"
    rc, stdout, _ = cli(capsys, "train", "--config-json", json.dumps(fields), "--tokenizer", tokenizer_path,
                        "--tokens", tmp_path / "own" / "tokens", "--out", linked, "--threads", 1)
    assert rc == 0 and json.loads(stdout)["step"] == 3
    for f in (tmp_path / "own" / "tokens").iterdir():
        assert os.path.samefile(f, linked / "tokens" / f.name)  # hard links: no second copy
    assert [r["loss"] for r in records(linked)] == [r["loss"] for r in records(tmp_path / "own")]
    # a resumed run keeps its own tokens
    rc, _, err = cli(capsys, "train", "--out", linked, "--resume", "--tokens", tmp_path / "own" / "tokens")
    assert rc == 2 and "a resumed run keeps its own" in err.splitlines()[-1]
    rc, _, err = cli(capsys, "train", "--out", tmp_path / "x", "--tokenizer", tokenizer_path,
                     "--tokens", tmp_path / "nothing")
    assert rc == 2 and "holds no token files" in err.splitlines()[-1]


def test_prepare_only_writes_the_fields_a_torchrun_launch_reads(tmp_path, tokenizer_path, capsys):
    own = small_cfg(tmp_path / "own", tokenizer_path, steps=2, ckpt_every=0)
    run(own)
    fields = {k: v for k, v in own.to_dict().items() if k not in ("out", "tokenizer")}
    out, cfg_file = tmp_path / "run", tmp_path / "logs" / "run.config.json"
    rc, stdout, _ = cli(capsys, "train", "--config-json", json.dumps(fields), "--tokenizer", tokenizer_path,
                        "--tokens", tmp_path / "own" / "tokens", "--out", out, "--prepare-only", cfg_file)
    assert rc == 0 and json.loads(stdout) == {"out": str(out), "config": str(cfg_file)}
    assert sorted(p.name for p in out.iterdir()) == ["tokens"]  # ready, not started
    # what `torchrun ... -m drat.cli train --config FILE --distributed ...` then runs, here in one process
    rc, stdout, _ = cli(capsys, "train", "--config", cfg_file)
    assert rc == 0 and json.loads(stdout)["step"] == 2
    assert [r["loss"] for r in records(out)] == [r["loss"] for r in records(tmp_path / "own")]
