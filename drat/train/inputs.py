"""The tokenizer and token files a run trains on, made once and reused by a resumed run.

A new run trains a BPE tokenizer on its corpus (or loads `cfg.tokenizer`) and tokenizes the corpus
into `<out>/tokens`. A resumed run reloads both; it does not even load its corpus (slow for hf:,
impossible offline) while its own token files still match its tokenizer and corpus.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..data import (
    Corpus,
    DataError,
    TokenDataset,
    Tokenizer,
    load_corpus,
    load_meta,
    load_tokenizer,
    prepare_tokens,
    train_tokenizer,
)
from ..data.tokenizer import DEFAULT_SPECIAL_TOKENS, N_BYTE_TOKENS
from .config import DEFAULT_VOCAB_SIZE, TrainingConfig, TrainingError

MIN_VOCAB_SIZE = N_BYTE_TOKENS + len(DEFAULT_SPECIAL_TOKENS)  # the smallest tokenizer a run can have


@dataclass
class RunInputs:
    tokenizer: Tokenizer
    token_meta: dict  # tokens/meta.json: corpus spec and hashes, tokens per split
    train: TokenDataset
    val: TokenDataset


@dataclass
class InputPlan:
    """What `plan_inputs` found out before anything is written: the tokenizer (trained in memory
    for a new run), the corpus if it had to be loaded, and the token files already current."""

    tokenizer: Tokenizer
    save_tokenizer_to: Path | None  # a tokenizer trained for this run, to be written here
    token_meta: dict | None  # a resumed run: the meta of its own token files, when they match
    corpus: Corpus | None
    trained_in_s: float | None = None


def own_token_meta(tokens: Path, tokenizer: Tokenizer, corpus_spec: str) -> dict | None:
    """The meta of a run's own token files when they match its tokenizer and corpus, else None."""
    try:
        meta = load_meta(tokens)
    except DataError:
        return None
    if meta.get("tokenizer_sha256") != tokenizer.sha256 or meta.get("corpus_spec") != corpus_spec:
        return None
    return meta


def plan_inputs(cfg: TrainingConfig, out: Path, resuming: bool,
                tokens_from: str | os.PathLike[str] | None = None) -> InputPlan:
    """Every refusal of a run's inputs, writing nothing: the tokenizer loads (or trains, in memory)
    and has the vocabulary asked for, and the corpus holds one training batch and one validation
    sequence (counted from token files already in place, else by tokenizing just enough of it)."""
    corpus = None

    def the_corpus() -> Corpus:
        nonlocal corpus  # loaded on first use: a resumed run with its tokens in place never needs it
        if corpus is None:
            # the split seed is fixed (not cfg.seed): runs with different seeds share one held-out set
            corpus = load_corpus(cfg.corpus, max_bytes=cfg.max_corpus_bytes)
        return corpus

    save_to, trained_in_s = None, None
    if cfg.tokenizer:
        tok = load_tokenizer(cfg.tokenizer)
        if cfg.vocab_size is not None and cfg.vocab_size != tok.vocab_size:
            raise TrainingError(f"tokenizer {cfg.tokenizer} has {tok.vocab_size} tokens but vocab_size="
                                f"{cfg.vocab_size} was asked for; drop --vocab-size or use a matching "
                                f"tokenizer")
    elif resuming:
        tok = load_tokenizer(out / "tokenizer.json")
    else:
        t0 = time.perf_counter()
        tok = train_tokenizer(the_corpus(), cfg.vocab_size or DEFAULT_VOCAB_SIZE)
        save_to, trained_in_s = out / "tokenizer.json", time.perf_counter() - t0
    tokens = Path(tokens_from) if tokens_from else out / "tokens"
    meta = own_token_meta(tokens, tok, cfg.corpus) if (resuming or tokens_from) else None
    need = {"train": cfg.batch_size * cfg.seq_len + 1, "val": cfg.seq_len + 1}
    if meta is not None:
        have = {split: meta["splits"][split]["n_tokens"] for split in need}
    else:
        have = {split: count_tokens(the_corpus().splits[split], tok, n) for split, n in need.items()}
    check_token_counts(cfg, have)
    # a resumed run reuses its own token files without loading the corpus; a new run's (linked or
    # made) are checked against the corpus by prepare_tokens
    return InputPlan(tok, save_to, meta if resuming else None, corpus, trained_in_s)


def count_tokens(documents: list, tokenizer: Tokenizer, enough: int, batch_documents: int = 64) -> int:
    """Tokens of `documents` as the token files will hold them (each document and its end-of-text),
    counted only until there are `enough`: a check of a large corpus tokenizes a few documents."""
    n = 0
    for start in range(0, len(documents), batch_documents):
        texts = [d.text for d in documents[start:start + batch_documents]]
        n += sum(len(ids) + 1 for ids in tokenizer.encode_batch(texts))
        if n >= enough:
            break
    return n


def check_token_counts(cfg: TrainingConfig, have: dict[str, int]) -> None:
    n_train, need_train = have["train"], cfg.batch_size * cfg.seq_len + 1
    if n_train < need_train:
        raise TrainingError(
            f"corpus {cfg.corpus!r} is too small for one batch: its train split has {n_train} tokens, "
            f"a batch of {cfg.batch_size}x{cfg.seq_len} needs {need_train}; use a larger corpus or "
            f"smaller --batch-size/--seq-len")
    if have["val"] < cfg.seq_len + 1:
        raise TrainingError(
            f"corpus {cfg.corpus!r} is too small to validate on: its val split has {have['val']} tokens, "
            f"one sequence of {cfg.seq_len} needs {cfg.seq_len + 1}; use a larger corpus or a smaller "
            f"--seq-len")


def write_inputs(plan: InputPlan, cfg: TrainingConfig, out: Path, log: logging.Logger) -> RunInputs:
    """Write what `plan_inputs` planned: the tokenizer trained for the run, the token files (unless
    current already), and open the splits the run reads."""
    if plan.save_tokenizer_to is not None:
        plan.tokenizer.save(plan.save_tokenizer_to)
        log.info(f"trained a {plan.tokenizer.vocab_size}-token BPE tokenizer in {plan.trained_in_s:.1f} s "
                 f"-> {plan.save_tokenizer_to}")
    tokens = out / "tokens"
    meta = own_token_meta(tokens, plan.tokenizer, cfg.corpus) if plan.token_meta is not None else None
    if meta is None:  # (re)tokenize; prepare_tokens itself skips the work when nothing changed
        corpus = plan.corpus or load_corpus(cfg.corpus, max_bytes=cfg.max_corpus_bytes)
        meta = prepare_tokens(corpus, plan.tokenizer, tokens)
    check_token_counts(cfg, {split: meta["splits"][split]["n_tokens"] for split in ("train", "val")})
    train = TokenDataset(tokens, "train", cfg.seq_len)
    val = TokenDataset(tokens, "val", cfg.seq_len)
    log.info(f"data: {cfg.corpus} -> {train.n_tokens:,} train / {val.n_tokens:,} val tokens")
    return RunInputs(plan.tokenizer, meta, train, val)


def prepare_inputs(cfg: TrainingConfig, out: Path, resuming: bool, log: logging.Logger) -> RunInputs:
    """`plan_inputs`, then `write_inputs`: the tokenizer and token files of a run, ready to read."""
    return write_inputs(plan_inputs(cfg, out, resuming), cfg, out, log)
