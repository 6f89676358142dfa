"""Cheap rules over the raw results: the manifest, tidy CSVs, statistics.

    manifest  -> {R}/manifest.json     every expected run folder / profile / bench file (from the config;
                                       python -m drat.analysis.manifest)
    aggregate -> {R}/tables/*.csv      python -m drat.analysis.aggregate (missing runs are listed by folder)
    stats     -> {R}/stats/*           python -m drat.analysis.stats (bootstrap CIs, TOST, frontier, budgets)
    oracle_curve -> {R}/stats/oracle_curve.csv   the oracle's predicted frontier per cost table
    planners  -> {R}/planners/planners.json   `drat bench planners` on every cost table and on
                                              deeper synthetic ones (CPU: plan quality and time)

With `archived: true` the aggregate rule does not depend on the compute rules: it reads what is
committed under results_dir and names every expected run that is absent (an error unless
`allow_missing: true`). So figures, tables and the PDF regenerate without a GPU or retraining.
"""


rule manifest:
    """The expected grid, written from the config (so paths come from Snakemake, not scripts)."""
    output:
        f"{R}/manifest.json",
    params:
        manifest=json.dumps({"scale": config["scale"], "results_dir": R, "device": config["device"],
                             "archived": ARCHIVED, "runs": TRAIN_RUNS, "profiles": PROFILE_POINTS,
                             "bench": BENCH, "exactness": EXACTNESS, "repeats": REPEATS,
                             "long_runs": LONG_RUNS, "extra": EXTRA}, sort_keys=True),
    log:
        f"{R}/logs/manifest.log",
    shell:
        "python -m drat.analysis.manifest --json {params.manifest:q} --out {output} > {log} 2>&1"


AGG_TABLES = ["runs", "curves", "gates", "profile", "profile_steps", "profile_sites", "bench", "exactness",
              "repeats", "long_runs", "long_curves"]


rule aggregate:
    """Per-run summary.json/metrics.jsonl and profile/bench JSON -> tidy CSVs."""
    input:
        manifest=f"{R}/manifest.json",
        results=[] if ARCHIVED else (TRAIN_OUTPUTS + PROFILE_OUTPUTS + BENCH_OUTPUTS + EXACTNESS_OUTPUTS
                                     + REPEAT_OUTPUTS + LONG_OUTPUTS + EXTRA_OUTPUTS),
    output:
        [f"{R}/tables/{t}.csv" for t in AGG_TABLES],
        provenance=f"{R}/tables/provenance.json",
        missing=f"{R}/tables/missing.json",
        extra=f"{R}/tables/extra.json",
    params:
        out=f"{R}/tables",
        allow=("--allow-missing" if ARCHIVED and config.get("allow_missing", False) else ""),
        # archived: new or changed committed results rerun everything downstream (params trigger)
        results_digest=archived_digest() if ARCHIVED else "",
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    shell:
        "python -m drat.analysis.aggregate --manifest {input.manifest} --out {params.out} {params.allow} > {log} 2>&1"


STATS_FILES = ["summary.csv", "paired.csv", "frontier.csv", "budget.csv", "curves_ci.csv", "stats.json"]


rule stats:
    """Bootstrap CIs over seeds, TOST of gated vs `none` loss, frontier points, budget tracking."""
    input:
        [f"{R}/tables/{t}.csv" for t in AGG_TABLES],
    output:
        [f"{R}/stats/{f}" for f in STATS_FILES],
    params:
        tables=f"{R}/tables",
        out=f"{R}/stats",
        s=STATS,
    log:
        f"{R}/logs/stats.log",
    benchmark:
        f"{R}/benchmarks/stats.tsv"
    shell:
        "python -m drat.analysis.stats --tables {params.tables} --out {params.out} --margin {params.s[tost_margin]} "
        "--alpha {params.s[alpha]} --confidence {params.s[confidence]} --n-resamples {params.s[n_resamples]} "
        "--seed {params.s[seed]} --headline-lambda {params.s[headline_lambda]} > {log} 2>&1"


# every size whose drat/oracle points plan on a cost table
COSTS_OUTPUTS = sorted({f"{R}/costs/{p['size']}.json" for p in PROFILE_POINTS if p["kind"] in ("drat", "oracle")})


rule oracle_curve:
    """The ILP oracle's predicted memory/time frontier on each size's cost table: what no gate
    setting can beat on those costs (drawn next to the measured plans in the frontier figure)."""
    input:
        # archived: the committed tables only (the costs rule must not run)
        costs=[c for c in COSTS_OUTPUTS if Path(c).is_file()] if ARCHIVED else COSTS_OUTPUTS,
        profile=f"{R}/tables/profile.csv",
    output:
        f"{R}/stats/oracle_curve.csv",
    log:
        f"{R}/logs/oracle_curve.log",
    benchmark:
        f"{R}/benchmarks/oracle_curve.tsv"
    shell:
        "python -m drat.analysis.curve --costs {input.costs} --profile {input.profile} "
        "--out {output} > {log} 2>&1"


# `drat bench planners` on every size's cost table, and on synthetic tables of `planners.synthetic_layers`
# blocks copied from the last (largest) size's: the ILP, the gates, local search and greedy, their
# objectives and planning times. A CPU compute rule; archived, its committed output is read as is.
PLANNERS_OUTPUT = f"{R}/planners/planners.json"
PLANNERS_CFG = config.get("planners") or {}


def _csv(values):
    return ",".join(f"{v:g}" for v in values)


if PLANNERS_CFG and COSTS_OUTPUTS and not ARCHIVED:

    rule planners:
        """The planners side by side on the cost tables (`drat bench planners`)."""
        input:
            costs=list(reversed(COSTS_OUTPUTS)),  # the largest size first: synthetic tables copy it
        output:
            PLANNERS_OUTPUT,
        params:
            out=f"{R}/planners",
            flags=" ".join(
                (["--synthetic-layers", _csv(PLANNERS_CFG["synthetic_layers"])]
                 if PLANNERS_CFG.get("synthetic_layers") else [])
                + ["--lambdas", _csv(PLANNERS_CFG.get("lambdas", [0.2, 1, 5])),
                   "--budgets", _csv(PLANNERS_CFG.get("budgets", [0.25, 0.5, 0.75])),
                   "--repeats", str(PLANNERS_CFG.get("repeats", 1))]),
        log:
            f"{R}/logs/planners.log",
        benchmark:
            f"{R}/benchmarks/planners.tsv"
        shell:
            "drat bench planners --costs {input.costs} {params.flags} --out {params.out} > {log} 2>&1"
