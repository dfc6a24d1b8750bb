# A small workflow for tests/test_slurm.py, run through the SLURM profile: `ok` succeeds,
# `fails` exits 1, and `train_model` stands in for the training rule (not written yet), which
# profiles/slurm's set-resources sends to partition `gpu` with one GPU. Each job that works
# records the SLURM job and partition it ran in. Snakemake must report the failed rule and its
# SLURM job, and (keep-going) still finish the others.


rule all:
    input:
        "ok.txt",
        "fails.txt",
        "train_model.txt",


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


rule train_model:
    output:
        "train_model.txt",
    log:
        "logs/train_model.log",
    shell:
        'echo "slurm_job_id=$SLURM_JOB_ID slurm_partition=$SLURM_JOB_PARTITION" > {output} 2> {log}'
