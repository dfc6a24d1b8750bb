from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/library.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/patient.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/agatston.smk"
include: "workflow/rules/external.smk"
# Last: its inputs are whatever the rules above make.
include: "workflow/rules/report.smk"


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
        "results/models/summary.tsv",
        "results/metrics.tsv",
        "results/figures/roc.png",
        "results/figures/confusion.png",
        expand(
            "results/figures/training_curves/{dataset}_{model}.png",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        expand("results/figures/gradcam/{dataset}.png", dataset=TRAINED_DATASETS),
        "results/agatston/patients.tsv",
        # Agreement with the truth: the synthetic cohort's (own data has none yet).
        [] if own_data() else "results/agatston/agreement.tsv",
        [] if own_data() else "results/figures/agatston_scatter.png",
        [] if own_data() else "results/figures/agatston_bland_altman.png",
        external_outputs(),
        "results/report/index.html",


# After every rule is defined: each rule script's library stamp is its own.
check_library_inputs(workflow.rules)
