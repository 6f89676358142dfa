"""DRAT paper pipeline: corpus → tokenizer → tokenize → train → profile → aggregate → stats →
notebooks → paper.

    snakemake --cores all --configfile workflow/config/smoke.yaml        # CPU, minutes (CI)
    snakemake --cores all --workflow-profile workflow/profiles/default \
              --configfile workflow/config/paper.yaml                    # the GPU grid
    snakemake --cores all --configfile workflow/config/paper.yaml --config archived=true
                                                                         # figures/tables/PDF from
                                                                         # committed raw results

Every path comes from the config (`results_dir`, `paper.*`); the rules live in workflow/rules/.
Compute rules (train, profile, bench, exactness, repeat) are separate from the cheap rules that only read their
outputs (aggregate, stats, notebooks, paper), so a figure tweak never retrains anything.
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


rule all:
    """The paper PDF and every figure and table it is built from."""
    input:
        PAPER_PDF,
        FIGURE_FILES,
        TABLE_FILES,
        NOTEBOOK_HTML,
    default_target: True
