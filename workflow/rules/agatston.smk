# Own data's reference scores (config `reference`), keyed by the workflow's patient IDs (a
# pseudonym where ingest pseudonymizes: the table's own IDs never reach results).
rule reference_table:
    input:
        table=config["reference"] or [],
        lib=lib("reference_table"),
    output:
        "results/reference/patients.tsv",
    log:
        "results/logs/reference_table.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        patient_ids=lambda wildcards: {table_key(pid): pid for pid in patient_ids()},
    script:
        "../scripts/reference_table.py"


rule agatston_patients:
    input:
        classical=expand(
            "results/agatston/classical/{patient}.tsv", patient=patient_ids()
        ),
        methods=hybrid_tables(),
        truth=truth_table() or [],
        lib=lib("agatston_patients"),
    output:
        "results/agatston/patients.tsv",
    log:
        "results/logs/agatston_patients.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/agatston_patients.py"


rule agatston_agreement:
    input:
        scores="results/agatston/patients.tsv",
        lib=lib("agatston_agreement"),
    output:
        report(
            "results/agatston/agreement.tsv",
            caption="../report/agatston_agreement.rst",
            category="Agatston",
        ),
    log:
        "results/logs/agatston_agreement.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/agatston_agreement.py"


rule agatston_lesions:
    input:
        lesion_eval=expand(
            "results/agatston/lesion_eval/{patient}.tsv", patient=patient_ids()
        ),
        scores="results/agatston/patients.tsv",
        lib=lib("agatston_lesions"),
    output:
        report(
            "results/agatston/lesions_eval.tsv",
            caption="../report/agatston_lesions.rst",
            category="Agatston",
        ),
    log:
        "results/logs/agatston_lesions.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/agatston_lesions.py"


rule agatston_figures:
    input:
        scores="results/agatston/patients.tsv",
        lib=lib("agatston_figures"),
    output:
        scatter=report(
            "results/figures/agatston_scatter.png",
            caption="../report/agatston_scatter.rst",
            category="Agatston",
        ),
        bland_altman=report(
            "results/figures/agatston_bland_altman.png",
            caption="../report/agatston_bland_altman.rst",
            category="Agatston",
        ),
    log:
        "results/logs/agatston_figures.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/agatston_figures.py"


rule hybrid_scores:
    input:
        lesions=expand("results/agatston/lesions/{patient}.tsv", patient=patient_ids()),
        predictions="results/models/{dataset}/{model}/predictions.tsv",
        lib=lib("hybrid_scores"),
    output:
        "results/agatston/hybrid/{dataset}/{model}.tsv",
    log:
        "results/logs/hybrid_scores/{dataset}/{model}.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    params:
        threshold=config["agatston"]["hybrid_threshold"],
        split="test",
    script:
        "../scripts/hybrid_scores.py"
