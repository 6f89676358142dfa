"""Tests for drat.data.tokenizer (byte-level BPE) and drat.data.tokens (token files and batches)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from drat.data import tokens as tokens_module
from drat.data.corpora import Corpus, Document, load_corpus, manifest_sha256, sha256_file, split_documents
from drat.data.tokenizer import EOT_TOKEN, Tokenizer, TokenizerError, load_tokenizer, train_tokenizer
from drat.data.tokens import TokenDataError, TokenDataset, load_meta, prepare_tokens, token_dtype

VOCAB_SIZE = 512

# ----------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def training_corpus() -> Corpus:
    # ~300 kB of stdlib source: enough distinct pairs for every requested merge, fast to train on.
    return load_corpus("stdlib", max_bytes=300_000)


@pytest.fixture(scope="module")
def tokenizer(training_corpus: Corpus) -> Tokenizer:
    return train_tokenizer(training_corpus, vocab_size=VOCAB_SIZE)


def _prose(i: int, n_words: int) -> str:
    rng = random.Random(i)
    words = ["the", "gate", "stores", "recomputes", "memory", "loss", "exact", "über", "naïve", "🙂"]
    return " ".join(rng.choice(words) for _ in range(n_words)) + "\n"


@pytest.fixture()
def small_corpus(tmp_path: Path) -> Corpus:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(12):
        (root / f"doc{i:02d}.txt").write_text(_prose(i, 150 + 10 * i), encoding="utf-8")
    return load_corpus(f"text:{root}")


@pytest.fixture()
def token_dir(tmp_path: Path, small_corpus: Corpus, tokenizer: Tokenizer) -> Path:
    out = tmp_path / "tokens"
    prepare_tokens(small_corpus, tokenizer, out)
    return out


# ----------------------------------------------------------------------------------------------------
# round trips

ROUND_TRIP_CASES = [
    "",
    " ",
    "hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand\r\n\r\nCRLF",
    "   \t \n\n\n    mixed   whitespace \u3000 runs\u00a0\u2009\v\f",
    "naïve café — “curly quotes” ‘and’ «guillemets»",
    "日本語のテキスト、中文，한국어",
    "emoji 🤖🎉 family 👩‍👩‍👧‍👦 flag 🇺🇳 skin 👍🏽",
    "combining e\u0301 vs é, zero\u200bwidth, rtl \u202ehello",
    "control \x00\x01\x7f bytes",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "a<|endoftext|>b <|endoftext|><|endoftext|>",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝑥² ∑ ∞ \U0010ffff",
]


@pytest.mark.parametrize("text", ROUND_TRIP_CASES)
def test_decode_encode_round_trips_exactly(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(tokenizer.encode(text, allow_special=True)) == text


def test_empty_string_encodes_to_no_tokens(tokenizer: Tokenizer) -> None:
    assert tokenizer.encode("") == []
    assert tokenizer.decode([]) == ""


def test_random_unicode_round_trips(tokenizer: Tokenizer) -> None:
    rng = random.Random(1234)
    # Code points from every plane except the surrogates, which are not encodable as UTF-8.
    pool = [c for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF]
    for _ in range(200):
        text = "".join(
            chr(rng.choice(pool)) if rng.random() < 0.7 else rng.choice(" \t\n") for _ in range(40)
        )
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_literal_special_token_in_text_cannot_forge_a_boundary(tokenizer: Tokenizer) -> None:
    text = f"before {EOT_TOKEN} after"
    assert tokenizer.eot_id not in tokenizer.encode(text)
    assert tokenizer.encode(text, allow_special=True).count(tokenizer.eot_id) == 1
    assert tokenizer.encode_batch([text, "plain"]) == [tokenizer.encode(text), tokenizer.encode("plain")]


def test_encode_batch_matches_encode(tokenizer: Tokenizer) -> None:
    texts = ROUND_TRIP_CASES[:8]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]


def test_bpe_merges_compress_training_like_text(tokenizer: Tokenizer) -> None:
    text = "import os\nimport sys\n\ndef main(self):\n    return None\n"
    assert len(tokenizer.encode(text)) < len(text.encode("utf-8")) / 2


# ----------------------------------------------------------------------------------------------------
# vocabulary, special tokens, training


def test_vocab_size_is_honored(training_corpus: Corpus, tokenizer: Tokenizer) -> None:
    assert tokenizer.vocab_size == VOCAB_SIZE
    smaller = train_tokenizer(training_corpus, vocab_size=300)
    assert smaller.vocab_size == 300
    assert len(smaller.backend.get_vocab()) == 300


def test_special_tokens_come_first_and_first_is_eot(training_corpus: Corpus) -> None:
    specials = ["<|endoftext|>", "<|pad|>", "<|mask|>"]
    tok = train_tokenizer(training_corpus, vocab_size=400, special_tokens=specials)
    assert tok.special_tokens == {"<|endoftext|>": 0, "<|pad|>": 1, "<|mask|>": 2}
    assert tok.eot_id == 0 and tok.eot_token == "<|endoftext|>"
    assert tok.vocab_size == 400
    custom = train_tokenizer(["some text here"] * 10, vocab_size=300, special_tokens=["<doc>"])
    assert custom.eot_token == "<doc>" and custom.eot_id == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab_size": 256}, "too small"),
        ({"special_tokens": []}, "at least one special token"),
        ({"special_tokens": ["<a>", "<a>"]}, "distinct"),
    ],
)
def test_bad_training_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(TokenizerError, match=match):
        train_tokenizer(["text"], **kwargs)  # type: ignore[arg-type]


def test_training_is_deterministic(training_corpus: Corpus, tokenizer: Tokenizer) -> None:
    again = train_tokenizer(training_corpus, vocab_size=VOCAB_SIZE)
    assert again.sha256 == tokenizer.sha256


def test_training_on_a_corpus_uses_only_its_train_split(tmp_path: Path) -> None:
    # Decide which file names land in val/test from the names alone, then give only those held-out
    # documents a distinctive word: a tokenizer trained on the corpus must not learn it.
    names = [f"f{i:02d}.txt" for i in range(10)]
    probe = split_documents([Document(name=n, text="") for n in names], seed=0)
    held_out = {d.name for d in probe["val"] + probe["test"]}
    for i, name in enumerate(names):
        text = "zyzzyva " * 500 if name in held_out else _prose(i, 300)
        (tmp_path / name).write_text(text, encoding="utf-8")
    corpus = load_corpus(f"text:{tmp_path}", seed=0)
    assert {d.name for d in corpus.splits["val"] + corpus.splits["test"]} == held_out
    tok = train_tokenizer(corpus, vocab_size=400)
    assert len(tok.encode(" zyzzyva")) > 2  # never merged into a word-sized token
    with_held_out = train_tokenizer([d.text for d in corpus.documents], vocab_size=400)
    assert len(with_held_out.encode(" zyzzyva")) == 1


# ----------------------------------------------------------------------------------------------------
# save / load


def test_save_and_load_round_trip(tmp_path: Path, training_corpus: Corpus, tokenizer: Tokenizer) -> None:
    path = tmp_path / "nested" / "tok.json"
    trained = train_tokenizer(training_corpus, vocab_size=VOCAB_SIZE, out_path=path)
    assert [p.name for p in path.parent.iterdir()] == ["tok.json"]  # one file, no temp leftovers
    assert sha256_file(path) == trained.sha256 == tokenizer.sha256
    loaded = load_tokenizer(path)
    assert loaded.sha256 == trained.sha256
    assert loaded.vocab_size == VOCAB_SIZE and loaded.eot_id == trained.eot_id
    for text in ROUND_TRIP_CASES:
        assert loaded.encode(text) == trained.encode(text)
        assert loaded.decode(loaded.encode(text)) == text


def test_load_missing_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not found.*train_tokenizer"):
        load_tokenizer(tmp_path / "absent.json")


def test_load_corrupt_tokenizer_is_a_clear_error(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = tokenizer.save(tmp_path / "tok.json")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated, as by a full disk
    with pytest.raises(TokenizerError, match="corrupt"):
        load_tokenizer(path)
    path.write_text("not json at all")
    with pytest.raises(TokenizerError, match="corrupt"):
        load_tokenizer(path)


def test_load_rejects_non_byte_level_tokenizer(tmp_path: Path, tokenizer: Tokenizer) -> None:
    config = json.loads(tokenizer.backend.to_str())
    config["decoder"] = None
    path = tmp_path / "no_decoder.json"
    path.write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="not a byte-level"):
        load_tokenizer(path)


# ----------------------------------------------------------------------------------------------------
# token files


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [
        (1, np.uint16),
        (512, np.uint16),
        (50257, np.uint16),
        (65535, np.uint16),
        (65536, np.uint32),
        (200_000, np.uint32),
    ],
)
def test_token_dtype_selection(vocab_size: int, dtype: type) -> None:
    assert token_dtype(vocab_size) == np.dtype(dtype)


def test_prepare_tokens_writes_splits_and_meta(
    token_dir: Path, small_corpus: Corpus, tokenizer: Tokenizer
) -> None:
    meta = load_meta(token_dir)
    assert sorted(p.name for p in token_dir.iterdir()) == ["meta.json", "test.bin", "train.bin", "val.bin"]
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == VOCAB_SIZE
    assert meta["tokenizer_sha256"] == tokenizer.sha256
    assert meta["corpus_manifest_sha256"] == manifest_sha256(small_corpus.manifest)
    assert meta["corpus_sha256"] == small_corpus.sha256
    assert meta["eot_id"] == tokenizer.eot_id
    for split, docs in small_corpus.splits.items():
        info = meta["splits"][split]
        data = np.fromfile(token_dir / f"{split}.bin", dtype=np.uint16)
        expected = [i for d in docs for i in tokenizer.encode(d.text) + [tokenizer.eot_id]]
        assert data.tolist() == expected
        assert info["n_tokens"] == len(expected) and info["n_documents"] == len(docs)
        assert info["sha256"] == hashlib.sha256(data.tobytes()).hexdigest()
        assert int((data == tokenizer.eot_id).sum()) == len(docs)  # one separator per document


def test_prepare_tokens_reuses_identical_output_and_redoes_changed(
    token_dir: Path, small_corpus: Corpus, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = load_meta(token_dir)

    def must_not_write(*args: object, **kwargs: object) -> None:
        raise AssertionError("identical inputs must reuse the existing token files")

    monkeypatch.setattr(tokens_module, "_write_split", must_not_write)
    assert prepare_tokens(small_corpus, tokenizer, token_dir) == before
    monkeypatch.undo()

    other = train_tokenizer([d.text for d in small_corpus.documents], vocab_size=300)
    after = prepare_tokens(small_corpus, other, token_dir)
    assert after["tokenizer_sha256"] == other.sha256 != before["tokenizer_sha256"]
    assert load_meta(token_dir) == after


class _BigVocabTokenizer:
    """Maps each character to a fixed id above 65535, to exercise the uint32 path."""

    vocab_size = 70_000
    eot_id = 69_999
    sha256 = "f" * 64

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [[66_000 + (ord(c) % 3000) for c in t] for t in texts]


def test_large_vocab_uses_uint32_and_reads_back_exactly(tmp_path: Path, small_corpus: Corpus) -> None:
    meta = prepare_tokens(small_corpus, _BigVocabTokenizer(), tmp_path / "big")
    assert meta["dtype"] == "uint32"
    assert (tmp_path / "big" / "train.bin").stat().st_size == 4 * meta["splits"]["train"]["n_tokens"]
    ds = TokenDataset(tmp_path / "big", "train", seq_len=16)
    x, y = ds.batch_from_offsets([0])
    first_doc = small_corpus.splits["train"][0].text
    assert x[0].tolist() == [66_000 + (ord(c) % 3000) for c in first_doc[:16]]
    assert int(x.max()) > 65535


# ----------------------------------------------------------------------------------------------------
# batches


def test_batches_have_shape_dtype_and_shifted_targets(token_dir: Path) -> None:
    ds = TokenDataset(token_dir, "train", seq_len=32)
    data = np.fromfile(token_dir / "train.bin", dtype=np.uint16).astype(np.int64)
    x, y = ds.batch_at(step=0, batch_size=8)
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    offsets = [0, 5, ds.n_positions - 1]
    x, y = ds.batch_from_offsets(offsets)
    for row, o in enumerate(offsets):
        assert x[row].tolist() == data[o : o + 32].tolist()
        assert y[row].tolist() == data[o + 1 : o + 33].tolist()
    with pytest.raises(IndexError):
        ds.batch_from_offsets([ds.n_positions])


def test_generator_sampling_is_deterministic_and_resumable(token_dir: Path) -> None:
    ds = TokenDataset(token_dir, "train", seq_len=16)
    g1, g2 = torch.Generator().manual_seed(42), torch.Generator().manual_seed(42)
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(ds.sample_batch(4, g1), ds.sample_batch(4, g2)))
    # Record the data position mid-run, draw ahead, then restore it in a fresh generator and dataset.
    saved_state = g1.get_state()
    expected = [ds.sample_batch(4, g1) for _ in range(3)]
    resumed = torch.Generator()
    resumed.set_state(saved_state)
    fresh = TokenDataset(token_dir, "train", seq_len=16)
    for ex, (x, y) in zip(expected, (fresh.sample_batch(4, resumed) for _ in range(3))):
        assert torch.equal(ex[0], x) and torch.equal(ex[1], y)


def test_batch_at_depends_only_on_seed_and_step(token_dir: Path) -> None:
    a = TokenDataset(token_dir, "train", seq_len=16)
    b = TokenDataset(token_dir, "train", seq_len=16)
    b.batch_at(99, batch_size=4)  # drawing other batches first changes nothing: no hidden state
    assert torch.equal(a.batch_at(7, 4, seed=1)[0], b.batch_at(7, 4, seed=1)[0])
    assert not torch.equal(a.batch_at(7, 4, seed=1)[0], a.batch_at(8, 4, seed=1)[0])
    assert not torch.equal(a.batch_at(7, 4, seed=1)[0], a.batch_at(7, 4, seed=2)[0])


def test_sequential_batches_cover_the_split_once(token_dir: Path) -> None:
    ds = TokenDataset(token_dir, "val", seq_len=8)
    data = np.fromfile(token_dir / "val.bin", dtype=np.uint16).astype(np.int64)
    n_windows = (ds.n_tokens - 1) // 8
    xs = [x for x, _ in ds.iter_sequential(batch_size=3)]
    assert len(xs) == ds.n_sequential_batches(3) == -(-n_windows // 3)
    assert torch.cat(xs).reshape(-1).tolist() == data[: n_windows * 8].tolist()
    assert torch.equal(ds.sequential_batch(1, 3)[0], xs[1])
    assert len(list(ds.iter_sequential(batch_size=3, start_batch=1))) == len(xs) - 1


def test_too_small_split_states_tokens_available_and_needed(token_dir: Path) -> None:
    n_val = load_meta(token_dir)["splits"]["val"]["n_tokens"]
    TokenDataset(token_dir, "val", seq_len=n_val - 1)  # exactly seq_len + 1 tokens: one window, fine
    with pytest.raises(TokenDataError) as info:
        TokenDataset(token_dir, "val", seq_len=n_val)
    message = str(info.value)
    assert f"has {n_val} tokens" in message and f"needs at least {n_val + 1} tokens" in message


def test_single_document_corpus_has_empty_val_with_clear_error(tmp_path: Path, tokenizer: Tokenizer) -> None:
    (tmp_path / "one.txt").write_text(_prose(0, 400))
    corpus = load_corpus(f"text:{tmp_path / 'one.txt'}")
    meta = prepare_tokens(corpus, tokenizer, tmp_path / "tok")
    # Fewer than 3 documents: the one document sits in a single split and the other two are empty.
    sizes = {split: info["n_tokens"] for split, info in meta["splits"].items()}
    assert sorted(n > 0 for n in sizes.values()) == [False, False, True]
    empty = next(split for split, n in sizes.items() if n == 0)
    with pytest.raises(TokenDataError, match="has 0 tokens.*needs at least 65 tokens"):
        TokenDataset(tmp_path / "tok", empty, seq_len=64)


def test_missing_or_damaged_token_files_are_clear_errors(tmp_path: Path, token_dir: Path) -> None:
    with pytest.raises(TokenDataError, match="prepare_tokens"):
        TokenDataset(tmp_path / "nothing-here", "train", seq_len=8)
    with pytest.raises(TokenDataError, match="no split 'dev'"):
        TokenDataset(token_dir, "dev", seq_len=8)
    train_bin = token_dir / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:-2])
    with pytest.raises(TokenDataError, match="damaged"):
        TokenDataset(token_dir, "train", seq_len=8)
