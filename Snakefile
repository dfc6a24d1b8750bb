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
        final_outputs(),


# After every rule is defined: each rule script's library stamp is its own.
check_library_inputs(workflow.rules)
