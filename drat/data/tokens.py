"""Token files: tokenize a corpus's splits once into flat binary arrays, then sample batches from memmaps.

Layout of a token directory (nanoGPT-style):
    train.bin, val.bin, test.bin   token ids, native-endian uint16 (vocab <= 65535) or uint32, each document
                                   followed by the end-of-text id
    meta.json                      dtype, tokens per split, vocab size, tokenizer and corpus hashes
Every file is written to a temporary name and renamed into place, and meta.json is written last, so a
directory with a meta.json is complete even if an earlier run was killed halfway.

`TokenDataset` memory-maps one split and cuts (x, y) batches with y = x shifted by one token. Batches are
a pure function of a torch.Generator state or of an explicit (seed, step), so a training run can record
its data position and resume on exactly the same batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from drat.data.corpora import SPLIT_NAMES, Corpus, DataError, manifest_sha256

TOKENS_FORMAT = "drat-tokens/1"
META_FILENAME = "meta.json"
UINT16_MAX_VOCAB = 65535
# mkstemp creates files readable by the owner only; finished files get the usual rw-r--r--.
_FILE_MODE = 0o644


class TokenDataError(DataError):
    """Token files are missing, inconsistent, or too small for the request; the message says which."""


class SupportsTokenize(Protocol):
    """What `prepare_tokens` needs from a tokenizer (drat.data.tokenizer.Tokenizer provides it)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_id(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype for the ids: uint16 halves disk and page-cache use when the vocab fits."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= UINT16_MAX_VOCAB:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size={vocab_size} does not fit in uint32 token ids")


def split_path(data_dir: str | os.PathLike[str], split: str) -> Path:
    return Path(data_dir) / f"{split}.bin"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_split(
    path: Path,
    texts: Sequence[str],
    tokenizer: SupportsTokenize,
    dtype: np.dtype,
    batch_documents: int,
) -> dict[str, Any]:
    """Tokenize texts into path atomically, streaming so memory stays at one batch of documents."""
    digest = hashlib.sha256()
    n_tokens = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for start in range(0, len(texts), batch_documents):
                batch = texts[start : start + batch_documents]
                for ids in tokenizer.encode_batch(list(batch)):
                    ids.append(tokenizer.eot_id)  # documents are separated by end-of-text, as in GPT-2
                    arr = np.asarray(ids, dtype=np.int64)
                    if arr.min() < 0 or arr.max() >= tokenizer.vocab_size:
                        raise TokenDataError(
                            f"tokenizer produced id {int(arr.max())} outside [0, {tokenizer.vocab_size})"
                        )
                    chunk = arr.astype(dtype).tobytes()
                    f.write(chunk)
                    digest.update(chunk)
                    n_tokens += len(ids)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"file": path.name, "n_tokens": n_tokens, "n_documents": len(texts), "sha256": digest.hexdigest()}


