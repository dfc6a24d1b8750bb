from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"


rule all:
    default_target: True
    input:
        "results/synthetic/labels.tsv",
        "results/synthetic/truth/patients.tsv",
