from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/splits.smk"


rule all:
    default_target: True
    input:
        # The synthetic cohort's merged tables (only when it is the input).
        [] if own_data() else "results/synthetic/labels.tsv",
        [] if own_data() else "results/synthetic/truth/patients.tsv",
        "results/qc/series.tsv",
        "results/qc/segmentation.tsv",
        "results/qc/datasets.tsv",
        expand("results/datasets/{dataset}/manifest.tsv", dataset=DATASETS),
        "results/splits/patients.tsv",
        expand("results/augmented/{dataset}/manifest.tsv", dataset=DATASETS),
        "results/figures/augmentation.png",