def load_meta(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read meta.json of a token directory, with a clear error if it is missing or unreadable."""
    path = Path(data_dir) / META_FILENAME
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise TokenDataError(
            f"{path} not found: {data_dir} holds no complete token files; run prepare_tokens() first"
        ) from e
    except (OSError, ValueError) as e:
        raise TokenDataError(
            f"cannot read {path}: {e}; delete the directory and run prepare_tokens() again"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != TOKENS_FORMAT:
        raise TokenDataError(f"{path} is not a {TOKENS_FORMAT} metadata file")
    return meta


def _existing_meta_if_current(out_dir: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The meta of an earlier identical run whose files are all intact in size, else None."""
    try:
        meta = load_meta(out_dir)
    except TokenDataError:
        return None
    if any(meta.get(k) != v for k, v in expected.items()):
        return None
    itemsize = np.dtype(meta["dtype"]).itemsize
    for info in meta["splits"].values():
        path = out_dir / info["file"]
        if not path.is_file() or path.stat().st_size != info["n_tokens"] * itemsize:
            return None
    return meta


def prepare_tokens(
    corpus: Corpus,
    tokenizer: SupportsTokenize,
    out_dir: str | os.PathLike[str],
    batch_documents: int = 256,
    reuse: bool = True,
) -> dict[str, Any]:
    """Tokenize corpus.splits into out_dir/{train,val,test}.bin plus meta.json; return the meta.

    With reuse=True an existing directory made from the same corpus manifest, split and tokenizer is kept
    as is, so repeated runs skip the tokenization.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    identity = {
        "format": TOKENS_FORMAT,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "tokenizer_sha256": tokenizer.sha256,
        "corpus_spec": corpus.spec,
        "corpus_sha256": corpus.sha256,
        "corpus_manifest_sha256": manifest_sha256(corpus.manifest),
        "split_seed": corpus.seed,
        "split_fractions": list(corpus.fractions),
    }
    if reuse and (meta := _existing_meta_if_current(out_dir, identity)) is not None:
        return meta

    # Drop the old meta first: until the new one is written, the directory must not look complete.
    (out_dir / META_FILENAME).unlink(missing_ok=True)
    splits = {
        split: _write_split(
            split_path(out_dir, split),
            [d.text for d in corpus.splits[split]],
            tokenizer,
            dtype,
            batch_documents,
        )
        for split in SPLIT_NAMES
    }
    # Files are in native byte order (what np.memmap reads back); recorded so a foreign file is detectable.
    meta = {**identity, "byte_order": sys.byteorder, "splits": splits}
    _atomic_write_bytes(out_dir / META_FILENAME, json.dumps(meta, indent=2, sort_keys=True).encode())
    return meta


def _step_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed for (seed, step); hashing keeps nearby steps' streams unrelated."""
    digest = hashlib.sha256(f"drat-batch\x00{seed}\x00{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class TokenDataset:
    """One split of a token directory, memory-mapped, cut into (x, y) windows of seq_len tokens."""

    def __init__(self, data_dir: str | os.PathLike[str], split: str, seq_len: int) -> None:
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.data_dir = Path(data_dir)
        self.split = split
        self.seq_len = seq_len
        self.meta = load_meta(self.data_dir)
        if split not in self.meta["splits"]:
            raise TokenDataError(f"no split {split!r} in {self.data_dir}; have {sorted(self.meta['splits'])}")
        info = self.meta["splits"][split]
        self.n_tokens: int = info["n_tokens"]
        self.dtype = np.dtype(self.meta["dtype"])

        tokens_needed = seq_len + 1  # a window of inputs plus the one extra token its last target needs
        if self.n_tokens < tokens_needed:
            raise TokenDataError(
                f"split {split!r} in {self.data_dir} is too small: it has {self.n_tokens} tokens, but one "
                f"sequence of seq_len={seq_len} needs at least {tokens_needed} tokens. Use a larger corpus "
                f"(more documents in this split) or a smaller seq_len."
            )
        path = self.data_dir / info["file"]
        size_bytes = path.stat().st_size if path.is_file() else -1
        if size_bytes != self.n_tokens * self.dtype.itemsize:
            raise TokenDataError(
                f"{path} has {size_bytes} bytes but meta.json promises {self.n_tokens} tokens of "
                f"{self.dtype.name}; the directory is damaged, run prepare_tokens(..., reuse=False)"
            )
        # Read-only map: the OS pages tokens in on demand, so the split never has to fit in RAM.
        self._tokens = np.memmap(path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))

    @property
    def n_positions(self) -> int:
        """How many distinct window starts exist (0 .. n_tokens - seq_len - 1)."""
        return self.n_tokens - self.seq_len

    def batch_from_offsets(self, offsets: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x[b] = tokens[o_b : o_b + seq_len], y[b] = tokens[o_b + 1 : o_b + seq_len + 1], as int64."""
        starts = np.asarray(offsets, dtype=np.int64).reshape(-1)
        if starts.size and (starts.min() < 0 or starts.max() >= self.n_positions):
            raise IndexError(f"window offsets must lie in [0, {self.n_positions}), got {starts.tolist()}")
        windows = self._tokens[starts[:, None] + np.arange(self.seq_len + 1)]  # (B, seq_len + 1) copy
        # int64 because embedding lookups and cross_entropy targets want long indices.
        block = torch.from_numpy(windows.astype(np.int64))
        return block[:, :-1].contiguous(), block[:, 1:].contiguous()

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniformly random windows drawn from `generator`; save generator.get_state() to resume exactly."""
        offsets = torch.randint(0, self.n_positions, (batch_size,), generator=generator)
        return self.batch_from_offsets(offsets)

    def batch_at(self, step: int, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of `step`: random windows that depend only on (seed, step).

        Stateless, so the data position to checkpoint is just the step number.
        """
        generator = torch.Generator().manual_seed(_step_seed(seed, step))
        return self.sample_batch(batch_size, generator)

    def n_sequential_batches(self, batch_size: int) -> int:
        """Batches that `sequential_batch` yields: non-overlapping windows covering the split once."""
        n_windows = (self.n_tokens - 1) // self.seq_len
        return math.ceil(n_windows / batch_size)

    def sequential_batch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of consecutive non-overlapping windows, for evaluation; the last may be smaller."""
        n_windows = (self.n_tokens - 1) // self.seq_len
        if not 0 <= index < self.n_sequential_batches(batch_size):
            raise IndexError(f"batch index {index} outside [0, {self.n_sequential_batches(batch_size)})")
        windows = range(index * batch_size, min((index + 1) * batch_size, n_windows))
        return self.batch_from_offsets([w * self.seq_len for w in windows])

    def iter_sequential(
        self, batch_size: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in range(start_batch, self.n_sequential_batches(batch_size)):
            yield self.sequential_batch(index, batch_size)
