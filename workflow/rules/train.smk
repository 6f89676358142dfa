"""Training: one rule, one job per {size} × {run} × {seed}.

    train      -> {R}/train/{size}/{run}/seed{seed}/{config.json, metrics.jsonl, summary.json, train.log}
    train_long -> {R}/long/{size}/{run}/seed{seed}/...   the same run with `long_run`'s steps

{run} is a baseline strategy (none, full, selective, sac), DRAT at a price of memory
(drat-lam<λ>) or DRAT under a peak budget (drat-budget<GiB>). Every run uses the shared
tokenizer and token files (`drat train --tokenizer ... --tokens ...`), in a run folder made fresh
(`--overwrite`: nothing of an earlier, failed attempt stays). A size's `gpus` (default 1) is the
number of processes of each of its runs: 1 runs `drat train`; more prepares the run folder with
`drat train --prepare-only FILE` and launches
`torchrun --standalone --nproc_per_node <gpus> -m drat.cli train --config FILE --distributed <ddp|fsdp>`
(the size's `distributed`; one node). `resources: gpu` is that many GPUs at paper scale (the
SLURM profile turns it into --gpus), 0 on the CPU.
"""

import shlex


def train_gpus(wc):
    return int(size_cfg(wc.size).get("gpus", 1))


def train_command(wc, input, threads, out=None, long=False):
    """`drat train` for one process; for several, `drat train --prepare-only`, then torchrun.
    `out`: another folder for the same run (the exactness rules' repeat, the long run)."""
    out = out or run_dir(wc.size, wc.run, wc.seed)
    train = (f"drat train --config-json {shlex.quote(train_fields(wc, long))} --tokenizer {input.tokenizer} "
             f"--tokens {input.tokens} --out {out} --overwrite --threads {threads}")
    n = train_gpus(wc)
    if n == 1:
        return train
    fields = f"{out}.config.json".replace(f"{R}/", f"{R}/logs/", 1)
    mode = size_cfg(wc.size).get("distributed", "ddp")
    return (f"{train} --prepare-only {fields} && "
            f"torchrun --standalone --nproc_per_node {n} -m drat.cli train --config {fields} "
            f"--distributed {mode}")


rule train:
    """Train one run (drat.train.ResourceAwareTrainer; under torchrun on a size's `gpus` > 1)."""
    input:
        tokenizer=f"{R}/data/tokenizer.json",
        tokens=f"{R}/data/tokens",
    output:
        summary=f"{R}/train/{{size}}/{{run}}/seed{{seed}}/summary.json",
        metrics=f"{R}/train/{{size}}/{{run}}/seed{{seed}}/metrics.jsonl",
        config=f"{R}/train/{{size}}/{{run}}/seed{{seed}}/config.json",
    params:
        cmd=lambda wc, input, threads: train_command(wc, input, threads),
    threads: lambda wc: threads_of("threads_train") * train_gpus(wc)
    resources:
        gpu=lambda wc: train_gpus(wc) if RES.get("gpu", 0) else 0,
        mem_mb=lambda wc: RES.get("mem_mb_train", 4000) * train_gpus(wc),
        cpus_per_task=lambda wc: threads_of("threads_train") * train_gpus(wc),  # SLURM: the threads
        runtime=RES.get("runtime_train", 60),
    log:
        f"{R}/logs/train/{{size}}/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{size}}/{{run}}/seed{{seed}}.tsv"
    shell:
        "({params.cmd}) > {log} 2>&1"


use rule train as train_long with:
    output:
        summary=f"{R}/long/{{size}}/{{run}}/seed{{seed}}/summary.json",
        metrics=f"{R}/long/{{size}}/{{run}}/seed{{seed}}/metrics.jsonl",
        config=f"{R}/long/{{size}}/{{run}}/seed{{seed}}/config.json",
    params:
        cmd=lambda wc, input, threads: train_command(wc, input, threads, f"{R}/long/{wc.size}/{wc.run}/seed{wc.seed}",
                                                     long=True),
    log:
        f"{R}/logs/long/{{size}}/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/long/{{size}}/{{run}}/seed{{seed}}.tsv"
