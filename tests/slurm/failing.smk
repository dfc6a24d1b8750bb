# A two-job workflow for tests/test_slurm.py: `ok` succeeds and records the SLURM job it ran in,
# `fails` exits 1. Run through the SLURM profile, Snakemake must report the failed rule and its
# SLURM job, and (keep-going) still finish `ok`.


rule all:
    input:
        "ok.txt",
        "fails.txt",


rule ok:
    output:
        "ok.txt",
    log:
        "logs/ok.log",
    shell:
        'echo "slurm_job_id=$SLURM_JOB_ID slurm_partition=$SLURM_JOB_PARTITION" > {output} 2> {log}'


rule fails:
    output:
        "fails.txt",
    log:
        "logs/fails.log",
    shell:
        "echo 'cacflow test: this rule fails on purpose' > {log}; exit 1"
