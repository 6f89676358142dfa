"""The paper: paper/*.tex built with latexmk against this scale's generated tables, macros, figures.

    paper -> {build_dir}/drat.pdf

The sources stay in paper/; latexmk runs from the repository root with
TEXINPUTS=<parent of generated_dir>:<parent of figures_dir>:paper: so `\\input{generated/...}` and
`\\includegraphics{figures/...}` resolve to this scale's files, and aux files go to
{build_dir}/latex/.
"""

PAPER_SOURCES = sorted(str(p) for p in Path("paper").rglob("*.tex") if "generated" not in p.parts) + [
    "paper/references.bib"]


rule paper:
    """latexmk -pdf: the PDF of this scale."""
    input:
        PAPER_SOURCES,
        FIGURE_FILES,
        TABLE_FILES,
    output:
        PAPER_PDF,
    params:
        texinputs=":".join(dict.fromkeys([str(Path(GEN).parent), str(Path(FIG).parent), "paper"])),
        outdir=f"{BUILD}/latex",
    log:
        f"{R}/logs/paper.log",
    benchmark:
        f"{R}/benchmarks/paper.tsv"
    shell:
        "TEXINPUTS={params.texinputs}: BIBINPUTS=paper: latexmk -pdf -interaction=nonstopmode -halt-on-error "
        "-file-line-error -outdir={params.outdir} paper/drat.tex > {log} 2>&1 && "
        "cp {params.outdir}/drat.pdf {output}"
