"""`drat data pin` and `drat data tokenize`: the pipeline's corpus and tokenize steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drat.cli import main
from drat.data import load_meta, train_tokenizer
from drat.data.corpora import load_corpus


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def corpus_dir(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(12):
        (d / f"doc{i:02d}.txt").write_text(f"document {i}: the gate stores or recomputes. " * (20 + i))
    return d


def test_pin_then_tokenize(capsys, tmp_path, corpus_dir):
    spec = f"text:{corpus_dir}"
    pinned = tmp_path / "data" / "corpus.json"
    rc, out, _ = run_cli(capsys, "data", "pin", "--corpus", spec, "--out", pinned)
    assert rc == 0
    d = json.loads(pinned.read_text())
    corpus = load_corpus(spec)
    assert d["sha256"] == corpus.sha256 and d["n_documents"] == 12 == json.loads(out)["n_documents"]
    assert sum(s["n_documents"] for s in d["splits"].values()) == 12 and not list(pinned.parent.glob("*.tmp"))
    tok = tmp_path / "data" / "tokenizer.json"
    train_tokenizer(corpus, vocab_size=300, out_path=tok)
    tokens = tmp_path / "data" / "tokens"
    rc, out, err = run_cli(capsys, "data", "tokenize", "--corpus", spec, "--pinned", pinned,
                           "--tokenizer", tok, "--out", tokens)
    assert rc == 0 and json.loads(out)["train"] > 0 and "data: tokenizing" in err
    assert load_meta(tokens)["corpus_sha256"] == corpus.sha256


def test_tokenize_refuses_a_corpus_that_changed_since_its_pin(capsys, tmp_path, corpus_dir):
    spec = f"text:{corpus_dir}"
    pinned = tmp_path / "corpus.json"
    assert run_cli(capsys, "data", "pin", "--corpus", spec, "--out", pinned)[0] == 0
    tok = tmp_path / "tokenizer.json"
    train_tokenizer(load_corpus(spec), vocab_size=300, out_path=tok)
    (corpus_dir / "doc00.txt").write_text("edited since the pin\n")
    tokens = tmp_path / "tokens"
    rc, out, err = run_cli(capsys, "data", "tokenize", "--corpus", spec, "--pinned", pinned,
                           "--tokenizer", tok, "--out", tokens)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "changed since it was pinned" in err
    assert err.startswith("drat: error:") and not tokens.exists()


@pytest.mark.parametrize("argv, message", [
    (["pin", "--corpus", "nonsense", "--out", "c.json"], "unknown corpus"),
    (["pin", "--corpus", "stdlib", "--max-bytes", "0", "--out", "c.json"],
     "argument --max-bytes: must be a positive integer, got '0'"),
    (["tokenize", "--corpus", "stdlib", "--pinned", "nowhere.json", "--tokenizer", "t.json", "--out", "tok"],
     "cannot read the pinned corpus"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "data", *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []
