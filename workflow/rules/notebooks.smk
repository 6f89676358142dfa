"""Notebooks (jupytext percent scripts in notebooks/) executed by papermill on the `drat` kernel.

    kernel       -> {R}/notebooks/kernel.json   `python -m drat.analysis.notebook kernel` (ipykernel install --user)
    nb_frontier  -> figures frontier, lambda_sweep, bench
    nb_training  -> figures loss_curves, gate_heatmap, budget_tracking, long_run
    nb_tables    -> {generated}/results_table, baselines_table, claims_table, planners_table,
                    frontier_table, setup_table, bench_table, bench_verdicts, exactness_text,
                    extra_tables, macros .tex

Each figure is written as PDF + PNG + a sidecar JSON with the device, torch version and commit of
its data (and of the rendering); the executed notebooks and their HTML copies stay under
{R}/notebooks/. Each nb_* rule is `python -m drat.analysis.notebook run` (papermill, then
nbconvert). These rules only read aggregate/stats outputs: plotting never recomputes.
"""

NB_INPUTS = [f"{R}/stats/{f}" for f in STATS_FILES + ["oracle_curve.csv"]] + [f"{R}/tables/{t}.csv" for t in AGG_TABLES] + [
    f"{R}/tables/provenance.json", f"{R}/tables/missing.json", f"{R}/notebooks/kernel.json",
    "drat/analysis/report.py", "drat/analysis/verdicts.py", "drat/analysis/extra_tables.py",
    f"{R}/tables/extra.json"]


def nb_params(**extra):
    return json.dumps({"tables_dir": f"{R}/tables", "stats_dir": f"{R}/stats", **extra})


rule kernel:
    """Register this interpreter as the Jupyter kernel `drat` (what papermill runs the notebooks on)."""
    output:
        f"{R}/notebooks/kernel.json",
    log:
        f"{R}/logs/kernel.log",
    shell:
        "python -m drat.analysis.notebook kernel --name drat --out {output} > {log} 2>&1"


rule nb_frontier:
    """Frontier and λ-sweep figures."""
    input:
        NB_INPUTS,
        nb="notebooks/frontier.py",
    output:
        [f"{FIG}/{f}.{e}" for f in NOTEBOOKS["frontier"] for e in ("pdf", "png", "json")],
        ipynb=f"{R}/notebooks/frontier.ipynb",
        html=f"{R}/notebooks/frontier.html",
    params:
        p=nb_params(figures_dir=FIG),
    log:
        f"{R}/logs/notebooks/frontier.log",
    benchmark:
        f"{R}/benchmarks/notebooks/frontier.tsv"
    shell:
        "python -m drat.analysis.notebook run {input.nb} --ipynb {output.ipynb} --html {output.html} "
        "--params-json {params.p:q} > {log} 2>&1"


rule nb_training:
    """Loss curves, gate heatmap and budget-tracking figures."""
    input:
        NB_INPUTS,
        nb="notebooks/training.py",
    output:
        [f"{FIG}/{f}.{e}" for f in NOTEBOOKS["training"] for e in ("pdf", "png", "json")],
        ipynb=f"{R}/notebooks/training.ipynb",
        html=f"{R}/notebooks/training.html",
    params:
        p=nb_params(figures_dir=FIG, headline_size=STATS.get("headline_size", next(iter(config["sizes"])))),
    log:
        f"{R}/logs/notebooks/training.log",
    benchmark:
        f"{R}/benchmarks/notebooks/training.tsv"
    shell:
        "python -m drat.analysis.notebook run {input.nb} --ipynb {output.ipynb} --html {output.html} "
        "--params-json {params.p:q} > {log} 2>&1"


rule nb_tables:
    """Booktabs tables and the \\newcommand macros of every number in the paper text."""
    input:
        NB_INPUTS,
        # the planners' bench where the config asks for it (archived: where it is committed)
        planners=([PLANNERS_OUTPUT] if Path(PLANNERS_OUTPUT).is_file() else []) if ARCHIVED
        else ([PLANNERS_OUTPUT] if PLANNERS_CFG and COSTS_OUTPUTS else []),
        nb="notebooks/tables.py",
    output:
        [f"{GEN}/{t}.tex" for t in TABLES],
        macros=f"{GEN}/macros.tex",
        ipynb=f"{R}/notebooks/tables.ipynb",
        html=f"{R}/notebooks/tables.html",
    params:
        p=nb_params(generated_dir=GEN, config_json=json.dumps(config, default=str),
                    planners_json=PLANNERS_OUTPUT,
                    headline_size=STATS.get("headline_size", next(iter(config["sizes"]))),
                    headline_lambda=float(STATS.get("headline_lambda", 0.05))),
    log:
        f"{R}/logs/notebooks/tables.log",
    benchmark:
        f"{R}/benchmarks/notebooks/tables.tsv"
    shell:
        "python -m drat.analysis.notebook run {input.nb} --ipynb {output.ipynb} --html {output.html} "
        "--params-json {params.p:q} > {log} 2>&1"
