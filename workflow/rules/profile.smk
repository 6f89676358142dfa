"""Profiling: memory and step time of every plan, per {size} × {point}; and the one-process bench.

    costs   -> {R}/costs/{size}.json               `drat profile --costs-only` (the site cost table)
    profile -> {R}/profile/{size}/{point}.json     `drat profile --point {point}` (drat/oracle: --costs)
    bench   -> {R}/bench/{size}/frontier.{json,csv}   `drat bench frontier` (side by side)
    bench_process -> {R}/bench/{size}/p{proc}/frontier.{json,csv}   the same, once per process
                                                   when `bench.processes` > 1

{point}: none | full | selective | sac | drat-lam<λ> | drat-budget<GiB> | oracle-lam<λ> |
oracle-budget<GiB>. On CUDA: peak allocated memory and CUDA-event step times; on the CPU:
exact saved-activation bytes and wall-clock step times. Profiles take every core by default
(threads_profile: all) so that their timings do not share the machine with other jobs.
"""


def _profile_flags(wc):
    p = size_cfg(wc.size)["profile"]
    return (f"{model_flags(wc.size)} --vocab-size {config['tokenizer']['vocab_size']} "
            f"--seq-len {p.get('seq_len', 64)} --batch-size {p.get('batch_size', 2)} "
            f"--steps {p.get('steps', 12)} --warmup {p.get('warmup', 3)} "
            f"--cost-model {p.get('cost_model', 'measured')} --device {config['device']}")


rule costs:
    """The site cost table of one size, measured once; every drat/oracle point plans on it."""
    output:
        f"{R}/costs/{{size}}.json",
    params:
        flags=_profile_flags,
    threads: threads_of("threads_profile")
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("mem_mb_profile", 4000),
        runtime=RES.get("runtime_profile", 10),
    log:
        f"{R}/logs/costs/{{size}}.log",
    benchmark:
        f"{R}/benchmarks/costs/{{size}}.tsv"
    shell:
        "drat profile --size {wildcards.size} --costs-only {params.flags} --threads {threads} "
        "--out {output} > {log} 2>&1"


def _plan_costs(wc):
    """drat and oracle points plan on the size's one cost table; baselines need none."""
    return [f"{R}/costs/{wc.size}.json"] if wc.point.startswith(("drat-", "oracle-")) else []


rule profile:
    """One plan on one size: saved bytes, (CUDA) peak memory, step times."""
    input:
        costs=_plan_costs,
    output:
        f"{R}/profile/{{size}}/{{point}}.json",
    params:
        flags=_profile_flags,
        costs=lambda wc, input: f"--costs {input.costs}" if input.costs else "",
    threads: threads_of("threads_profile")
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("mem_mb_profile", 4000),
        runtime=RES.get("runtime_profile", 10),
    log:
        f"{R}/logs/profile/{{size}}/{{point}}.log",
    benchmark:
        f"{R}/benchmarks/profile/{{size}}/{{point}}.tsv"
    shell:
        "drat profile --size {wildcards.size} --point {wildcards.point} {params.flags} {params.costs} "
        "--threads {threads} --out {output} > {log} 2>&1"


def _bench_flags(wc):
    p = size_cfg(wc.size)["profile"]
    lams = [l for l in p.get("lambdas", []) if l > 0] or [0.05]
    b = config.get("bench", {})
    return (f"{model_flags(wc.size)} --vocab-size {config['tokenizer']['vocab_size']} "
            f"--seq-len {p.get('seq_len', 64)} --batch-size {p.get('batch_size', 2)} "
            f"--steps {b.get('steps', 12)} --warmup {b.get('warmup', 3)} --device {config['device']} "
            f"--lambdas {','.join(fmt_number(l) for l in lams)} "
            f"--compiled-lambdas {','.join(fmt_number(l) for l in b.get('compiled_lambdas', [0.5, 1, 2, 5]))} "
            f"--compile-budgets {','.join(fmt_number(x) for x in b.get('compile_budgets', [1.0, 0.5, 0.2]))}"
            + f" --rounds {b.get('rounds', 3)} --arms {','.join(b.get('arms', ['store', 'recompute']))}"
            + f" --peak-cuts {','.join(fmt_number(c) for c in b.get('peak_cuts', [0.45]))}"
            + ("" if b.get("compiled_drat_budgets", False) else " --no-compiled-drat-budgets"))


rule bench:
    """Every strategy side by side in one process (`drat bench frontier`)."""
    output:
        json=f"{R}/bench/{{size}}/frontier.json",
        csv=f"{R}/bench/{{size}}/frontier.csv",
    params:
        flags=_bench_flags,
        out=lambda wc: f"{R}/bench/{wc.size}",
    threads: threads_of("threads_profile")
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("mem_mb_profile", 4000),
        runtime=RES.get("runtime_profile", 10),
    log:
        f"{R}/logs/bench/{{size}}.log",
    benchmark:
        f"{R}/benchmarks/bench/{{size}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} drat bench frontier --size {wildcards.size} {params.flags} "
        "--out {params.out} > {log} 2>&1"


use rule bench as bench_process with:
    output:
        json=f"{R}/bench/{{size}}/p{{proc}}/frontier.json",
        csv=f"{R}/bench/{{size}}/p{{proc}}/frontier.csv",
    params:
        flags=_bench_flags,
        out=lambda wc: f"{R}/bench/{wc.size}/p{wc.proc}",
    log:
        f"{R}/logs/bench/{{size}}-p{{proc}}.log",
    benchmark:
        f"{R}/benchmarks/bench/{{size}}-p{{proc}}.tsv",


rule bench_extra:
    """One of `extra_benches`: `drat bench <args> --device <device> --out extra/<name>`."""
    output:
        f"{R}/extra/{{name}}/{{stem}}.json",
    params:
        args=lambda wc: next(e["args"] for e in EXTRA if e["name"] == wc.name),
        out=lambda wc: f"{R}/extra/{wc.name}",
    wildcard_constraints:
        stem="frontier|offload|capacity|adapt",
    threads: threads_of("threads_profile")
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("mem_mb_profile", 4000),
        runtime=RES.get("runtime_profile", 10),
    log:
        f"{R}/logs/extra/{{name}}-{{stem}}.log",
    benchmark:
        f"{R}/benchmarks/extra/{{name}}-{{stem}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} drat bench {params.args} --device {config[device]} --out {params.out} "
        "> {log} 2>&1"
