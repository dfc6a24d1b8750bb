rule ingest_patient:
    input:
        study=study_input,
        labels=labels_input,
        lib=lib("__init__", "ingest", "tables", "runlog"),
    output:
        # The HU volume lives only until the segmentation and datasets are made.
        volume=temp("results/ingest/{patient}.npz"),
        qc="results/qc/series/{patient}.tsv",
    log:
        "results/logs/ingest/{patient}.log",
    benchmark:
        "results/benchmarks/ingest/{patient}.tsv"
    group:
        "patient"
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        ingest=config["ingest"],
        study=lambda wildcards: study_folders()[wildcards.patient],
        label_key=label_key,
    script:
        "../scripts/ingest_patient.py"


rule qc_series:
    input:
        tables=expand("results/qc/series/{patient}.tsv", patient=patient_ids()),
        lib=lib("__init__", "tables", "runlog"),
    output:
        "results/qc/series.tsv",
    log:
        "results/logs/qc_series.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/merge_tables.py"
