"""Byte-level BPE tokenizer (GPT-2 style) trained with the `tokenizers` library, saved as one JSON file.

Byte-level means every string maps to tokens and back without loss: text is first turned into bytes, so
there is no unknown token and decode(encode(x)) == x for any Unicode string, whitespace runs included.
No normalizer, no prefix space and no post-processor are used, because each of them would alter the text.
The first special token (default "<|endoftext|>") separates documents in the token stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from drat.data.corpora import Corpus, DataError

EOT_TOKEN = "<|endoftext|>"
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (EOT_TOKEN,)
DEFAULT_VOCAB_SIZE = 8192
N_BYTE_TOKENS = 256  # the byte alphabet every byte-level vocabulary starts from


class TokenizerError(DataError):
    """A tokenizer cannot be trained or loaded; the message says why."""


class Tokenizer:
    """Thin wrapper over a `tokenizers.Tokenizer`: exact encode/decode, vocab size, end-of-text id."""

    def __init__(self, backend: _HFTokenizer, json_bytes: bytes | None = None) -> None:
        self._backend = backend
        # The hash identifies the tokenizer in token-file metadata; it is taken over the exact JSON bytes
        # that were saved or loaded, so it equals `sha256sum tokenizer.json`.
        self._json_bytes = json_bytes if json_bytes is not None else backend.to_str(pretty=True).encode()
        specials = [t for t in backend.get_added_tokens_decoder().values() if t.special]
        self._special_tokens = {t.content: backend.token_to_id(t.content) for t in specials}

    @property
    def backend(self) -> _HFTokenizer:
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included (ids are 0..vocab_size-1)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_tokens)

    @property
    def eot_token(self) -> str:
        """The document separator: the first special token given at training, which gets the lowest id."""
        if not self._special_tokens:
            raise TokenizerError("this tokenizer has no special tokens, so no end-of-text separator")
        return min(self._special_tokens, key=self._special_tokens.__getitem__)

    @property
    def eot_id(self) -> int:
        return self._special_tokens[self.eot_token]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._json_bytes).hexdigest()

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`.

        By default a special token's string appearing *inside* the text is encoded as ordinary text, so a
        document that mentions "<|endoftext|>" cannot forge a document boundary; allow_special=True maps
        it to the special id instead. Either way decode(encode(text)) == text.
        """
        if allow_special or not any(s in text for s in self._special_tokens):
            return self._backend.encode(text, add_special_tokens=False).ids
        return list(self._encode_literal_specials(text))

    def encode_batch(self, texts: Sequence[str], allow_special: bool = False) -> list[list[int]]:
        """Like `encode` on each text; the common case runs in the library's parallel batch encoder."""
        if allow_special or not any(s in t for t in texts for s in self._special_tokens):
            return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]
        return [self.encode(t, allow_special=allow_special) for t in texts]

    def _encode_literal_specials(self, text: str) -> Iterator[int]:
        # Split the text at every special-token occurrence; encode the plain stretches normally and each
        # occurrence one character at a time, which no special token (all longer than one char) matches.
        # Byte-level decoding concatenates bytes, so the pieces decode back to exactly the input.
        pos = 0
        while pos < len(text):
            hits = [(i, s) for s in self._special_tokens if (i := text.find(s, pos)) >= 0]
            if not hits:
                yield from self._backend.encode(text[pos:], add_special_tokens=False).ids
                return
            start, special = min(hits, key=lambda h: (h[0], -len(h[1])))
            if start > pos:
                yield from self._backend.encode(text[pos:start], add_special_tokens=False).ids
            for ch in special:
                yield from self._backend.encode(ch, add_special_tokens=False).ids
            pos = start + len(special)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids; special tokens are kept as their strings so nothing is silently dropped."""
        return self._backend.decode(list(ids), skip_special_tokens=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer JSON atomically (temp file + rename) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self._json_bytes)
            os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a tokenizer is meant to be shared
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _training_texts(corpus_or_texts: Corpus | Iterable[str]) -> Iterable[str]:
    # A Corpus contributes only its train split: training the tokenizer on val/test documents would let
    # the vocabulary leak information about the held-out text.
    if isinstance(corpus_or_texts, Corpus):
        return (d.text for d in corpus_or_texts.splits["train"])
    if isinstance(corpus_or_texts, str):
        raise TokenizerError("train_tokenizer needs a Corpus or an iterable of strings, not one string")
    return corpus_or_texts


def train_tokenizer(
    corpus_or_texts: Corpus | Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    out_path: str | os.PathLike[str] | None = None,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer; save it to out_path (one JSON file) when given.

    vocab_size counts the 256 byte tokens, the merges and the special tokens. It is an upper bound: on a
    small corpus training stops early once no pair occurs min_frequency times, so check `.vocab_size`.
    The special tokens get ids 0..len(special_tokens)-1 in the order given; the first is the end-of-text
    document separator.
    """
    special_tokens = list(special_tokens)
    if not special_tokens:
        raise TokenizerError("give at least one special token; the first one separates documents")
    if len(set(special_tokens)) != len(special_tokens) or any(len(s) < 2 for s in special_tokens):
        raise TokenizerError(f"special tokens must be distinct strings of 2+ characters: {special_tokens}")
    min_vocab_size = N_BYTE_TOKENS + len(special_tokens)
    if vocab_size < min_vocab_size:
        raise TokenizerError(
            f"vocab_size={vocab_size} is too small: the {N_BYTE_TOKENS} byte tokens and "
            f"{len(special_tokens)} special token(s) alone need {min_vocab_size}"
        )

    backend = _HFTokenizer(models.BPE())
    # use_regex=True splits on the GPT-2 pattern (words, numbers, punctuation, whitespace runs) before BPE;
    # add_prefix_space=False keeps the text unchanged, which exact round-tripping needs.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        # All 256 byte symbols are in the vocabulary even if the training text never uses them, so any
        # input can be encoded.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_texts(corpus_or_texts), trainer=trainer)
    tokenizer = Tokenizer(backend)
    if out_path is not None:
        tokenizer.save(out_path)
    return tokenizer


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer JSON written by `train_tokenizer`; raise TokenizerError if missing or corrupt."""
    path = Path(path)
    try:
        json_bytes = path.read_bytes()
    except FileNotFoundError as e:
        raise TokenizerError(
            f"tokenizer file {path} not found; train one with drat.data.train_tokenizer(..., out_path=...)"
        ) from e
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from e
    try:
        config = json.loads(json_bytes)
        backend = _HFTokenizer.from_str(json_bytes.decode("utf-8"))
    except Exception as e:  # json raises ValueError; the Rust side raises a bare Exception
        raise TokenizerError(
            f"tokenizer file {path} is corrupt or not a tokenizers JSON ({type(e).__name__}: {e}); "
            "delete it and train again"
        ) from e
    decoder_type = (config.get("decoder") or {}).get("type") if isinstance(config, dict) else None
    if decoder_type != "ByteLevel":
        raise TokenizerError(
            f"tokenizer file {path} is not a byte-level BPE tokenizer (decoder {decoder_type!r}); "
            "drat needs a ByteLevel decoder for exact round-trips"
        )
    return Tokenizer(backend, json_bytes=json_bytes)
