# Group components next to a checkpoint, for tests/test_slurm.py: four jobs of group `batch`
# feed a checkpoint, as the per-patient synthesis feeds qc_series in the workflow. With
# `--group-components batch=2` they should run as two SLURM jobs of two; each job writes the SLURM
# job it ran in.


rule all:
    input:
        "summary.txt",


rule make:
    output:
        "made/{i}.txt",
    group:
        "batch"
    shell:
        'echo "$SLURM_JOB_ID" > {output}'


checkpoint check:
    input:
        expand("made/{i}.txt", i=range(1, 5)),
    output:
        "checked.txt",
    localrule: True
    shell:
        "cat {input} > {output}"


def checked(wildcards):
    checkpoints.check.get()
    return "checked.txt"


rule summary:
    input:
        checked,
    output:
        "summary.txt",
    localrule: True
    shell:
        "cp {input} {output}"
