# External validation (config `external:`): a second synthetic cohort, of another seed and
# acquisition, that no network trains on and no setting is chosen on. Its patients run
# through the same per-patient chain as the training cohort's, under results/external/;
# every trained network then classifies its images as `cacflow predict` does.


use rule synth_patient as synth_external_patient with:
    output:
        dicom=directory("results/external/synthetic/dicom/{patient}"),
        truth="results/external/synthetic/truth/{patient}.npz",
        labels="results/external/synthetic/labels/{patient}.tsv",
        summary="results/external/synthetic/truth/{patient}.summary.tsv",
    log:
        "results/logs/external/synth/{patient}.log",
    benchmark:
        "results/benchmarks/external/synth/{patient}.tsv"
    group:
        "external_patient"
    params:
        synth=external_synth_settings(),
        out_dir=lambda wildcards, output: Path(output.truth).parents[1],


rule external_truth_tables:
    input:
        labels=expand(
            "results/external/synthetic/labels/{patient}.tsv",
            patient=external_patient_ids(),
        ),
        summaries=expand(
            "results/external/synthetic/truth/{patient}.summary.tsv",
            patient=external_patient_ids(),
        ),
        lib=lib("synth_tables"),
    output:
        labels="results/external/synthetic/labels.tsv",
        patients="results/external/synthetic/truth/patients.tsv",
    log:
        "results/logs/external/truth_tables.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/synth_tables.py"


# No gallery output (process_patient's `gallery`): the report shows the training cohort's
# lesion galleries only, and the script draws one only where its rule asks for it.
use rule process_patient as process_external_patient with:
    input:
        study="results/external/synthetic/dicom/{patient}",
        labels="results/external/synthetic/labels/{patient}.tsv",
        truth="results/external/synthetic/truth/{patient}.npz",
        lib=rules.process_patient.input.lib,
    output:
        series_qc="results/external/qc/series/{patient}.tsv",
        segmentation="results/external/segmentation/{patient}.npz",
        segmentation_qc="results/external/qc/segmentation/{patient}.tsv",
        images=directory(
            expand("results/external/datasets/{dataset}/{{patient}}", dataset=DATASETS)
        ),
        manifests=expand(
            "results/external/datasets/{dataset}/{{patient}}.tsv", dataset=DATASETS
        ),
        datasets_qc="results/external/qc/datasets/{patient}.tsv",
        scores="results/external/agatston/classical/{patient}.tsv",
        lesions="results/external/agatston/lesions/{patient}.tsv",
    log:
        "results/logs/external/patient/{patient}.log",
    benchmark:
        "results/benchmarks/external/patient/{patient}.tsv"
    group:
        "external_patient"
    params:
        ingest=config["ingest"],
        segmentation=config["segmentation"],
        datasets=config["datasets"],
        classical=config["agatston"]["classical"],
        study=lambda wildcards, input: input.study,
        label_key=lambda wildcards: wildcards.patient,
        label_rows=[],


rule external_manifest:
    input:
        lambda wildcards: expand(
            "results/external/datasets/{dataset}/{patient}.tsv",
            dataset=wildcards.dataset,
            patient=external_patient_ids(),
        ),
        lib=lib("dataset_manifest"),
    output:
        "results/external/datasets/{dataset}/manifest.tsv",
    log:
        "results/logs/external/manifest/{dataset}.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/dataset_manifest.py"


rule external_series_qc:
    input:
        tables=expand(
            "results/external/qc/series/{patient}.tsv", patient=external_patient_ids()
        ),
        lib=lib("merge_tables"),
    output:
        "results/external/qc/series.tsv",
    log:
        "results/logs/external/qc_series.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/merge_tables.py"


rule external_predict:
    input:
        model="results/models/{dataset}/{model}/model.keras",
        manifest="results/external/datasets/{dataset}/manifest.tsv",
        lib=lib("external_predict"),
    output:
        "results/external/predictions/{dataset}/{model}.tsv",
    log:
        "results/logs/external/predict/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/external/predict/{dataset}/{model}.tsv"
    conda:
        "../../envs/predict.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        datasets=config["datasets"],
        batch_size=config["input_pipeline"]["eval_batch_size"],
    script:
        "../scripts/external_predict.py"


rule external_evaluate:
    input:
        predictions=expand(
            "results/external/predictions/{dataset}/{model}.tsv",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        lib=lib("external_evaluate"),
    output:
        metrics="results/external/metrics.tsv",
        table3="results/external/table3.tsv",
    log:
        "results/logs/external/evaluate.log",
    benchmark:
        "results/benchmarks/external/evaluate.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        evaluation=METRICS_SETTINGS,
        seed=config["seed"],
    script:
        "../scripts/external_evaluate.py"


use rule evaluation_figures as external_figures with:
    input:
        predictions=expand(
            "results/external/predictions/{dataset}/{model}.tsv",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        metrics="results/external/metrics.tsv",
        lib=rules.evaluation_figures.input.lib,
    output:
        roc=report(
            "results/figures/external/roc.png",
            caption="../report/external_roc.rst",
            category="External validation",
        ),
        confusion=report(
            "results/figures/external/confusion.png",
            caption="../report/external_confusion.rst",
            category="External validation",
        ),
    log:
        "results/logs/external/figures.log",
    params:
        split="external",


rule external_hybrid_scores:
    input:
        lesions=expand(
            "results/external/agatston/lesions/{patient}.tsv",
            patient=external_patient_ids(),
        ),
        predictions="results/external/predictions/{dataset}/{model}.tsv",
        lib=lib("hybrid_scores"),
    output:
        "results/external/agatston/hybrid/{dataset}/{model}.tsv",
    log:
        "results/logs/external/hybrid_scores/{dataset}/{model}.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    params:
        threshold=config["agatston"]["hybrid_threshold"],
        split="external",
    script:
        "../scripts/hybrid_scores.py"


rule external_agatston_patients:
    input:
        classical=expand(
            "results/external/agatston/classical/{patient}.tsv",
            patient=external_patient_ids(),
        ),
        methods=expand(
            "results/external/agatston/hybrid/{dataset}/{model}.tsv",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        truth="results/external/synthetic/truth/patients.tsv",
        lib=lib("agatston_patients"),
    output:
        "results/external/agatston/patients.tsv",
    log:
        "results/logs/external/agatston_patients.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/agatston_patients.py"


rule external_agatston_agreement:
    input:
        scores="results/external/agatston/patients.tsv",
        lib=lib("agatston_agreement"),
    output:
        "results/external/agatston/agreement.tsv",
    log:
        "results/logs/external/agatston_agreement.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/agatston_agreement.py"


rule external_pointing:
    input:
        models=expand(
            "results/models/{dataset}/{model}/model.keras",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        predictions=expand(
            "results/external/predictions/{dataset}/{model}.tsv",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        manifests=expand(
            "results/external/datasets/{dataset}/manifest.tsv",
            dataset=TRAINED_DATASETS,
        ),
        lib=lib("external_pointing"),
    output:
        "results/external/gradcam_pointing.tsv",
    log:
        "results/logs/external/pointing.log",
    benchmark:
        "results/benchmarks/external/pointing.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        threshold=config["evaluation"]["threshold"],
        min_cells=config["evaluation"]["gradcam_min_cells"],
        method=config["evaluation"]["gradcam_method"],
        seed=config["seed"],
    script:
        "../scripts/external_pointing.py"
