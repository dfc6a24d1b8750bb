rule segment_patient:
    input:
        volume="results/ingest/{patient}.npz",
        truth=truth_input,
        lib=lib(
            "__init__",
            "ingest",
            "segmentation",
            "datasets",
            "agatston",
            "pipeline",
            "tables",
            "runlog",
        ),
    output:
        segmentation="results/segmentation/{patient}.npz",
        qc="results/qc/segmentation/{patient}.tsv",
    log:
        "results/logs/segment/{patient}.log",
    benchmark:
        "results/benchmarks/segment/{patient}.tsv"
    group:
        "patient"
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        segmentation=config["segmentation"],
    script:
        "../scripts/segment_patient.py"


rule qc_segmentation:
    input:
        tables=expand("results/qc/segmentation/{patient}.tsv", patient=patient_ids()),
        lib=lib("__init__", "tables", "runlog"),
    output:
        "results/qc/segmentation.tsv",
    log:
        "results/logs/qc_segmentation.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/merge_tables.py"
