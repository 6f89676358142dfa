"""Data rules: pin the corpus, train the BPE tokenizer, tokenize the splits once for every run.

    corpus     -> {R}/data/corpus.json      `drat data pin`: manifest + sha256 (shakespeare is downloaded here, once)
    tokenizer  -> {R}/data/tokenizer.json   `drat tokenizer train`
    tokenize   -> {R}/data/tokens/          `drat data tokenize`: train/val/test .bin memmaps + meta.json
"""


def _max_bytes_flag():
    mb = config["corpus"].get("max_bytes")
    return f"--max-bytes {mb}" if mb else ""


rule corpus:
    """Load the corpus spec and record its manifest and hash."""
    output:
        f"{R}/data/corpus.json",
    params:
        spec=config["corpus"]["spec"],
        max_bytes=_max_bytes_flag(),
    log:
        f"{R}/logs/corpus.log",
    benchmark:
        f"{R}/benchmarks/corpus.tsv"
    shell:
        "drat data pin --corpus {params.spec:q} {params.max_bytes} --out {output} > {log} 2>&1"


rule tokenizer:
    """A byte-level BPE tokenizer of the configured vocabulary, shared by every run."""
    input:
        f"{R}/data/corpus.json",
    output:
        f"{R}/data/tokenizer.json",
    params:
        spec=config["corpus"]["spec"],
        vocab=config["tokenizer"]["vocab_size"],
        max_bytes=(f"--max-corpus-bytes {config['corpus']['max_bytes']}"
                   if config["corpus"].get("max_bytes") else ""),
    log:
        f"{R}/logs/tokenizer.log",
    benchmark:
        f"{R}/benchmarks/tokenizer.tsv"
    shell:
        "drat tokenizer train --corpus {params.spec:q} --vocab-size {params.vocab} {params.max_bytes} "
        "--out {output} > {log} 2>&1"


rule tokenize:
    """The corpus splits as token memmaps (checked against the pinned corpus hash)."""
    input:
        corpus=f"{R}/data/corpus.json",
        tokenizer=f"{R}/data/tokenizer.json",
    output:
        directory(f"{R}/data/tokens"),
    params:
        spec=config["corpus"]["spec"],
        max_bytes=_max_bytes_flag(),
    log:
        f"{R}/logs/tokenize.log",
    benchmark:
        f"{R}/benchmarks/tokenize.tsv"
    shell:
        "drat data tokenize --corpus {params.spec:q} {params.max_bytes} --pinned {input.corpus} "
        "--tokenizer {input.tokenizer} --out {output} > {log} 2>&1"
