"""Training: one rule, one job per {size} × {run} × {seed}.

    train -> {R}/train/{size}/{run}/seed{seed}/{config.json, metrics.jsonl, summary.json, train.log}

{run} is a baseline strategy (none, full, selective, sac), DRAT at a price of memory
(drat-lam<λ>) or DRAT under a peak budget (drat-budget<GiB>). Every run uses the shared
tokenizer and token files. `resources: gpu` is 1 at paper scale (a default profile limits the
total), 0 on the CPU.
"""


rule train:
    """Train one run (workflow/scripts/train_run.py over drat.train.ResourceAwareTrainer)."""
    input:
        tokenizer=f"{R}/data/tokenizer.json",
        tokens=f"{R}/data/tokens",
    output:
        summary=f"{R}/train/{{size}}/{{run}}/seed{{seed}}/summary.json",
        metrics=f"{R}/train/{{size}}/{{run}}/seed{{seed}}/metrics.jsonl",
        config=f"{R}/train/{{size}}/{{run}}/seed{{seed}}/config.json",
    params:
        fields=train_fields,
        out=lambda wc: run_dir(wc.size, wc.run, wc.seed),
    threads: threads_of("threads_train")
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("mem_mb_train", 4000),
        runtime=RES.get("runtime_train", 60),
    log:
        f"{R}/logs/train/{{size}}/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{size}}/{{run}}/seed{{seed}}.tsv"
    shell:
        "python workflow/scripts/train_run.py --config-json {params.fields:q} --tokenizer {input.tokenizer} "
        "--tokens {input.tokens} --out {params.out} --threads {threads} > {log} 2>&1"
