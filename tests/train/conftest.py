"""What the training tests share: one small tokenizer, trained once per test session."""

import pytest

from drat.data import load_corpus, train_tokenizer

CORPUS_BYTES = 200_000  # of the stdlib corpus: enough text for tiny runs, quick to tokenize


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory):
    """One small tokenizer for every run: tokenizer training is not what these tests are about."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(load_corpus("stdlib", max_bytes=CORPUS_BYTES), 300, out_path=path)
    return path
