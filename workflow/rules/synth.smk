rule synth_patient:
    input:
        lib=lib("synth_patient"),
    output:
        dicom=directory("results/synthetic/dicom/{patient}"),
        truth="results/synthetic/truth/{patient}.npz",
        labels="results/synthetic/labels/{patient}.tsv",
        summary="results/synthetic/truth/{patient}.summary.tsv",
    log:
        "results/logs/synth/{patient}.log",
    benchmark:
        "results/benchmarks/synth/{patient}.tsv"
    group:
        "patient"
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        synth=synth_settings(),
        # The cohort folder (results/synthetic), from the outputs so it is never hard-coded twice.
        out_dir=lambda wildcards, output: Path(output.truth).parents[1],
    script:
        "../scripts/synth_patient.py"


rule synth_tables:
    input:
        labels=expand("results/synthetic/labels/{patient}.tsv", patient=patient_ids()),
        summaries=expand(
            "results/synthetic/truth/{patient}.summary.tsv", patient=patient_ids()
        ),
        lib=lib("synth_tables"),
    output:
        labels="results/synthetic/labels.tsv",
        patients="results/synthetic/truth/patients.tsv",
    log:
        "results/logs/synth_tables.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/synth_tables.py"
