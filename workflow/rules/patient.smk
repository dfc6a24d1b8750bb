# One job per patient, for every per-patient stage: a 2,300-patient cohort is 2,300 jobs
# (planned in seconds; one SLURM submission each, or fewer with group-components), not four
# times as many. The price: a changed segmentation, datasets or Agatston setting reruns the
# whole chain of every patient (ingest is the cheap part of it). The lesion gallery is drawn
# here too, from the volume and candidates the score already has: a job of its own would
# read the DICOM and filter the candidates again.
rule process_patient:
    input:
        study=study_input,
        # Synthetic: the patient's label file; own data: its rows of the label table reach
        # the job as params, so editing one patient's rows reruns that patient only.
        labels=labels_input,
        truth=truth_input,
        lib=lib("process_patient"),
    output:
        series_qc="results/qc/series/{patient}.tsv",
        segmentation="results/segmentation/{patient}.npz",
        segmentation_qc="results/qc/segmentation/{patient}.tsv",
        images=directory(
            expand("results/datasets/{dataset}/{{patient}}", dataset=DATASETS)
        ),
        manifests=expand("results/datasets/{dataset}/{{patient}}.tsv", dataset=DATASETS),
        datasets_qc="results/qc/datasets/{patient}.tsv",
        scores="results/agatston/classical/{patient}.tsv",
        lesions="results/agatston/lesions/{patient}.tsv",
        # lesion-level detection against the truth (header only for own data)
        lesion_eval="results/agatston/lesion_eval/{patient}.tsv",
        gallery=report(
            "results/figures/lesions/{patient}.png",
            caption="../report/lesion_gallery.rst",
            category="Agatston lesions",
            labels={"patient": "{patient}"},
        ),
    log:
        "results/logs/patient/{patient}.log",
    benchmark:
        "results/benchmarks/patient/{patient}.tsv"
    group:
        "patient"
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        ingest=config["ingest"],
        segmentation=config["segmentation"],
        datasets=config["datasets"],
        # The classical score's rules only: the hybrid threshold changes no patient's job.
        classical=config["agatston"]["classical"],
        study=lambda wildcards: study_folders()[wildcards.patient],
        label_key=label_key,
        label_rows=patient_label_rows,
    script:
        "../scripts/process_patient.py"


rule qc_series:
    input:
        tables=expand("results/qc/series/{patient}.tsv", patient=patient_ids()),
        lib=lib("merge_tables"),
    output:
        "results/qc/series.tsv",
    log:
        "results/logs/qc_series.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/merge_tables.py"


rule qc_segmentation:
    input:
        tables=expand("results/qc/segmentation/{patient}.tsv", patient=patient_ids()),
        lib=lib("merge_tables"),
    output:
        "results/qc/segmentation.tsv",
    log:
        "results/logs/qc_segmentation.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/merge_tables.py"


rule dataset_manifest:
    input:
        lambda wildcards: expand(
            "results/datasets/{dataset}/{patient}.tsv",
            dataset=wildcards.dataset,
            patient=patient_ids(),
        ),
        lib=lib("dataset_manifest"),
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
        lib=lib("merge_tables"),
    output:
        "results/qc/datasets.tsv",
    log:
        "results/logs/qc_datasets.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/merge_tables.py"
