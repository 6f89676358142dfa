"""Pipeline step `tokenize`: the corpus's train/val/test splits into token memmaps, once for all runs.

    python workflow/scripts/make_tokens.py --corpus stdlib --max-bytes 400000 --corpus-json corpus.json \
        --tokenizer tokenizer.json --out results/smoke/data/tokens

`drat train` has no flag to read tokens from a given folder; `train_run.py` places these files
in each run's `tokens/`, where the trainer finds them current and skips tokenizing again.
"""

from __future__ import annotations

import argparse
import json
import sys

from drat.data import load_corpus, load_tokenizer, prepare_tokens


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--max-bytes", type=int, default=None)
    ap.add_argument("--corpus-json", required=True, help="output of the corpus step (pins the sha256)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    pinned = json.loads(open(a.corpus_json).read())
    corpus = load_corpus(a.corpus, max_bytes=a.max_bytes)
    if corpus.sha256 != pinned["sha256"]:
        print(f"tokenize: error: corpus {a.corpus!r} changed since the corpus step (sha256 {corpus.sha256} "
              f"!= {pinned['sha256']}); rerun the pipeline from the corpus step", file=sys.stderr)
        return 1
    meta = prepare_tokens(corpus, load_tokenizer(a.tokenizer), a.out)
    print(json.dumps({"out": a.out, **{s: v["n_tokens"] for s, v in meta["splits"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
