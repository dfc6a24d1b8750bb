# results/datasets/<dataset>/manifest.tsv is the merged table, not a patient named "manifest"
# (a study folder of that name is refused in common.smk).
ruleorder: dataset_manifest > datasets_patient


rule datasets_patient:
    input:
        volume="results/ingest/{patient}.npz",
        segmentation="results/segmentation/{patient}.npz",
        labels=labels_input,
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
        images=directory(
            expand("results/datasets/{dataset}/{{patient}}", dataset=DATASETS)
        ),
        manifests=expand("results/datasets/{dataset}/{{patient}}.tsv", dataset=DATASETS),
        qc="results/qc/datasets/{patient}.tsv",
    log:
        "results/logs/datasets/{patient}.log",
    benchmark:
        "results/benchmarks/datasets/{patient}.tsv"
    group:
        "patient"
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        datasets=config["datasets"],
        label_key=label_key,
    script:
        "../scripts/datasets_patient.py"


rule dataset_manifest:
    input:
        lambda wildcards: expand(
            "results/datasets/{dataset}/{patient}.tsv",
            dataset=wildcards.dataset,
            patient=patient_ids(),
        ),
        lib=lib("__init__", "datasets", "tables", "runlog"),
    output:
        "results/datasets/{dataset}/manifest.tsv",
    log:
        "results/logs/dataset_manifest/{dataset}.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/dataset_manifest.py"


rule qc_datasets:
    input:
        tables=expand("results/qc/datasets/{patient}.tsv", patient=patient_ids()),
        lib=lib("__init__", "tables", "runlog"),
    output:
        "results/qc/datasets.tsv",
    log:
        "results/logs/qc_datasets.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/merge_tables.py"
