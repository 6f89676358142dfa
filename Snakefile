"""DRAT paper pipeline: corpus → tokenizer → tokenize → train → profile → aggregate → stats →
notebooks → paper.

    snakemake --cores all --configfile workflow/config/smoke.yaml        # CPU, minutes (CI)
    snakemake --cores all --workflow-profile workflow/profiles/default \
              --configfile workflow/config/paper.yaml                    # the GPU grid
    snakemake --cores all --configfile workflow/config/paper.yaml --config archived=true
                                                                         # figures/tables/PDF from
                                                                         # committed raw results
    snakemake -n -F --configfile workflow/config/paper.yaml              # every job of the grid
                                                                         # (-n alone: the out-of-date ones)

Without --configfile the smoke config is taken; the first line on stderr names the config used.
Every path comes from the config (`results_dir`, `paper.*`); every derived file, the PDF, figures
and generated tables included, lands under results_dir (gitignored). The rules live in
workflow/rules/ and run only the `drat` command and `python -m drat.…` modules. Compute rules
(train, profile, bench, exactness, repeat) are separate from the cheap rules that only read their
outputs (aggregate, stats, notebooks, paper), so a figure tweak never retrains anything.
docs/reproducing.md walks through all of it.
"""

from snakemake.utils import min_version

min_version("8.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/exactness.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/notebooks.smk"
include: "workflow/rules/paper.smk"


onstart:
    check_latex(workflow.dag)  # LaTeX missing: one line and exit 2 before any job, if the PDF is to be built


rule all:
    """The paper PDF and every figure and table it is built from."""
    input:
        PAPER_PDF,
        FIGURE_FILES,
        TABLE_FILES,
        NOTEBOOK_HTML,
    default_target: True
