"""Exactness on the device: is a recomputing step bitwise a `none` step there, and how far do two
runs of one configuration drift apart without any gate?

    exactness -> {R}/exactness/{size}/{mode}/exactness.{json,csv}   `drat bench exactness`
    repeat    -> {R}/repeat/{size}/{run}/seed{seed}/...             a training run, run again

{mode}: `plain` (the kernels training uses) or `deterministic` (PyTorch's deterministic
algorithms, strict: drat.train.set_deterministic). The bench runs one batch of the size's
training shape through every strategy and compares loss and gradients with `none`, bitwise,
including `none` against itself. The repeat is the training rule's own command for one `none`
run, written to another folder: its final loss against the original's is the run-to-run drift
that the paper's loss comparisons must be read against. On the CPU both are bitwise by
construction (the test suite checks it); on a GPU they measure the device.
"""


def _exactness_flags(wc):
    s = size_cfg(wc.size)
    t = {**config.get("train", {}), **s.get("train", {})}
    det = " --deterministic" if wc.mode == "deterministic" else ""
    return (f"{model_flags(wc.size)} --vocab-size {config['tokenizer']['vocab_size']} "
            f"--seq-len {t['seq_len']} --batch-size {t['batch_size']} --device {config['device']}{det}")


rule exactness:
    """One batch, every strategy against `none`, bitwise (loss and every gradient)."""
    output:
        json=f"{R}/exactness/{{size}}/{{mode}}/exactness.json",
        csv=f"{R}/exactness/{{size}}/{{mode}}/exactness.csv",
    params:
        flags=_exactness_flags,
        out=lambda wc: f"{R}/exactness/{wc.size}/{wc.mode}",
    threads: threads_of("threads_profile")
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("mem_mb_profile", 4000),
        runtime=RES.get("runtime_profile", 10),
    log:
        f"{R}/logs/exactness/{{size}}/{{mode}}.log",
    benchmark:
        f"{R}/benchmarks/exactness/{{size}}/{{mode}}.tsv"
    shell:
        # exit 3 is the verdict "some row differs", a result here (a GPU may well differ); any
        # other failure is a crash, whose tables may hold only part of the rows: the job fails
        "OMP_NUM_THREADS={threads} drat bench exactness --size {wildcards.size} {params.flags} "
        "--out {params.out} > {log} 2>&1 || [ $? -eq 3 ]"


rule repeat:
    """The training run {size}/{run}/seed{seed} again, into its own folder (same command)."""
    input:
        tokenizer=f"{R}/data/tokenizer.json",
        tokens=f"{R}/data/tokens",
    output:
        summary=f"{R}/repeat/{{size}}/{{run}}/seed{{seed}}/summary.json",
        metrics=f"{R}/repeat/{{size}}/{{run}}/seed{{seed}}/metrics.jsonl",
        config=f"{R}/repeat/{{size}}/{{run}}/seed{{seed}}/config.json",
    params:
        cmd=lambda wc, input, threads: train_command(wc, input, threads,
                                                     out=f"{R}/repeat/{wc.size}/{wc.run}/seed{wc.seed}"),
    threads: lambda wc: threads_of("threads_train") * train_gpus(wc)
    resources:
        gpu=lambda wc: train_gpus(wc) if RES.get("gpu", 0) else 0,
        mem_mb=lambda wc: RES.get("mem_mb_train", 4000) * train_gpus(wc),
        cpus_per_task=lambda wc: threads_of("threads_train") * train_gpus(wc),
        runtime=RES.get("runtime_train", 60),
    log:
        f"{R}/logs/repeat/{{size}}/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/repeat/{{size}}/{{run}}/seed{{seed}}.tsv"
    shell:
        "({params.cmd}) > {log} 2>&1"
