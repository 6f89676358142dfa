"""The paper: paper/*.tex built with latexmk against this scale's generated tables, macros, figures.

    latex -> {build_dir}/latex/drat.pdf   latexmk in its own working folder
    paper -> {build_dir}/drat.pdf         that PDF, moved into place once it is complete

The sources stay in paper/ and name `generated/...` and `figures/...`; latexmk runs from the
repository root with TEXINPUTS=<parent of generated_dir>:<parent of figures_dir>:paper: so those
resolve to this scale's derived files (results/<scale>/paper/{generated,figures}/, never
committed). Two rules, so that a failed LaTeX build never costs the last good PDF: Snakemake
removes a job's outputs when it starts and when it fails, and only the `latex` job, whose output
is the working copy, can fail on LaTeX; `paper` runs only after it succeeded. `paper` takes the
sources, figures and tables as inputs too, so that after a failed build the next run, seeing them
changed, builds the PDF again (Snakemake does not rerun a job for a missing intermediate file).

latexmk, pdflatex and bibtex are checked when a run starts (`check_latex`, onstart in the
Snakefile), before any job, and only when the `latex` job is to run; a dry run does not check.
"""

import shutil

PAPER_SOURCES = sorted(str(p) for p in Path("paper").rglob("*.tex")) + ["paper/references.bib"]
PAPER_INPUTS = PAPER_SOURCES + FIGURE_FILES + TABLE_FILES
LATEX_TOOLS = ("latexmk", "pdflatex", "bibtex")
LATEX_FIX = ("sudo apt-get install latexmk texlive-latex-base texlive-latex-recommended "
             "texlive-latex-extra texlive-fonts-recommended")


def check_latex(dag):
    """onstart: refuse in one line, before any job runs, when the PDF is to be built and a LaTeX
    tool is not installed (a GPU box or a CPU box without TeX)."""
    if not any(job.rule.name == "latex" for job in dag.needrun_jobs()):
        return
    missing = [t for t in LATEX_TOOLS if shutil.which(t) is None]
    if missing:
        print(f"error: the paper needs {', '.join(missing)}, not found on PATH: install TeX Live "
              f"({LATEX_FIX}), or build everything but the PDF with --omit-from latex", file=sys.stderr)
        sys.exit(2)


rule latex:
    """latexmk -pdf into {build_dir}/latex/, a folder of its own made afresh."""
    input:
        PAPER_INPUTS,
    output:
        f"{BUILD}/latex/drat.pdf",
    params:
        texinputs=":".join(dict.fromkeys([str(Path(GEN).parent), str(Path(FIG).parent), "paper"])),
        outdir=f"{BUILD}/latex",
    log:
        f"{R}/logs/paper.log",
    benchmark:
        f"{R}/benchmarks/paper.tsv"
    shell:
        "rm -rf {params.outdir} && mkdir -p {params.outdir} && "
        "{{ TEXINPUTS={params.texinputs}: BIBINPUTS=paper: latexmk -pdf -interaction=nonstopmode "
        "-halt-on-error -file-line-error -outdir={params.outdir} paper/drat.tex > {log} 2>&1 || "
        "{{ echo \"latex: latexmk failed; see {log} and {params.outdir}/drat.log (the previous "
        "{BUILD}/drat.pdf, if any, is kept)\" >&2; exit 1; }}; }}"


rule paper:
    """The finished PDF of this scale, moved into place (a copy, then a rename)."""
    input:
        PAPER_INPUTS,  # its own too: a changed input reruns it even when the working copy is gone
        pdf=f"{BUILD}/latex/drat.pdf",
    output:
        PAPER_PDF,
    shell:
        "cp {input.pdf} {output}.tmp && mv {output}.tmp {output}"
